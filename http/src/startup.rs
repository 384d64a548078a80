//! Start-up and shutdown helpers: waiting for a dependency with backoff (from `shared`, which
//! its Redis connection uses too), and the signals.
pub use sluice_shared::startup::{retry_until_ok, startup_backoff};

/// Resolves on SIGTERM or SIGINT: what every service's `run_until_stopped` waits for.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
