use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sluice_api::store;
use sluice_shared::config::Settings;
use tokio::sync::oneshot;
use uuid::Uuid;

/// A running api and worker with a stream, database and account of their own.
pub struct TestApp {
    pub api: String,
    pub settings: Settings,
    pub key: String,
    pub account_id: Uuid,
    pub db: mongodb::Database,
    pub pool: sqlx::PgPool,
    pub http: reqwest::Client,
    /// Dropping these stops the api and the worker.
    _stops: Vec<oneshot::Sender<()>>,
}

pub struct Options {
    pub with_worker: bool,
    pub max_backlog: u64,
    pub settings: Settings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            with_worker: true,
            max_backlog: 500_000,
            settings: test_settings(),
        }
    }
}

pub fn test_settings() -> Settings {
    sluice_shared::telemetry::init_test_subscriber();
    let mut s = Settings::load().expect("settings load");
    let id = Uuid::new_v4().simple().to_string();
    s.redis.stream_key = format!("test:{id}:events:stream");
    s.mongo.database = format!("sluice_test_{}", &id[..16]);
    s.api.port = 0;
    s.api.workers = 2;
    s.api.backlog_poll_ms = 50;
    s.worker.port = 0;
    s.worker.consumer_name = Some(format!("test-{id}"));
    s.worker.flush_interval_ms = 100;
    s.worker.rollup_interval_ms = 100;
    s.postgres.max_connections = 4;
    s.auth.jwt_secret = Some(secrecy::SecretString::from(TEST_JWT_SECRET));
    s
}

pub const TEST_JWT_SECRET: &str = "test-secret-for-sluice-integration-tests-0123456789";

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let mut settings = opts.settings;
    settings.api.max_backlog = opts.max_backlog;
    let mut stops = Vec::new();

    let pool = store::pool(&settings.postgres).unwrap();
    store::migrate(&pool).await.unwrap();

    let api = sluice_api::startup::Application::build(settings.clone())
        .await
        .expect("api builds");
    let api_url = format!("http://127.0.0.1:{}", api.port());
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    tokio::spawn(api.run_until(async {
        let _ = rx.await;
    }));

    if opts.with_worker {
        stops.push(spawn_worker(&settings).await);
    }

    let (account_id, key) = new_account(&pool).await;
    let db = sluice_worker::store::connect(&settings.mongo)
        .await
        .unwrap();
    TestApp {
        api: api_url,
        settings,
        key,
        account_id,
        db,
        pool,
        // Idle connections are dropped before the api's keep-alive (5 s) closes them, so a request
        // never goes out on a connection the server is closing.
        http: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        _stops: stops,
    }
}

/// Starts a worker in this process on the app's stream; dropping the sender stops it gracefully.
pub async fn spawn_worker(settings: &Settings) -> oneshot::Sender<()> {
    let worker = sluice_worker::startup::Application::build(settings.clone())
        .await
        .expect("worker builds");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(worker.run_until(async {
        let _ = rx.await;
    }));
    tx
}

