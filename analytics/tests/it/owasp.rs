//! The rows of docs/SECURITY.md (OWASP API Security Top 10, 2023) that analytics answers for:
//! every read and the replay are scoped to the token's account, an ingest key opens none of them,
//! and a dead letter shows its tenant no operator-only field.
use mongodb::bson::{doc, DateTime};
use reqwest::StatusCode;
use serde_json::Value;

use crate::spawn_stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_dead_letters_and_users_answer_as_if_they_did_not_exist() {
    let stack = spawn_stack().await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    let id = format!("{}:owasp-dl", a.account);
    sluice_worker::store::dead_letters(&stack.db)
        .insert_one(doc! {
            "_id": &id, "accountId": a.account.to_string(), "eventId": "owasp-dl",
            "reason": "invalid", "error": "test", "attempts": 1, "failedAt": DateTime::now(),
            "streamId": "1-0", "consumer": "operator-only-name", "rawEntry": "operator-only-bytes",
            "event": {"eventId": "owasp-dl", "accountId": a.account.to_string(),
                      "eventType": "x", "userId": "owasp-user"},
        })
        .await
        .unwrap();

    // The owner sees it, without the operators' fields.
    let (status, _, own) = stack.get(&a.token, "/api/v1/dlq").await;
    assert_eq!(status, StatusCode::OK);
    let letters = own["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{own}");
    let text = own.to_string();
    for hidden in [
        "operator-only-name",
        "operator-only-bytes",
        "rawEntry",
        "consumer",
        "streamId",
    ] {
        assert!(
            !text.contains(hidden),
            "{hidden} shown to the tenant: {text}"
        );
    }

    // Another account: an empty list, 404 on replay (not 403: existence is not confirmed).
    let (_, _, other) = stack.get(&b.token, "/api/v1/dlq").await;
    assert_eq!(other["deadLetters"], serde_json::json!([]));
    let r = stack
        .http
        .post(format!("{}/api/v1/dlq/{id}/replay", stack.analytics))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let left = sluice_worker::store::dead_letters(&stack.db)
        .find_one(doc! {"_id": &id})
        .await
        .unwrap()
        .unwrap();
    assert!(
        left.get("replayedAt").is_none(),
        "another account's replay changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_key_opens_no_analytics_or_dead_letter_endpoint() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    let gets = [
        "/api/v1/analytics/summary?range=1h",
        "/api/v1/analytics/timeseries?range=1h&bucket=1m",
        "/api/v1/analytics/users/u/events",
        "/api/v1/analytics/pipeline",
        "/api/v1/dlq",
    ];
    for path in gets {
        let url = format!("{}{path}", stack.analytics);
        for req in [
            stack.http.get(&url).bearer_auth(&a.key),
            stack.http.get(&url).header("x-api-key", &a.key),
        ] {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        // The account's own token opens it.
        let (status, _, body) = stack.get(&a.token, path).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{path}: {status} {body}"
        );
    }
    let r = stack
        .http
        .post(format!("{}/api/v1/dlq/x/replay", stack.analytics))
        .header("x-api-key", &a.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
