//! The worker's tests on the one test kit: `TestApp` is a `sluice_testkit::Stack` running the api
//! and (by default) a worker, with an account and key of its own, and the worker-specific looks
//! at Redis and MongoDB its tests need.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use sluice_shared::config::Settings;
use sluice_testkit::{spawn_stack, spawner, Spawner};
use uuid::Uuid;

pub use sluice_testkit::{eventually, test_settings, Reply};

/// A running api and worker with a stream, database and account of their own. Dropping it stops
/// the api and the worker.
pub struct TestApp {
    pub api: String,
    pub settings: Settings,
    pub key: String,
    pub account_id: Uuid,
    pub db: mongodb::Database,
    pub pool: sqlx::PgPool,
    pub http: reqwest::Client,
    pub stack: sluice_testkit::Stack,
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

/// The worker, in this process, as the kit starts services.
pub fn worker() -> Spawner {
    spawner(|s, stop| async move {
        let app = sluice_worker::startup::Application::build(s).await?;
        let port = app.port();
        tokio::spawn(app.run_until(stop));
        Ok(port)
    })
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    let mut settings = opts.settings;
    settings.api.max_backlog = opts.max_backlog;
    let mut options = sluice_testkit::Options::api().settings(settings);
    if opts.with_worker {
        options = options.worker(worker());
    }
    let stack = spawn_stack(options).await;
    let tenant = stack.tenant().await;
    TestApp {
        api: stack.api().base.clone(),
        settings: stack.settings.clone(),
        key: tenant.key,
        account_id: tenant.account,
        db: stack.db.clone(),
        pool: stack.pool.clone(),
        http: stack.http.clone(),
        stack,
    }
}

/// Starts a worker in this process on the app's stream; dropping the sender stops it gracefully.
pub async fn spawn_worker(settings: &Settings) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    worker()(
        settings.clone(),
        Box::pin(async {
            let _ = rx.await;
        }),
    )
    .await
    .expect("worker builds");
    tx
}

/// A new account and key (no token needed by the worker's tests).
pub async fn new_account(pool: &sqlx::PgPool) -> (Uuid, String) {
    let t = sluice_testkit::new_tenant(pool).await;
    (t.account, t.key)
}

