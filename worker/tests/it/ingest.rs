use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mongodb::bson::doc;
use serde_json::json;

use crate::helpers::{event, new_account, spawn_app, spawn_app_with, Options};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_accepted_event_is_stored_with_every_field_and_the_corrected_timestamp() {
    let app = spawn_app().await;
    let r = app
        .post_event(&json!({
            "eventId": "evt-1",
            "eventType": "purchase",
            "userId": "user-42",
            "sessionId": "sess-9",
            "timestamp": "2024-05-01T12:00:00Z",
            "sentAt": "2024-05-01T12:00:30Z",
            "properties": {"amount": 42.5, "items": [{"sku": "a"}], "coupon": null}
        }))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body, json!({"eventId": "evt-1", "status": "accepted"}));
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));

    app.wait_for_events(doc! {}, 1, WAIT).await;
    let d = app.find_event("evt-1").await.expect("stored");
    assert_eq!(d.get_str("eventId").unwrap(), "evt-1");
    assert_eq!(d.get_str("accountId").unwrap(), app.account_id.to_string());
    assert_eq!(d.get_str("eventType").unwrap(), "purchase");
    assert_eq!(d.get_str("userId").unwrap(), "user-42");
    assert_eq!(d.get_str("sessionId").unwrap(), "sess-9");
    let props = d.get_document("properties").unwrap();
    assert_eq!(props.get_f64("amount").unwrap(), 42.5);
    assert_eq!(
        props.get_array("items").unwrap()[0]
            .as_document()
            .unwrap()
            .get_str("sku")
            .unwrap(),
        "a"
    );

    // The client clock was `sentAt`; the server's was `receivedAt`: the difference corrects it.
    let received = d.get_datetime("receivedAt").unwrap().timestamp_millis();
    let ts = d.get_datetime("timestamp").unwrap().timestamp_millis();
    let client_ts = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
        .unwrap()
        .timestamp_millis();
    let sent = DateTime::parse_from_rfc3339("2024-05-01T12:00:30Z")
        .unwrap()
        .timestamp_millis();
    assert_eq!(ts, client_ts + (received - sent));
    assert!((Utc::now().timestamp_millis() - received).abs() < 60_000);

    // Every reader deserializes the document the worker wrote.
    let typed: sluice_store::StoredEvent = mongodb::bson::from_document(d).unwrap();
    assert_eq!(typed.id, format!("{}:evt-1", app.account_id));
    assert_eq!(typed.session_id.as_deref(), Some("sess-9"));
    assert_eq!(typed.timestamp.timestamp_millis(), ts);
    assert_eq!(typed.properties.unwrap().get_f64("amount").unwrap(), 42.5);
}

#[tokio::test]
async fn without_an_event_id_the_server_assigns_a_uuid_v7_and_stores_it() {
    let app = spawn_app().await;
    let r = app
        .post_event(&json!({"eventType": "signup", "userId": "u"}))
        .await;
    assert_eq!(r.status, 202);
    let id = r.body["eventId"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    app.wait_for_events(doc! {}, 1, WAIT).await;
    let d = app
        .find_event(&id)
        .await
        .expect("stored under the assigned id");
    // No timestamp sent: the receive time is the event time.
    assert_eq!(d.get_datetime("timestamp"), d.get_datetime("receivedAt"));
}

#[tokio::test]
async fn a_client_cannot_set_the_account() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Default::default()
    })
    .await;
    let r = app
        .post_event(&json!({"eventType": "a", "userId": "u", "accountId": "someone-else"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "invalid_event");
    assert_eq!(r.body["error"]["details"][0]["path"], "/accountId");
}

#[tokio::test]
async fn the_same_event_id_twice_is_accepted_then_duplicate_and_stored_once() {
    let app = spawn_app().await;
    let first = app.post_event(&event("dup-1")).await;
    let second = app.post_event(&event("dup-1")).await;
    assert_eq!(first.status, 202);
    assert_eq!(second.status, 200);
    assert_eq!(
        second.body,
        json!({"eventId": "dup-1", "status": "duplicate"})
    );
    assert_eq!(app.wait_for_events(doc! {}, 1, WAIT).await, 1);
    // Give a wrongly doubled entry time to arrive before counting again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count_events(doc! {}).await, 1);
}

#[tokio::test]
async fn ingest_goes_on_when_redis_has_forgotten_the_enqueue_script() {
    // A restarted or failed-over Redis has no scripts loaded: the enqueue loads it again and
    // sends the same call once more.
    let app = spawn_app().await;
    assert_eq!(app.post_event(&event("noscript-1")).await.status, 202);
    use fred::interfaces::LuaInterface;
    let _: () = app.redis().await.script_flush(false).await.unwrap();
    assert_eq!(app.post_event(&event("noscript-2")).await.status, 202);
    let again = app.post_event(&event("noscript-1")).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(app.wait_for_events(doc! {}, 2, WAIT).await, 2);
}

#[tokio::test]
async fn the_same_event_id_from_two_accounts_is_stored_twice() {
    let app = spawn_app().await;
    let (other_account, other_key) = new_account(&app.pool).await;
    assert_eq!(app.post_event(&event("shared-id")).await.status, 202);
    assert_eq!(
        app.post_event_with_key(&other_key, &event("shared-id"))
            .await
            .status,
        202
    );
    assert_eq!(
        app.wait_for_events(doc! {"eventId": "shared-id"}, 2, WAIT)
            .await,
        2
    );
    let accounts: Vec<String> = app
        .events()
        .distinct("accountId", doc! {})
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.as_str().unwrap().to_owned())
        .collect();
    assert!(accounts.contains(&app.account_id.to_string()));
    assert!(accounts.contains(&other_account.to_string()));
}

