//! Liveness and readiness state every service shares: readiness flips to 503 before shutdown;
//! liveness follows heartbeats of the loops that matter rather than answering a constant 200.
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use serde_json::json;

#[derive(Debug)]
struct Inner {
    ready: AtomicBool,
    /// Unix millis of the last heartbeat of the loop liveness follows; 0 when none is watched.
    heartbeat_ms: AtomicI64,
    stale_after: Duration,
}

#[derive(Debug, Clone)]
pub struct Lifecycle(Arc<Inner>);

impl Lifecycle {
    pub fn new(stale_after: Duration) -> Self {
        Self(Arc::new(Inner {
            ready: AtomicBool::new(false),
            heartbeat_ms: AtomicI64::new(0),
            stale_after,
        }))
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst)
    }

    pub fn beat(&self) {
        self.0
            .heartbeat_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Alive unless a watched loop has stopped beating.
    pub fn is_alive(&self) -> bool {
        let last = self.0.heartbeat_ms.load(Ordering::Relaxed);
        last == 0
            || chrono::Utc::now().timestamp_millis() - last <= self.0.stale_after.as_millis() as i64
    }

    pub fn ready_response(&self) -> HttpResponse {
        if self.is_ready() {
            HttpResponse::Ok().json(json!({"status": "ready"}))
        } else {
            HttpResponse::ServiceUnavailable().json(json!({"status": "not_ready"}))
        }
    }

    pub fn live_response(&self) -> HttpResponse {
        if self.is_alive() {
            HttpResponse::Ok().json(json!({"status": "alive"}))
        } else {
            HttpResponse::ServiceUnavailable().json(json!({"status": "stalled"}))
        }
    }
}

/// One dependency's state in `GET /api/health`.
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub error: Option<String>,
}

impl Check {
    pub fn from_result<E: std::fmt::Display>(name: &'static str, r: Result<(), E>) -> Self {
        match r {
            Ok(()) => Check {
                name,
                ok: true,
                error: None,
            },
            Err(e) => Check {
                name,
                ok: false,
                error: Some(e.to_string()),
            },
        }
    }
}

/// 200 when every dependency answers, else 503, with each dependency's status.
pub fn health_response(checks: Vec<Check>) -> HttpResponse {
    let all_ok = checks.iter().all(|c| c.ok);
    let deps: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|c| {
            let mut v = json!({"status": if c.ok { "up" } else { "down" }});
            if let Some(e) = c.error {
                v["error"] = json!(e);
            }
            (c.name.to_owned(), v)
        })
        .collect();
    let body = json!({"status": if all_ok { "ok" } else { "degraded" }, "dependencies": deps});
    if all_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Checks one dependency, treating no answer within `within` as down.
pub async fn timed_check<F>(name: &'static str, within: std::time::Duration, check: F) -> Check
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let r = tokio::time::timeout(within, check)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "no answer within {} ms",
                within.as_millis()
            ))
        });
    Check::from_result(name, r)
}

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

/// Runs an HTTP server until `shutdown` completes, then turns readiness off and drains in-flight
/// requests before returning.
pub async fn serve_until(
    server: actix_web::dev::Server,
    lifecycle: &Lifecycle,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let handle = server.handle();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        _ = shutdown => {
            tracing::info!("shutting down: readiness off, draining requests");
            lifecycle.set_ready(false);
            let stop = handle.stop(true);
            server.await?;
            stop.await;
            Ok(())
        }
    }
}

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

/// Runs `starting` (the start-up connections) while a stand-in server on a clone of `listener`
/// answers: `/api/ready` and `/api/health` 503 `{"status": "starting"}`, `/api/live` 200 (the
/// process is alive, and retrying), anything else 503 `unavailable` with `Retry-After`. When
/// `starting` is done the stand-in stops and the real server takes over the same socket, so the
/// port answers from the moment it is bound.
pub async fn while_starting<T>(
    listener: &std::net::TcpListener,
    starting: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use actix_web::{web, App, HttpServer};
    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/api/ready",
                web::get().to(|| async { starting_status(true) }),
            )
            .route(
                "/api/health",
                web::get().to(|| async { starting_status(true) }),
            )
            .route(
                "/api/live",
                web::get().to(|| async { starting_status(false) }),
            )
            .default_service(web::to(|| async {
                HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", "1"))
                    .json(crate::error::ErrorBody::new(
                        "unavailable",
                        "the service is starting: its dependencies are not reachable yet",
                    ))
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(0)
    .listen(listener.try_clone()?)?
    .run();
    let handle = server.handle();
    let stand_in = tokio::spawn(server);
    let out = starting.await;
    handle.stop(false).await;
    let _ = stand_in.await;
    out
}

fn starting_status(unavailable: bool) -> HttpResponse {
    let body = json!({"status": "starting"});
    if unavailable {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// A resource serving `methods` at `path`; any other method answers the error `not_allowed(method,
/// allow)` builds (each service renders it as 405 with `Allow`, in the contract's error shape).
pub fn resource_at<E>(
    path: &str,
    methods: Vec<(actix_web::http::Method, actix_web::Route)>,
    not_allowed: fn(String, String) -> E,
) -> actix_web::Resource
where
    E: actix_web::ResponseError + 'static,
{
    let allow = methods
        .iter()
        .map(|(m, _)| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut resource = actix_web::web::resource(path);
    for (method, route) in methods {
        resource = resource.route(route.method(method));
    }
    resource.default_service(actix_web::web::to(move |req: actix_web::HttpRequest| {
        let err = not_allowed(req.method().to_string(), allow.clone());
        async move { Err::<HttpResponse, _>(err) }
    }))
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
