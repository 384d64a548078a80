//! Sources through the whole stack: the Segment / RudderStack HTTP API, PostHog capture and
//! signed webhooks, each in through the api and stored by the worker — once, with the mapped
//! fields. (The official SDKs themselves are driven by scripts/sdk_suite.py in `make test`.)
use std::io::Write;
use std::time::Duration;

use base64::Engine;
use flate2::write::GzEncoder;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use sluice_api::sources::signature::{sign_standard, sign_stripe};
use sluice_testkit::{spawn_stack, test_settings, Options, Reply, Stack};

use crate::flow::{events, wait_stored};
use crate::{analytics, worker};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

async fn stored(stack: &Stack, event_id: &str) -> Document {
    events(stack)
        .find_one(doc! {"eventId": event_id})
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{event_id} is stored"))
}

async fn post(stack: &Stack, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
    stack.api().post_raw(path, body, headers).await
}

#[tokio::test]
async fn segment_calls_and_batches_land_once_with_their_mapped_fields() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let auth = basic(&t.key);
    let batch = json!({
        "batch": [
            {"type": "track", "event": "Order Completed", "messageId": "seg-1", "userId": "u-1",
             "anonymousId": "anon-1", "properties": {"revenue": 39.5, "currency": "EUR"},
             "context": {"library": {"name": "analytics-python"}}, "integrations": {"All": true},
             "timestamp": "2026-12-01T10:00:00Z"},
            {"type": "identify", "messageId": "seg-2", "userId": null, "anonymousId": "anon-1",
             "traits": {"plan": "pro"}},
            {"type": "page", "messageId": "seg-3", "userId": "u-1", "name": "Pricing"},
            {"type": "track", "messageId": "seg-bad", "userId": "u-1"}
        ],
        "sentAt": "2026-12-01T10:00:05Z"
    });
    let body = serde_json::to_vec(&batch).unwrap();
    let r = post(
        &stack,
        "/v1/batch",
        body.clone(),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["success"], true);
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["rejected"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        r.body["results"][3]["error"]["details"][0]["path"],
        "/batch/3/event"
    );

    // One call, gzipped, the key in the body as `writeKey`, sent as text/plain (browsers do).
    let alias =
        json!({"messageId": "seg-4", "userId": "u-1", "previousId": "anon-1", "writeKey": t.key});
    let r = post(
        &stack,
        "/v1/alias",
        gzip(&serde_json::to_vec(&alias).unwrap()),
        &[("content-encoding", "gzip"), ("content-type", "text/plain")],
    )
    .await;
    assert_eq!(
        (r.status, &r.body["success"]),
        (200, &json!(true)),
        "{}",
        r.body
    );

    // A retry of the whole batch: every message already seen, nothing stored twice.
    let r = post(&stack, "/v1/batch", body, &[("authorization", &auth)]).await;
    assert_eq!(
        (r.status, r.body["duplicates"].as_u64()),
        (200, Some(3)),
        "{}",
        r.body
    );

    wait_stored(&stack, 4).await;
    let track = stored(&stack, "seg-1").await;
    assert_eq!(track.get_str("eventType").unwrap(), "Order Completed");
    assert_eq!(track.get_str("userId").unwrap(), "u-1");
    assert_eq!(track.get_str("anonymousId").unwrap(), "anon-1");
    assert_eq!(
        track
            .get_document("properties")
            .unwrap()
            .get_f64("revenue")
            .unwrap(),
        39.5
    );
    assert!(track
        .get_document("integrations")
        .unwrap()
        .get_bool("All")
        .unwrap());
    assert_eq!(
        track
            .get_document("context")
            .unwrap()
            .get_document("library")
            .unwrap()
            .get_str("name")
            .unwrap(),
        "analytics-python"
    );
    let source = track.get_document("source").unwrap();
    assert_eq!(
        (
            source.get_str("kind").unwrap(),
            source.get_str("call").unwrap()
        ),
        ("segment", "track")
    );
    assert_eq!(
        track
            .get_datetime("timestamp")
            .unwrap()
            .try_to_rfc3339_string()
            .unwrap(),
        "2026-12-01T10:00:00Z"
    );
    let identify = stored(&stack, "seg-2").await;
    assert_eq!(identify.get_str("eventType").unwrap(), "identify");
    assert_eq!(
        identify.get_str("userId").unwrap(),
        "anon-1",
        "userId ?? anonymousId"
    );
    assert_eq!(
        identify
            .get_document("traits")
            .unwrap()
            .get_str("plan")
            .unwrap(),
        "pro"
    );
    assert_eq!(
        stored(&stack, "seg-3").await.get_str("name").unwrap(),
        "Pricing"
    );
    assert_eq!(
        stored(&stack, "seg-4").await.get_str("previousId").unwrap(),
        "anon-1"
    );
    assert_eq!(
        events(&stack)
            .count_documents(doc! {"accountId": {"$ne": t.account.to_string()}})
            .await
            .unwrap(),
        0
    );

    // A wrong key: 401 with the error object and, for the SDKs that read them, code and message.
    let r = post(
        &stack,
        "/v1/batch",
        b"{\"batch\": []}".to_vec(),
        &[("authorization", &basic("slk_nope"))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        (&r.body["code"], &r.body["error"]["code"]),
        (&json!("unauthorized"), &json!("unauthorized"))
    );
    assert!(r.body["message"].is_string());
    let r = post(
        &stack,
        "/v1/track",
        serde_json::to_vec(&json!({"event": "x", "userId": "u"})).unwrap(),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "no key at all: {}", r.body);
    // A refused message on a call's endpoint is the request's error.
    let r = post(
        &stack,
        "/v1/track",
        serde_json::to_vec(&json!({"userId": "u"})).unwrap(),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(
        (r.status, &r.body["code"]),
        (400, &json!("invalid_event")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn posthog_capture_takes_every_encoding_its_sdks_send_and_stores_each_event_once() {
    let stack = spawn_stack(Options::api().worker(worker()).analytics(analytics())).await;
    let t = stack.tenant().await;
    let now = chrono::Utc::now().to_rfc3339();
    let event = |uuid: &str, name: &str| {
        json!({"event": name, "distinct_id": "ph-user", "uuid": uuid, "timestamp": now,
               "properties": {"$current_url": "https://shop.test/", "$lib": "test"}})
    };
    // posthog-python / posthog-node: a batch with api_key, at /batch/.
    let batch = json!({"api_key": t.key, "batch": [event("ph-1", "$pageview"), event("ph-2", "Order Completed")], "sent_at": now});
    let r = post(
        &stack,
        "/batch/",
        serde_json::to_vec(&batch).unwrap(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (200, &json!(1)),
        "{}",
        r.body
    );
    // posthog-js: an array of events, the token in properties, gzip with text/plain (magic bytes).
    let js = json!([{"event": "$autocapture", "uuid": "ph-3", "properties": {"token": t.key, "distinct_id": "ph-user"}}]);
    let r = post(
        &stack,
        "/e/?compression=gzip-js",
        gzip(&serde_json::to_vec(&js).unwrap()),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A data= form of base64 JSON, at /capture.
    let single = json!({"token": t.key, "event": "$identify", "distinct_id": "ph-user", "uuid": "ph-4",
                        "$set": {"email": "a@shop.test"}, "properties": {"$anon_distinct_id": "anon-ph"}});
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&single).unwrap());
    let form = format!(
        "data={}",
        b64.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let r = post(
        &stack,
        "/capture",
        form.into_bytes(),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The newest path, gzip by header; and a retry of the first batch at another path.
    let one =
        json!({"api_key": t.key, "event": "$pageleave", "distinct_id": "ph-user", "uuid": "ph-5"});
    let r = post(
        &stack,
        "/i/v0/e",
        gzip(&serde_json::to_vec(&one).unwrap()),
        &[
            ("content-encoding", "gzip"),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&stack, "/batch", serde_json::to_vec(&batch).unwrap(), &[]).await;
    assert_eq!(
        (r.status, r.body["duplicates"].as_u64()),
        (200, Some(2)),
        "{}",
        r.body
    );

    wait_stored(&stack, 5).await;
    let pageview = stored(&stack, "ph-1").await;
    assert_eq!(pageview.get_str("eventType").unwrap(), "$pageview");
    assert_eq!(pageview.get_str("userId").unwrap(), "ph-user");
    assert_eq!(
        pageview
            .get_document("source")
            .unwrap()
            .get_str("kind")
            .unwrap(),
        "posthog"
    );
    assert_eq!(
        pageview
            .get_document("properties")
            .unwrap()
            .get_str("$current_url")
            .unwrap(),
        "https://shop.test/"
    );
    let identify = stored(&stack, "ph-4").await;
    let props = identify.get_document("properties").unwrap();
    assert_eq!(
        props
            .get_document("$set")
            .unwrap()
            .get_str("email")
            .unwrap(),
        "a@shop.test"
    );
    assert_eq!(identify.get_str("anonymousId").unwrap(), "anon-ph");
    assert_eq!(
        stored(&stack, "ph-3").await.get_str("eventType").unwrap(),
        "$autocapture"
    );

    // Names with `$`, `.` or spaces are counted under their own names (encoded in the rollups).
    let summary = stack.analytics().summary(&t.token, "1h").await;
    let types: Vec<(String, u64)> = summary.body["eventsByType"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["eventType"].as_str().unwrap().to_owned(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect();
    for name in [
        "$pageview",
        "Order Completed",
        "$autocapture",
        "$identify",
        "$pageleave",
    ] {
        assert!(types.contains(&(name.to_owned(), 1)), "{name} in {types:?}");
    }
    let filtered = stack
        .analytics()
        .timeseries(&t.token, "range=1h&bucket=1m&eventType=%24pageview")
        .await;
    assert_eq!(filtered.status, 200, "{}", filtered.body);
    let total: u64 = filtered.body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1);

    let r = post(
        &stack,
        "/batch/",
        br#"{"api_key": "phc_not_ours", "batch": [{"event": "e", "distinct_id": "u"}]}"#.to_vec(),
        &[],
    )
    .await;
    assert_eq!((r.status, &r.body["code"]), (401, &json!("unauthorized")));
    let r = post(&stack, "/decide/?v=3", b"{}".to_vec(), &[]).await;
    assert_eq!((r.status, &r.body["featureFlags"]), (200, &json!({})));
}

async fn create_source(stack: &Stack, token: &str, body: Value) -> Reply {
    stack.api().create_source(token, &body).await
}

fn standard_headers(id: &str, ts: i64, signature: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), signature.into()),
        ("content-type".into(), "application/json".into()),
    ]
}

async fn deliver(stack: &Stack, source: &str, body: &str, headers: Vec<(String, String)>) -> Reply {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    post(
        stack,
        &format!("/api/v1/webhooks/{source}"),
        body.as_bytes().to_vec(),
        &h,
    )
    .await
}

#[tokio::test]
async fn webhooks_are_verified_deduplicated_rotated_and_kept_to_their_account() {
    let mut settings = test_settings();
    settings.sources.rotation_grace_secs = 2;
    let stack = spawn_stack(Options::api().settings(settings).worker(worker())).await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    let created = create_source(
        &stack,
        &a.token,
        json!({"name": "billing", "scheme": "standard-webhooks",
        "eventType": "billing.invoice", "userIdFrom": "/data/customer"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created.body["eventIdFrom"], "header");

    let body = r#"{"type": "invoice.paid", "data": {"customer": "cus_42", "amount": 1200}}"#;
    let now = chrono::Utc::now().timestamp();
    let sign = |secret: &str, msg: &str, ts: i64, body: &str| {
        sign_standard(secret, msg, ts, body.as_bytes()).unwrap()
    };
    let r = deliver(
        &stack,
        &id,
        body,
        standard_headers("msg_1", now, &sign(&secret, "msg_1", now, body)),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["eventId"]),
        (202, &json!("msg_1")),
        "{}",
        r.body
    );
    // The provider retries the same message: stored once.
    let r = deliver(
        &stack,
        &id,
        body,
        standard_headers("msg_1", now, &sign(&secret, "msg_1", now, body)),
    )
    .await;
    assert_eq!((r.status, &r.body["status"]), (200, &json!("duplicate")));

    // Refused: a tampered body, an old timestamp, a truncated or wrong signature, a wrong secret.
    let good = sign(&secret, "msg_2", now, body);
    let tampered = body.replace("1200", "1");
    for (why, headers, body) in [
        (
            "tampered",
            standard_headers("msg_2", now, &good),
            tampered.as_str(),
        ),
        (
            "old",
            standard_headers("msg_2", now - 301, &sign(&secret, "msg_2", now - 301, body)),
            body,
        ),
        ("truncated", standard_headers("msg_2", now, "v1,"), body),
        ("half", standard_headers("msg_2", now, &good[..20]), body),
        ("other id", standard_headers("msg_3", now, &good), body),
        (
            "no signature",
            standard_headers("msg_2", now, "")[..2].to_vec(),
            body,
        ),
        (
            "wrong secret",
            standard_headers(
                "msg_2",
                now,
                &sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_2", now, body),
            ),
            body,
        ),
    ] {
        let r = deliver(&stack, &id, body, headers).await;
        assert_eq!(
            (r.status, &r.body["error"]["code"]),
            (401, &json!("unauthorized")),
            "{why}: {}",
            r.body
        );
    }
    let unknown = uuid::Uuid::now_v7();
    let r = deliver(
        &stack,
        &unknown.to_string(),
        body,
        standard_headers("m", now, &good),
    )
    .await;
    assert_eq!(r.status, 404);

    // Another account sees none of it and can change none of it.
    let listed = stack.api().sources(&b.token).await;
    assert_eq!((listed.status, &listed.body), (200, &json!([])));
    assert_eq!(stack.api().rotate_source(&b.token, &id).await.status, 404);
    assert_eq!(stack.api().delete_source(&b.token, &id).await.status, 404);
    let listed = stack.api().sources(&a.token).await;
    assert_eq!(listed.body[0]["id"], id.as_str());
    assert!(
        listed.body[0].get("secret").is_none(),
        "secrets are never listed"
    );

    // Rotation: both secrets verify during the grace period, then only the new one.
    let rotated = stack.api().rotate_source(&a.token, &id).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let fresh = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(fresh, secret);
    assert!(rotated.body["previousSecretValidUntil"].is_string());
    for (msg, key) in [("msg_old", &secret), ("msg_new", &fresh)] {
        let r = deliver(
            &stack,
            &id,
            body,
            standard_headers(msg, now, &sign(key, msg, now, body)),
        )
        .await;
        assert_eq!(r.status, 202, "{msg} during the grace period: {}", r.body);
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let later = chrono::Utc::now().timestamp();
    let r = deliver(
        &stack,
        &id,
        body,
        standard_headers(
            "msg_late_old",
            later,
            &sign(&secret, "msg_late_old", later, body),
        ),
    )
    .await;
    assert_eq!(r.status, 401, "the old secret after the grace period");
    let r = deliver(
        &stack,
        &id,
        body,
        standard_headers(
            "msg_late_new",
            later,
            &sign(&fresh, "msg_late_new", later, body),
        ),
    )
    .await;
    assert_eq!(r.status, 202);

    // A Stripe source with the secret Stripe issued: the event id and the user from the body.
    let stripe = create_source(&stack, &a.token, json!({"name": "stripe", "scheme": "stripe",
        "eventType": "stripe.event", "userIdFrom": "/data/object/customer", "secret": "whsec_from_stripe_dashboard"})).await;
    assert_eq!(
        (stripe.status, &stripe.body["eventIdFrom"]),
        (201, &json!("/id")),
        "{}",
        stripe.body
    );
    let stripe_id = stripe.body["id"].as_str().unwrap().to_owned();
    let event =
        r#"{"id": "evt_9", "type": "invoice.paid", "data": {"object": {"customer": "cus_7"}}}"#;
    let header = sign_stripe("whsec_from_stripe_dashboard", later, event.as_bytes());
    let r = deliver(
        &stack,
        &stripe_id,
        event,
        vec![("stripe-signature".into(), header.clone())],
    )
    .await;
    assert_eq!(
        (r.status, &r.body["eventId"]),
        (202, &json!("evt_9")),
        "{}",
        r.body
    );
    let r = deliver(
        &stack,
        &stripe_id,
        &event.replace("cus_7", "cus_8"),
        vec![("stripe-signature".into(), header)],
    )
    .await;
    assert_eq!(r.status, 401);
    let bad = create_source(
        &stack,
        &a.token,
        json!({"name": "x", "scheme": "stripe", "eventType": "x", "eventIdFrom": "header"}),
    )
    .await;
    assert_eq!(
        (bad.status, &bad.body["error"]["details"][0]["path"]),
        (400, &json!("/eventIdFrom"))
    );

    wait_stored(&stack, 5).await;
    let first = stored(&stack, "msg_1").await;
    assert_eq!(first.get_str("accountId").unwrap(), a.account.to_string());
    assert_eq!(first.get_str("eventType").unwrap(), "billing.invoice");
    assert_eq!(first.get_str("userId").unwrap(), "cus_42");
    assert_eq!(
        first
            .get_document("properties")
            .unwrap()
            .get_str("type")
            .unwrap(),
        "invoice.paid"
    );
    let source = first.get_document("source").unwrap();
    assert_eq!(
        (
            source.get_str("kind").unwrap(),
            source.get_str("id").unwrap()
        ),
        ("webhook", id.as_str())
    );
    assert_eq!(
        stored(&stack, "evt_9").await.get_str("userId").unwrap(),
        "cus_7"
    );

    // Deleted: its deliveries are refused.
    assert_eq!(stack.api().delete_source(&a.token, &id).await.status, 204);
    let r = deliver(
        &stack,
        &id,
        body,
        standard_headers("msg_after", later, &sign(&fresh, "msg_after", later, body)),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn any_web_page_may_call_the_sdk_intakes_but_not_the_account_endpoints() {
    let stack = spawn_stack(Options::api()).await;
    let preflight = |path: &'static str| {
        let http = stack.http.clone();
        let url = format!("{}{path}", stack.api().base);
        async move {
            http.request(reqwest::Method::OPTIONS, url)
                .header("origin", "https://shop.example")
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
                .await
                .unwrap()
        }
    };
    for path in ["/v1/batch", "/batch/", "/e/", "/i/v0/e", "/decide/"] {
        let r = preflight(path).await;
        assert_eq!(
            r.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("https://shop.example"),
            "{path}"
        );
        assert!(
            r.headers()
                .get("access-control-allow-credentials")
                .is_none(),
            "{path}"
        );
    }
    for path in ["/api/v1/keys", "/api/v1/sources", "/api/v1/events"] {
        let r = preflight(path).await;
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{path}"
        );
    }
}
