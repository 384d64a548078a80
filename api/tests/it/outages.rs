use std::time::{Duration, Instant};

use sluice_testkit::servers::OwnRedis;

use crate::{get_json, post_event, spawn_api, stalled, test_settings, wait_for_status};

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
    // With its subscription gone, a revocation could not reach this instance: liveness says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, live) = loop {
        let (status, live) = get_json(&url, "/api/live").await;
        if stalled(&live, "revocation_listener") == Some(true) || Instant::now() > deadline {
            break (status, live);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{live}");
    assert_eq!(stalled(&live, "revocation_listener"), Some(true), "{live}");

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
    // ...and resubscribes to revocations: every loop beats again.
    let (status, live) = wait_for_status(&url, "/api/live", 200, Duration::from_secs(20)).await;
    assert_eq!(status, 200, "{live}");

    // What was answered 202 before the crash survived it (AOF), and only that and the retry.
    let client = sluice_shared::redis::connect(&settings.redis)
        .await
        .unwrap();
    let ids: Vec<String> = sluice_testkit::stream::queued(&client, &settings.redis)
        .await
        .into_iter()
        .map(|q| q.event["eventId"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ids.iter().any(|i| i == "before"), "{ids:?}");
    assert!(ids.iter().any(|i| i == "after"), "{ids:?}");
    assert!(!ids.iter().any(|i| i == "during"), "{ids:?}");
}
