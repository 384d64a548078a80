//! One kit for Sluice's integration tests (zero-to-production's `spawn_app`, grown to a stack):
//! [`test_settings`] gives every test a stream, database and consumer of its own; [`spawn_stack`]
//! starts the services a test asks for, in process, on port 0, against the real Redis, PostgreSQL
//! and MongoDB; [`ApiClient`] and [`AnalyticsClient`] are typed clients per endpoint, so tests
//! read as intent; [`servers`] holds servers a test owns, to stop, kill and restart.
//!
//! The kit depends on no service downstream of the api: each test crate hands in the services it
//! may use as [`Spawner`]s (`sluice_worker` from the worker's tests, `sluice_analytics` from
//! analytics'), so `cargo tree -p sluice-analytics` stays free of the worker.
#![allow(clippy::unwrap_used, clippy::expect_used)]
pub mod client;
pub mod postgres;
pub mod servers;
pub mod stream;

use std::future::Future;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sluice_shared::config::Settings;
use tokio::sync::oneshot;
use uuid::Uuid;

pub use client::{AnalyticsClient, ApiClient, Reply};

/// The one JWT secret of every test.
pub const TEST_JWT_SECRET: &str = "test-secret-for-sluice-integration-tests-0123456789";

/// Settings from the environment (`SLUICE_*`), with a Redis key prefix, MongoDB database and consumer
/// name no other test (or earlier run) uses, every service on port 0, short flush, rollup and
/// drain intervals, and the test JWT secret.
pub fn test_settings() -> Settings {
    sluice_shared::telemetry::init_test_subscriber();
    let mut s = Settings::load().expect("settings load");
    let id = Uuid::new_v4().simple().to_string();
    s.redis.key_prefix = format!("test-{id}");
    s.mongo.database = format!("sluice_test_{}", &id[..16]);
    s.api.port = 0;
    s.api.workers = 2;
    s.api.backlog_poll_ms = 50;
    s.api.drain_gap_ms = 50;
    s.worker.port = 0;
    s.worker.consumer_name = Some(format!("test-{id}"));
    s.worker.flush_interval_ms = 100;
    s.worker.rollup_interval_ms = 100;
    s.analytics.port = 0;
    s.analytics.drain_gap_ms = 50;
    s.postgres.max_connections = 4;
    s.auth.jwt_secret = Some(secrecy::SecretString::from(TEST_JWT_SECRET));
    s
}

/// The future a service runs until: it resolves when the stack (or the test) stops the service.
pub type Shutdown = BoxFuture<'static, ()>;

/// Starts one service on the settings and returns its port; the service runs until the
/// [`Shutdown`] it was given resolves.
pub type Spawner =
    Box<dyn FnOnce(Settings, Shutdown) -> BoxFuture<'static, anyhow::Result<u16>> + Send>;

