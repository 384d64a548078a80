//! Building and running the analytics service, and the one list of its routes.
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use fred::prelude::*;
use mongodb::Database;
use sluice_shared::config::Settings;
use sluice_shared::enqueue::Enqueuer;
use sluice_shared::health::{health_response, timed_check, Lifecycle};
use sluice_shared::telemetry_metrics::{metrics_endpoint, prometheus};
use tracing_actix_web::TracingLogger;

use crate::cache::{Clock, SystemClock, TtlCache};
use crate::routes;

pub struct AppState {
    pub settings: Settings,
    pub db: Database,
    pub redis: Client,
    pub jwt: sluice_shared::jwt::Jwt,
    /// Aggregates and raw reads: `analytics.cache_ttl_ms`.
    pub cache: TtlCache,
    /// The pipeline and dead letters: `analytics.pipeline_cache_ttl_ms`.
    pub live_cache: TtlCache,
    pub enqueuer: Enqueuer,
    pub lifecycle: Lifecycle,
}

/// Every route of the analytics service. A method a path does not serve is 405 with `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use actix_web::http::Method;
    let (get, post) = (Method::GET, Method::POST);
    cfg.service(at(
        "/api/v1/analytics/summary",
        vec![(get.clone(), web::to(routes::summary))],
    ))
    .service(at(
        "/api/v1/analytics/timeseries",
        vec![(get.clone(), web::to(routes::timeseries))],
    ))
    .service(at(
        "/api/v1/analytics/users/{userId}/events",
        vec![(get.clone(), web::to(routes::user_events))],
    ))
    .service(at(
        "/api/v1/analytics/pipeline",
        vec![(get.clone(), web::to(routes::pipeline))],
    ))
    .service(at(
        "/api/v1/dlq",
        vec![(get.clone(), web::to(routes::dead_letters))],
    ))
    .service(at(
        "/api/v1/dlq/{id}/replay",
        vec![(post, web::to(routes::replay))],
    ))
    .service(at("/api/health", vec![(get.clone(), web::to(health))]))
    .service(at("/api/ready", vec![(get.clone(), web::to(ready))]))
    .service(at("/api/live", vec![(get.clone(), web::to(live))]))
    .service(at("/metrics", vec![(get.clone(), web::to(metrics))]))
    .service(at(
        "/api/openapi.json",
        vec![(get, web::to(crate::openapi::openapi_json))],
    ));
}

/// One path and the handler of each method it serves; any other method is 405 with `Allow`.
fn at(
    path: &str,
    methods: Vec<(actix_web::http::Method, actix_web::Route)>,
) -> actix_web::Resource {
    sluice_shared::health::resource_at(path, methods, |method, allow| {
        crate::error::AnalyticsError::MethodNotAllowed { method, allow }
    })
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As `build`, with the clock the caches judge freshness by.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        prometheus();
        let jwt =
            sluice_shared::jwt::Jwt::new(&settings.auth.jwt_secret()?, settings.auth.jwt_ttl_secs);
        let a = &settings.analytics;
        let listener = TcpListener::bind((a.host.as_str(), a.port)).with_context(|| {
            format!(
                "cannot bind analytics.host/analytics.port {}:{}",
                a.host, a.port
            )
        })?;
        let port = listener.local_addr()?.port();
        // Redis and MongoDB may not be up yet (Redis may be loading its AOF): wait for them, and
        // answer /api/ready 503 meanwhile, rather than exit.
        let (redis, db) = sluice_shared::health::while_starting(&listener, async {
            let redis = sluice_shared::redis::connect_when_ready(&settings.redis).await?;
            let db = sluice_worker::store::connect(&settings.mongo).await?;
            sluice_shared::health::retry_until_ok("mongodb", || sluice_worker::store::ping(&db))
                .await;
            Ok((redis, db))
        })
        .await?;
        let enqueuer = Enqueuer::new(
            redis.clone(),
            settings.redis.stream_key.clone(),
            settings.api.dedup_window_secs,
        );
        enqueuer.load().await?;
        let cache = TtlCache::new(
            Duration::from_millis(a.cache_ttl_ms),
            a.cache_max_bytes,
            clock.clone(),
        );
        let live_cache = TtlCache::new(
            Duration::from_millis(a.pipeline_cache_ttl_ms.min(1_000)),
            a.cache_max_bytes / 8,
            clock,
        );
        let lifecycle = Lifecycle::new(Duration::from_secs(30));
        let state = web::Data::new(AppState {
            settings,
            db,
            redis,
            jwt,
            cache,
            live_cache,
            enqueuer,
            lifecycle: lifecycle.clone(),
        });
        let server_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("X-Frame-Options", "DENY"))
                        .add(("Cache-Control", "no-store")),
                )
                .wrap(TracingLogger::default())
                .app_data(server_state.clone())
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    crate::error::AnalyticsError::invalid("", e.to_string()).into()
                }))
                .configure(routes)
                .default_service(web::to(|| async {
                    HttpResponse::NotFound().json(sluice_shared::error::ErrorBody::new(
                        "not_found",
                        "no such endpoint",
                    ))
                }))
        })
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
        lifecycle.set_ready(true);
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The state, for tests that look at the cache.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(sluice_shared::health::shutdown_signal())
            .await
    }

    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        sluice_shared::health::serve_until(self.server, &self.state.lifecycle, shutdown).await?;
        Ok(())
    }
}

#[utoipa::path(get, path = "/api/health", tag = "operations",
    responses((status = 200, description = "Redis and MongoDB answer"), (status = 503, description = "A dependency is down")))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let (redis, mongo) = tokio::join!(
        timed_check(
            "redis",
            Duration::from_secs(2),
            sluice_shared::redis::ping(&state.redis)
        ),
        timed_check(
            "mongodb",
            Duration::from_secs(4),
            sluice_worker::store::ping(&state.db)
        ),
    );
    health_response(vec![redis, mongo])
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
