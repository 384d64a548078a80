//! Issue 11, item 21: a service started before its Redis serves (not up yet, or still replaying
//! its AOF and answering `LOADING`) waits, answers `/api/ready` 503 meanwhile, and becomes ready
//! once Redis serves, rather than exiting. All three services, each on a port chosen here.
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use fred::prelude::*;
use reqwest::StatusCode;
use sluice_shared::config::Settings;
use sluice_shared::testing::{free_port, OwnRedis};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::TEST_JWT_SECRET;

struct Services {
    ports: [(&'static str, u16); 3],
    _stops: Vec<oneshot::Sender<()>>,
}

/// Starts api, worker and analytics against `redis_url` without waiting for any of them.
fn start_services(redis_url: String) -> Services {
    sluice_shared::telemetry::init_test_subscriber();
    let mut s = Settings::load().unwrap();
    let id = Uuid::new_v4().simple().to_string();
    s.redis.url = redis_url;
    s.mongo.database = format!("sluice_test_{}", &id[..16]);
    s.worker.consumer_name = Some(format!("test-{id}"));
    s.auth.jwt_secret = Some(secrecy::SecretString::from(TEST_JWT_SECRET));
    s.api.workers = 1;
    s.postgres.max_connections = 2;
    let (api, worker, analytics) = (free_port(), free_port(), free_port());
    s.api.port = api;
    s.worker.port = worker;
    s.analytics.port = analytics;
    let mut stops = Vec::new();
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    let settings = s.clone();
    tokio::spawn(async move {
        let app = sluice_api::startup::Application::build(settings)
            .await
            .expect("the api waits for Redis instead of failing");
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    let settings = s.clone();
    tokio::spawn(async move {
        let app = sluice_worker::startup::Application::build(settings)
            .await
            .expect("the worker waits for Redis instead of failing");
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    tokio::spawn(async move {
        let app = sluice_analytics::startup::Application::build(s)
            .await
            .expect("analytics waits for Redis instead of failing");
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Services {
        ports: [("api", api), ("worker", worker), ("analytics", analytics)],
        _stops: stops,
    }
}

async fn ready_status(port: u16) -> Result<StatusCode, String> {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| e.to_string())
}

/// Waits until every service answers `/api/ready` with `want`.
async fn wait_ready_status(services: &Services, want: StatusCode, within: Duration) {
    let deadline = Instant::now() + within;
    for (name, port) in services.ports {
        loop {
            let got = ready_status(port).await;
            if got == Ok(want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} on {port}: /api/ready answered {got:?}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What Redis answers a `PING` on a fresh connection: `+PONG`, `-LOADING …`, or why it did not.
fn raw_ping(port: u16) -> String {
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return "refused".into();
    };
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn.write_all(b"PING\r\n").unwrap();
    let mut line = String::new();
    let _ = BufReader::new(conn).read_line(&mut line);
    line.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_waits_for_a_redis_that_is_not_up_yet_and_then_becomes_ready() {
    let mut redis = OwnRedis::stopped();
    let services = start_services(redis.url());
    wait_ready_status(
        &services,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    // Still waiting a while later: they retry, they do not give up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_ready_status(
        &services,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(1),
    )
    .await;
    redis.restart();
    wait_ready_status(&services, StatusCode::OK, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_waits_for_a_redis_that_is_loading_its_aof_and_then_becomes_ready() {
    let mut redis = OwnRedis::start();
    {
        let client = sluice_shared::redis::connect(&sluice_shared::config::RedisSettings {
            url: redis.url(),
            ..Default::default()
        })
        .await
        .unwrap();
        for chunk in 0..20 {
            let pairs: Vec<(String, String)> = (0..1_000)
                .map(|i| (format!("filler:{chunk}:{i}"), "x".to_owned()))
                .collect();
            let _: () = client.mset(pairs).await.unwrap();
        }
        // Rewrite the AOF so its base is one RDB file: loading it honours key-load-delay.
        let _: Value = client
            .custom(fred::cmd!("BGREWRITEAOF"), Vec::<String>::new())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info: String = client
                .info(Some(fred::types::InfoKind::Persistence))
                .await
                .unwrap();
            if info.contains("aof_rewrite_in_progress:0")
                && info.contains("aof_rewrite_scheduled:0")
            {
                break;
            }
            assert!(Instant::now() < deadline, "the AOF rewrite did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    redis.kill9();
    // 20,000 keys at half a millisecond each: several seconds of LOADING, answered every KiB read.
    redis.restart_with(&[
        "--key-load-delay",
        "500",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    assert!(
        raw_ping(redis.port).starts_with("-LOADING"),
        "{}",
        raw_ping(redis.port)
    );
    let services = start_services(redis.url());
    wait_ready_status(
        &services,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        raw_ping(redis.port).starts_with("-LOADING"),
        "Redis finished loading too early for this test to mean anything"
    );
    wait_ready_status(&services, StatusCode::OK, Duration::from_secs(60)).await;
    assert_eq!(raw_ping(redis.port), "+PONG");
}