pub async fn new_account(pool: &sqlx::PgPool) -> (Uuid, String) {
    let email = format!("{}@test.sluice", Uuid::new_v4());
    let account = store::create_account(pool, &email, None).await.unwrap();
    let (_, key) = store::create_key(pool, account, "test").await.unwrap();
    (account, key)
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.http.post(format!("{}{path}", self.api)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn post_event_with_key(&self, key: &str, event: &Value) -> Reply {
        self.post_raw(
            "/api/v1/events",
            serde_json::to_vec(event).unwrap(),
            &[("content-type", "application/json"), ("x-api-key", key)],
        )
        .await
    }

    pub async fn post_event(&self, event: &Value) -> Reply {
        self.post_event_with_key(&self.key, event).await
    }

    pub async fn post_batch(&self, events: Vec<Value>) -> Reply {
        self.post_raw(
            "/api/v1/events/batch",
            serde_json::to_vec(&json!({ "events": events })).unwrap(),
            &[
                ("content-type", "application/json"),
                ("x-api-key", &self.key),
            ],
        )
        .await
    }

    pub fn dead_letters(&self) -> mongodb::Collection<Document> {
        sluice_worker::store::dead_letters(&self.db)
    }

    pub async fn redis(&self) -> fred::prelude::Client {
        sluice_shared::redis::connect(&self.settings.redis)
            .await
            .unwrap()
    }

    /// Queues `ids` through the batch endpoint, 500 a request; returns the ids answered `accepted`.
    pub async fn produce(&self, ids: &[String]) -> Vec<String> {
        let mut accepted = Vec::new();
        for chunk in ids.chunks(500) {
            let r = self
                .post_batch(chunk.iter().map(|id| event(id)).collect())
                .await;
            assert!(r.status == 202 || r.status == 200, "{:?}", r.body);
            for item in r.body["results"].as_array().unwrap() {
                if item["status"] == "accepted" {
                    accepted.push(item["eventId"].as_str().unwrap().to_owned());
                }
            }
        }
        accepted
    }

    /// Entries delivered to the group and not yet acknowledged.
    pub async fn pending(&self) -> u64 {
        let redis = self.redis().await;
        let summary: fred::prelude::Value = fred::prelude::StreamsInterface::xpending(
            &redis,
            &self.settings.redis.stream_key,
            &self.settings.redis.group,
            (),
        )
        .await
        .unwrap();
        match summary {
            fred::prelude::Value::Array(parts) => {
                parts.first().and_then(|v| v.as_u64()).unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// Every stored eventId, once per document.
    pub async fn stored_ids(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let docs: Vec<Document> = self
            .events()
            .find(doc! {})
            .projection(doc! {"eventId": 1})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        docs.iter()
            .map(|d| d.get_str("eventId").unwrap().to_owned())
            .collect()
    }

    pub fn events(&self) -> mongodb::Collection<Document> {
        sluice_worker::store::events(&self.db)
    }

    pub async fn count_events(&self, filter: Document) -> u64 {
        self.events().count_documents(filter).await.unwrap()
    }

    /// Waits until `filter` matches `expected` documents, and returns the count then (or at the
    /// deadline).
    pub async fn wait_for_events(&self, filter: Document, expected: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let n = self.count_events(filter.clone()).await;
            if n >= expected || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn find_event(&self, event_id: &str) -> Option<Document> {
        self.events()
            .find_one(doc! {"_id": format!("{}:{event_id}", self.account_id)})
            .await
            .unwrap()
    }
}

pub fn event(event_id: &str) -> Value {
    json!({"eventId": event_id, "eventType": "page_view", "userId": "user-1"})
}

pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A worker as a real process, so it can be killed.
pub struct WorkerProcess {
    pub child: std::process::Child,
}

impl WorkerProcess {
    /// Starts `sluice-worker` on the settings' stream and database, with `env` on top.
    pub fn start(settings: &Settings, name: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"));
        cmd.env("SLUICE_REDIS__URL", &settings.redis.url)
            .env("SLUICE_REDIS__STREAM_KEY", &settings.redis.stream_key)
            .env("SLUICE_MONGO__URL", &settings.mongo.url)
            .env("SLUICE_MONGO__DATABASE", &settings.mongo.database)
            .env("SLUICE_WORKER__PORT", "0")
            .env("SLUICE_WORKER__CONSUMER_NAME", name)
            .env("SLUICE_WORKER__FLUSH_INTERVAL_MS", "100")
            .env("SLUICE_WORKER__ROLLUP_INTERVAL_MS", "100")
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if std::env::var("TEST_LOG").is_err() {
            cmd.stdout(std::process::Stdio::null());
        }
        WorkerProcess {
            child: cmd.spawn().expect("sluice-worker starts"),
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `check` holds, polling every 50 ms; false at the deadline.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
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
