//! API-key authentication: SHA-256 of the presented key → in-process cache → Redis cache →
//! PostgreSQL. Unknown keys are cached as unknown for a short time so a flood of bad keys never
//! reaches PostgreSQL; a revoked key is evicted everywhere through a pub/sub broadcast.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpRequest;
use fred::prelude::*;
use moka::future::Cache;
use sluice_shared::apikey;
use sluice_shared::names::{api_key_cache_key, KEY_REVOCATIONS_CHANNEL};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::{self, KeyOwner};

/// How long Redis remembers a key's owner, and a revoked or unknown key's absence.
const REDIS_POSITIVE_TTL_SECS: i64 = 300;
const REDIS_NEGATIVE_TTL_SECS: i64 = 30;
const REDIS_TOMBSTONE_TTL_SECS: i64 = 3_600;
const ABSENT: &str = "-";

#[derive(Clone)]
pub struct KeyAuth {
    known: Cache<String, KeyOwner>,
    unknown: Cache<String, ()>,
    redis: Client,
    pool: PgPool,
    used: Arc<Mutex<HashSet<Uuid>>>,
}

/// The key in `x-api-key`, or in `Authorization: Bearer` when it carries the key prefix.
pub fn presented_key(req: &HttpRequest) -> Option<&str> {
    if let Some(k) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim()).filter(|k| !k.is_empty());
    }
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(apikey::KEY_PREFIX))
}

impl KeyAuth {
    pub fn new(
        redis: Client,
        pool: PgPool,
        positive_ttl: Duration,
        negative_ttl: Duration,
    ) -> Self {
        Self {
            known: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(positive_ttl)
                .build(),
            unknown: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(negative_ttl)
                .build(),
            redis,
            pool,
            used: Arc::default(),
        }
    }

    pub async fn authenticate(&self, req: &HttpRequest) -> Result<KeyOwner, ApiError> {
        let key = presented_key(req).ok_or(ApiError::Unauthorized)?;
        // Keys are far shorter than this; a longer header is not worth hashing.
        if key.len() > 256 {
            return Err(ApiError::Unauthorized);
        }
        let hash = apikey::hash(key);
        let owner = self.lookup(&hash).await?.ok_or(ApiError::Unauthorized)?;
        if let Ok(mut used) = self.used.lock() {
            used.insert(owner.key_id);
        }
        Ok(owner)
    }

    async fn lookup(&self, hash: &str) -> Result<Option<KeyOwner>, ApiError> {
        if let Some(owner) = self.known.get(hash).await {
            return Ok(Some(owner));
        }
        if self.unknown.contains_key(hash) {
            return Ok(None);
        }
        let cache_key = api_key_cache_key(hash);
        let cached = match self.redis.get::<Option<String>, _>(&cache_key).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "Redis key cache unreachable; asking PostgreSQL");
                None
            }
        };
        let owner = match cached.as_deref() {
            Some(ABSENT) => None,
            Some(v) => parse_owner(v),
            None => {
                let owner = store::find_live_key(&self.pool, hash)
                    .await
                    .map_err(ApiError::Unavailable)?;
                self.fill_redis(&cache_key, owner).await;
                owner
            }
        };
        match owner {
            Some(o) => self.known.insert(hash.to_owned(), o).await,
            None => self.unknown.insert(hash.to_owned(), ()).await,
        }
        Ok(owner)
    }

    /// `SET NX`, so a revocation's tombstone is never overwritten by a fill that read PostgreSQL
    /// just before the revocation.
    async fn fill_redis(&self, cache_key: &str, owner: Option<KeyOwner>) {
        let (value, ttl) = match owner {
            Some(o) => (cache_value(&o), REDIS_POSITIVE_TTL_SECS),
            None => (ABSENT.to_owned(), REDIS_NEGATIVE_TTL_SECS),
        };
        let r: Result<Value, _> = self
            .redis
            .set(
                cache_key,
                value,
                Some(Expiration::EX(ttl)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not fill the Redis key cache");
        }
    }

    pub async fn forget(&self, hash: &str) {
        self.known.invalidate(hash).await;
    }

    /// Keys used since the last call.
    pub fn take_used(&self) -> Vec<Uuid> {
        self.used
            .lock()
            .map(|mut u| u.drain().collect())
            .unwrap_or_default()
    }
}