#[tokio::test]
async fn a_batch_judges_each_event_and_stores_only_the_valid_ones() {
    let app = spawn_app().await;
    assert_eq!(app.post_event(&event("b-seen")).await.status, 202);
    let r = app
        .post_batch(vec![
            event("b-1"),
            json!({"eventType": "click"}),
            event("b-seen"),
            event("b-2"),
            json!({"eventType": "9bad", "userId": "u", "extra": 1}),
            event("b-1"),
        ])
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["accepted"], 2);
    assert_eq!(r.body["duplicates"], 2);
    assert_eq!(r.body["rejected"], 2);
    let results = r.body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "accepted",
            "rejected",
            "duplicate",
            "accepted",
            "rejected",
            "duplicate"
        ]
    );
    for (i, res) in results.iter().enumerate() {
        assert_eq!(res["index"], i);
    }
    assert_eq!(results[1]["error"]["code"], "invalid_event");
    assert_eq!(results[1]["error"]["details"][0]["path"], "/userId");
    let mut paths: Vec<&str> = results[4]["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/eventType", "/extra"]);

    assert_eq!(app.wait_for_events(doc! {}, 3, WAIT).await, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stored: Vec<String> = app
        .events()
        .distinct("eventId", doc! {})
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.as_str().unwrap().to_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["b-1", "b-2", "b-seen"]);
}

#[tokio::test]
async fn a_batch_of_only_duplicates_is_200_and_of_only_invalid_events_is_400() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Default::default()
    })
    .await;
    assert_eq!(app.post_batch(vec![event("x1")]).await.status, 202);
    let dups = app.post_batch(vec![event("x1"), event("x1")]).await;
    assert_eq!(dups.status, 200);
    assert_eq!(dups.body["duplicates"], 2);
    let bad = app
        .post_batch(vec![json!({}), json!({"eventType": "a"})])
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["rejected"], 2);
    assert_eq!(bad.body["error"]["code"], "invalid_event");
}

#[tokio::test]
async fn batch_limits_are_enforced() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Default::default()
    })
    .await;
    let many: Vec<_> = (0..1001).map(|i| event(&format!("m{i}"))).collect();
    let r = app.post_batch(many).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["error"]["code"], "payload_too_large");

    let empty = app.post_batch(vec![]).await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.body["error"]["code"], "invalid_event");

    // One event over 64 KiB inside a batch: that item is rejected, the other queued.
    let big = json!({"eventId": "big", "eventType": "a", "userId": "u",
        "properties": {"blob": "x".repeat(70 * 1024)}});
    let r = app.post_batch(vec![big.clone(), event("small")]).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["results"][0]["status"], "rejected");
    assert_eq!(r.body["results"][0]["error"]["code"], "payload_too_large");
    assert_eq!(r.body["results"][1]["status"], "accepted");

    // The same event alone is over the single-event limit.
    let r = app.post_event(&big).await;
    assert_eq!(r.status, 413);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit is 65536 bytes"));

    // A batch body over 5 MiB.
    let huge: Vec<_> = (0..100)
        .map(|i| {
            json!({"eventId": format!("h{i}"), "eventType": "a", "userId": "u",
            "properties": {"blob": "y".repeat(60 * 1024)}})
        })
        .collect();
    assert_eq!(app.post_batch(huge).await.status, 413);
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401_in_the_contract_shape() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Default::default()
    })
    .await;
    let body = serde_json::to_vec(&event("k1")).unwrap();
    let missing = app
        .post_raw(
            "/api/v1/events",
            body.clone(),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["error"]["code"], "unauthorized");
    let unknown = app
        .post_event_with_key(
            "slk_0000000000000000000000000000000000000000000000000000000000000000",
            &event("k1"),
        )
        .await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.body["error"]["code"], "unauthorized");
    // The key is also accepted as a bearer token.
    let bearer = app
        .post_raw(
            "/api/v1/events",
            body,
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {}", app.key)),
            ],
        )
        .await;
    assert_eq!(bearer.status, 202);
}

