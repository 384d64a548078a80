//! API-key authentication: SHA-256 of the presented key → in-process cache → Redis cache →
//! PostgreSQL. Unknown keys are cached as unknown for a short time so a flood of bad keys rarely
//! reaches PostgreSQL, and the lookups that do are capped so they cannot take the pool; a revoked
//! key is evicted everywhere through a pub/sub broadcast and refused through a Redis tombstone.
//!
//! While PostgreSQL is unreachable a key confirmed within `api.key_stale_if_error_secs` keeps
//! working (stale-if-error), from this instance's memory or from Redis, unless it was revoked.
//! The Redis record is [`crate::key_cache::KeyCacheRecord`]; revocation is [`crate::revocation`].
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpRequest;
use fred::prelude::*;
use fred::types::scripts::Script;
use moka::future::Cache;
use sluice_http::{ApiError, Heart};
use sluice_shared::apikey;
use sluice_shared::config::ApiSettings;
use sluice_shared::names::api_key_cache_key;
use sqlx::PgPool;
use uuid::Uuid;

use crate::key_cache::{CachedOwner, KeyCacheRecord, ABSENT};
use crate::store::{self, KeyOwner};

/// How long a request waits for a PostgreSQL key-lookup slot before it is refused (503).
const LOOKUP_SLOT_WAIT: Duration = Duration::from_millis(500);

/// Writes a key's cache entry unless a revocation's tombstone holds the place; answers 0 when it
/// does (the caller then refuses the key), 1 when written.
const FILL_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"#;

