//! Events through the whole stack: in through the api, stored by the worker, and what the test
//! needs to wait for and arrange on the way.
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use serde_json::Value;
use sluice_shared::names::{DLQ_COLLECTION, EVENTS_COLLECTION};
use sluice_testkit::{Stack, Tenant};

/// Sends `events` through the api's batch endpoint, 500 at a time.
pub async fn ingest(stack: &Stack, tenant: &Tenant, events: &[Value]) {
    for chunk in events.chunks(500) {
        let r = stack.api().post_batch(&tenant.key, chunk).await;
        // 200 when every event was a duplicate.
        assert!([202, 200].contains(&r.status), "{}: {}", r.status, r.body);
    }
}

pub fn events(stack: &Stack) -> mongodb::Collection<Document> {
    stack.db.collection(EVENTS_COLLECTION)
}

pub fn dead_letters(stack: &Stack) -> mongodb::Collection<Document> {
    stack.db.collection(DLQ_COLLECTION)
}

/// Waits (up to 30 s) until `n` events are stored, asserts it is exactly `n`, then gives the
/// rollups of the last batch (written right after its insert) time to land.
pub async fn wait_stored(stack: &Stack, n: u64) {
    let events = events(stack);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = events.count_documents(doc! {}).await.unwrap();
        if c >= n {
            assert_eq!(c, n);
            // Rollups are written before the entries are acknowledged: once every partition's
            // group has acknowledged everything, every stored event is counted.
            let redis = sluice_shared::redis::connect(&stack.settings.redis)
                .await
                .unwrap();
            loop {
                let b = sluice_shared::redis::backlog(&redis, &stack.settings.redis)
                    .await
                    .unwrap();
                if b.entries == 0 {
                    return;
                }
                assert!(Instant::now() < deadline, "{b:?} still unacknowledged");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        assert!(Instant::now() < deadline, "stored {c} of {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server-side rule refusing one event type: its events are dead-lettered as `write_rejected`.
/// (The worker created the collection, with its indexes, at start.)
pub async fn refuse_event_type(stack: &Stack, event_type: &str) {
    stack
        .db
        .run_command(doc! {"collMod": "events", "validator": {"eventType": {"$ne": event_type}}})
        .await
        .unwrap();
}

/// Waits (up to 15 s) until `n` dead letters of `tenant` are stored; returns them, oldest first.
pub async fn wait_dead_letters(stack: &Stack, tenant: &Tenant, n: u64) -> Vec<Document> {
    let dlq = dead_letters(stack);
    let filter = doc! {"accountId": tenant.account.to_string()};
    for _ in 0..150 {
        if dlq.count_documents(filter.clone()).await.unwrap() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dlq.find(filter)
        .sort(doc! {"failedAt": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}
