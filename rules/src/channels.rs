//! Notification channels (`sluice.channels`) and the delivery of anomalies to them: a Slack
//! incoming webhook (`{"text": …}`) or a webhook signed the Standard Webhooks way with the
//! channel's own secret. Each channel has its own queue and task in the worker that raised the
//! anomaly: retries with backoff, `429` + `Retry-After` honoured, given up after a bound; every
//! attempt is recorded on the anomaly. A channel that is down delays no other channel and no event.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use mongodb::bson::{self, doc};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::live::AnomalyView;
use crate::store::{self, AnomalyDoc, Delivery};

pub const CHANNELS_COLLECTION: &str = "channels";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    /// A Slack incoming webhook: `{"text": …}`.
    Slack,
    /// A JSON webhook signed the Standard Webhooks way with the channel's secret.
    Webhook,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub account_id: String,
    #[serde(rename = "type")]
    pub kind: ChannelType,
    pub name: String,
    pub url: String,
    /// `whsec_…` for webhooks; empty for Slack (the URL is its secret).
    pub secret: String,
    pub created_at: bson::DateTime,
}

pub fn channels(db: &Database) -> Collection<ChannelDoc> {
    db.collection(CHANNELS_COLLECTION)
}

pub async fn account_channels(db: &Database, account: &str) -> anyhow::Result<Vec<ChannelDoc>> {
    channels(db)
        .find(doc! {"accountId": account})
        .sort(doc! {"createdAt": 1, "_id": 1})
        .await
        .context("listing channels")?
        .try_collect()
        .await
        .context("listing channels")
}

pub async fn channel_ids(db: &Database, account: &str) -> anyhow::Result<Vec<Uuid>> {
    Ok(account_channels(db, account)
        .await?
        .iter()
        .filter_map(|c| c.id.parse().ok())
        .collect())
}

pub async fn insert_channel(db: &Database, c: &ChannelDoc) -> anyhow::Result<()> {
    channels(db)
        .insert_one(c)
        .await
        .context("storing the channel")?;
    Ok(())
}

pub async fn delete_channel(db: &Database, account: &str, id: &str) -> anyhow::Result<bool> {
    let r = channels(db)
        .delete_one(doc! {"_id": id, "accountId": account})
        .await
        .context("deleting the channel")?;
    Ok(r.deleted_count == 1)
}

/// A new Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` with the key the secret encodes.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .context("the channel's secret is not base64")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).context("an HMAC key")?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// How deliveries retry.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// The longest `Retry-After` honoured as given (longer ones wait this long).
    pub max_retry_after: Duration,
    pub timeout: Duration,
    /// Anomalies waiting per channel; more are recorded as failed at once.
    pub queue: usize,
}

/// What one attempt came to.
enum Attempt {
    Delivered(u16),
    /// Retry after this long (`Retry-After`, or the backoff).
    Retry(Option<u16>, String, Option<Duration>),
}

/// One queue and task per channel, started on its first anomaly.
pub struct Notifier {
    db: Database,
    http: reqwest::Client,
    policy: DeliveryPolicy,
    queues: Mutex<HashMap<String, mpsc::Sender<Arc<AnomalyDoc>>>>,
}