/// A [`Spawner`] from an async closure: `spawner(|s, stop| async move { let app =
/// Application::build(s).await?; let port = app.port(); tokio::spawn(app.run_until(stop));
/// Ok(port) })`.
pub fn spawner<F, Fut>(f: F) -> Spawner
where
    F: FnOnce(Settings, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<u16>> + Send + 'static,
{
    Box::new(move |s, stop| Box::pin(f(s, stop)))
}

/// The api, as every test crate may start it (the api is upstream of all of them).
pub fn api() -> Spawner {
    spawner(|s, stop| async move {
        let app = sluice_api::startup::Application::build(s).await?;
        let port = app.port();
        tokio::spawn(app.run_until(stop));
        Ok(port)
    })
}

/// Which services a test runs, on which settings.
pub struct Options {
    pub settings: Settings,
    pub api: Option<Spawner>,
    pub worker: Option<Spawner>,
    pub analytics: Option<Spawner>,
}

impl Options {
    /// Only the api, on fresh [`test_settings`].
    pub fn api() -> Self {
        Self {
            settings: test_settings(),
            api: Some(api()),
            worker: None,
            analytics: None,
        }
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    pub fn worker(mut self, worker: Spawner) -> Self {
        self.worker = Some(worker);
        self
    }

    pub fn analytics(mut self, analytics: Spawner) -> Self {
        self.analytics = Some(analytics);
        self
    }

    pub fn without_api(mut self) -> Self {
        self.api = None;
        self
    }
}

/// The services of one test and handles on the stores behind them. Dropping it stops the
/// services (gracefully: each one's shutdown resolves).
pub struct Stack {
    pub settings: Settings,
    pub api: Option<ApiClient>,
    pub analytics: Option<AnalyticsClient>,
    pub worker_port: Option<u16>,
    pub pool: sqlx::PgPool,
    pub db: mongodb::Database,
    pub http: reqwest::Client,
    stops: Vec<oneshot::Sender<()>>,
}

/// An account with an API key and a token.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub account: Uuid,
    pub email: String,
    pub key: String,
    pub token: String,
}

fn stopper() -> (oneshot::Sender<()>, Shutdown) {
    let (tx, rx) = oneshot::channel::<()>();
    (
        tx,
        Box::pin(async {
            let _ = rx.await;
        }),
    )
}

/// Starts the services `options` names, in the order data flows (api, worker, analytics), after
/// migrating PostgreSQL.
pub async fn spawn_stack(options: Options) -> Stack {
    let settings = options.settings;
    let pool = sluice_api::store::pool(&settings.postgres).expect("a PostgreSQL pool");
    sluice_api::store::migrate(&pool)
        .await
        .expect("migrations run");
    let http = http_client();
    let mut stops = Vec::new();
    let api = start(options.api, &settings, &mut stops, "the api").await;
    let worker_port = start(options.worker, &settings, &mut stops, "the worker").await;
    let analytics = start(options.analytics, &settings, &mut stops, "analytics").await;
    let db = mongodb::Client::with_uri_str(&settings.mongo.url)
        .await
        .expect("a MongoDB client")
        .database(&settings.mongo.database);
    Stack {
        api: api.map(|port| ApiClient::new(port, http.clone())),
        analytics: analytics.map(|port| AnalyticsClient::new(port, http.clone())),
        worker_port,
        settings,
        pool,
        db,
        http,
        stops,
    }
}

async fn start(
    spawn: Option<Spawner>,
    settings: &Settings,
    stops: &mut Vec<oneshot::Sender<()>>,
    what: &str,
) -> Option<u16> {
    let spawn = spawn?;
    let (tx, shutdown) = stopper();
    stops.push(tx);
    let port = spawn(settings.clone(), shutdown)
        .await
        .unwrap_or_else(|e| panic!("{what} builds: {e:#}"));
    Some(port)
}

/// Idle connections are dropped before the services' keep-alive (5 s) closes them, so a request
/// never goes out on a connection the server is closing.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client")
}

impl Stack {
    /// The api's client; panics if the test did not start the api.
    pub fn api(&self) -> &ApiClient {
        self.api.as_ref().expect("this stack runs the api")
    }

    /// The analytics client; panics if the test did not start analytics.
    pub fn analytics(&self) -> &AnalyticsClient {
        self.analytics.as_ref().expect("this stack runs analytics")
    }

    /// A new account with one API key, and a token for it.
    pub async fn tenant(&self) -> Tenant {
        new_tenant(&self.pool).await
    }

    /// Stops every service gracefully (as dropping the stack does), now.
    pub fn stop(&mut self) {
        for tx in self.stops.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// A new account (straight in PostgreSQL: no password hashing), one key and a token.
pub async fn new_tenant(pool: &sqlx::PgPool) -> Tenant {
    let email = format!("{}@test.sluice", Uuid::new_v4());
    let account = sluice_api::store::create_account(pool, &email, None)
        .await
        .expect("an account");
    let (_, key) = sluice_api::store::create_key(pool, account, "test")
        .await
        .expect("a key");
    let (token, _) = test_jwt()
        .issue(&account.to_string(), &email, chrono::Utc::now())
        .expect("a token");
    Tenant {
        account,
        email,
        key,
        token,
    }
}

/// The verifier and issuer every test service uses.
pub fn test_jwt() -> sluice_shared::jwt::Jwt {
    sluice_shared::jwt::Jwt::new(&secrecy::SecretString::from(TEST_JWT_SECRET), 3600)
}

/// Waits until `check` holds, polling every 50 ms; false at the deadline.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