/// `keyId:accountId[:perSec:burst]`, the Redis cache's form of a key's owner.
fn cache_value(o: &KeyOwner) -> String {
    match o.quota {
        Some((r, b)) => format!("{}:{}:{r}:{b}", o.key_id, o.account_id),
        None => format!("{}:{}", o.key_id, o.account_id),
    }
}

fn parse_owner(v: &str) -> Option<KeyOwner> {
    let mut parts = v.split(':');
    let key_id = parts.next()?.parse().ok()?;
    let account_id = parts.next()?.parse().ok()?;
    let quota = match (parts.next(), parts.next()) {
        (Some(r), Some(b)) => Some((r.parse().ok()?, b.parse().ok()?)),
        _ => None,
    };
    Some(KeyOwner {
        key_id,
        account_id,
        quota,
    })
}

/// Revokes a key everywhere: PostgreSQL, a tombstone in the Redis cache, and a broadcast that
/// evicts it from every api instance's in-process cache.
pub async fn revoke(
    pool: &PgPool,
    redis: &Client,
    key_id: Uuid,
    account_id: Option<Uuid>,
) -> anyhow::Result<bool> {
    let Some(hash) = store::revoke_key(pool, key_id, account_id).await? else {
        return Ok(false);
    };
    redis
        .set::<Value, _, _>(
            api_key_cache_key(&hash),
            ABSENT,
            Some(Expiration::EX(REDIS_TOMBSTONE_TTL_SECS)),
            None,
            false,
        )
        .await?;
    redis
        .publish::<Value, _, _>(KEY_REVOCATIONS_CHANNEL, hash)
        .await?;
    Ok(true)
}

/// Evicts every key announced on the revocation channel from this instance's cache.
pub async fn listen_for_revocations(
    settings: sluice_shared::config::RedisSettings,
    auth: KeyAuth,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let subscriber = sluice_shared::redis::connect_subscriber(&settings).await?;
    let _resubscribe = subscriber.manage_subscriptions();
    subscriber.subscribe(KEY_REVOCATIONS_CHANNEL).await?;
    let mut rx = subscriber.message_rx();
    Ok(tokio::spawn(async move {
        let _keep = subscriber;
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    if let Some(hash) = msg.value.as_str() {
                        auth.forget(&hash).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    // Missed announcements: forget everything rather than keep a revoked key.
                    tracing::warn!(missed = n, "revocation messages lost; clearing key cache");
                    auth.known.invalidate_all();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_key_comes_from_x_api_key_or_a_prefixed_bearer_token() {
        let r = TestRequest::default()
            .insert_header(("x-api-key", "slk_abc"))
            .to_http_request();
        assert_eq!(presented_key(&r), Some("slk_abc"));
        let r = TestRequest::default()
            .insert_header(("Authorization", "Bearer slk_abc"))
            .to_http_request();
        assert_eq!(presented_key(&r), Some("slk_abc"));
        let jwt = TestRequest::default()
            .insert_header(("Authorization", "Bearer eyJhbGciOi"))
            .to_http_request();
        assert_eq!(presented_key(&jwt), None);
        assert_eq!(
            presented_key(&TestRequest::default().to_http_request()),
            None
        );
    }

    #[test]
    fn cached_owners_parse_back() {
        let mut o = KeyOwner {
            key_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            quota: None,
        };
        assert_eq!(parse_owner(&cache_value(&o)), Some(o));
        o.quota = Some((5, 10));
        assert_eq!(parse_owner(&cache_value(&o)), Some(o));
        assert_eq!(parse_owner("garbage"), None);
    }
}
