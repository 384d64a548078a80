//! Building and running analytics on the service skeleton: connect (behind the skeleton's
//! stand-in), put the state together, and serve the one list of routes. Nothing imports this.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::web;
use fred::prelude::Client;
use mongodb::Database;
use sluice_http::{at, health, timed_check, HealthChecks, Running, ServeOptions, Service};
use sluice_shared::config::Settings;
use sluice_shared::jwt::Jwt;

use crate::cache::{Clock, SystemClock};
use crate::routes::{pipeline, summary, timeseries, users};
use crate::state::AppState;

/// Every route of analytics (the skeleton adds `/api/health`, `/api/ready`, `/api/live`,
/// `/metrics` and `/api/openapi.json`). A method a path does not serve is 405 with `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let get = Method::GET;
    cfg.service(at(
        "/api/v1/analytics/summary",
        vec![(get.clone(), web::to(summary::summary))],
    ))
    .service(at(
        "/api/v1/analytics/timeseries",
        vec![(get.clone(), web::to(timeseries::timeseries))],
    ))
    .service(at(
        "/api/v1/analytics/users/{userId}/events",
        vec![(get.clone(), web::to(users::user_events))],
    ))
    .service(at(
        "/api/v1/analytics/pipeline",
        vec![(get, web::to(pipeline::pipeline))],
    ));
}

pub struct Application {
    running: Running,
    state: web::Data<AppState>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As `build`, with the clock the caches judge freshness by. Binds the listener at once
    /// (port 0 in tests) and waits for Redis and MongoDB behind the skeleton's stand-in (Redis
    /// may be replaying its AOF), answering `/api/ready` 503 meanwhile rather than exiting.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        sluice_shared::telemetry_metrics::prometheus();
        let jwt = Jwt::new(&settings.auth.jwt_secret()?, settings.auth.jwt_ttl_secs);
        let a = &settings.analytics;
        let service = Service::bind("analytics", &a.host, a.port)?;
        let (redis, db) = service.while_starting(connect(&settings)).await?;
        let state = web::Data::new(AppState::new(settings, redis, db, clock));
        let runtime = sluice_http::spawn_runtime_heart(service.lifecycle(), Duration::from_secs(1));
        let mut running = service.serve(serve_options(&state), with_state(state.clone(), jwt))?;
        running.adopt([runtime]);
        Ok(Self { running, state })
    }

    pub fn port(&self) -> u16 {
        self.running.port()
    }

    /// The state, for tests that look at the cache.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGTERM or SIGINT, then stops as [`Application::run_until`] does.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.running.run_until_stopped().await
    }

    /// Serves until `shutdown` completes; then readiness turns off, analytics serves on through
    /// `analytics.drain_gap_ms`, and drains in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.running.run_until(shutdown).await
    }
}

/// Redis once it serves, then MongoDB once it answers a ping.
async fn connect(settings: &Settings) -> anyhow::Result<(Client, Database)> {
    let redis = sluice_shared::redis::connect_when_ready(&settings.redis).await?;
    let db = sluice_store::connect(&settings.mongo, "sluice-analytics").await?;
    sluice_http::startup::retry_until_ok("mongodb", || sluice_store::ping(&db)).await;
    Ok((redis, db))
}

fn serve_options(state: &web::Data<AppState>) -> ServeOptions {
    let mut options = ServeOptions::new(health_checks(state));
    options.drain_gap = state.settings.analytics.drain_gap();
    options.openapi = Some(crate::openapi::document());
    options
}

/// Both stores are needed: the summary reads Redis's sketches, every answer reads MongoDB.
fn health_checks(state: &web::Data<AppState>) -> HealthChecks {
    let (redis, db) = (state.redis.clone(), state.db.clone());
    health(move || {
        let (redis, db) = (redis.clone(), db.clone());
        async move {
            let (redis, mongo) = tokio::join!(
                timed_check(
                    "redis",
                    Duration::from_secs(2),
                    sluice_shared::redis::ping(&redis)
                ),
                timed_check("mongodb", Duration::from_secs(4), sluice_store::ping(&db)),
            );
            vec![redis, mongo]
        }
    })
}

/// The route table with the state (and the JWT verifier `AuthedAccount` reads) in its app data.
fn with_state(
    state: web::Data<AppState>,
    jwt: Jwt,
) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    let jwt = web::Data::new(jwt);
    move |cfg| {
        cfg.app_data(state.clone()).app_data(jwt.clone());
        routes(cfg);
    }
}
