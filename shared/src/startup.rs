//! Waiting for a dependency at start-up: retries with a capped, doubling backoff.
use std::time::Duration;

/// The wait before start-up attempt `attempt` (0-based) to reach a dependency: 100 ms doubling to
/// at most 5 s. Pure.
pub fn startup_backoff(attempt: u32) -> Duration {
    const BASE_MS: u64 = 100;
    const CAP_MS: u64 = 5_000;
    Duration::from_millis(BASE_MS.saturating_mul(1u64 << attempt.min(16)).min(CAP_MS))
}

/// Tries `attempt` until it succeeds, waiting `startup_backoff` between tries and logging each
/// failure: a service waits for a dependency that is not up yet (or still loading) instead of
/// exiting.
pub async fn retry_until_ok<T, F, Fut>(what: &'static str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut n = 0u32;
    loop {
        match attempt().await {
            Ok(v) => {
                if n > 0 {
                    tracing::info!(dependency = what, attempts = n + 1, "connected");
                }
                return v;
            }
            Err(e) => {
                let wait = startup_backoff(n);
                tracing::warn!(
                    dependency = what,
                    error = format!("{e:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "start-up connection failed; retrying"
                );
                metrics::counter!("sluice_startup_connect_retries_total", "dependency" => what)
                    .increment(1);
                tokio::time::sleep(wait).await;
                n = n.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_retries_back_off_to_a_cap() {
        assert_eq!(startup_backoff(0), Duration::from_millis(100));
        assert_eq!(startup_backoff(1), Duration::from_millis(200));
        assert_eq!(startup_backoff(5), Duration::from_millis(3_200));
        assert_eq!(startup_backoff(6), Duration::from_secs(5));
        assert_eq!(startup_backoff(u32::MAX), Duration::from_secs(5));
    }
}
