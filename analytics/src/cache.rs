//! The answer cache: `moka` bounded by the answers' size, concurrent misses for one key computed
//! once (`try_get_with`), and a TTL checked against a clock the caller provides, so tests move time
//! instead of sleeping. An answer is kept as its encoded JSON, under a typed [`CacheKey`].
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use anyhow::Context;
use serde::Serialize;
use sluice_http::ApiError;
use uuid::Uuid;

use crate::params::{Bucket, Cursor, Range};

pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(Mutex<Instant>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(Mutex::new(Instant::now()))
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|e| *e.into_inner())
    }
}

/// What an answer is cached under: the endpoint, the account, and every parameter the answer
/// depends on. Two requests share an answer exactly when their keys are equal; no account's key
/// equals another's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(
    tag = "answer",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum CacheKey {
    Summary {
        account: Uuid,
        range: Range,
    },
    Timeseries {
        account: Uuid,
        range: Range,
        bucket: Bucket,
        event_type: Option<String>,
    },
    UserEvents {
        account: Uuid,
        user_id: String,
        limit: i64,
        before: Option<Cursor>,
    },
    Pipeline {
        account: Uuid,
    },
}

impl CacheKey {
    /// The key as JSON: stable (the same key always encodes the same) and unambiguous (free text
    /// such as a userId cannot make two keys encode alike).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Clone)]
struct Entry {
    at: Instant,
    body: Bytes,
    /// The answer's and the key's bytes: what the cache's bound counts.
    weight: u32,
}

pub struct TtlCache {
    inner: moka::future::Cache<CacheKey, Entry>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    computations: AtomicU64,
}

/// Whether an answer came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hit,
    Miss,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Miss => "miss",
        }
    }

    /// The `x-cache` header every answer carries.
    pub fn header(self) -> (&'static str, &'static str) {
        ("x-cache", self.as_str())
    }
}

impl TtlCache {
    pub fn new(ttl: Duration, max_bytes: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_: &CacheKey, e: &Entry| e.weight)
                // A backstop only: freshness is judged by `clock` below.
                .time_to_live(ttl.saturating_mul(2).max(Duration::from_secs(1)))
                .build(),
            ttl,
            clock,
            computations: AtomicU64::new(0),
        }
    }

    /// How many answers have been computed (misses that ran), for tests and metrics.
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::SeqCst)
    }

    /// The encoded answer under `key`: the cached one while it is fresh, else `compute`d (once,
    /// however many requests miss together) and kept. Errors are not kept.
    pub async fn get_or_compute<V, F>(
        &self,
        key: CacheKey,
        compute: F,
    ) -> Result<(Bytes, Source), ApiError>
    where
        V: Serialize,
        F: Future<Output = Result<V, ApiError>>,
    {
        if let Some(e) = self.inner.get(&key).await {
            if self.clock.now().saturating_duration_since(e.at) < self.ttl {
                count(Source::Hit);
                return Ok((e.body, Source::Hit));
            }
            self.inner.invalidate(&key).await;
        }
        let ran = AtomicBool::new(false);
        let key_bytes = key.encode().len();
        let entry = self
            .inner
            .try_get_with(key, async {
                ran.store(true, Ordering::SeqCst);
                self.computations.fetch_add(1, Ordering::SeqCst);
                let answer = compute.await?;
                let body = serde_json::to_vec(&answer)
                    .context("encoding an analytics answer")
                    .map_err(ApiError::Unexpected)?;
                let weight = (body.len() + key_bytes).min(u32::MAX as usize) as u32;
                Ok::<_, ApiError>(Entry {
                    at: self.clock.now(),
                    body: Bytes::from(body),
                    weight,
                })
            })
            .await
            .map_err(for_each_waiter)?;
        let source = if ran.load(Ordering::SeqCst) {
            Source::Miss
        } else {
            Source::Hit
        };
        count(source);
        Ok((entry.body, source))
    }
}

fn count(source: Source) {
    metrics::counter!("sluice_analytics_cache_total", "result" => source.as_str()).increment(1);
}

