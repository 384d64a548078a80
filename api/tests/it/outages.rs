use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fred::prelude::*;

use crate::{post_event, spawn_api, test_settings};

/// A Redis server of this test's own, so stopping it disturbs no other test.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("sluice-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = OwnRedis {
            port,
            dir,
            child: None,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_api_answers_503_and_recovers_when_it_returns() {
    let mut redis = OwnRedis::start();
    let mut settings = test_settings();
    settings.redis.url = format!("redis://127.0.0.1:{}", redis.port);
    settings.redis.command_timeout_ms = 1_000;
    let (url, _stop) = spawn_api(&settings).await;
    let pool = sluice_api::store::pool(&settings.postgres).unwrap();
    let account = sluice_api::store::create_account(
        &pool,
        &format!("{}@t.sluice", uuid::Uuid::new_v4()),
        None,
    )
    .await
    .unwrap();
    let (_, key) = sluice_api::store::create_key(&pool, account, "outage")
        .await
        .unwrap();

    assert_eq!(post_event(&url, &key, "before").await.0, 202);

    redis.kill();
    let started = Instant::now();
    let (status, body, retry_after) = post_event(&url, &key, "during").await;
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(retry_after);
    // Still 503 a moment later: no 500, no panic.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post_event(&url, &key, "during-2").await.0, 503);

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (s, _, _) = post_event(&url, &key, "after").await;
        if s == 202 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 202, "the api recovers once Redis is back");

    // What was answered 202 before the crash survived it (AOF), and only that and the retry.
    let client = sluice_shared::redis::connect(&settings.redis)
        .await
        .unwrap();
    let entries: Value = client
        .xrange(&settings.redis.stream_key, "-", "+", None)
        .await
        .unwrap();
    let text = format!("{entries:?}");
    assert!(text.contains("\\\"before\\\""), "{text}");
    assert!(text.contains("\\\"after\\\""));
    assert!(!text.contains("\\\"during\\\""));
}
