//! Dead letters across the services: the worker writes them, the api (the write side) lists and
//! replays them, the worker stores a replayed event once (or folds its new failure back into its
//! letter), and analytics only reads them: its pipeline view counts the account's letters and how
//! many were replayed. (The api's own rules for these endpoints are in api/tests.)
use std::time::Duration;

use mongodb::bson::doc;
use serde_json::json;
use sluice_testkit::{eventually, spawn_stack, Options, Stack};

use crate::flow::{dead_letters, events, ingest, refuse_event_type, wait_dead_letters};
use crate::{analytics, worker};

async fn stored_once(stack: &Stack, event_id: &str) -> u64 {
    let events = events(stack);
    for _ in 0..100 {
        if events
            .count_documents(doc! {"eventId": event_id})
            .await
            .unwrap()
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    events
        .count_documents(doc! {"eventId": event_id})
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_and_counted_per_account_only() {
    let stack = spawn_stack(Options::api().worker(worker()).analytics(analytics())).await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    // A server-side rule refuses one kind of event: it is dead-lettered as write_rejected.
    refuse_event_type(&stack, "refused").await;
    ingest(
        &stack,
        &a,
        &[
            json!({"eventId": "dl-1", "eventType": "refused", "userId": "u"}),
            json!({"eventId": "ok-1", "eventType": "fine", "userId": "u"}),
        ],
    )
    .await;
    let dlq = dead_letters(&stack);
    let one = || async { dlq.count_documents(doc! {}).await.unwrap() == 1 };
    assert!(
        eventually(Duration::from_secs(10), one).await,
        "one dead letter"
    );
    let list = stack
        .api()
        .dead_letters(&a.token, "reason=write_rejected")
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let letters = list.body["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{}", list.body);
    assert_eq!(letters[0]["eventId"], "dl-1");
    let id = letters[0]["id"].as_str().unwrap().to_owned();
    let other = stack.api().dead_letters(&b.token, "").await;
    assert_eq!(other.body["deadLetters"], json!([]));

    assert_eq!(stack.api().replay(&b.token, &id).await.status, 404);
    // Lift the rule, then replay: stored once; a second replay adds nothing.
    stack
        .db
        .run_command(doc! {"collMod": "events", "validator": {}})
        .await
        .unwrap();
    let r = stack.api().replay(&a.token, &id).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(stored_once(&stack, "dl-1").await, 1);
    let again = stack.api().replay(&a.token, &id).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"]["code"], "already_replayed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        events(&stack)
            .count_documents(doc! {"eventId": "dl-1"})
            .await
            .unwrap(),
        1
    );

    let p = stack.analytics().pipeline(&a.token).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["deadLetters"]["total"], 1, "{}", p.body);
    assert_eq!(p.body["deadLetters"]["replayed"], 1, "{}", p.body);
    assert!(p.body.get("consumers").is_none(), "{}", p.body);
    let pb = stack.analytics().pipeline(&b.token).await;
    assert_eq!(pb.body["deadLetters"]["total"], 0, "{}", pb.body);
    assert_eq!(pb.body["deadLetters"]["replayed"], 0, "{}", pb.body);
}

/// The replay of a letter whose event is refused again must not pile up letters: the failure is
/// recorded on the letter that was replayed (the worker folds an entry with request id
/// `replay:{letter id}` into that letter), which becomes replayable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replay_adds_no_new_dead_letter() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let a = stack.tenant().await;
    refuse_event_type(&stack, "refused").await;
    ingest(
        &stack,
        &a,
        &[json!({"eventId": "again-1", "eventType": "refused", "userId": "u"})],
    )
    .await;
    let letters = wait_dead_letters(&stack, &a, 1).await;
    let id = letters[0].get_str("_id").unwrap().to_owned();
    let r = stack.api().replay(&a.token, &id).await;
    assert_eq!(r.status, 202, "{}", r.body);
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

/// `POST /api/v1/dlq/replay` takes the account's letters by reason and time range, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_by_reason_and_range_once_and_only_the_accounts_own() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    refuse_event_type(&stack, "refused").await;
    let batch: Vec<_> = (0..3)
        .map(|i| json!({"eventId": format!("bulk-{i}"), "eventType": "refused", "userId": "u"}))
        .collect();
    ingest(&stack, &a, &batch).await;
    ingest(
        &stack,
        &b,
        &[json!({"eventId": "theirs", "eventType": "refused", "userId": "u"})],
    )
    .await;
    wait_dead_letters(&stack, &a, 3).await;
    wait_dead_letters(&stack, &b, 1).await;
    stack
        .db
        .run_command(doc! {"collMod": "events", "validator": {}})
        .await
        .unwrap();
    let replay = |token: String, body: serde_json::Value| {
        let api = stack.api().clone();
        async move {
            api.authed(
                reqwest::Method::POST,
                "/api/v1/dlq/replay",
                &token,
                Some(&body),
            )
            .await
        }
    };
    // A range that holds none of them, and another reason: nothing.
    let r = replay(a.token.clone(), json!({"to": "2000-01-01T00:00:00Z"})).await;
    assert_eq!(
        (r.status, r.body["replayed"].as_u64()),
        (200, Some(0)),
        "{}",
        r.body
    );
    let r = replay(a.token.clone(), json!({"reason": "poison"})).await;
    assert_eq!(r.body["replayed"].as_u64(), Some(0));
    let r = replay(
        a.token.clone(),
        json!({"reason": "write_rejected", "from": "2000-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(r.body["replayed"].as_u64(), Some(3), "{}", r.body);
    for i in 0..3 {
        assert_eq!(stored_once(&stack, &format!("bulk-{i}")).await, 1);
    }
    let again = replay(a.token.clone(), json!({})).await;
    assert_eq!(again.body["replayed"].as_u64(), Some(0), "each letter once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        events(&stack)
            .count_documents(doc! {"eventId": "theirs"})
            .await
            .unwrap(),
        0,
        "another account's letter stays"
    );
    let r = replay(a.token.clone(), json!({"reason": "nope"})).await;
    assert_eq!(r.status, 400);
}
