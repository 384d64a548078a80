//! Building and running the api on the service skeleton: connect, put the state together, start
//! the loops that matter (each with its heart), and serve the one list of routes.
use std::future::Future;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::Method;
use actix_web::web;
use fred::clients::SubscriberClient;
use sluice_http::{at, health, timed_check, Lifecycle, Running, ServeOptions, Service};
use sluice_shared::config::Settings;
use sluice_shared::jwt::Jwt;

use crate::routes::{
    anomalies, auth, channels, dlq, docs, events, export, keys, live, posthog, privacy, quarantine,
    rules, schemas, segment, sources, webhooks,
};
use crate::state::{AppState, Connections};

/// Every route of the api (the skeleton adds `/api/health`, `/api/ready`, `/api/live`, `/metrics`
/// and `/api/openapi.json`). A method a path does not serve is 405 with `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(at(
        "/api/v1/events",
        vec![
            (Method::POST, web::to(events::ingest_one)),
            (Method::GET, web::to(events::list)),
        ],
    ))
    .service(at(
        "/api/v1/events/batch",
        vec![(Method::POST, web::to(events::ingest_batch))],
    ))
    .service(at(
        "/api/v1/events/{eventId}",
        vec![(Method::GET, web::to(events::get_one))],
    ))
    .service(at(
        "/api/v1/quarantine",
        vec![(Method::GET, web::to(quarantine::list))],
    ))
    .service(at(
        "/api/v1/users/{userId}/export",
        vec![(Method::GET, web::to(export::user))],
    ))
    .service(at(
        "/api/v1/export/events",
        vec![(Method::GET, web::to(export::events))],
    ))
    .service(at(
        "/api/v1/auth/register",
        vec![(Method::POST, web::to(auth::register))],
    ))
    .service(at(
        "/api/v1/auth/login",
        vec![(Method::POST, web::to(auth::login))],
    ))
    .service(at(
        "/api/v1/auth/me",
        vec![(Method::GET, web::to(auth::me))],
    ))
    .service(at(
        "/api/v1/keys",
        vec![
            (Method::POST, web::to(keys::create)),
            (Method::GET, web::to(keys::list)),
        ],
    ))
    .service(at(
        "/api/v1/keys/{id}",
        vec![(Method::DELETE, web::to(keys::revoke))],
    ))
    .service(at("/api/v1/dlq", vec![(Method::GET, web::to(dlq::list))]))
    .service(at(
        "/api/v1/dlq/replay",
        vec![(Method::POST, web::to(dlq::replay_many))],
    ))
    .service(at(
        "/api/v1/quarantine/replay",
        vec![(Method::POST, web::to(quarantine::replay))],
    ))
    .service(at(
        "/api/v1/dlq/{id}/replay",
        vec![(Method::POST, web::to(dlq::replay))],
    ))
    .service(at(
        "/api/v1/sources",
        vec![
            (Method::POST, web::to(sources::create)),
            (Method::GET, web::to(sources::list)),
        ],
    ))
    .service(at(
        "/api/v1/sources/{id}",
        vec![(Method::DELETE, web::to(sources::delete))],
    ))
    .service(at(
        "/api/v1/sources/{id}/rotate",
        vec![(Method::POST, web::to(sources::rotate))],
    ))
    .service(at(
        "/api/v1/schemas",
        vec![
            (Method::POST, web::to(schemas::publish)),
            (Method::GET, web::to(schemas::list)),
        ],
    ))
    .service(at(
        "/api/v1/schemas/{eventType}",
        vec![(Method::GET, web::to(schemas::versions))],
    ))
    .service(at(
        "/api/v1/schemas/{eventType}/mode",
        vec![(Method::PUT, web::to(schemas::set_mode))],
    ))
    .service(at(
        "/api/v1/schemas/{eventType}/{version}",
        vec![(Method::GET, web::to(schemas::version))],
    ))
    .service(at(
        "/api/v1/account/schema-mode",
        vec![
            (Method::GET, web::to(schemas::account_mode)),
            (Method::PUT, web::to(schemas::set_account_mode)),
        ],
    ))
    .service(at(
        "/api/v1/rules",
        vec![
            (Method::POST, web::to(rules::create)),
            (Method::GET, web::to(rules::list)),
        ],
    ))
    .service(at(
        "/api/v1/rules/{id}",
        vec![
            (Method::GET, web::to(rules::get_one)),
            (Method::PUT, web::to(rules::replace)),
            (Method::PATCH, web::to(rules::patch)),
            (Method::DELETE, web::to(rules::delete)),
        ],
    ))
    .service(at(
        "/api/v1/anomalies",
        vec![(Method::GET, web::to(anomalies::list))],
    ))
    .service(at(
        "/api/v1/anomalies/{id}",
        vec![
            (Method::GET, web::to(anomalies::get_one)),
            (Method::DELETE, web::to(anomalies::delete)),
        ],
    ))
    .service(at(
        "/api/v1/account/retention",
        vec![
            (Method::GET, web::to(privacy::get_retention)),
            (Method::PUT, web::to(privacy::put_retention)),
        ],
    ))
    .service(
        at(
            "/api/v1/regulations",
            vec![
                (Method::POST, web::to(privacy::create_regulation)),
                (Method::GET, web::to(privacy::list_regulations)),
            ],
        )
        .app_data(sluice_http::server::json_config(
            privacy::REGULATION_BODY_LIMIT,
        )),
    )
    .service(at(
        "/api/v1/regulations/{id}",
        vec![(Method::GET, web::to(privacy::get_regulation))],
    ))
    .service(at(
        "/api/v1/suppressions",
        vec![(Method::GET, web::to(privacy::list_suppressions))],
    ))
    .service(at(
        "/api/v1/channels",
        vec![
            (Method::POST, web::to(channels::create)),
            (Method::GET, web::to(channels::list)),
        ],
    ))
    .service(at(
        "/api/v1/channels/{id}",
        vec![(Method::DELETE, web::to(channels::delete))],
    ))
    .service(at(
        "/api/v1/live/ticket",
        vec![(Method::POST, web::to(live::ticket))],
    ))
    .service(at(
        "/api/v1/live",
        vec![(Method::GET, web::to(live::connect))],
    ))
    .service(at(
        "/api/v1/webhooks/{id}",
        vec![(Method::POST, web::to(webhooks::deliver))],
    ));
    // Segment's HTTP API, each path also with a trailing slash.
    type MakeRoute = fn() -> actix_web::Route;
    let segment_routes: [(&str, MakeRoute); 7] = [
        ("/v1/batch", || web::to(segment::batch)),
        ("/v1/track", || web::to(segment::track)),
        ("/v1/identify", || web::to(segment::identify)),
        ("/v1/page", || web::to(segment::page)),
        ("/v1/screen", || web::to(segment::screen)),
        ("/v1/group", || web::to(segment::group)),
        ("/v1/alias", || web::to(segment::alias)),
    ];
    for (path, route) in segment_routes {
        cfg.service(at(path, vec![(Method::POST, route())]));
        cfg.service(at(&format!("{path}/"), vec![(Method::POST, route())]));
    }
    for path in std::iter::once("/batch").chain(posthog::ALIASES) {
        cfg.service(at(path, vec![(Method::POST, web::to(posthog::capture))]));
    }
    for path in posthog::DECIDE_PATHS {
        cfg.service(at(
            path,
            vec![
                (Method::GET, web::to(posthog::decide)),
                (Method::POST, web::to(posthog::decide)),
            ],
        ));
    }
    cfg.service(at("/api/docs", vec![(Method::GET, web::to(docs::page))]))
        .service(at(
            "/api/docs.js",
            vec![(Method::GET, web::to(docs::script))],
        ));
}