#[derive(Clone)]
pub struct KeyAuth {
    /// Confirmed within `key_cache_ttl_secs`.
    known: Cache<String, KeyOwner>,
    /// Confirmed within `key_stale_if_error_secs`: served only while PostgreSQL cannot answer.
    stale: Cache<String, KeyOwner>,
    unknown: Cache<String, ()>,
    redis: Client,
    pool: PgPool,
    fill: Script,
    lookups: Arc<tokio::sync::Semaphore>,
    redis_fresh_secs: u64,
    redis_negative_secs: u64,
    stale_secs: u64,
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

/// What Redis said about a key.
enum Cached {
    Revoked,
    Fresh(KeyOwner),
    /// Past its fresh time: PostgreSQL is asked, and this is served only if it cannot answer.
    Stale(KeyOwner),
    Missing,
}

impl KeyAuth {
    pub fn new(redis: Client, pool: PgPool, settings: &ApiSettings) -> Self {
        let stale_secs = settings.key_stale_if_error_secs;
        Self {
            known: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(settings.key_cache_ttl_secs))
                .build(),
            stale: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(stale_secs.max(1)))
                .build(),
            unknown: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(settings.negative_key_cache_ttl_secs))
                .build(),
            redis,
            pool,
            fill: Script::from_lua(FILL_LUA),
            lookups: Arc::new(tokio::sync::Semaphore::new(
                settings.key_lookup_concurrency.max(1),
            )),
            redis_fresh_secs: settings.redis_key_cache_ttl_secs.max(1),
            redis_negative_secs: settings.redis_negative_key_cache_ttl_secs.max(1),
            stale_secs,
            used: Arc::default(),
        }
    }

    pub async fn authenticate(&self, req: &HttpRequest) -> Result<KeyOwner, ApiError> {
        self.authenticate_key(presented_key(req).ok_or(ApiError::Unauthorized)?)
            .await
    }

    /// The owner of `key`, however it was presented (a header, HTTP Basic, a body's `writeKey`).
    pub async fn authenticate_key(&self, key: &str) -> Result<KeyOwner, ApiError> {
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

    /// Memory, then Redis, then PostgreSQL; a key PostgreSQL cannot be asked about is served
    /// stale if it was confirmed recently enough.
    async fn lookup(&self, hash: &str) -> Result<Option<KeyOwner>, ApiError> {
        if let Some(owner) = self.known.get(hash).await {
            return Ok(Some(owner));
        }
        if self.unknown.contains_key(hash) {
            return Ok(None);
        }
        let cache_key = api_key_cache_key(hash);
        let redis_stale = match self.read_redis(&cache_key).await {
            Cached::Revoked => {
                self.mark_unknown(hash).await;
                return Ok(None);
            }
            Cached::Fresh(owner) => return Ok(self.accept_cached(hash, &cache_key, owner).await),
            Cached::Stale(owner) => Some(owner),
            Cached::Missing => None,
        };
        match self.find_in_postgres(hash).await {
            Ok(owner) => Ok(self.settle(hash, &cache_key, owner).await),
            Err(e) => self.stale_if_error(hash, redis_stale, e).await,
        }
    }

    /// An owner Redis holds as fresh, unless a revocation lays its tombstone meanwhile.
    async fn accept_cached(
        &self,
        hash: &str,
        cache_key: &str,
        owner: KeyOwner,
    ) -> Option<KeyOwner> {
        self.remember(hash, owner).await;
        // A revocation may have laid its tombstone and broadcast since the read: look again now
        // that the owner is cached, so a later broadcast finds it to evict.
        if self.tombstoned(cache_key).await {
            self.forget(hash).await;
            return None;
        }
        Some(owner)
    }

    /// Asks PostgreSQL, in one of the bounded lookup slots. A slot is waited for briefly (a cold
    /// cache under concurrent requests of one key is normal), never long: a flood of unknown keys
    /// gets 503s, not the pool.
    async fn find_in_postgres(&self, hash: &str) -> Result<Option<KeyOwner>, ApiError> {
        let slot =
            tokio::time::timeout(LOOKUP_SLOT_WAIT, self.lookups.clone().acquire_owned()).await;
        match slot {
            Ok(Ok(_permit)) => store::find_live_key(&self.pool, hash)
                .await
                .map_err(ApiError::AccountsUnavailable),
            Ok(Err(_)) | Err(_) => {
                metrics::counter!("sluice_key_lookups_refused_total").increment(1);
                Err(ApiError::KeyLookupsBusy)
            }
        }
    }

    /// Caches what PostgreSQL answered, here and in Redis.
    async fn settle(
        &self,
        hash: &str,
        cache_key: &str,
        owner: Option<KeyOwner>,
    ) -> Option<KeyOwner> {
        match owner {
            Some(o) => {
                self.remember(hash, o).await;
                // The fill refuses to cover a tombstone: a revocation that committed after this
                // read of PostgreSQL wins, and the owner just cached is forgotten again.
                if !self.fill_redis(cache_key, Some(o)).await {
                    self.forget(hash).await;
                    self.unknown.insert(hash.to_owned(), ()).await;
                    return None;
                }
                Some(o)
            }
            None => {
                self.stale.invalidate(hash).await;
                self.fill_redis(cache_key, None).await;
                self.unknown.insert(hash.to_owned(), ()).await;
                None
            }
        }
    }

    async fn mark_unknown(&self, hash: &str) {
        self.stale.invalidate(hash).await;
        self.unknown.insert(hash.to_owned(), ()).await;
    }

    async fn read_redis(&self, cache_key: &str) -> Cached {
        match self.redis.get::<Option<String>, _>(cache_key).await {
            Ok(None) => Cached::Missing,
            Ok(Some(v)) => match KeyCacheRecord::decode(&v) {
                Some(KeyCacheRecord::Absent) => Cached::Revoked,
                Some(KeyCacheRecord::Owner(o)) if o.is_stale(now_unix()) => {
                    Cached::Stale(o.owner())
                }
                Some(KeyCacheRecord::Owner(o)) => Cached::Fresh(o.owner()),
                None => Cached::Missing,
            },
            Err(e) => {
                tracing::warn!(error = %e, "Redis key cache unreachable; asking PostgreSQL");
                Cached::Missing
            }
        }
    }

    async fn tombstoned(&self, cache_key: &str) -> bool {
        matches!(
            self.redis.get::<Option<String>, _>(cache_key).await,
            Ok(Some(v)) if KeyCacheRecord::decode(&v) == Some(KeyCacheRecord::Absent)
        )
    }

    /// PostgreSQL could not answer: a key confirmed recently enough is served, anything else
    /// gets the error.
    async fn stale_if_error(
        &self,
        hash: &str,
        redis_stale: Option<KeyOwner>,
        error: ApiError,
    ) -> Result<Option<KeyOwner>, ApiError> {
        if self.stale_secs == 0 {
            return Err(error);
        }
        let owner = match self.stale.get(hash).await {
            Some(o) => Some(o),
            None => redis_stale,
        };
        let Some(owner) = owner else {
            return Err(error);
        };
        match &error {
            ApiError::AccountsUnavailable(e) => {
                tracing::warn!(error = ?e, key_id = %owner.key_id, "PostgreSQL unreachable; serving a known key stale");
            }
            _ => {
                tracing::debug!(key_id = %owner.key_id, "key lookups busy; serving a known key stale")
            }
        }
        metrics::counter!("sluice_keys_served_stale_total").increment(1);
        // Cached as fresh for a moment so the outage is not asked about on every request; the
        // stale entry keeps its age, so the window stays bounded.
        self.known.insert(hash.to_owned(), owner).await;
        Ok(Some(owner))
    }

    async fn remember(&self, hash: &str, owner: KeyOwner) {
        self.known.insert(hash.to_owned(), owner).await;
        if self.stale_secs > 0 {
            self.stale.insert(hash.to_owned(), owner).await;
        }
    }

    /// Writes the Redis entry (fresh for `redis_key_cache_ttl_secs`, kept for the stale window
    /// after that) unless a tombstone holds it; `false` when one does.
    async fn fill_redis(&self, cache_key: &str, owner: Option<KeyOwner>) -> bool {
        let (record, ttl) = match owner {
            Some(o) => (
                KeyCacheRecord::Owner(CachedOwner::new(
                    o,
                    now_unix() + self.redis_fresh_secs as i64,
                )),
                self.redis_fresh_secs + self.stale_secs,
            ),
            None => (KeyCacheRecord::Absent, self.redis_negative_secs),
        };
        let r: Result<i64, _> = self
            .fill
            .evalsha_with_reload(
                &self.redis,
                vec![cache_key.to_owned()],
                vec![record.encode(), ttl.to_string(), ABSENT.to_owned()],
            )
            .await;
        match r {
            Ok(written) => written == 1,
            Err(e) => {
                tracing::warn!(error = %e, "could not fill the Redis key cache");
                true
            }
        }
    }

    pub async fn forget(&self, hash: &str) {
        self.known.invalidate(hash).await;
        self.stale.invalidate(hash).await;
    }

    pub fn forget_all(&self) {
        self.known.invalidate_all();
        self.stale.invalidate_all();
    }

    /// Keys used since the last call.
    pub fn take_used(&self) -> Vec<Uuid> {
        self.used
            .lock()
            .map(|mut u| u.drain().collect())
            .unwrap_or_default()
    }
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Writes `lastUsedAt` of the keys used since the last write, every `every`; beats `heart` each
/// round (a failed write is logged and retried with the next round's keys).
pub fn spawn_last_used_writer(
    auth: KeyAuth,
    pool: PgPool,
    every: Duration,
    heart: Heart,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let used = auth.take_used();
            if let Err(e) = store::touch_keys(&pool, &used).await {
                tracing::warn!(error = ?e, keys = used.len(), "could not record lastUsedAt");
            }
            heart.beat();
        }
    })
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
}
