//! Issue 11, items 17 and 18: path and query values judged as the event schema judges them, a
//! dead letter replayed once, and a pipeline view that shows a tenant only what is theirs.
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{spawn_stack, Stack, Tenant};

async fn post(stack: &Stack, token: &str, path: &str) -> (StatusCode, Value) {
    let r = stack
        .http
        .post(format!("{}{path}", stack.analytics))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `n` dead letters of `tenant` are stored; returns them, oldest first.
async fn wait_dead_letters(stack: &Stack, tenant: &Tenant, n: u64) -> Vec<mongodb::bson::Document> {
    use futures::TryStreamExt;
    let dlq = sluice_worker::store::dead_letters(&stack.db);
    let filter = mongodb::bson::doc! {"accountId": tenant.account.to_string()};
    for _ in 0..150 {
        if dlq.count_documents(filter.clone()).await.unwrap() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dlq.find(filter)
        .sort(mongodb::bson::doc! {"failedAt": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

async fn refuse_event_type(stack: &Stack, event_type: &str) {
    stack
        .db
        .run_command(
            mongodb::bson::doc! {"collMod": "events", "validator": {"eventType": {"$ne": event_type}}},
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_of_128_characters_is_found_whatever_its_byte_length() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    // 128 characters, 256 bytes: the schema counts characters, so the api accepted it.
    let user = "é".repeat(128);
    stack
        .ingest(
            &a,
            &[json!({"eventId": "wide-1", "eventType": "view", "userId": user})],
        )
        .await;
    stack.wait_stored(1).await;
    let (status, _, body) = stack
        .get(&a.token, &format!("/api/v1/analytics/users/{user}/events"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["eventId"], "wide-1");
    let (status, _, body) = stack
        .get(
            &a.token,
            &format!("/api/v1/analytics/users/{}/events", "é".repeat(129)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "/userId");
}

#[tokio::test]
async fn event_type_filters_are_judged_by_the_event_schema_and_refused_with_400() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    let long = "a".repeat(101);
    for bad in [
        "%24where",
        "a%00b",
        "1abc",
        "has%20space",
        "caf%C3%A9",
        long.as_str(),
    ] {
        let path = format!("/api/v1/analytics/timeseries?range=1h&bucket=1m&eventType={bad}");
        let (status, _, body) = stack.get(&a.token, &path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}");
        assert_eq!(body["error"]["details"][0]["path"], "/eventType", "{bad}");
    }
    for good in ["page.view", "a", "Order:Completed-2_x"] {
        let path = format!("/api/v1/analytics/timeseries?range=1h&bucket=1m&eventType={good}");
        let (status, _, body) = stack.get(&a.token, &path).await;
        assert_eq!(status, StatusCode::OK, "{good}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_once_and_a_second_replay_is_409() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    refuse_event_type(&stack, "refused").await;
    stack
        .ingest(
            &a,
            &[json!({"eventId": "once-1", "eventType": "refused", "userId": "u"})],
        )
        .await;
    let letters = wait_dead_letters(&stack, &a, 1).await;
    assert_eq!(letters.len(), 1);
    let id = letters[0].get_str("_id").unwrap().to_owned();
    let path = format!("/api/v1/dlq/{id}/replay");

    // Both at once: exactly one of them replays.
    let (first, second) =
        tokio::join!(post(&stack, &a.token, &path), post(&stack, &a.token, &path));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::ACCEPTED, StatusCode::CONFLICT],
        "{first:?} {second:?}"
    );
    let conflict = if first.0 == StatusCode::CONFLICT {
        first.1
    } else {
        second.1
    };
    assert_eq!(conflict["error"]["code"], "already_replayed", "{conflict}");

    // Later, once the replay's dedup reservation has long expired: still 409.
    let redis = sluice_shared::redis::connect(&stack.settings.redis)
        .await
        .unwrap();
    {
        use fred::prelude::*;
        let _: i64 = redis.del(format!("dlq-replay:{id}")).await.unwrap();
    }
    let (status, body) = post(&stack, &a.token, &path).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "already_replayed");
    // The letter says it was replayed, once.
    let (_, _, list) = stack.get(&a.token, "/api/v1/dlq").await;
    let listed: Vec<&Value> = list["deadLetters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["id"] == id.as_str())
        .collect();
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["replayedAt"].is_string(), "{list}");
}

/// The replay of a letter whose event is refused again must not pile up letters: the failure is
/// recorded on the letter that was replayed (the worker folds an entry with request id
/// `replay:{letter id}` into that letter), which becomes replayable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replay_adds_no_new_dead_letter() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    refuse_event_type(&stack, "refused").await;
    stack
        .ingest(
            &a,
            &[json!({"eventId": "again-1", "eventType": "refused", "userId": "u"})],
        )
        .await;
    let letters = wait_dead_letters(&stack, &a, 1).await;
    let id = letters[0].get_str("_id").unwrap().to_owned();
    let (status, body) = post(&stack, &a.token, &format!("/api/v1/dlq/{id}/replay")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // The replayed event is refused again; wait (up to 15 s) for the worker to record it.
    let mut letters = Vec::new();
    for _ in 0..150 {
        letters = wait_dead_letters(&stack, &a, 1).await;
        if letters.iter().any(|l| l.get("replayFailures").is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].get_i64("replayFailures").ok(),
        Some(1),
        "{letters:?}"
    );
    assert!(letters[0].get("replayedAt").is_none(), "{letters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_shows_a_tenant_only_their_own_figures_and_a_coarse_state() {
    let stack = spawn_stack().await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    refuse_event_type(&stack, "refused").await;
    let now = chrono::Utc::now().to_rfc3339();
    let events = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"eventId": format!("{prefix}-{i}"), "eventType": "view", "userId": "u", "timestamp": now}))
            .collect()
    };
    stack.ingest(&a, &events("a", 5)).await;
    stack
        .ingest(
            &a,
            &[json!({"eventId": "a-dead", "eventType": "refused", "userId": "u"})],
        )
        .await;
    stack.ingest(&b, &events("b", 3)).await;
    stack.wait_stored(8).await;
    wait_dead_letters(&stack, &a, 1).await;

    let (status, _, pa) = stack.get(&a.token, "/api/v1/analytics/pipeline").await;
    assert_eq!(status, StatusCode::OK, "{pa}");
    let (_, _, pb) = stack.get(&b.token, "/api/v1/analytics/pipeline").await;
    assert_eq!(pa["state"], "ok", "{pa}");
    assert_eq!(pa["ingest"]["last5m"], 5, "{pa}");
    assert_eq!(pa["ingest"]["last1h"], 5, "{pa}");
    assert_eq!(pb["ingest"]["last5m"], 3, "{pb}");
    assert_eq!(pa["deadLetters"]["total"], 1, "{pa}");
    assert_eq!(pa["deadLetters"]["byReason"]["write_rejected"], 1, "{pa}");
    assert_eq!(pb["deadLetters"]["total"], 0, "{pb}");
    // Nothing global: no stream figures, no consumer names, no stream key.
    for p in [&pa, &pb] {
        for global in ["streamLength", "pending", "lag", "backlog", "consumers"] {
            assert!(p.get(global).is_none(), "{global} in {p}");
        }
        let text = p.to_string();
        let consumer = stack.settings.worker.consumer_name.clone().unwrap();
        assert!(!text.contains(&consumer), "{text}");
        assert!(!text.contains(&stack.settings.redis.stream_key), "{text}");
    }
}
