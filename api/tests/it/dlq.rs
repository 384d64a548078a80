//! `GET /api/v1/dlq` and `POST /api/v1/dlq/{id}/replay` on the api (the write side). Letters are
//! written here as the worker writes them (`FailedEntry::letter`); a replay is seen on the stream.
use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{doc, DateTime};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_shared::config::Settings;
use sluice_shared::names::{STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};
use sluice_store::{DeadLetterReason, FailedEntry};
use uuid::Uuid;

use crate::{account_with_key, get_json, post_event, spawn_api, test_settings, TEST_JWT_SECRET};

struct Dlq {
    url: String,
    settings: Settings,
    db: mongodb::Database,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Tenant {
    account: String,
    token: String,
}

impl Dlq {
    async fn start(settings: Settings) -> Self {
        let (url, stop) = spawn_api(&settings).await;
        let db = sluice_store::connect(&settings.mongo, "sluice-api-tests")
            .await
            .unwrap();
        Dlq {
            url,
            settings,
            db,
            http: reqwest::Client::new(),
            _stop: stop,
        }
    }

    /// An account and its JWT (signed with the api's secret; no password needed).
    fn tenant(&self) -> Tenant {
        let account = Uuid::now_v7().to_string();
        let jwt = sluice_shared::jwt::Jwt::new(&secrecy::SecretString::from(TEST_JWT_SECRET), 3600);
        let (token, _) = jwt
            .issue(&account, "t@t.sluice", chrono::Utc::now())
            .unwrap();
        Tenant { account, token }
    }

    /// A dead letter of `tenant`'s event `event_id`, as the worker writes it; its id.
    async fn letter(&self, tenant: &Tenant, event_id: &str, reason: DeadLetterReason) -> String {
        self.letter_at(tenant, event_id, reason, DateTime::now(), true)
            .await
    }