pub struct Application {
    running: Running,
}

impl Application {
    /// Binds the listener at once (port 0 in tests), waits for Redis behind the skeleton's
    /// stand-in, then serves.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        sluice_shared::telemetry_metrics::prometheus();
        let jwt = Jwt::new(&settings.auth.jwt_secret()?, settings.auth.jwt_ttl_secs);
        let service = Service::bind("api", &settings.api.host, settings.api.port)?;
        let connections = service.while_starting(Connections::open(&settings)).await?;
        let state = web::Data::new(AppState::new(settings, jwt, &connections)?);
        let mut running = service.serve(serve_options(&state), with_state(state.clone()))?;
        let mut loops = spawn_loops(&state, connections.revocations, running.lifecycle());
        let refresh = Duration::from_secs(10);
        loops.push(crate::live_hub::spawn(
            state.live.clone(),
            connections.live,
            state.redis.clone(),
            state.settings.redis.key_prefix.clone(),
            refresh,
            running.lifecycle().heart("live_hub", refresh * 3),
        ));
        running.adopt(loops);
        Ok(Self { running })
    }

    pub fn port(&self) -> u16 {
        self.running.port()
    }

    pub fn handle(&self) -> ServerHandle {
        self.running.handle()
    }

    /// Serves until SIGTERM or SIGINT, then stops as [`Application::run_until`] does.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.running.run_until_stopped().await
    }

    /// Serves until `shutdown` completes; then readiness turns off, the api serves on through
    /// `api.drain_gap_ms`, and drains in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.running.run_until(shutdown).await
    }
}

