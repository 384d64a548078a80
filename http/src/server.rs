//! Binding, serving and stopping a service: what every Sluice service does the same way.
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle, Service as _};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Condition, DefaultHeaders};
use actix_web::HttpMessage;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use tracing_actix_web::{RequestId, TracingLogger};

use crate::body::BodyDeadline;
use crate::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::ops::{HealthChecks, Ops};

/// The headers on every response of every service.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

fn security_headers() -> DefaultHeaders {
    SECURITY_HEADERS
        .iter()
        .fold(DefaultHeaders::new(), |h, &pair| h.add(pair))
}

/// How a service is served; [`ServeOptions::new`] gives the defaults.
pub struct ServeOptions {
    /// actix workers; 0 for one per core.
    pub workers: usize,
    /// Between readiness off and the listener closing: load balancers stop sending meanwhile.
    pub drain_gap: Duration,
    /// How long in-flight requests may finish once the listener is closed.
    pub shutdown_timeout: Duration,
    /// Every request body must have arrived within this (408 otherwise).
    pub body_read_timeout: Duration,
    /// The largest JSON body of `web::Json` extractors.
    pub json_limit: usize,
    /// The largest body of `web::Payload` readers (each reader applies its own, smaller limit).
    pub payload_limit: usize,
    /// The one origin a browser may call from (dashboard), if any.
    pub cors_origin: Option<String>,
    /// Paths any origin may call (without credentials): intakes that customers' web pages call.
    /// An entry ending in `*` is a prefix.
    pub open_cors_paths: Vec<&'static str>,
    /// The service's dependency checks for `/api/health`.
    pub health: HealthChecks,
    /// The service's OpenAPI document for `/api/openapi.json`.
    pub openapi: Option<utoipa::openapi::OpenApi>,
}

impl ServeOptions {
    pub fn new(health: HealthChecks) -> Self {
        Self {
            workers: 0,
            drain_gap: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            json_limit: 16 * 1024,
            payload_limit: 64 * 1024 * 1024,
            cors_origin: None,
            open_cors_paths: Vec::new(),
            health,
            openapi: None,
        }
    }
}

/// A service's listener, bound before anything else so the port answers from the start (and
/// tests can bind port 0 and read back [`Service::port`]).
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    port: u16,
    lifecycle: Lifecycle,
}

impl Service {
    /// Binds `host:port`; `name` is the settings section (`api`, `analytics`, `worker`).
    pub fn bind(name: &'static str, host: &str, port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((host, port))
            .with_context(|| format!("cannot bind {name}.host/{name}.port {host}:{port}"))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            name,
            listener,
            port,
            lifecycle: Lifecycle::new(Duration::from_secs(60)),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Runs `starting` (the start-up connections) while a stand-in answers on the listener:
    /// `/api/ready` and `/api/health` 503 `{"status": "starting"}`, `/api/live` 200 (the process is
    /// alive, and retrying), anything else 503 `unavailable` with `Retry-After`. When `starting` is
    /// done the stand-in stops and the real server takes over the same socket.
    pub async fn while_starting<T>(
        &self,
        starting: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let server = HttpServer::new(|| {
            App::new()
                .wrap(security_headers())
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
                        .json(sluice_shared::error::ErrorBody::new(
                            "unavailable",
                            "the service is starting: its dependencies are not reachable yet",
                        ))
                }))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(self.listener.try_clone()?)?
        .run();
        let handle = server.handle();
        let stand_in = tokio::spawn(server);
        let out = starting.await;
        handle.stop(false).await;
        let _ = stand_in.await;
        out
    }

    /// Serves `routes` (the service's route table; it registers the service's state with
    /// `cfg.app_data`) with everything every service shares, and turns ready.
    pub fn serve<F>(self, options: ServeOptions, routes: F) -> anyhow::Result<Running>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let openapi_json = options
            .openapi
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .context("cannot render the OpenAPI document")?;
        let with_openapi = openapi_json.is_some();
        let ops = web::Data::new(Ops {
            lifecycle: self.lifecycle.clone(),
            health: options.health.clone(),
            openapi_json,
        });
        let cors_origin = options.cors_origin.clone();
        let open_cors_paths = options.open_cors_paths.clone();
        let deadline = BodyDeadline(options.body_read_timeout);
        let (json_limit, payload_limit) = (options.json_limit, options.payload_limit);
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap_fn(|req, srv| {
                    let started = Instant::now();
                    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    // The id of this request's span (TracingLogger, outside, made it): echoed so a
                    // client can quote it, and carried into the stream entry and the worker's logs.
                    let request_id = req.extensions().get::<RequestId>().map(|id| id.to_string());
                    let fut = srv.call(req);
                    async move {
                        let mut res = fut.await?;
                        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                            res.headers_mut().insert(HeaderName::from_static("x-request-id"), id);
                        }
                        let status = res.status().as_u16().to_string();
                        metrics::counter!("sluice_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
                        metrics::histogram!("sluice_http_request_duration_seconds", "route" => route)
                            .record(started.elapsed().as_secs_f64());
                        Ok(res)
                    }
                })
                .wrap_fn(|req, srv| srv.call(crate::body::with_body_deadline(req)))
                .wrap(Condition::new(
                    cors_origin.is_some() || !open_cors_paths.is_empty(),
                    cors(cors_origin.as_deref(), open_cors_paths.clone()),
                ))
                .wrap(security_headers())
                .wrap(TracingLogger::default())
                .app_data(ops.clone())
                .app_data(deadline)
                .app_data(json_config(json_limit))
                .app_data(query_config())
                .app_data(path_config())
                .app_data(web::PayloadConfig::new(payload_limit))
                .configure(|cfg| crate::ops::routes(cfg, with_openapi))
                .configure(routes.clone())
                .default_service(web::to(not_found))
        })
        .disable_signals()
        .shutdown_timeout(options.shutdown_timeout.as_secs());
        if options.workers > 0 {
            server = server.workers(options.workers);
        }
        let server = server.listen(self.listener)?.run();
        self.lifecycle.set_ready(true);
        tracing::info!(service = self.name, port = self.port, "serving");
        Ok(Running {
            name: self.name,
            port: self.port,
            server,
            lifecycle: self.lifecycle,
            drain_gap: options.drain_gap,
            tasks: Vec::new(),
        })
    }
}

