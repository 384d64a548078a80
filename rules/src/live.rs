//! What travels to live clients through Redis pub/sub: anomalies as they are raised and, for the
//! accounts some client tails, their stored events. Every api instance subscribes and hands each
//! message to its own clients of that account, so any instance can serve any client.
use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use sluice_shared::event::QueuedEvent;
use utoipa::ToSchema;

use crate::store::{AnomalyDoc, Delivery};

/// `<prefix>:live`: every live message, with the account it belongs to.
pub fn live_channel(prefix: &str) -> String {
    format!("{prefix}:live")
}

/// `<prefix>:rules:changed`: a rule changed (the payload is the new rules version).
pub fn rules_channel(prefix: &str) -> String {
    format!("{prefix}:rules:changed")
}

/// `<prefix>:rules:version`: raised by every rule change.
pub fn rules_version_key(prefix: &str) -> String {
    format!("{prefix}:rules:version")
}

/// `<prefix>:live:tails`: accounts some client tails (sorted set, score = until when, Unix ms).
pub fn tails_key(prefix: &str) -> String {
    format!("{prefix}:live:tails")
}

/// Events of one account a worker publishes per batch at most; the rest are counted as skipped.
pub const MAX_PUBLISHED_PER_BATCH: usize = 50;

/// An anomaly as the API and live clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyView {
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub severity: crate::model::Severity,
    /// `threshold` or `zscore`.
    pub kind: String,
    pub message: String,
    pub observed: f64,
    pub threshold: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stddev: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub zscore: Option<f64>,
    pub window: WindowView,
    pub sample_event_ids: Vec<String>,
    pub detected_at: DateTime<Utc>,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowView {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub channel_id: String,
    pub attempt: u32,
    /// `delivered`, `retrying` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        DeliveryView {
            channel_id: d.channel_id.clone(),
            attempt: d.attempt,
            status: d.status.clone(),
            http_status: d.http_status,
            error: d.error.clone(),
            at: crate::store::utc(d.at),
        }
    }
}

impl From<&AnomalyDoc> for AnomalyView {
    fn from(a: &AnomalyDoc) -> Self {
        AnomalyView {
            id: a.id.clone(),
            rule_id: a.rule_id.clone(),
            rule_name: a.rule_name.clone(),
            severity: a.severity,
            kind: a.kind.clone(),
            message: a.message.clone(),
            observed: a.observed,
            threshold: a.threshold,
            mean: a.mean,
            stddev: a.stddev,
            zscore: a.zscore,
            window: WindowView {
                from: crate::store::utc(a.window_from),
                to: crate::store::utc(a.window_to),
            },
            sample_event_ids: a.sample_event_ids.clone(),
            detected_at: crate::store::utc(a.detected_at),
            deliveries: a.deliveries.iter().map(DeliveryView::from).collect(),
        }
    }
}

/// A stored event as the live tail shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TailEvent {
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub timestamp: String,
    pub received_at: String,
    /// A value, not raw JSON: a raw value cannot be read back inside the tagged [`LiveMessage`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

impl From<&QueuedEvent> for TailEvent {
    fn from(e: &QueuedEvent) -> Self {
        TailEvent {
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            user_id: e.user_id.clone(),
            session_id: e.session_id.clone(),
            timestamp: e.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            received_at: e.received_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            properties: e
                .properties
                .as_ref()
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
        }
    }
}

/// One message on the live channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LiveMessage {
    Anomaly {
        #[serde(rename = "accountId")]
        account_id: String,
        anomaly: Box<AnomalyView>,
    },
    /// A batch's stored events of one account (at most [`MAX_PUBLISHED_PER_BATCH`]), and how many
    /// more the worker did not publish.
    Events {
        #[serde(rename = "accountId")]
        account_id: String,
        events: Vec<TailEvent>,
        skipped: u64,
    },
}

impl LiveMessage {
    pub fn account_id(&self) -> &str {
        match self {
            LiveMessage::Anomaly { account_id, .. } | LiveMessage::Events { account_id, .. } => {
                account_id
            }
        }
    }
}

pub async fn publish(redis: &Client, prefix: &str, message: &LiveMessage) -> anyhow::Result<()> {
    let text = serde_json::to_string(message)?;
    redis
        .publish::<i64, _, _>(live_channel(prefix), text)
        .await?;
    Ok(())
}

/// Marks `accounts` as tailed until `until` (an api instance refreshes it while a client tails).
pub async fn mark_tailed(
    redis: &Client,
    prefix: &str,
    accounts: &[String],
    until: DateTime<Utc>,
) -> anyhow::Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let score = until.timestamp_millis() as f64;
    let members: Vec<(f64, String)> = accounts.iter().map(|a| (score, a.clone())).collect();
    redis
        .zadd::<i64, _, _>(tails_key(prefix), None, None, false, false, members)
        .await?;
    Ok(())
}

/// The accounts some client tails now (and drops the lapsed ones).
pub async fn tailed(redis: &Client, prefix: &str) -> anyhow::Result<HashSet<String>> {
    let key = tails_key(prefix);
    let now = Utc::now().timestamp_millis() as f64;
    let _: i64 = redis.zremrangebyscore(&key, f64::NEG_INFINITY, now).await?;
    let members: Vec<String> = redis
        .zrangebyscore(&key, now, f64::INFINITY, false, None)
        .await?;
    Ok(members.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_live_message_reads_back() {
        let e = TailEvent {
            event_id: "e1".into(),
            event_type: "checkout".into(),
            user_id: "u".into(),
            session_id: None,
            timestamp: "2026-12-06T00:00:00.000Z".into(),
            received_at: "2026-12-06T00:00:00.000Z".into(),
            properties: Some(serde_json::json!({"plan": "pro"})),
        };
        let m = LiveMessage::Events {
            account_id: "a".into(),
            events: vec![e],
            skipped: 2,
        };
        let text = serde_json::to_string(&m).unwrap();
        let back: LiveMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(back.account_id(), "a");
        let LiveMessage::Events {
            events, skipped, ..
        } = back
        else {
            panic!("events")
        };
        assert_eq!((events.len(), skipped), (1, 2));
        assert_eq!(
            events[0].properties,
            Some(serde_json::json!({"plan": "pro"}))
        );
    }
}