impl Notifier {
    pub fn new(db: Database, policy: DeliveryPolicy) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("an HTTP client")?;
        Ok(Self {
            db,
            http,
            policy,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Queues `anomaly` for each of `channels` (ids of its account's channels). Never waits.
    pub async fn notify(self: &Arc<Self>, anomaly: &AnomalyDoc, channels: &[Uuid]) {
        if channels.is_empty() {
            return;
        }
        let anomaly = Arc::new(anomaly.clone());
        for id in channels {
            let id = id.to_string();
            let tx = self.queue_of(&id);
            if tx.try_send(anomaly.clone()).is_err() {
                metrics::counter!("sluice_worker_notifications_dropped_total").increment(1);
                let failed = Delivery {
                    channel_id: id.clone(),
                    attempt: 0,
                    status: "failed".into(),
                    http_status: None,
                    error: Some("the channel's queue is full".into()),
                    at: bson::DateTime::now(),
                };
                let _ = store::record_delivery(&self.db, &anomaly.id, &failed).await;
            }
        }
    }

    fn queue_of(self: &Arc<Self>, channel: &str) -> mpsc::Sender<Arc<AnomalyDoc>> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = queues.get(channel).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(self.policy.queue.max(1));
        tokio::spawn(self.clone().drain(channel.to_owned(), rx));
        queues.insert(channel.to_owned(), tx.clone());
        tx
    }

    async fn drain(self: Arc<Self>, channel: String, mut rx: mpsc::Receiver<Arc<AnomalyDoc>>) {
        while let Some(anomaly) = rx.recv().await {
            self.deliver(&channel, &anomaly).await;
        }
    }

    /// Delivers one anomaly to one channel, retrying until it is taken or the bound is reached.
    async fn deliver(&self, channel_id: &str, anomaly: &AnomalyDoc) {
        let found = channels(&self.db)
            .find_one(doc! {"_id": channel_id, "accountId": &anomaly.account_id})
            .await;
        let channel = match found {
            Ok(Some(c)) => c,
            Ok(None) => return, // deleted since the rule named it
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a channel; the anomaly is not delivered to it");
                return;
            }
        };
        let p = self.policy;
        for attempt in 1..=p.max_attempts {
            let outcome = self.attempt(&channel, anomaly).await;
            let (status, http_status, error, wait) = match outcome {
                Attempt::Delivered(code) => ("delivered", Some(code), None, None),
                Attempt::Retry(code, error, after) => {
                    let backoff = p.base.saturating_mul(1 << (attempt - 1).min(16)).min(p.cap);
                    let wait = after.map_or(backoff, |a| a.min(p.max_retry_after));
                    let status = if attempt == p.max_attempts {
                        "failed"
                    } else {
                        "retrying"
                    };
                    (status, code, Some(error), Some(wait))
                }
            };
            let record = Delivery {
                channel_id: channel_id.to_owned(),
                attempt,
                status: status.into(),
                http_status,
                error,
                at: bson::DateTime::now(),
            };
            if let Err(e) = store::record_delivery(&self.db, &anomaly.id, &record).await {
                tracing::warn!(error = %e, "cannot record a delivery attempt");
            }
            metrics::counter!("sluice_worker_notifications_total", "status" => status).increment(1);
            match (status, wait) {
                ("retrying", Some(wait)) => tokio::time::sleep(wait).await,
                _ => return,
            }
        }
    }

    async fn attempt(&self, channel: &ChannelDoc, anomaly: &AnomalyDoc) -> Attempt {
        let view = AnomalyView::from(anomaly);
        let body = match channel.kind {
            ChannelType::Slack => serde_json::json!({
                "text": format!("[{}] {}", anomaly.severity.as_str(), anomaly.message)
            }),
            ChannelType::Webhook => serde_json::json!({"type": "anomaly", "anomaly": view}),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => return Attempt::Retry(None, e.to_string(), None),
        };
        let mut req = self
            .http
            .post(&channel.url)
            .header("content-type", "application/json");
        if channel.kind == ChannelType::Webhook {
            let ts = chrono::Utc::now().timestamp();
            match sign(&channel.secret, &anomaly.id, ts, &body) {
                Ok(sig) => {
                    req = req
                        .header("webhook-id", &anomaly.id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", sig);
                }
                Err(e) => return Attempt::Retry(None, format!("{e:#}"), None),
            }
        }
        match req.body(body).send().await {
            Ok(resp) if resp.status().is_success() => Attempt::Delivered(resp.status().as_u16()),
            Ok(resp) => {
                let code = resp.status().as_u16();
                let after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let after = if code == 429 { after } else { None };
                Attempt::Retry(Some(code), format!("the receiver answered {code}"), after)
            }
            Err(e) => Attempt::Retry(None, format!("{e}"), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks reference test vector.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_new_secret_decodes_to_32_bytes() {
        let s = new_secret();
        let key = base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
    }
}