/// The loops that matter, each with the heart `/api/live` watches and the age at which it
/// counts as stalled.
fn spawn_loops(
    state: &web::Data<AppState>,
    revocations: SubscriberClient,
    lifecycle: &Lifecycle,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (api, redis) = (&state.settings.api, &state.settings.redis);
    let poll = api.backlog_poll();
    let last_used = Duration::from_secs(api.last_used_flush_secs.max(1));
    let prune = Duration::from_secs(state.settings.auth.login_limiter_prune_secs.max(1));
    vec![
        crate::backlog::spawn_monitor(
            state.redis.clone(),
            redis.clone(),
            poll,
            state.backlog.clone(),
            lifecycle.heart("backlog_monitor", (poll * 40).max(Duration::from_secs(2))),
        ),
        crate::revocation::spawn_listener(
            revocations,
            state.redis.clone(),
            state.auth.clone(),
            state.plans.clone(),
            state.suppressions.clone(),
            lifecycle.heart("revocation_listener", crate::revocation::PROBE_EVERY * 3),
        ),
        crate::auth::spawn_last_used_writer(
            state.auth.clone(),
            state.pool.clone(),
            last_used,
            lifecycle.heart("last_used_writer", last_used * 3 + Duration::from_secs(10)),
        ),
        crate::limits::spawn_login_limiter_pruner(
            state.login_limiter.clone(),
            prune,
            lifecycle.heart("login_limiter_pruner", prune * 3 + Duration::from_secs(10)),
        ),
        sluice_http::spawn_runtime_heart(lifecycle, Duration::from_secs(1)),
    ]
}

fn serve_options(state: &web::Data<AppState>) -> ServeOptions {
    let (redis, pool, mongo) = (state.redis.clone(), state.pool.clone(), state.mongo.clone());
    // MongoDB serves only the dead-letter endpoints: down, the api is `degraded`, not down.
    let mut options = ServeOptions::new(health(move || {
        let (redis, pool, mongo) = (redis.clone(), pool.clone(), mongo.clone());
        async move {
            let within = Duration::from_secs(2);
            let (redis, postgres, mongodb) = tokio::join!(
                timed_check("redis", within, sluice_shared::redis::ping(&redis)),
                timed_check("postgres", within, crate::store::ping(&pool)),
                timed_check("mongodb", within, sluice_store::ping(&mongo)),
            );
            vec![redis, postgres, mongodb.optional()]
        }
    }));
    let settings = &state.settings;
    options.workers = settings.api.workers;
    options.drain_gap = settings.api.drain_gap();
    options.body_read_timeout = settings.api.body_read_timeout();
    options.cors_origin = Some(settings.auth.cors_origin.clone()).filter(|o| !o.is_empty());
    // Customers' web pages call the SDK intakes: any origin, never credentials.
    options.open_cors_paths = crate::routes::posthog::open_cors_paths();
    options.openapi = Some(crate::openapi::document());
    options
}

/// The route table with the state (and the JWT verifier `AuthedAccount` reads) in its app data.
fn with_state(
    state: web::Data<AppState>,
) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    let jwt = web::Data::new(state.jwt.clone());
    move |cfg| {
        cfg.app_data(state.clone()).app_data(jwt.clone());
        // Called once per actix worker, on its thread: the worker's ingest gets a Redis
        // connection and group committers of its own there.
        cfg.app_data(web::Data::new(crate::state::WorkerEnqueuer::here(&state)));
        routes(cfg);
    }
}
