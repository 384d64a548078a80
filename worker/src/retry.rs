//! Retrying what the worker must not give up on while it runs (a write MongoDB did not take, a
//! dead letter, an acknowledgement): backoff with full jitter between attempts, the loop's
//! heartbeat before each wait (a loop that retries is alive, not stuck), and no new attempt once
//! shutdown is signalled. Nothing is lost by stopping: what was not done leaves its entries
//! unacknowledged, and the stream delivers them again.
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use crate::batching::backoff;

/// How an operation is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Attempts after which it gives up; `None`: only shutdown stops it.
    pub max_attempts: Option<u32>,
}

impl RetryPolicy {
    /// The wait after the failed attempt number `attempt` (from 0).
    pub fn delay(&self, attempt: u32) -> Duration {
        backoff(attempt, self.base, self.cap, rand::rng().random::<f64>())
    }
}

/// A failed attempt: why, and what the next attempt starts from (what is left to do).
pub struct Failed<S> {
    pub rest: S,
    pub error: String,
}

impl Failed<()> {
    /// The failure of an attempt that carries nothing over to the next.
    pub fn of(error: impl Display) -> Self {
        Failed {
            rest: (),
            error: error.to_string(),
        }
    }
}

/// Runs `attempt` until it succeeds and returns what it made; `None` when it did not succeed
/// before shutdown was signalled, or within the policy's attempts. Between attempts it calls
/// `beat` and waits the backoff, cut short by shutdown. Each attempt takes what the failed one
/// before it left (`start` for the first), so an attempt that did part of the work (a write that
/// stored some documents) hands only the rest to the next.
pub async fn retry_until_shutdown<S, T, F, Fut>(
    what: &str,
    policy: &RetryPolicy,
    beat: &(impl Fn() + Sync),
    shutdown: &mut watch::Receiver<bool>,
    start: S,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Result<T, Failed<S>>>,
{
    let mut rest = start;
    let mut failures = 0u32;
    loop {
        let failed = match attempt(rest).await {
            Ok(done) => return Some(done),
            Err(failed) => failed,
        };
        failures += 1;
        if *shutdown.borrow() {
            tracing::warn!(operation = what, error = %failed.error, attempts = failures,
                "shutting down before it succeeded; its entries stay pending for redelivery");
            return None;
        }
        if policy.max_attempts.is_some_and(|max| failures >= max) {
            tracing::warn!(operation = what, error = %failed.error, attempts = failures,
                "giving up; its entries stay pending for redelivery");
            return None;
        }
        let delay = policy.delay(failures - 1);
        tracing::warn!(operation = what, error = %failed.error, attempt = failures,
            retry_in_ms = delay.as_millis() as u64, "failed; retrying");
        beat();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    // No one can signal shutdown any more: wait the backoff all the same.
                    tokio::time::sleep(delay).await;
                }
            }
        }
        rest = failed.rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FAST: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
        max_attempts: None,
    };

    #[tokio::test]
    async fn each_attempt_takes_what_the_failed_one_left_until_one_succeeds() {
        let (_tx, mut shutdown) = watch::channel(false);
        let beats = AtomicU32::new(0);
        let beat = || {
            beats.fetch_add(1, Ordering::Relaxed);
        };
        let mut seen = Vec::new();
        let done = retry_until_shutdown("test", &FAST, &beat, &mut shutdown, 3u32, |left| {
            seen.push(left);
            async move {
                if left == 0 {
                    Ok("done")
                } else {
                    Err(Failed {
                        rest: left - 1,
                        error: format!("{left} left"),
                    })
                }
            }
        })
        .await;
        assert_eq!(done, Some("done"));
        assert_eq!(seen, [3, 2, 1, 0]);
        assert_eq!(beats.load(Ordering::Relaxed), 3, "a beat before each wait");
    }

    #[tokio::test]
    async fn no_attempt_follows_a_failure_once_shutdown_is_signalled() {
        let (tx, mut shutdown) = watch::channel(false);
        let calls = AtomicU32::new(0);
        let done: Option<()> =
            retry_until_shutdown("test", &FAST, &|| {}, &mut shutdown, (), |()| {
                if calls.fetch_add(1, Ordering::Relaxed) == 1 {
                    let _ = tx.send(true);
                }
                async { Err(Failed::of("refused")) }
            })
            .await;
        assert_eq!(done, None);
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn shutdown_cuts_the_wait_short() {
        let slow = RetryPolicy {
            base: Duration::from_secs(3_600),
            cap: Duration::from_secs(3_600),
            max_attempts: None,
        };
        let (tx, mut shutdown) = watch::channel(false);
        let started = std::time::Instant::now();
        let stop = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(true);
        };
        let retry = retry_until_shutdown("test", &slow, &|| {}, &mut shutdown, (), |()| async {
            Err::<(), _>(Failed::of("refused"))
        });
        let (done, ()) = tokio::join!(retry, stop);
        assert_eq!(done, None);
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_bounded_operation_gives_up_after_its_attempts() {
        let (_tx, mut shutdown) = watch::channel(false);
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_attempts: Some(6),
            ..FAST
        };
        let done: Option<()> =
            retry_until_shutdown("test", &policy, &|| {}, &mut shutdown, (), |()| {
                calls.fetch_add(1, Ordering::Relaxed);
                async { Err(Failed::of("refused")) }
            })
            .await;
        assert_eq!(done, None);
        assert_eq!(calls.load(Ordering::Relaxed), 6);
    }
}
