//! Analytics against the real stack: events go in through the api, a worker stores them and writes
//! rollups, and every figure analytics answers is checked against ground truth computed here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod hardening;
mod owasp;
mod startup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sluice_analytics::cache::ManualClock;
use sluice_shared::config::Settings;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const TEST_JWT_SECRET: &str = "test-secret-for-sluice-integration-tests-0123456789";

pub struct Stack {
    pub api: String,
    pub analytics: String,
    pub settings: Settings,
    pub clock: Arc<ManualClock>,
    pub state: actix_web::web::Data<sluice_analytics::startup::AppState>,
    pub pool: sqlx::PgPool,
    pub http: reqwest::Client,
    pub db: mongodb::Database,
    _stops: Vec<oneshot::Sender<()>>,
}

pub struct Tenant {
    pub account: Uuid,
    pub key: String,
    pub token: String,
}

fn stopper() -> (oneshot::Sender<()>, impl std::future::Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async {
        let _ = rx.await;
    })
}

pub async fn spawn_stack() -> Stack {
    sluice_shared::telemetry::init_test_subscriber();
    let mut s = Settings::load().unwrap();
    let id = Uuid::new_v4().simple().to_string();
    s.redis.stream_key = format!("test:{id}:events:stream");
    s.mongo.database = format!("sluice_test_{}", &id[..16]);
    s.api.port = 0;
    s.api.workers = 2;
    s.worker.port = 0;
    s.worker.consumer_name = Some(format!("test-{id}"));
    s.worker.flush_interval_ms = 100;
    s.worker.rollup_interval_ms = 100;
    s.analytics.port = 0;
    s.postgres.max_connections = 4;
    s.auth.jwt_secret = Some(secrecy::SecretString::from(TEST_JWT_SECRET));

    let pool = sluice_api::store::pool(&s.postgres).unwrap();
    sluice_api::store::migrate(&pool).await.unwrap();
    let mut stops = Vec::new();

    let api = sluice_api::startup::Application::build(s.clone())
        .await
        .unwrap();
    let api_url = format!("http://127.0.0.1:{}", api.port());
    let (tx, stop) = stopper();
    stops.push(tx);
    tokio::spawn(api.run_until(stop));

    let worker = sluice_worker::startup::Application::build(s.clone())
        .await
        .unwrap();
    let (tx, stop) = stopper();
    stops.push(tx);
    tokio::spawn(worker.run_until(stop));

    let clock = Arc::new(ManualClock::default());
    let analytics =
        sluice_analytics::startup::Application::build_with_clock(s.clone(), clock.clone())
            .await
            .unwrap();
    let analytics_url = format!("http://127.0.0.1:{}", analytics.port());
    let state = analytics.state();
    let (tx, stop) = stopper();
    stops.push(tx);
    tokio::spawn(analytics.run_until(stop));

    let db = sluice_worker::store::connect(&s.mongo).await.unwrap();
    Stack {
        api: api_url,
        analytics: analytics_url,
        settings: s,
        clock,
        state,
        pool,
        http: reqwest::Client::new(),
        db,
        _stops: stops,
    }
}

impl Stack {
    pub async fn tenant(&self) -> Tenant {
        let email = format!("{}@analytics.test", Uuid::new_v4());
        let account = sluice_api::store::create_account(&self.pool, &email, None)
            .await
            .unwrap();
        let (_, key) = sluice_api::store::create_key(&self.pool, account, "t")
            .await
            .unwrap();
        let jwt = sluice_shared::jwt::Jwt::new(&secrecy::SecretString::from(TEST_JWT_SECRET), 3600);
        let (token, _) = jwt
            .issue(&account.to_string(), &email, chrono::Utc::now())
            .unwrap();
        Tenant {
            account,
            key,
            token,
        }
    }

    pub async fn ingest(&self, tenant: &Tenant, events: &[Value]) {
        for chunk in events.chunks(500) {
            let r = self
                .http
                .post(format!("{}/api/v1/events/batch", self.api))
                .header("x-api-key", &tenant.key)
                .json(&serde_json::json!({ "events": chunk }))
                .send()
                .await
                .unwrap();
            // 200 when every event was a duplicate.
            assert!(
                [StatusCode::ACCEPTED, StatusCode::OK].contains(&r.status()),
                "{}",
                r.status()
            );
        }
    }

    pub async fn wait_stored(&self, n: u64) {
        let events = sluice_worker::store::events(&self.db);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = events
                .count_documents(mongodb::bson::doc! {})
                .await
                .unwrap();
            if c >= n {
                assert_eq!(c, n);
                // The rollups of the last batch are written right after its insert.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
            assert!(Instant::now() < deadline, "stored {c} of {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET on analytics with the tenant's token: status, `x-cache`, body.
    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, String, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.analytics))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let cache = r
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, cache, r.json().await.unwrap_or(Value::Null))
    }

    /// Moves the caches' clock past their TTL.
    pub fn expire_cache(&self) {
        self.clock.advance(Duration::from_secs(11));
    }
}