#[tokio::test]
async fn auth_is_checked_before_the_body_is_read() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Default::default()
    })
    .await;
    // Not JSON, too large, and no key: the key decides.
    let r = app
        .post_raw(
            "/api/v1/events",
            vec![b'x'; 200 * 1024],
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn bad_bodies_get_clear_errors_and_change_nothing() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Default::default()
    })
    .await;
    let json_ct = ("content-type", "application/json");
    let key = ("x-api-key", app.key.as_str());

    let r = app
        .post_raw(
            "/api/v1/events",
            b"{\"eventType\":".to_vec(),
            &[json_ct, key],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "malformed_json");

    let r = app
        .post_event(&json!({"eventType": "", "userId": 7, "timestamp": "noon"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "invalid_event");
    let mut paths: Vec<&str> = r.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    paths.sort();
    // An empty eventType breaks both its length and its pattern: each is reported.
    paths.dedup();
    assert_eq!(paths, ["/eventType", "/timestamp", "/userId"]);

    let r = app
        .post_raw(
            "/api/v1/events",
            serde_json::to_vec(&event("t")).unwrap(),
            &[("content-type", "text/plain"), key],
        )
        .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.body["error"]["code"], "unsupported_media_type");

    // A gzip body that inflates past the limit is refused without inflating it all.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 50 * 1024 * 1024]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 100 * 1024);
    let r = app
        .post_raw(
            "/api/v1/events",
            bomb.clone(),
            &[json_ct, key, ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["error"]["code"], "payload_too_large");
    let r = app
        .post_raw(
            "/api/v1/events/batch",
            bomb,
            &[json_ct, key, ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.status, 413);

    // Nothing of the above reached the stream.
    let redis = sluice_shared::redis::connect(&app.settings.redis)
        .await
        .unwrap();
    let len = sluice_testkit::stream::length(&redis, &app.settings.redis).await;
    assert_eq!(len, 0);
}

#[tokio::test]
async fn a_gzip_body_within_the_limit_is_accepted() {
    let app = spawn_app().await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(&json!({"events": [event("g1"), event("g2")]})).unwrap())
        .unwrap();
    let r = app
        .post_raw(
            "/api/v1/events/batch",
            gz.finish().unwrap(),
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
                ("x-api-key", &app.key),
            ],
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["accepted"], 2);
    assert_eq!(app.wait_for_events(doc! {}, 2, WAIT).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_concurrent_events_are_stored_exactly_once_each() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..50 {
        let app = app.clone();
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..40 {
                let r = app.post_event(&event(&format!("c{c}-{i}"))).await;
                statuses.push(r.status);
            }
            statuses
        });
    }
    let mut accepted = 0;
    while let Some(statuses) = tasks.join_next().await {
        accepted += statuses.unwrap().iter().filter(|s| **s == 202).count();
    }
    assert_eq!(accepted, 2000);
    assert_eq!(
        app.wait_for_events(doc! {}, 2000, Duration::from_secs(60))
            .await,
        2000
    );
    let distinct = app.events().distinct("eventId", doc! {}).await.unwrap();
    assert_eq!(distinct.len(), 2000);
}

#[tokio::test]
async fn a_backlog_over_the_limit_answers_503_overloaded_with_retry_after() {
    let app = spawn_app_with(Options {
        with_worker: false,
        max_backlog: 3,
        ..Default::default()
    })
    .await;
    for i in 0..4 {
        assert_eq!(app.post_event(&event(&format!("o{i}"))).await.status, 202);
    }
    // The backlog is polled every 50 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = app.post_event(&event("o-over")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"]["code"], "overloaded");
    assert!(r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn health_readiness_liveness_and_metrics_answer() {
    let app = spawn_app().await;
    for path in ["/api/health", "/api/ready", "/api/live"] {
        let r = app
            .http
            .get(format!("{}{path}", app.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let health: serde_json::Value = app
        .http
        .get(format!("{}/api/health", app.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["dependencies"]["redis"]["status"], "up");
    assert_eq!(health["dependencies"]["postgres"]["status"], "up");
    assert_eq!(app.post_event(&event("m1")).await.status, 202);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sluice_events_total"), "{metrics}");
    assert!(metrics.contains("sluice_http_requests_total"));
}