/// A failed computation's error, for each request that waited on it: the same status and code
/// for all of them, the cause (as text) kept for each one's log line.
fn for_each_waiter(shared: Arc<ApiError>) -> ApiError {
    Arc::try_unwrap(shared).unwrap_or_else(|shared| {
        let cause = |e: &anyhow::Error| anyhow::anyhow!("{e:#}");
        match &*shared {
            ApiError::NotFound(message) => ApiError::NotFound(message.clone()),
            ApiError::InvalidRequest { message, details } => ApiError::InvalidRequest {
                message: message.clone(),
                details: details.clone(),
            },
            ApiError::QueueUnavailable(e) => ApiError::QueueUnavailable(cause(e)),
            ApiError::StoreUnavailable(e) => ApiError::StoreUnavailable(cause(e)),
            other => ApiError::Unexpected(anyhow::anyhow!("{other}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;

    fn cache(clock: Arc<ManualClock>) -> TtlCache {
        TtlCache::new(Duration::from_secs(10), 1 << 20, clock)
    }

    fn key(n: u128) -> CacheKey {
        CacheKey::Pipeline {
            account: Uuid::from_u128(n),
        }
    }

    #[tokio::test]
    async fn a_fresh_answer_is_a_hit_and_an_expired_one_is_computed_again() {
        let clock = Arc::new(ManualClock::default());
        let c = cache(clock.clone());
        let (v, s) = c.get_or_compute(key(1), async { Ok(1) }).await.unwrap();
        assert_eq!((&v[..], s), (&b"1"[..], Source::Miss));
        clock.advance(Duration::from_millis(9_999));
        let (v, s) = c.get_or_compute(key(1), async { Ok(2) }).await.unwrap();
        assert_eq!((&v[..], s), (&b"1"[..], Source::Hit));
        clock.advance(Duration::from_millis(1));
        let (v, s) = c.get_or_compute(key(1), async { Ok(3) }).await.unwrap();
        assert_eq!((&v[..], s), (&b"3"[..], Source::Miss));
        assert_eq!(c.computations(), 2);
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_compute_once() {
        let c = Arc::new(cache(Arc::new(ManualClock::default())));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let c = c.clone();
            tasks.spawn(async move {
                c.get_or_compute(key(1), async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok("answer")
                })
                .await
                .unwrap()
            });
        }
        let mut misses = 0;
        while let Some(r) = tasks.join_next().await {
            let (v, s) = r.unwrap();
            assert_eq!(&v[..], br#""answer""#);
            misses += usize::from(s == Source::Miss);
        }
        assert_eq!(c.computations(), 1);
        assert_eq!(misses, 1);
    }

    #[tokio::test]
    async fn each_account_has_answers_of_its_own() {
        let c = cache(Arc::new(ManualClock::default()));
        c.get_or_compute(key(1), async { Ok("a") }).await.unwrap();
        let (v, s) = c.get_or_compute(key(2), async { Ok("b") }).await.unwrap();
        assert_eq!((&v[..], s), (&br#""b""#[..], Source::Miss));
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let c = cache(Arc::new(ManualClock::default()));
        let r = c
            .get_or_compute(key(1), async {
                Err::<i32, _>(ApiError::StoreUnavailable(anyhow::anyhow!("down")))
            })
            .await;
        assert!(r.is_err());
        let (v, _) = c.get_or_compute(key(1), async { Ok(1) }).await.unwrap();
        assert_eq!(&v[..], b"1");
    }

    #[tokio::test]
    async fn every_request_waiting_on_a_failed_computation_gets_its_status() {
        let c = Arc::new(cache(Arc::new(ManualClock::default())));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let c = c.clone();
            tasks.spawn(async move {
                c.get_or_compute(key(1), async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<i32, _>(ApiError::StoreUnavailable(
                        anyhow::anyhow!("refused").context("reading rollups"),
                    ))
                })
                .await
                .unwrap_err()
            });
        }
        while let Some(r) = tasks.join_next().await {
            let e = r.unwrap();
            assert_eq!(e.status_code().as_u16(), 503, "{e}");
            let ApiError::StoreUnavailable(cause) = e else {
                panic!("{e}")
            };
            assert!(format!("{cause:#}").contains("refused"), "{cause:#}");
        }
    }

    #[test]
    fn keys_encode_stably_and_unambiguously() {
        let account = Uuid::from_u128(7);
        assert_eq!(
            CacheKey::Summary {
                account,
                range: Range::H24
            }
            .encode(),
            r#"{"answer":"summary","account":"00000000-0000-0000-0000-000000000007","range":"24h"}"#
        );
        let page = |user_id: &str, before: Option<&str>| CacheKey::UserEvents {
            account,
            user_id: user_id.into(),
            limit: 50,
            before: before.map(|b| Cursor::parse(b).unwrap()),
        };
        // Separators inside free text cannot make two different keys alike.
        let (a, b) = (page("u|50|", Some("5:x")), page("u", Some("5:x|50|")));
        assert_ne!(a.encode(), b.encode());
        assert_ne!(a, b);
        assert_eq!(page("u", None).encode(), page("u", None).encode());
    }
}
