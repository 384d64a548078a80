//! The live WebSocket's hub: one Redis subscription per api instance to the live channel, and
//! this instance's clients by account. A message goes to the clients of its account only, each
//! through a bounded queue: a client that cannot keep up is dropped, never buffered without bound.
//! While some client here tails an account's events, the hub marks the account as tailed in Redis
//! so workers publish its stored events.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use sluice_http::Heart;
use sluice_rules::live::{self, LiveMessage};
use tokio::sync::mpsc;

/// What a client's task receives.
pub type Delivery = Arc<LiveMessage>;

struct Slot {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    tails: bool,
}

#[derive(Default)]
pub struct LiveHub {
    clients: Mutex<HashMap<String, Vec<Slot>>>,
    next: AtomicU64,
    /// Messages per client queue before the client counts as too slow.
    buffer: usize,
}

/// A client's place in the hub; leaving (drop) takes it out.
pub struct Membership {
    hub: Arc<LiveHub>,
    account: String,
    id: u64,
    pub rx: mpsc::Receiver<Delivery>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.remove(&self.account, self.id);
    }
}

impl Membership {
    /// Whether this client wants the account's events (the worker publishes them only while
    /// some client does).
    pub fn set_tailing(&self, on: bool) {
        if let Ok(mut clients) = self.hub.clients.lock() {
            if let Some(slot) = clients
                .get_mut(&self.account)
                .and_then(|v| v.iter_mut().find(|s| s.id == self.id))
            {
                slot.tails = on;
            }
        }
    }
}

impl LiveHub {
    pub fn new(buffer: usize) -> Self {
        Self {
            buffer: buffer.max(1),
            ..Self::default()
        }
    }

    pub fn join(self: &Arc<Self>, account: &str) -> Membership {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.buffer);
        if let Ok(mut clients) = self.clients.lock() {
            clients.entry(account.to_owned()).or_default().push(Slot {
                id,
                tx,
                tails: false,
            });
        }
        metrics::gauge!("sluice_api_live_clients").increment(1.0);
        Membership {
            hub: self.clone(),
            account: account.to_owned(),
            id,
            rx,
        }
    }

    fn remove(&self, account: &str, id: u64) {
        if let Ok(mut clients) = self.clients.lock() {
            if let Some(v) = clients.get_mut(account) {
                let before = v.len();
                v.retain(|s| s.id != id);
                if v.len() < before {
                    metrics::gauge!("sluice_api_live_clients").decrement(1.0);
                }
                if v.is_empty() {
                    clients.remove(account);
                }
            }
        }
    }

    /// Hands `message` to its account's clients here; a full queue drops that client (its
    /// queue closes, and its task closes the socket).
    pub fn dispatch(&self, message: LiveMessage) {
        let message = Arc::new(message);
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        let Some(slots) = clients.get_mut(message.account_id()) else {
            return;
        };
        let tail = matches!(*message, LiveMessage::Events { .. });
        slots.retain(|slot| {
            if tail && !slot.tails {
                return true;
            }
            match slot.tx.try_send(message.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("sluice_api_live_slow_clients_dropped_total").increment(1);
                    metrics::gauge!("sluice_api_live_clients").decrement(1.0);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    metrics::gauge!("sluice_api_live_clients").decrement(1.0);
                    false
                }
            }
        });
    }

    /// Accounts some client here tails.
    pub fn tailed(&self) -> Vec<String> {
        self.clients
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(_, slots)| slots.iter().any(|s| s.tails))
                    .map(|(a, _)| a.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Subscribes to the live channel and dispatches every message; every `refresh` marks the
/// tailed accounts in Redis (for three times that long).
pub fn spawn(
    hub: Arc<LiveHub>,
    subscriber: SubscriberClient,
    redis: Client,
    prefix: String,
    refresh: Duration,
    heart: Heart,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _resubscribe = subscriber.manage_subscriptions();
        let mut rx = subscriber.message_rx();
        let mut tick = tokio::time::interval(refresh);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(msg) => {
                        let text = msg.value.as_str().map(|s| s.to_string()).unwrap_or_default();
                        match serde_json::from_str::<LiveMessage>(&text) {
                            Ok(m) => hub.dispatch(m),
                            Err(e) => tracing::debug!(error = %e, "a live message that does not read"),
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "the live subscription lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    heart.beat();
                    let tailed = hub.tailed();
                    let until = chrono::Utc::now() + chrono::Duration::from_std(refresh * 3).unwrap_or_default();
                    if let Err(e) = live::mark_tailed(&redis, &prefix, &tailed, until).await {
                        tracing::debug!(error = %e, "cannot mark the tailed accounts");
                    }
                }
            }
        }
    })
}

/// The subscriber the hub reads from.
pub async fn subscribe(
    settings: &sluice_shared::config::RedisSettings,
) -> anyhow::Result<SubscriberClient> {
    let subscriber = sluice_shared::redis::connect_subscriber(settings).await?;
    subscriber
        .subscribe(live::live_channel(&settings.key_prefix))
        .await?;
    Ok(subscriber)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(account: &str) -> LiveMessage {
        LiveMessage::Events {
            account_id: account.into(),
            events: Vec::new(),
            skipped: 0,
        }
    }

    #[test]
    fn messages_reach_their_account_only_and_tails_only_when_asked() {
        let hub = Arc::new(LiveHub::new(4));
        let mut a = hub.join("a");
        let mut b = hub.join("b");
        hub.dispatch(events("a"));
        assert!(a.rx.try_recv().is_err(), "not tailing yet");
        a.set_tailing(true);
        hub.dispatch(events("a"));
        assert!(a.rx.try_recv().is_ok());
        assert!(b.rx.try_recv().is_err());
        assert_eq!(hub.tailed(), vec!["a".to_owned()]);
    }

    #[test]
    fn a_slow_client_is_dropped_not_buffered() {
        let hub = Arc::new(LiveHub::new(2));
        let mut slow = hub.join("a");
        slow.set_tailing(true);
        for _ in 0..5 {
            hub.dispatch(events("a"));
        }
        // Two queued, then the third found the queue full and dropped the client.
        assert!(slow.rx.try_recv().is_ok());
        assert!(slow.rx.try_recv().is_ok());
        assert!(matches!(
            slow.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
