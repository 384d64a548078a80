//! Analytics only reads: on a Redis user refused every write command (scripts included), every
//! endpoint still answers, with the figures the sketches hold.
use fred::prelude::*;
use sluice_shared::config::RedisSettings;
use sluice_shared::rollup::{floor_to, hll_key, top_key, DAY_MS, HOUR_MS};
use sluice_testkit::servers::OwnRedis;
use sluice_testkit::test_settings;

use crate::spawn_analytics_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_on_a_redis_user_that_may_not_write() {
    let redis = OwnRedis::start();
    let admin = sluice_shared::redis::connect(&RedisSettings {
        url: redis.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    let _: Value = admin
        .custom(
            fred::cmd!("ACL"),
            vec![
                "SETUSER",
                "reader",
                "on",
                ">reader-password",
                "~*",
                "&*",
                "+@all",
                "-@write",
            ],
        )
        .await
        .unwrap();
    let mut settings = test_settings();
    settings.redis.url = format!("redis://reader:reader-password@127.0.0.1:{}", redis.port);
    let app = spawn_analytics_with(settings).await;
    let a = app.stack.tenant().await;
    let account = a.account.to_string();

    // The user may not write (the check is meaningful)...
    let reader = sluice_shared::redis::connect(&app.stack.settings.redis)
        .await
        .unwrap();
    let refused: Result<(), _> = reader.set("probe", "x", None, None, false).await;
    assert!(refused.is_err(), "the reader could write");

    // ...and the sketches of this hour hold two users, one of them heavier.
    let hour = floor_to(chrono::Utc::now().timestamp_millis(), HOUR_MS);
    let _: i64 = admin
        .pfadd(hll_key(&account, 'h', hour), vec!["whale", "minnow"])
        .await
        .unwrap();
    // The worker counts a user in the hour's and the day's top set; a 24 h window read late in
    // the UTC day takes the whole day from the day's set, so both are written, as the worker does.
    let day = floor_to(hour, DAY_MS);
    for key in [top_key(&account, 'h', hour), top_key(&account, 'd', day)] {
        let _: i64 = admin
            .zadd(
                key,
                None,
                None,
                false,
                false,
                vec![(5.0, "whale"), (2.0, "minnow")],
            )
            .await
            .unwrap();
    }

    let analytics = app.stack.analytics();
    let summary = analytics.summary(&a.token, "24h").await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(summary.body["uniqueUsers"], 2, "{}", summary.body);
    assert_eq!(
        summary.body["topUsers"],
        serde_json::json!([{"userId": "whale", "count": 5}, {"userId": "minnow", "count": 2}])
    );
    let r = analytics.timeseries(&a.token, "range=1h&bucket=1m").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = analytics.user_events(&a.token, "nobody", "").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = analytics.pipeline(&a.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let health = analytics.get("/api/health", None).await;
    assert_eq!(health.status, 200, "{}", health.body);
}