/// A service that serves, until [`Running::run_until`]'s shutdown resolves.
pub struct Running {
    name: &'static str,
    port: u16,
    server: Server,
    lifecycle: Lifecycle,
    drain_gap: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Background tasks that end with the service.
    pub fn adopt(&mut self, tasks: impl IntoIterator<Item = tokio::task::JoinHandle<()>>) {
        self.tasks.extend(tasks);
    }

    /// Serves until SIGTERM or SIGINT, then stops as [`Running::run_until`] does.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(crate::startup::shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves; then readiness turns off, the service keeps serving for
    /// the drain gap (so load balancers that poll readiness stop sending first), the listener
    /// closes, and in-flight requests finish within the shutdown timeout.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Running {
            name,
            server,
            lifecycle,
            drain_gap,
            tasks,
            ..
        } = self;
        let handle = server.handle();
        tokio::pin!(server);
        tokio::select! {
            r = &mut server => r?,
            _ = shutdown => {
                lifecycle.set_ready(false);
                tracing::info!(service = name, drain_gap_ms = drain_gap.as_millis() as u64,
                    "shutting down: readiness off, serving through the drain gap");
                tokio::select! {
                    r = &mut server => r?,
                    _ = tokio::time::sleep(drain_gap) => {
                        tracing::info!(service = name, "drain gap over: closing the listener, finishing requests");
                        let stop = handle.stop(true);
                        server.await?;
                        stop.await;
                    }
                }
            }
        }
        for t in tasks {
            t.abort();
        }
        Ok(())
    }
}

/// Spawns a task on the main runtime that beats `heart` every `every`: the service's runtime
/// itself is one of the loops liveness watches.
pub fn spawn_runtime_heart(lifecycle: &Lifecycle, every: Duration) -> tokio::task::JoinHandle<()> {
    let heart = lifecycle.heart("runtime", every * 10);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            heart.beat();
        }
    })
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such endpoint"))
}

fn starting_status(unavailable: bool) -> HttpResponse {
    let body = crate::ops::StatusView {
        status: "starting",
        loops: None,
    };
    if unavailable {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// Whether `path` is one any origin may call.
fn open_path(open: &[&str], path: &str) -> bool {
    open.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == *p,
    })
}

/// The dashboard's origin everywhere, and any origin on the open paths (no credentials are
/// ever allowed, so a page elsewhere can send events but read nothing of an account).
fn cors(origin: Option<&str>, open: Vec<&'static str>) -> actix_cors::Cors {
    let cors = match origin {
        Some(origin) => actix_cors::Cors::default().allowed_origin(origin),
        None => actix_cors::Cors::default(),
    };
    cors.allowed_origin_fn(move |_, head| open_path(&open, head.uri.path()))
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            "authorization",
            "content-type",
            "content-encoding",
            "x-api-key",
            "x-request-id",
        ])
        .expose_headers(["retry-after", "x-request-id"])
        .max_age(600)
}

/// `web::Json` bodies: errors in the contract's shape.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, req| {
            use actix_web::error::JsonPayloadError as E;
            match err {
                E::Payload(ref e) if crate::body::timeout_error(e, req).is_some() => {
                    crate::body::timeout_error(e, req).unwrap_or(ApiError::RequestTimeout(0))
                }
                E::ContentType => {
                    ApiError::UnsupportedMediaType("Content-Type must be application/json".into())
                }
                E::OverflowKnownLength { limit, .. } | E::Overflow { limit } => {
                    ApiError::PayloadTooLarge {
                        what: "request",
                        limit,
                    }
                }
                E::Deserialize(e) if e.is_data() => ApiError::invalid_request("", e.to_string()),
                other => ApiError::MalformedJson(other.to_string()),
            }
            .into()
        })
}

/// Query strings: a bad parameter is a 400 in the contract's shape.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|e, _| ApiError::invalid_request("", e.to_string()).into())
}

/// Path segments: one that does not parse names no resource (404).
fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| ApiError::not_found("no such resource").into())
}

/// Health checks from a closure returning a future: `health(move || { let r = redis.clone();
/// async move { vec![...] } })`.
pub fn health<F, Fut>(f: F) -> HealthChecks
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<crate::ops::Check>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}
