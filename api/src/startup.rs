//! Building and running the api: connections, background tasks, and the one list of routes.
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle, Service};
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use fred::prelude::*;
use sluice_shared::config::Settings;
use sluice_shared::health::{health_response, timed_check, Lifecycle};
use sluice_shared::telemetry_metrics::{metrics_endpoint, prometheus};
use sqlx::PgPool;
use tracing_actix_web::TracingLogger;

use crate::auth::KeyAuth;
use crate::backlog::Backlog;
use crate::error::ApiError;
use crate::{accounts, ingest, keys_http, openapi, store};
use sluice_shared::enqueue::Enqueuer;

pub struct AppState {
    pub settings: Settings,
    pub auth: KeyAuth,
    pub jwt: sluice_shared::jwt::Jwt,
    pub login_limiter: crate::limits::LoginLimiter,
    pub trusted_proxies: crate::limits::TrustedProxies,
    pub password_slots: crate::limits::PasswordSlots,
    pub quotas: crate::limits::KeyQuotas,
    pub enqueuer: Enqueuer,
    pub backlog: Arc<Backlog>,
    pub redis: Client,
    pub pool: PgPool,
    pub lifecycle: Lifecycle,
}

/// Every route of the api. A method a path does not serve is 405 with `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use actix_web::http::Method;
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    cfg.service(at(
        "/api/v1/events",
        vec![(post.clone(), web::to(ingest::ingest_one))],
    ))
    .service(at(
        "/api/v1/events/batch",
        vec![(post.clone(), web::to(ingest::ingest_batch))],
    ))
    .service(at(
        "/api/v1/auth/register",
        vec![(post.clone(), web::to(accounts::register))],
    ))
    .service(at(
        "/api/v1/auth/login",
        vec![(post.clone(), web::to(accounts::login))],
    ))
    .service(at(
        "/api/v1/auth/me",
        vec![(get.clone(), web::to(accounts::me))],
    ))
    .service(at(
        "/api/v1/keys",
        vec![
            (post, web::to(keys_http::create)),
            (get.clone(), web::to(keys_http::list)),
        ],
    ))
    .service(at(
        "/api/v1/keys/{id}",
        vec![(delete, web::to(keys_http::revoke))],
    ))
    .service(at("/api/health", vec![(get.clone(), web::to(health))]))
    .service(at("/api/ready", vec![(get.clone(), web::to(ready))]))
    .service(at("/api/live", vec![(get.clone(), web::to(live))]))
    .service(at("/metrics", vec![(get.clone(), web::to(metrics))]))
    .service(at(
        "/api/openapi.json",
        vec![(get.clone(), web::to(openapi::openapi_json))],
    ))
    .service(at(
        "/api/docs",
        vec![(get.clone(), web::to(openapi::docs_page))],
    ))
    .service(at(
        "/api/docs.js",
        vec![(get, web::to(openapi::docs_script))],
    ));
}

/// One path and the handler of each method it serves; any other method is 405 with `Allow`.
fn at(
    path: &str,
    methods: Vec<(actix_web::http::Method, actix_web::Route)>,
) -> actix_web::Resource {
    sluice_shared::health::resource_at(path, methods, |method, allow| ApiError::MethodNotAllowed {
        method,
        allow,
    })
}

/// Bodies of the JSON endpoints (not ingest, which reads its own): small, and errors in the
/// contract's shape.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(16 * 1024)
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

