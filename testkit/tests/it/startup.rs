//! Issue 11, item 21: a service started before its Redis serves (not up yet, or still replaying
//! its AOF and answering `LOADING`) waits, answers `/api/ready` 503 meanwhile, and becomes ready
//! once Redis serves, rather than exiting. All three services, each on a port chosen here.
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use fred::prelude::*;
use sluice_testkit::servers::{free_port, OwnRedis};
use sluice_testkit::test_settings;
use tokio::sync::oneshot;

use crate::{analytics, worker};

struct Services {
    ports: [(&'static str, u16); 3],
    _stops: Vec<oneshot::Sender<()>>,
}

/// Starts api, worker and analytics against `redis_url` without waiting for any of them: each
/// one's build only returns once Redis serves.
fn start_services(redis_url: String) -> Services {
    let mut s = test_settings();
    s.redis.url = redis_url;
    s.api.workers = 1;
    s.postgres.max_connections = 2;
    let ports = [
        ("api", free_port()),
        ("worker", free_port()),
        ("analytics", free_port()),
    ];
    s.api.port = ports[0].1;
    s.worker.port = ports[1].1;
    s.analytics.port = ports[2].1;
    let mut stops = Vec::new();
    for ((name, _), spawn) in ports
        .into_iter()
        .zip([sluice_testkit::api(), worker(), analytics()])
    {
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        let started = spawn(
            s.clone(),
            Box::pin(async {
                let _ = rx.await;
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = started.await {
                panic!("{name} waits for Redis instead of failing: {e:#}");
            }
        });
    }
    Services {
        ports,
        _stops: stops,
    }
}

async fn ready_status(port: u16) -> Result<u16, String> {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Waits until every service answers `/api/ready` with `want`.
async fn wait_ready_status(services: &Services, want: u16, within: Duration) {
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
    wait_ready_status(&services, 503, Duration::from_secs(10)).await;
    // Still waiting a while later: they retry, they do not give up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_ready_status(&services, 503, Duration::from_secs(1)).await;
    redis.restart();
    wait_ready_status(&services, 200, Duration::from_secs(30)).await;
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
    wait_ready_status(&services, 503, Duration::from_secs(10)).await;
    assert!(
        raw_ping(redis.port).starts_with("-LOADING"),
        "Redis finished loading too early for this test to mean anything"
    );
    wait_ready_status(&services, 200, Duration::from_secs(60)).await;
    assert_eq!(raw_ping(redis.port), "+PONG");
}
