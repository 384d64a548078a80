//! One event followed from the api into the worker's logs: the request id the api queued it under
//! and its eventId are on the worker's log lines for it (bunyan JSON on the worker's stdout).
use std::time::Duration;

use fred::prelude::*;
use serde_json::json;
use sluice_shared::config::RedisSettings;

use crate::helpers::{eventually, spawn_app_with, Options, WorkerProcess};

/// The request id of every queued event, oldest first.
async fn queued_request_ids(redis: &Client, settings: &RedisSettings) -> Vec<String> {
    sluice_testkit::stream::queued(redis, settings)
        .await
        .into_iter()
        .filter_map(|q| q.request_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_followed_from_the_api_into_the_worker_logs_by_its_event_id_and_request_id() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Default::default()
    })
    .await;
    let (_worker, logs) = WorkerProcess::start_logged(
        &app.settings,
        "traced",
        &[("RUST_LOG", "info,sluice_worker=debug")],
    );
    let sent = format!("trace-{}", uuid::Uuid::new_v4());
    let r = app
        .post_raw(
            "/api/v1/events",
            serde_json::to_vec(
                &json!({"eventId": "traced-1", "eventType": "click", "userId": "u1"}),
            )
            .unwrap(),
            &[
                ("content-type", "application/json"),
                ("x-api-key", &app.key),
                ("x-request-id", &sent),
            ],
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);

    // The request id the api queued the event under, as the stream entry holds it.
    let redis = app.redis().await;
    let queued = queued_request_ids(&redis, &app.settings.redis).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let request_id = queued[0].clone();
    assert!(!request_id.is_empty());
    if let Some(echoed) = r.headers.get("x-request-id") {
        assert_eq!(
            echoed.to_str().unwrap(),
            request_id,
            "the reply names the same request"
        );
    }

    let stored_line = || {
        logs.json()
            .into_iter()
            .find(|l| l["event_id"] == "traced-1" && l["request_id"] == request_id.as_str())
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            stored_line().is_some()
        })
        .await,
        "no worker line carries eventId traced-1 with request id {request_id}:\n{}",
        logs.text()
    );
    let line = stored_line().unwrap();
    assert_eq!(line["name"], "sluice-worker", "{line}");
    assert!(
        line["msg"]
            .as_str()
            .is_some_and(|m| m.ends_with("event stored")),
        "{line}"
    );
    // Inside the batch's span: the line carries the stream entry it came from as well, and the
    // event's place in it (`<entry id>.<index>`: an entry packs an enqueue call's events).
    let entry = line["first_stream_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!entry.is_empty(), "{line}");
    assert_eq!(line["stream_id"], format!("{entry}.0"), "{line}");
    assert_eq!(line["consumer"], "traced", "{line}");
}