fn cors(origin: &str) -> actix_cors::Cors {
    actix_cors::Cors::default()
        .allowed_origin(origin)
        .allowed_methods(["GET", "POST", "DELETE"])
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

fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Cache-Control", "no-store"))
        .add((
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        prometheus();
        let jwt =
            sluice_shared::jwt::Jwt::new(&settings.auth.jwt_secret()?, settings.auth.jwt_ttl_secs);
        let listener = TcpListener::bind((settings.api.host.as_str(), settings.api.port))
            .with_context(|| {
                format!(
                    "cannot bind api.host/api.port {}:{}",
                    settings.api.host, settings.api.port
                )
            })?;
        let port = listener.local_addr()?.port();
        // Redis may not be up yet, or still loading its AOF: wait for it (and answer /api/ready
        // 503 meanwhile) rather than exit.
        let redis = sluice_shared::health::while_starting(
            &listener,
            sluice_shared::redis::connect_when_ready(&settings.redis),
        )
        .await?;
        let pool = store::pool(&settings.postgres)?;
        sluice_shared::redis::ensure_group(
            &redis,
            &settings.redis.stream_key,
            &settings.redis.group,
        )
        .await?;
        let enqueuer = Enqueuer::new(
            redis.clone(),
            settings.redis.stream_key.clone(),
            settings.api.dedup_window_secs,
        );
        enqueuer.load().await?;
        let auth = KeyAuth::new(redis.clone(), pool.clone(), &settings.api);
        let trusted_proxies = crate::limits::TrustedProxies::parse(&settings.api.trusted_proxies)?;
        let password_slots = crate::limits::PasswordSlots::new(
            settings.auth.max_concurrent_password_hashes,
            Duration::from_millis(settings.auth.password_hash_wait_ms),
        );

        let backlog = Arc::new(Backlog::default());
        backlog.set(Some(
            crate::backlog::read(&redis, &settings.redis.stream_key, &settings.redis.group).await?,
        ));
        let mut tasks = vec![
            crate::backlog::spawn_monitor(
                redis.clone(),
                settings.redis.stream_key.clone(),
                settings.redis.group.clone(),
                settings.api.backlog_poll(),
                backlog.clone(),
            ),
            spawn_last_used_writer(
                auth.clone(),
                pool.clone(),
                Duration::from_secs(settings.api.last_used_flush_secs),
            ),
        ];
        tasks
            .push(crate::auth::listen_for_revocations(settings.redis.clone(), auth.clone()).await?);

        let lifecycle = Lifecycle::new(Duration::from_secs(30));
        let workers = settings.api.workers;
        let login_limiter = crate::limits::LoginLimiter::per_minute(settings.auth.login_per_minute);
        let quotas = crate::limits::KeyQuotas::new(
            settings.auth.key_quota_per_sec,
            settings.auth.key_quota_burst,
        );
        let cors_origin = settings.auth.cors_origin.clone();
        let state = web::Data::new(AppState {
            settings,
            auth,
            jwt,
            login_limiter,
            trusted_proxies,
            password_slots,
            quotas,
            enqueuer,
            backlog,
            redis,
            pool,
            lifecycle: lifecycle.clone(),
        });
        tasks.push(crate::limits::spawn_login_limiter_pruner(
            state.clone(),
            Duration::from_secs(state.settings.auth.login_limiter_prune_secs),
        ));
        let server_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap_fn(|req, srv| {
                    let started = Instant::now();
                    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    let fut = srv.call(req);
                    async move {
                        let res = fut.await?;
                        let status = res.status().as_u16().to_string();
                        metrics::counter!("sluice_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
                        metrics::histogram!("sluice_http_request_duration_seconds", "route" => route)
                            .record(started.elapsed().as_secs_f64());
                        Ok(res)
                    }
                })
                .wrap_fn(|req, srv| srv.call(crate::body::with_body_deadline(req)))
                .wrap(cors(&cors_origin))
                .wrap(security_headers())
                .wrap(TracingLogger::default())
                .app_data(server_state.clone())
                .app_data(json_config())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .configure(routes)
                .default_service(web::to(not_found))
        })
        .disable_signals()
        .shutdown_timeout(10);
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        lifecycle.set_ready(true);
        Ok(Self {
            port,
            server,
            state,
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or SIGINT, then turns unready and drains in-flight requests.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(sluice_shared::health::shutdown_signal())
            .await
    }

    /// Serves until `shutdown` completes, then turns unready and drains in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        sluice_shared::health::serve_until(self.server, &self.state.lifecycle, shutdown).await?;
        for t in self.tasks {
            t.abort();
        }
        Ok(())
    }
}

fn spawn_last_used_writer(
    auth: KeyAuth,
    pool: PgPool,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let used = auth.take_used();
            if let Err(e) = store::touch_keys(&pool, &used).await {
                tracing::warn!(error = ?e, keys = used.len(), "could not record lastUsedAt");
            }
        }
    })
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(sluice_shared::error::ErrorBody::new(
        "not_found",
        "no such endpoint",
    ))
}

#[utoipa::path(get, path = "/api/health", tag = "operations",
    responses((status = 200, description = "Redis and PostgreSQL answer"), (status = 503, description = "A dependency is down")))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let within = Duration::from_secs(2);
    let (redis, pg) = tokio::join!(
        timed_check("redis", within, sluice_shared::redis::ping(&state.redis)),
        timed_check("postgres", within, store::ping(&state.pool)),
    );
    health_response(vec![redis, pg])
}

#[utoipa::path(get, path = "/api/ready", tag = "operations",
    responses((status = 200, description = "Taking traffic"), (status = 503, description = "Starting or shutting down")))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    state.lifecycle.ready_response()
}

#[utoipa::path(get, path = "/api/live", tag = "operations",
    responses((status = 200, description = "The process is alive")))]
pub async fn live(state: web::Data<AppState>) -> HttpResponse {
    state.lifecycle.live_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> HttpResponse {
    metrics_endpoint().await
}
