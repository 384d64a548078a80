//! Revoking a key everywhere: PostgreSQL, a tombstone in the Redis key cache, and a broadcast
//! that evicts it from every api instance's memory; and the listener that hears the broadcast.
//! The contract refuses a revoked key within a second, so the listener's heart beats only while
//! its subscription is known to deliver (it hears its own probes): a dead one shows on
//! `/api/live`.
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use sluice_http::{ApiError, Heart};
use sluice_shared::config::RedisSettings;
use sluice_shared::names::{
    api_key_cache_key, KEY_REVOCATIONS_CHANNEL, PLAN_CHANGES_CHANNEL, SUPPRESSION_CHANGES_CHANNEL,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::KeyAuth;
use crate::key_cache::KeyCacheRecord;
use crate::plans::cache::PlanCache;
use crate::store;
use crate::suppression::SuppressionCache;

/// How often the listener sends itself a probe through Redis.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// What starts a probe; a revocation is a key's SHA-256 in hex, which never does. (Instances of
/// the last release take a probe for a key nobody holds: forgetting it changes nothing.)
const PROBE_PREFIX: &str = "probe:";

/// Revokes a key everywhere; `Ok(false)`: no such key (of `account_id`, when given). An already
/// revoked key is revoked again (tombstone and broadcast sent anew), so a revocation cut short by
/// Redis completes when retried. The tombstone lives `tombstone_ttl_secs`
/// (`api.key_tombstone_ttl_secs`: it must outlast the stale-if-error window).
pub async fn revoke(
    pool: &PgPool,
    redis: &Client,
    key_id: Uuid,
    account_id: Option<Uuid>,
    tombstone_ttl_secs: u64,
) -> Result<bool, ApiError> {
    let Some(hash) = store::revoke_key(pool, key_id, account_id)
        .await
        .map_err(ApiError::AccountsUnavailable)?
    else {
        return Ok(false);
    };
    redis
        .set::<Value, _, _>(
            api_key_cache_key(&hash),
            KeyCacheRecord::Absent.encode(),
            Some(Expiration::EX(tombstone_ttl_secs.max(1) as i64)),
            None,
            false,
        )
        .await
        .map_err(|e| {
            ApiError::QueueUnavailable(anyhow::Error::new(e).context("writing a key's tombstone"))
        })?;
    redis
        .publish::<Value, _, _>(KEY_REVOCATIONS_CHANNEL, hash)
        .await
        .map_err(|e| {
            ApiError::QueueUnavailable(
                anyhow::Error::new(e).context("broadcasting a key's revocation"),
            )
        })?;
    Ok(true)
}

/// A subscriber to the revocation, tracking-plan and suppression channels (it resubscribes by
/// itself after a reconnect).
pub async fn subscribe(settings: &RedisSettings) -> anyhow::Result<SubscriberClient> {
    let subscriber = sluice_shared::redis::connect_subscriber(settings).await?;
    subscriber.subscribe(KEY_REVOCATIONS_CHANNEL).await?;
    subscriber.subscribe(PLAN_CHANGES_CHANNEL).await?;
    subscriber.subscribe(SUPPRESSION_CHANGES_CHANNEL).await?;
    Ok(subscriber)
}

/// Evicts every key announced on the revocation channel from this instance's cache. Every
/// [`PROBE_EVERY`] the listener also publishes a probe of its own on the channel: `heart` beats
/// when a probe (or a revocation) comes back through the subscription, so it beats only while a
/// revocation would reach this instance.
pub fn spawn_listener(
    subscriber: SubscriberClient,
    redis: Client,
    auth: KeyAuth,
    plans: PlanCache,
    suppressions: SuppressionCache,
    heart: Heart,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _resubscribe = subscriber.manage_subscriptions();
        let mut rx = subscriber.message_rx();
        let probe = format!("{PROBE_PREFIX}{}", Uuid::new_v4());
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(msg) if &*msg.channel == PLAN_CHANGES_CHANNEL => {
                        if let Some(account) = msg.value.as_str().and_then(|a| a.parse().ok()) {
                            plans.forget(account).await;
                        }
                    }
                    Ok(msg) if &*msg.channel == SUPPRESSION_CHANGES_CHANNEL => {
                        if let Some(account) = msg.value.as_str().and_then(|a| a.parse().ok()) {
                            suppressions.forget(account).await;
                        }
                    }
                    Ok(msg) => {
                        match msg.value.as_str() {
                            Some(text) if text.starts_with(PROBE_PREFIX) => {}
                            Some(hash) => auth.forget(&hash).await,
                            None => {}
                        }
                        heart.beat();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Missed announcements: forget everything rather than keep a revoked key
                        // or an old plan.
                        tracing::warn!(missed = n, "announcements lost; clearing key and plan caches");
                        auth.forget_all();
                        plans.forget_all();
                        suppressions.forget_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => send_probe(&redis, &probe),
            }
        }
    })
}

/// Publishes `probe` on the revocation channel, off the listener's loop (which must not wait on
/// a Redis that does not answer).
fn send_probe(redis: &Client, probe: &str) {
    let (redis, probe) = (redis.clone(), probe.to_owned());
    tokio::spawn(async move {
        let publish = redis.publish::<Value, _, _>(KEY_REVOCATIONS_CHANNEL, probe);
        let _ = tokio::time::timeout(PROBE_EVERY, publish).await;
    });
}