impl TestApp {
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
        self.stack.api().post_raw(path, body, headers).await
    }

    pub async fn post_event_with_key(&self, key: &str, event: &Value) -> Reply {
        self.stack.api().post_event(key, event).await
    }

    pub async fn post_event(&self, event: &Value) -> Reply {
        self.post_event_with_key(&self.key, event).await
    }

    pub async fn post_batch(&self, events: Vec<Value>) -> Reply {
        self.stack.api().post_batch(&self.key, &events).await
    }

    pub fn dead_letters(&self) -> mongodb::Collection<Document> {
        self.db.collection(sluice_shared::names::DLQ_COLLECTION)
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

    /// Posts each event alone, one after the other: one stream entry each (nothing to coalesce).
    pub async fn produce_singly(&self, ids: &[String]) {
        for id in ids {
            let r = self.post_event(&event(id)).await;
            assert_eq!(r.status, 202, "{:?}", r.body);
        }
    }

    /// The ids of the entries delivered to the group and not yet acknowledged, per partition.
    async fn pending_entries(&self) -> Vec<(u16, HashSet<String>)> {
        use fred::prelude::{StreamsInterface, Value};
        let redis = self.redis().await;
        let layout = self.settings.redis.layout();
        let mut out = Vec::new();
        for (p, stream) in layout.all().zip(layout.streams()) {
            let rows: Value = redis
                .xpending(&stream, &self.settings.redis.group, ("-", "+", 100_000))
                .await
                .unwrap();
            let ids: HashSet<String> = match rows {
                Value::Array(rows) => rows
                    .into_iter()
                    .filter_map(|r| match r {
                        Value::Array(cols) => cols.first().and_then(|v| v.as_string()),
                        _ => None,
                    })
                    .collect(),
                _ => Default::default(),
            };
            out.push((p, ids));
        }
        out
    }

    /// Events in entries delivered to the group and not yet acknowledged (an entry carries the
    /// events of one enqueue call).
    pub async fn pending(&self) -> u64 {
        let redis = self.redis().await;
        let queued = sluice_testkit::stream::queued(&redis, &self.settings.redis).await;
        let pending = self.pending_entries().await;
        queued
            .iter()
            .filter(|q| {
                pending
                    .iter()
                    .any(|(p, ids)| *p == q.partition && ids.contains(&q.entry_id))
            })
            .count() as u64
    }

    /// Where the accepted events that are not stored are: still in a stream (delivered and
    /// pending, or not yet delivered) or nowhere in Redis. For a failing test's message.
    pub async fn whereabouts(&self, accepted: &[String]) -> String {
        let stored: HashSet<String> = self.stored_ids().await.into_iter().collect();
        let missing: Vec<&String> = accepted.iter().filter(|id| !stored.contains(*id)).collect();
        let redis = self.redis().await;
        let queued = sluice_testkit::stream::queued(&redis, &self.settings.redis).await;
        let pending = self.pending_entries().await;
        let mut report = format!("{} accepted events are not stored:", missing.len());
        for id in missing.iter().take(20) {
            let place = match queued
                .iter()
                .find(|q| q.event["eventId"].as_str() == Some(id.as_str()))
            {
                None => "nowhere in Redis (the write was lost)".to_owned(),
                Some(q) => {
                    let delivered = pending
                        .iter()
                        .any(|(p, ids)| *p == q.partition && ids.contains(&q.entry_id));
                    format!(
                        "in entry {} of partition {}, {}",
                        q.entry_id,
                        q.partition,
                        if delivered {
                            "delivered and pending"
                        } else {
                            "not delivered"
                        }
                    )
                }
            };
            report.push_str(&format!("\n  {id}: {place}"));
        }
        report
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
        self.db.collection(sluice_shared::names::EVENTS_COLLECTION)
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

/// The lines a process writes to its stdout (bunyan JSON for the services), as they come.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Logs {
    /// The lines that are JSON, parsed.
    pub fn json(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

impl WorkerProcess {
    /// Starts `sluice-worker` on the settings' stream and database, with `env` on top.
    pub fn start(settings: &Settings, name: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Self::command(settings, name, env);
        if std::env::var("TEST_LOG").is_err() {
            cmd.stdout(std::process::Stdio::null());
        }
        WorkerProcess {
            child: cmd.spawn().expect("sluice-worker starts"),
        }
    }

    /// As `start`, keeping what the worker logs to stdout.
    pub fn start_logged(settings: &Settings, name: &str, env: &[(&str, &str)]) -> (Self, Logs) {
        let mut cmd = Self::command(settings, name, env);
        cmd.stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("sluice-worker starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let logs = Logs::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.0.lock().unwrap().push(line);
            }
        });
        (WorkerProcess { child }, logs)
    }

    fn command(settings: &Settings, name: &str, env: &[(&str, &str)]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"));
        cmd.env("SLUICE_REDIS__URL", &settings.redis.url)
            .env("SLUICE_REDIS__KEY_PREFIX", &settings.redis.key_prefix)
            .env(
                "SLUICE_REDIS__PARTITIONS",
                settings.redis.partitions.to_string(),
            )
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
        cmd
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

/// Cuts every connection the process `pid` holds to the shared Redis (`CLIENT KILL ID`), and no
/// other client's: its sockets' local ports (from `/proc`) matched against `CLIENT LIST`'s `addr`.
/// Returns how many were cut.
pub async fn cut_redis_connections_of(redis: &fred::prelude::Client, pid: u32) -> usize {
    use fred::prelude::*;
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && inodes.contains(cols[9]) {
                if let Some(port) = cols[1].rsplit(':').next() {
                    ports.insert(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
    }
    let list: String = redis
        .custom(fred::cmd!("CLIENT"), vec!["LIST", "TYPE", "normal"])
        .await
        .unwrap();
    let mut cut = 0;
    for line in list.lines() {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let port = field("addr").and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
        if let (Some(id), Some(port)) = (field("id"), port) {
            if ports.contains(&port) {
                let killed: i64 = redis
                    .custom(fred::cmd!("CLIENT"), vec!["KILL", "ID", id])
                    .await
                    .unwrap();
                cut += killed as usize;
            }
        }
    }
    cut
}
