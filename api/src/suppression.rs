//! Suppressed users, as each api instance refuses their events: an account's suppressed
//! identities (userIds named by a regulation, and the anonymousIds linked to them) are read from
//! the account's Redis set (`<prefix>:{a<accountId>}:suppressed`, kept by the api on a request and
//! by the worker when it follows identity links), held in memory, dropped at once when any
//! instance announces a change of that account on `SUPPRESSION_CHANGES_CHANNEL`, and read again
//! after `privacy.suppression_refresh_secs` anyway, so a missed announcement heals. Ingest
//! depends on Redis already; it never waits on MongoDB (where the regulations and the
//! suppressions are recorded for audit and listing). While Redis cannot be read, the set last
//! read goes on being used; an account never read is answered 503 `unavailable` (as every event
//! is while Redis is unreachable): a suppressed user's event is never let through for lack of
//! the list.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use moka::future::Cache;
use sluice_shared::event::QueuedEvent;
use sluice_shared::names::suppressed_key;
use uuid::Uuid;

/// An account's suppressed identities.
#[derive(Debug, Default)]
pub struct Suppressed(HashSet<String>);

impl Suppressed {
    pub fn new(ids: HashSet<String>) -> Self {
        Self(ids)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `event` is of a suppressed identity: its userId, or the anonymousId a Segment or
    /// PostHog call carried beside it.
    pub fn covers(&self, event: &QueuedEvent) -> bool {
        !self.0.is_empty()
            && (self.0.contains(&event.user_id)
                || event
                    .origin
                    .as_ref()
                    .and_then(|o| o.anonymous_id.as_ref())
                    .is_some_and(|a| self.0.contains(a)))
    }
}

/// Counts the events answered `suppressed`.
pub fn count(n: usize) {
    if n > 0 {
        metrics::counter!("sluice_events_suppressed_total").increment(n as u64);
    }
}

#[derive(Clone)]
pub struct SuppressionCache {
    sets: Cache<Uuid, (Arc<Suppressed>, Instant)>,
    refresh: Duration,
    prefix: String,
}

impl SuppressionCache {
    pub fn new(prefix: &str, refresh: Duration) -> Self {
        Self {
            sets: Cache::builder().max_capacity(100_000).build(),
            refresh,
            prefix: prefix.to_owned(),
        }
    }

    /// The account's suppressed identities, from memory while fresh.
    pub async fn get(&self, redis: &Client, account: Uuid) -> anyhow::Result<Arc<Suppressed>> {
        let held = self.sets.get(&account).await;
        if let Some((set, loaded)) = &held {
            if loaded.elapsed() < self.refresh {
                return Ok(set.clone());
            }
        }
        let key = suppressed_key(&self.prefix, &account.to_string());
        match redis.smembers::<HashSet<String>, _>(key).await {
            Ok(ids) => {
                let set = Arc::new(Suppressed::new(ids));
                self.sets
                    .insert(account, (set.clone(), Instant::now()))
                    .await;
                Ok(set)
            }
            Err(e) => {
                metrics::counter!("sluice_suppression_load_failures_total").increment(1);
                match held {
                    Some((set, _)) => {
                        tracing::warn!(error = %e, %account, "cannot read the suppressed users; using the set last read");
                        Ok(set)
                    }
                    None => Err(anyhow::Error::new(e).context("reading the suppressed users")),
                }
            }
        }
    }

    pub async fn forget(&self, account: Uuid) {
        self.sets.invalidate(&account).await;
    }

    pub fn forget_all(&self) {
        self.sets.invalidate_all();
    }
}

/// Adds `ids` to the account's suppressed set (Redis), then tells every api instance.
pub async fn add(
    redis: &Client,
    cache: &SuppressionCache,
    account: Uuid,
    ids: &[String],
) -> anyhow::Result<()> {
    change(redis, cache, account, ids, true).await
}

/// Removes `ids` from the account's suppressed set (Redis), then tells every api instance.
pub async fn remove(
    redis: &Client,
    cache: &SuppressionCache,
    account: Uuid,
    ids: &[String],
) -> anyhow::Result<()> {
    change(redis, cache, account, ids, false).await
}

async fn change(
    redis: &Client,
    cache: &SuppressionCache,
    account: Uuid,
    ids: &[String],
    add: bool,
) -> anyhow::Result<()> {
    cache.forget(account).await;
    sluice_shared::redis::change_suppressed(redis, &cache.prefix, &account.to_string(), ids, add)
        .await
}

/// Tells every api instance (this one too) that `account`'s suppressed users changed.
pub async fn announce(
    redis: &Client,
    cache: &SuppressionCache,
    account: Uuid,
) -> anyhow::Result<()> {
    change(redis, cache, account, &[], true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: &str, anonymous: Option<&str>) -> QueuedEvent {
        let mut e: QueuedEvent = serde_json::from_value(serde_json::json!({
            "eventId": "e1", "accountId": "a", "eventType": "t", "userId": user,
            "timestamp": "2026-12-06T00:00:00.000Z", "receivedAt": "2026-12-06T00:00:00.000Z",
        }))
        .unwrap();
        if let Some(a) = anonymous {
            let mut origin =
                sluice_shared::event::Origin::new(sluice_shared::event::SourceKind::Segment);
            origin.anonymous_id = Some(a.into());
            e.origin = Some(Box::new(origin));
        }
        e
    }

    #[test]
    fn a_suppressed_user_or_a_linked_anonymous_id_is_covered_and_no_one_else() {
        let s = Suppressed::new(["u1".to_string(), "anon-9".to_string()].into());
        assert!(s.covers(&event("u1", None)));
        assert!(s.covers(&event("u2", Some("anon-9"))));
        assert!(!s.covers(&event("u2", Some("anon-8"))));
        assert!(!s.covers(&event("U1", None)));
        assert!(!Suppressed::default().covers(&event("u1", None)));
    }
}