    async fn letter_at(
        &self,
        tenant: &Tenant,
        event_id: &str,
        reason: DeadLetterReason,
        failed_at: DateTime,
        with_event: bool,
    ) -> String {
        let event = json!({
            "eventId": event_id, "accountId": tenant.account, "eventType": "refused",
            "userId": "u", "timestamp": "2026-11-30T10:00:00.000Z",
            "receivedAt": "2026-11-30T10:00:00.000Z",
        });
        let mut fields = BTreeMap::from([(STREAM_REQUEST_ID_FIELD.to_owned(), "req-1".to_owned())]);
        if with_event {
            fields.insert(STREAM_EVENT_FIELD.to_owned(), event.to_string());
        }
        let entry = FailedEntry {
            stream_id: format!("{}-0", failed_at.timestamp_millis()),
            account_id: Some(tenant.account.clone()),
            event_id: Some(event_id.to_owned()),
            fields,
            reason,
            error: "code 121: Document failed validation".into(),
            attempts: 1,
            request_id: Some("req-1".into()),
        };
        let letter = entry.letter("worker-1", failed_at);
        sluice_store::dead_letters(&self.db)
            .insert_one(&letter)
            .await
            .unwrap();
        letter.id
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn replay(&self, token: &str, id: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/api/v1/dlq/{id}/replay", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// The request ids of the stream's entries that carry event `event_id`.
    async fn queued(&self, event_id: &str) -> Vec<String> {
        let redis = sluice_shared::redis::connect(&self.settings.redis)
            .await
            .unwrap();
        sluice_testkit::stream::queued(&redis, &self.settings.redis)
            .await
            .into_iter()
            .filter(|q| q.event["eventId"] == event_id)
            .map(|q| q.request_id.unwrap_or_default())
            .collect()
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_per_account_only() {
    let dlq = Dlq::start(test_settings()).await;
    let (a, b) = (dlq.tenant(), dlq.tenant());
    let id = dlq
        .letter(&a, "dl-1", DeadLetterReason::WriteRejected)
        .await;
    dlq.letter(&a, "dl-2", DeadLetterReason::Invalid).await;

    let (status, list) = dlq.get(&a.token, "/api/v1/dlq?reason=write_rejected").await;
    assert_eq!(status, StatusCode::OK);
    let letters = list["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{list}");
    assert_eq!(letters[0]["id"], id.as_str());
    assert_eq!(letters[0]["eventId"], "dl-1");
    assert_eq!(letters[0]["reason"], "write_rejected");
    assert_eq!(letters[0]["attempts"], 1);
    assert_eq!(letters[0]["event"]["eventType"], "refused");
    assert!(letters[0]["failedAt"].is_string(), "{list}");
    assert!(letters[0]["replayedAt"].is_null(), "{list}");
    assert!(list["nextBefore"].is_null());
    let (_, all) = dlq.get(&a.token, "/api/v1/dlq").await;
    assert_eq!(all["deadLetters"].as_array().unwrap().len(), 2);
    let (_, other) = dlq.get(&b.token, "/api/v1/dlq").await;
    assert_eq!(other["deadLetters"], json!([]));

    let (status, body) = dlq.replay(&b.token, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(dlq.queued("dl-1").await.is_empty());

    let (status, body) = dlq.replay(&a.token, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({"id": id, "status": "queued"}));
    // Back on the stream, under a request id the worker folds a failure of it back with.
    assert_eq!(dlq.queued("dl-1").await, [format!("replay:{id}")]);

    let (status, body) = dlq.replay(&a.token, &id).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "already_replayed");
    assert_eq!(dlq.queued("dl-1").await.len(), 1, "queued once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_once_and_a_second_replay_is_409() {
    let dlq = Dlq::start(test_settings()).await;
    let a = dlq.tenant();
    let id = dlq
        .letter(&a, "once-1", DeadLetterReason::WriteRejected)
        .await;

    // Both at once: exactly one of them replays.
    let (first, second) = tokio::join!(dlq.replay(&a.token, &id), dlq.replay(&a.token, &id));
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
    let redis = sluice_shared::redis::connect(&dlq.settings.redis)
        .await
        .unwrap();
    sluice_testkit::stream::forget_dedup(&redis, &dlq.settings).await;
    let (status, body) = dlq.replay(&a.token, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "already_replayed");
    assert_eq!(dlq.queued("once-1").await.len(), 1);
    // The letter says it was replayed, once.
    let (_, list) = dlq.get(&a.token, "/api/v1/dlq").await;
    let listed: Vec<&Value> = list["deadLetters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["id"] == id.as_str())
        .collect();
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["replayedAt"].is_string(), "{list}");
}

#[tokio::test]
async fn a_letter_that_holds_no_event_is_unreplayable() {
    let dlq = Dlq::start(test_settings()).await;
    let a = dlq.tenant();
    let id = dlq
        .letter_at(
            &a,
            "none-1",
            DeadLetterReason::Invalid,
            DateTime::now(),
            false,
        )
        .await;
    let (status, body) = dlq.replay(&a.token, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "unreplayable");
}

#[tokio::test]
async fn pages_run_newest_first_along_their_cursor() {
    let dlq = Dlq::start(test_settings()).await;
    let a = dlq.tenant();
    let base = DateTime::now().timestamp_millis();
    // Two of them in the same instant: their `_id` orders them.
    for (n, at) in [(1, 0), (2, 10), (3, 10), (4, 20), (5, 30)] {
        dlq.letter_at(
            &a,
            &format!("p-{n}"),
            DeadLetterReason::Poison,
            DateTime::from_millis(base + at),
            true,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/dlq?limit=2".to_owned();
    for _ in 0..4 {
        let (status, page) = dlq.get(&a.token, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for l in page["deadLetters"].as_array().unwrap() {
            seen.push(l["eventId"].as_str().unwrap().to_owned());
        }
        match page["nextBefore"].as_str() {
            Some(next) => path = format!("/api/v1/dlq?limit=2&before={}", url_escape(next)),
            None => break,
        }
    }
    assert_eq!(seen, ["p-5", "p-4", "p-3", "p-2", "p-1"]);
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let dlq = Dlq::start(test_settings()).await;
    let a = dlq.tenant();
    for (path, pointer) in [
        ("/api/v1/dlq?reason=whatever", "/reason"),
        ("/api/v1/dlq?limit=1000", "/limit"),
        ("/api/v1/dlq?limit=0", "/limit"),
        ("/api/v1/dlq?before=nonsense", "/before"),
    ] {
        let (status, body) = dlq.get(&a.token, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body["error"]["code"], "invalid_request", "{path}");
        assert_eq!(body["error"]["details"][0]["path"], pointer, "{path}");
    }
    let r = dlq
        .http
        .get(format!("{}/api/v1/dlq/some-id/replay", dlq.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
}

#[tokio::test]
async fn another_accounts_dead_letters_answer_as_if_they_did_not_exist() {
    let dlq = Dlq::start(test_settings()).await;
    let (a, b) = (dlq.tenant(), dlq.tenant());
    let id = format!("{}:owasp-dl", a.account);
    dlq.db
        .collection::<mongodb::bson::Document>(sluice_shared::names::DLQ_COLLECTION)
        .insert_one(doc! {
            "_id": &id, "accountId": &a.account, "eventId": "owasp-dl",
            "reason": "invalid", "error": "test", "attempts": 1, "failedAt": DateTime::now(),
            "streamId": "1-0", "consumer": "operator-only-name", "rawEntry": "operator-only-bytes",
            "event": {"eventId": "owasp-dl", "accountId": &a.account,
                      "eventType": "x", "userId": "owasp-user"},
        })
        .await
        .unwrap();

    // The owner sees it, without the operators' fields.
    let (status, own) = dlq.get(&a.token, "/api/v1/dlq").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own["deadLetters"].as_array().unwrap().len(), 1, "{own}");
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
    let (_, other) = dlq.get(&b.token, "/api/v1/dlq").await;
    assert_eq!(other["deadLetters"], json!([]));
    let (status, body) = dlq.replay(&b.token, &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let left = dlq
        .db
        .collection::<mongodb::bson::Document>(sluice_shared::names::DLQ_COLLECTION)
        .find_one(doc! {"_id": &id})
        .await
        .unwrap()
        .unwrap();
    assert!(
        left.get("replayedAt").is_none(),
        "another account's replay changed nothing"
    );
}

#[tokio::test]
async fn an_ingest_key_opens_no_dead_letter_endpoint() {
    let dlq = Dlq::start(test_settings()).await;
    let (_, key) = account_with_key(&dlq.settings).await;
    let list = format!("{}/api/v1/dlq", dlq.url);
    let replay = format!("{}/api/v1/dlq/x/replay", dlq.url);
    for req in [
        dlq.http.get(&list).bearer_auth(&key),
        dlq.http.get(&list).header("x-api-key", &key),
        dlq.http.post(&replay).bearer_auth(&key),
        dlq.http.post(&replay).header("x-api-key", &key),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn with_mongodb_down_dead_letters_are_503_while_ingest_and_readiness_stay_up() {
    let mut settings = test_settings();
    // Nothing listens there: the api starts anyway (the driver connects on first use).
    let port = sluice_testkit::servers::free_port();
    settings.mongo.url = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let dlq = Dlq::start(settings).await;
    let a = dlq.tenant();

    let r = dlq
        .http
        .get(format!("{}/api/v1/dlq", dlq.url))
        .bearer_auth(&a.token)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MongoDB"),
        "{body}"
    );
    let (status, body) = dlq.replay(&a.token, "1-0:e1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let (status, health) = get_json(&dlq.url, "/api/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["dependencies"]["mongodb"]["status"], "down");
    assert_eq!(health["dependencies"]["redis"]["status"], "up");
    assert_eq!(get_json(&dlq.url, "/api/ready").await.0, 200);
    let (_, key) = account_with_key(&dlq.settings).await;
    assert_eq!(
        post_event(&dlq.url, &key, "while-mongo-is-down").await.0,
        202
    );
}
