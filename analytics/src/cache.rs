//! The answer cache: `moka` bounded by the answers' size, concurrent misses for one key computed
//! once (`try_get_with`), and a TTL checked against a clock the caller provides, so tests move time
//! instead of sleeping.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::AnalyticsError;

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

#[derive(Clone)]
struct Entry {
    at: Instant,
    value: Arc<Value>,
    bytes: u32,
}

pub struct TtlCache {
    inner: moka::future::Cache<String, Entry>,
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
    pub fn header(self) -> (&'static str, &'static str) {
        (
            "x-cache",
            match self {
                Source::Hit => "hit",
                Source::Miss => "miss",
            },
        )
    }
}

impl TtlCache {
    pub fn new(ttl: Duration, max_bytes: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, e: &Entry| e.bytes.saturating_add(k.len() as u32))
                // A backstop only: freshness is judged by `clock` below.
                .time_to_live(ttl.saturating_mul(2).max(Duration::from_secs(1)))
                .support_invalidation_closures()
                .build(),
            ttl,
            clock,
            computations: AtomicU64::new(0),
        }
    }

    /// Drops every answer whose key starts with `prefix` (after a write those answers describe).
    pub fn invalidate_prefix(&self, prefix: &str) {
        let prefix = prefix.to_owned();
        if let Err(e) = self
            .inner
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
        {
            tracing::warn!(error = %e, "cache invalidation failed");
        }
    }

    /// How many answers have been computed (misses that ran), for tests and metrics.
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::SeqCst)
    }

    pub async fn get_or_compute<F>(
        &self,
        key: String,
        compute: F,
    ) -> Result<(Arc<Value>, Source), AnalyticsError>
    where
        F: std::future::Future<Output = Result<Value, AnalyticsError>>,
    {
        if let Some(e) = self.inner.get(&key).await {
            if self.clock.now().saturating_duration_since(e.at) < self.ttl {
                metrics::counter!("sluice_analytics_cache_total", "result" => "hit").increment(1);
                return Ok((e.value, Source::Hit));
            }
            self.inner.invalidate(&key).await;
        }
        let ran = AtomicBool::new(false);
        let entry = self
            .inner
            .try_get_with(key, async {
                ran.store(true, Ordering::SeqCst);
                self.computations.fetch_add(1, Ordering::SeqCst);
                let value = compute.await?;
                let bytes = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
                Ok::<_, AnalyticsError>(Entry {
                    at: self.clock.now(),
                    value: Arc::new(value),
                    bytes: bytes.min(u32::MAX as usize) as u32,
                })
            })
            .await
            .map_err(|e| (*e).clone())?;
        let source = if ran.load(Ordering::SeqCst) {
            Source::Miss
        } else {
            Source::Hit
        };
        metrics::counter!("sluice_analytics_cache_total", "result" => if source == Source::Hit { "hit" } else { "miss" }).increment(1);
        Ok((entry.value, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cache(clock: Arc<ManualClock>) -> TtlCache {
        TtlCache::new(Duration::from_secs(10), 1 << 20, clock)
    }

    #[tokio::test]
    async fn a_fresh_answer_is_a_hit_and_an_expired_one_is_computed_again() {
        let clock = Arc::new(ManualClock::default());
        let c = cache(clock.clone());
        let (v, s) = c
            .get_or_compute("k".into(), async { Ok(json!(1)) })
            .await
            .unwrap();
        assert_eq!(((*v).clone(), s), (json!(1), Source::Miss));
        clock.advance(Duration::from_millis(9_999));
        let (v, s) = c
            .get_or_compute("k".into(), async { Ok(json!(2)) })
            .await
            .unwrap();
        assert_eq!(((*v).clone(), s), (json!(1), Source::Hit));
        clock.advance(Duration::from_millis(1));
        let (v, s) = c
            .get_or_compute("k".into(), async { Ok(json!(3)) })
            .await
            .unwrap();
        assert_eq!(((*v).clone(), s), (json!(3), Source::Miss));
        assert_eq!(c.computations(), 2);
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_compute_once() {
        let c = Arc::new(cache(Arc::new(ManualClock::default())));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let c = c.clone();
            tasks.spawn(async move {
                c.get_or_compute("same".into(), async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(json!("answer"))
                })
                .await
                .unwrap()
            });
        }
        let mut misses = 0;
        while let Some(r) = tasks.join_next().await {
            let (v, s) = r.unwrap();
            assert_eq!(*v, json!("answer"));
            misses += usize::from(s == Source::Miss);
        }
        assert_eq!(c.computations(), 1);
        assert_eq!(misses, 1);
    }

    #[tokio::test]
    async fn invalidated_answers_are_computed_again() {
        let c = cache(Arc::new(ManualClock::default()));
        c.get_or_compute("a|dlq|x".into(), async { Ok(json!(1)) })
            .await
            .unwrap();
        c.get_or_compute("b|dlq|x".into(), async { Ok(json!(1)) })
            .await
            .unwrap();
        c.invalidate_prefix("a|dlq|");
        let (_, s) = c
            .get_or_compute("a|dlq|x".into(), async { Ok(json!(2)) })
            .await
            .unwrap();
        assert_eq!(s, Source::Miss);
        let (_, s) = c
            .get_or_compute("b|dlq|x".into(), async { Ok(json!(2)) })
            .await
            .unwrap();
        assert_eq!(s, Source::Hit, "another account's answer stays");
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let c = cache(Arc::new(ManualClock::default()));
        let r = c
            .get_or_compute("e".into(), async {
                Err(AnalyticsError::unavailable("down"))
            })
            .await;
        assert!(r.is_err());
        let (v, _) = c
            .get_or_compute("e".into(), async { Ok(json!(1)) })
            .await
            .unwrap();
        assert_eq!(*v, json!(1));
    }
}
