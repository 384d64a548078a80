use std::time::{Duration, Instant};

use fred::prelude::*;
use sluice_shared::testing::OwnRedis;

use crate::{post_event, spawn_api, test_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_api_answers_503_and_recovers_when_it_returns() {
    let mut redis = OwnRedis::start();
    let mut settings = test_settings();
    settings.redis.url = redis.url();
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

    redis.kill9();
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
