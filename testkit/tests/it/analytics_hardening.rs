//! Issue 11, items 17 and 18, through the whole stack: path values judged as the event schema
//! judges them, and a pipeline view that shows a tenant only what is theirs.
use serde_json::{json, Value};
use sluice_testkit::{spawn_stack, Options};

use crate::flow::{ingest, refuse_event_type, wait_dead_letters, wait_stored};
use crate::{analytics, worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_of_128_characters_is_found_whatever_its_byte_length() {
    let stack = spawn_stack(Options::api().worker(worker()).analytics(analytics())).await;
    let a = stack.tenant().await;
    // 128 characters, 256 bytes: the schema counts characters, so the api accepted it.
    let user = "é".repeat(128);
    ingest(
        &stack,
        &a,
        &[json!({"eventId": "wide-1", "eventType": "view", "userId": user})],
    )
    .await;
    wait_stored(&stack, 1).await;
    let r = stack.analytics().user_events(&a.token, &user, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["events"][0]["eventId"], "wide-1");
    let r = stack
        .analytics()
        .user_events(&a.token, &"é".repeat(129), "")
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "/userId");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_shows_a_tenant_only_their_own_figures_and_a_coarse_state() {
    let stack = spawn_stack(Options::api().worker(worker()).analytics(analytics())).await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    refuse_event_type(&stack, "refused").await;
    let now = chrono::Utc::now().to_rfc3339();
    let events = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"eventId": format!("{prefix}-{i}"), "eventType": "view", "userId": "u", "timestamp": now}))
            .collect()
    };
    ingest(&stack, &a, &events("a", 5)).await;
    ingest(
        &stack,
        &a,
        &[json!({"eventId": "a-dead", "eventType": "refused", "userId": "u"})],
    )
    .await;
    ingest(&stack, &b, &events("b", 3)).await;
    wait_stored(&stack, 8).await;
    wait_dead_letters(&stack, &a, 1).await;

    let ra = stack.analytics().pipeline(&a.token).await;
    assert_eq!(ra.status, 200, "{}", ra.body);
    let (pa, pb) = (ra.body, stack.analytics().pipeline(&b.token).await.body);
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
        assert!(!text.contains(&stack.settings.redis.key_prefix), "{text}");
    }
}
