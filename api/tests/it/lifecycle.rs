//! Liveness from the heartbeats of the api's loops, and shutdown through the drain gap.
use std::time::{Duration, Instant};

use fred::prelude::*;
use sluice_api::startup::Application;
use tokio::sync::oneshot;

use crate::{
    account_with_key, get_json, post_event, spawn_api, stalled, test_settings, wait_for_status,
};

#[tokio::test]
async fn a_backlog_monitor_that_cannot_read_the_stream_turns_liveness_off_naming_it() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let (status, live) = wait_for_status(&url, "/api/live", 200, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "{live}");
    for name in [
        "backlog_monitor",
        "revocation_listener",
        "last_used_writer",
        "login_limiter_pruner",
        "runtime",
    ] {
        assert_eq!(stalled(&live, name), Some(false), "{name}: {live}");
    }

    // The stream key now holds a string: every backlog read fails (WRONGTYPE), nothing else does.
    let redis = sluice_shared::redis::connect(&settings.redis)
        .await
        .unwrap();
    let stream = settings.redis.layout().stream(0);
    let _: () = redis.del(&stream).await.unwrap();
    let _: () = redis
        .set(&stream, "not a stream", None, None, false)
        .await
        .unwrap();

    let (status, live) = wait_for_status(&url, "/api/live", 503, Duration::from_secs(10)).await;
    assert_eq!(status, 503, "{live}");
    assert_eq!(live["status"], "stalled");
    assert_eq!(stalled(&live, "backlog_monitor"), Some(true), "{live}");
    assert_eq!(stalled(&live, "revocation_listener"), Some(false), "{live}");
    // Meanwhile the overload guard does not trust a figure it cannot read.
    let (_, key) = account_with_key(&settings).await;
    let (s, body, retry_after) = post_event(&url, &key, "while-stalled").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    assert!(retry_after);

    let _: () = redis.del(&stream).await.unwrap();
    let (status, live) = wait_for_status(&url, "/api/live", 200, Duration::from_secs(10)).await;
    assert_eq!(
        status, 200,
        "a monitor that reads again beats again: {live}"
    );
}

#[tokio::test]
async fn on_shutdown_readiness_turns_off_while_ingest_is_still_served_through_the_drain_gap() {
    let mut settings = test_settings();
    settings.api.drain_gap_ms = 1_000;
    let app = Application::build(settings.clone())
        .await
        .expect("api builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let (_, key) = account_with_key(&settings).await;
    assert_eq!(get_json(&url, "/api/ready").await.0, 200);
    assert_eq!(post_event(&url, &key, "before-stop").await.0, 202);

    let asked = Instant::now();
    stop.send(()).unwrap();
    let (status, _) = wait_for_status(&url, "/api/ready", 503, Duration::from_millis(500)).await;
    assert_eq!(status, 503, "readiness is off at once");
    let (status, body, _) = post_event(&url, &key, "in-the-gap").await;
    assert_eq!(status, 202, "ingest is served through the gap: {body}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "still inside the gap"
    );

    running.await.unwrap().expect("stops cleanly");
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "not before the gap ended"
    );
    let closed = reqwest::Client::new()
        .get(format!("{url}/api/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(closed.is_err(), "the listener is closed after the gap");
}
