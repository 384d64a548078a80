//! Privacy through the whole stack (issue 18): suppression on two api instances within a second
//! (native and Segment intakes) and its lifting; `suppress_with_delete` with a backlog queued
//! while no worker ran, linked anonymous ids included, leaving nothing of the user anywhere;
//! `delete_only` keeping later events; retention deleting old data (and a shorter retention,
//! data already stored); validation; isolation between accounts.
use std::time::{Duration, Instant};

use base64::Engine;
use fred::prelude::*;
use fred::types::scan::Scanner;
use futures::StreamExt;
use mongodb::bson::{doc, DateTime as BsonDate, Document};
use serde_json::{json, Value};
use sluice_testkit::{spawn_stack, test_settings, Options, Reply, Stack, Tenant};

use crate::worker;

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

async fn regulate(stack: &Stack, t: &Tenant, kind: &str, users: &[&str]) -> Reply {
    stack
        .api()
        .authed(
            reqwest::Method::POST,
            "/api/v1/regulations",
            &t.token,
            Some(&json!({"type": kind, "userIds": users})),
        )
        .await
}

/// Waits (60 s at most) until the regulation is finished; returns it.
async fn finished(stack: &Stack, t: &Tenant, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = stack
            .api()
            .get(&format!("/api/v1/regulations/{id}"), Some(&t.token))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        match r.body["status"].as_str() {
            Some("finished") => return r.body,
            Some("failed") => panic!("the regulation failed: {}", r.body),
            _ => {}
        }
        assert!(Instant::now() < deadline, "not finished: {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event(id: &str, user: &str) -> Value {
    json!({"eventId": id, "eventType": "privacy.test", "userId": user, "properties": {"n": 1}})
}

/// Documents of the account whose userId or anonymousId is one of `ids`, in every collection
/// that holds events (dead letters by the event they carry).
async fn documents_of(stack: &Stack, t: &Tenant, ids: &[&str]) -> Vec<(String, u64)> {
    let acct = t.account.to_string();
    let mut out = Vec::new();
    for coll in ["events", "events_quarantine"] {
        let n = stack
            .db
            .collection::<Document>(coll)
            .count_documents(doc! {"accountId": &acct, "$or": [
            {"userId": {"$in": ids}}, {"anonymousId": {"$in": ids}}]})
            .await
            .unwrap();
        out.push((coll.to_owned(), n));
    }
    let n = stack
        .db
        .collection::<Document>("events_dlq")
        .count_documents(doc! {"accountId": &acct, "$or": [
        {"event.userId": {"$in": ids}}, {"event.anonymousId": {"$in": ids}}]})
        .await
        .unwrap();
    out.push(("events_dlq".to_owned(), n));
    out
}

async fn count_events(stack: &Stack, t: &Tenant, filter: Document) -> u64 {
    let mut f = filter;
    f.insert("accountId", t.account.to_string());
    stack
        .db
        .collection::<Document>("events")
        .count_documents(f)
        .await
        .unwrap()
}

async fn wait_events(stack: &Stack, t: &Tenant, filter: Document, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = count_events(stack, t, filter.clone()).await;
        if c >= n {
            assert_eq!(c, n, "{filter}");
            return;
        }
        assert!(Instant::now() < deadline, "{c} of {n} stored ({filter})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn redis_of(stack: &Stack) -> Client {
    let client =
        Builder::from_config(sluice_shared::redis::config(&stack.settings.redis.url).unwrap())
            .build()
            .unwrap();
    client.init().await.unwrap();
    client
}

#[tokio::test]
async fn suppression_applies_on_two_api_instances_within_a_second_and_unsuppress_restores_intake() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    // A second api instance of the same deployment (same Redis prefix, same databases).
    let other = spawn_stack(Options::api().settings(stack.settings.clone())).await;
    let t = stack.tenant().await;
    // The second instance has read the account's (empty) set before the suppression: what it
    // holds must be dropped by the announcement, not merely never loaded.
    let r = other
        .api()
        .post_event(&t.key, &event("warm-1", "u-ok"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = other
        .api()
        .post_event(&t.key, &event("warm-2", "u-sup"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    let r = regulate(&stack, &t, "suppress", &["u-sup"]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["type"], "suppress");
    let requested = Instant::now();
    let id = r.body["id"].as_str().unwrap().to_owned();
    // The promise is 1 s; the test waits 10.
    let mut n = 0;
    let seen = loop {
        n += 1;
        let r = other
            .api()
            .post_event(&t.key, &event(&format!("probe-{n}"), "u-sup"))
            .await;
        if r.status == 200 && r.body["status"] == "suppressed" {
            break requested.elapsed();
        }
        assert_eq!(r.status, 202, "{}", r.body);
        assert!(
            requested.elapsed() < Duration::from_secs(10),
            "not suppressed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("suppression reached the second api instance after {seen:?} ({n} probes)");
    let probes_accepted = n - 1;

    // Native single and batch, on the instance that took the request.
    let r = stack.api().post_event(&t.key, &event("s-1", "u-sup")).await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (200, &json!("suppressed")),
        "{}",
        r.body
    );
    assert_eq!(r.body["eventId"], "s-1");
    let r = stack
        .api()
        .post_batch(&t.key, &[event("s-2", "u-sup"), event("ok-1", "u-ok")])
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["suppressed"], 1);
    assert_eq!(r.body["accepted"], 1);
    assert_eq!(r.body["results"][0]["status"], "suppressed");
    assert_eq!(r.body["results"][0]["eventId"], "s-2");
    assert_eq!(r.body["results"][1]["status"], "accepted");
    let r = stack
        .api()
        .post_batch(&t.key, &[event("s-3", "u-sup")])
        .await;
    assert_eq!(
        r.status, 200,
        "only suppressed: nothing new, a success: {}",
        r.body
    );
    // The Segment intake: a success its SDK will not send again, never queued.
    let segment = serde_json::to_vec(&json!({"batch": [
        {"type": "track", "event": "Order Completed", "userId": "u-sup", "messageId": "seg-1"},
        {"type": "track", "event": "Order Completed", "anonymousId": "anon-x", "userId": "u-ok", "messageId": "seg-2"},
    ]}))
    .unwrap();
    let r = other
        .api()
        .post_raw("/v1/batch", segment, &[("authorization", &basic(&t.key))])
        .await;
    assert_eq!(
        (r.status, &r.body["success"]),
        (200, &json!(true)),
        "{}",
        r.body
    );

    let r = finished(&stack, &t, &id).await;
    assert_eq!(r["counts"]["identities"], 1, "{r}");
    let listed = stack
        .api()
        .get("/api/v1/suppressions", Some(&t.token))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["suppressions"][0]["userId"], "u-sup");
    assert_eq!(listed.body["suppressions"][0]["via"], "u-sup");
    assert_eq!(listed.body["suppressions"][0]["regulationId"], id.as_str());

    // u-ok's three events are stored; of u-sup only what was sent before the suppression.
    wait_events(&stack, &t, doc! {"userId": "u-ok"}, 3).await;
    let before = 1 + probes_accepted as u64;
    wait_events(&stack, &t, doc! {"userId": "u-sup"}, before).await;
    for id in ["s-1", "s-2", "s-3", "seg-1"] {
        assert_eq!(
            count_events(&stack, &t, doc! {"eventId": id}).await,
            0,
            "{id} stored"
        );
    }

    // Lifted: intake restored on both instances within the same promise.
    let r = regulate(&stack, &t, "unsuppress", &["u-sup"]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let lifted = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let r = other
            .api()
            .post_event(&t.key, &event(&format!("back-{n}"), "u-sup"))
            .await;
        if r.status == 202 {
            break;
        }
        assert_eq!(r.body["status"], "suppressed", "{}", r.body);
        assert!(
            lifted.elapsed() < Duration::from_secs(10),
            "still suppressed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "unsuppress reached the second api instance after {:?}",
        lifted.elapsed()
    );
    let r = stack
        .api()
        .post_event(&t.key, &event("back-native", "u-sup"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_events(
        &stack,
        &t,
        doc! {"eventId": {"$in": ["back-native", format!("back-{n}")]}},
        2,
    )
    .await;
    let r = finished(
        &stack,
        &t,
        r_id(&regulate_list(&stack, &t).await, "unsuppress"),
    )
    .await;
    assert_eq!(r["counts"]["unsuppressed"], 1, "{r}");
}

async fn regulate_list(stack: &Stack, t: &Tenant) -> Value {
    let r = stack.api().get("/api/v1/regulations", Some(&t.token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn r_id<'a>(page: &'a Value, kind: &str) -> &'a str {
    page["regulations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == kind)
        .and_then(|r| r["id"].as_str())
        .unwrap()
}

#[tokio::test]
async fn suppress_with_delete_leaves_nothing_of_the_user_anywhere_backlog_and_linked_ids_included()
{
    let settings = test_settings();
    let api = spawn_stack(Options::api().settings(settings.clone())).await;
    let mut workers = spawn_stack(
        Options::api()
            .without_api()
            .worker(worker())
            .settings(settings.clone()),
    )
    .await;
    let t = api.tenant().await;
    let auth = basic(&t.key);
    // Stored: native events of u-del and u-keep, a Segment identify linking anon-del to u-del,
    // and an anonymous track sent before the login (stored under anon-del).
    let mut first: Vec<Value> = (0..20).map(|i| event(&format!("d-{i}"), "u-del")).collect();
    first.extend((0..5).map(|i| event(&format!("k-{i}"), "u-keep")));
    let r = api.api().post_batch(&t.key, &first).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let segment = serde_json::to_vec(&json!({"batch": [
        {"type": "track", "event": "Viewed", "anonymousId": "anon-del", "messageId": "anon-1"},
        {"type": "identify", "userId": "u-del", "anonymousId": "anon-del", "messageId": "ident-1",
         "traits": {"email": "del@example.test"}},
    ]}))
    .unwrap();
    let r = api
        .api()
        .post_raw("/v1/batch", segment, &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_events(&api, &t, doc! {}, 27).await;
    // Top-user sets hold u-del now.
    let redis = redis_of(&api).await;
    let top_keys = |redis: Client, acct: String| async move {
        let mut keys = Vec::new();
        let mut pages = redis.scan(format!("top:{{a{acct}}}:*"), Some(100), None);
        while let Some(page) = pages.next().await {
            let mut page = page.unwrap();
            keys.extend(page.take_results().unwrap_or_default());
        }
        keys
    };
    let acct = t.account.to_string();
    // (The sets are written a moment after the events they count.)
    let counted = sluice_testkit::eventually(Duration::from_secs(10), || {
        let (redis, acct) = (redis.clone(), acct.clone());
        async move {
            for key in top_keys(redis.clone(), acct).await {
                let held: Option<f64> = redis.zscore(key, "u-del").await.unwrap();
                if held.is_some() {
                    return true;
                }
            }
            false
        }
    })
    .await;
    assert!(counted, "u-del is in no top-user set");

    // No worker: what is sent now queues.
    workers.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backlog: Vec<Value> = (0..10).map(|i| event(&format!("q-{i}"), "u-del")).collect();
    let r = api.api().post_batch(&t.key, &backlog).await;
    assert_eq!(
        (r.status, &r.body["accepted"]),
        (202, &json!(10)),
        "{}",
        r.body
    );
    let r = api
        .api()
        .post_event(&t.key, &event("k-late", "u-keep"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    let r = regulate(&api, &t, "suppress_with_delete", &["u-del"]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    // Suppressed at once (no worker runs yet), through the anonymous id too once linked.
    let r = api
        .api()
        .post_event(&t.key, &event("after-1", "u-del"))
        .await;
    assert_eq!(r.body["status"], "suppressed", "{}", r.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = regulate_list(&api, &t).await;
    assert_eq!(
        r["regulations"][0]["status"], "pending",
        "no worker yet: {r}"
    );

    let started = Instant::now();
    let _workers = spawn_stack(
        Options::api()
            .without_api()
            .worker(worker())
            .settings(settings.clone()),
    )
    .await;
    let r = finished(&api, &t, &id).await;
    println!(
        "suppress_with_delete of {} documents finished {:?} after a worker started: {r}",
        r["counts"]["events"],
        started.elapsed()
    );
    assert_eq!(r["counts"]["events"], 32, "20 + 10 queued + 2 Segment: {r}");
    assert_eq!(r["counts"]["identities"], 2, "u-del and anon-del: {r}");
    assert!(r["counts"]["topUsers"].as_i64().unwrap() >= 1, "{r}");
    // The backlog was stored first, then deleted: nothing of u-del or anon-del anywhere.
    wait_events(&api, &t, doc! {"userId": "u-keep"}, 6).await;
    for (coll, n) in documents_of(&api, &t, &["u-del", "anon-del"]).await {
        assert_eq!(n, 0, "{coll} still holds the user's documents");
    }
    for key in top_keys(redis.clone(), acct.clone()).await {
        let held: Option<f64> = redis.zscore(key.clone(), "u-del").await.unwrap();
        assert_eq!(held, None, "{key:?} still counts u-del");
    }
    // The linked anonymous id is suppressed as well, and nothing appears later.
    let listed = api.api().get("/api/v1/suppressions", Some(&t.token)).await;
    let ids: Vec<&str> = listed.body["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["userId"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"anon-del") && ids.contains(&"u-del"),
        "{}",
        listed.body
    );
    let anon_only = serde_json::to_vec(&json!({"type": "track", "event": "Viewed",
        "anonymousId": "anon-del", "messageId": "anon-2"}))
    .unwrap();
    let r = api
        .api()
        .post_raw("/v1/track", anon_only, &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (coll, n) in documents_of(&api, &t, &["u-del", "anon-del"]).await {
        assert_eq!(
            n, 0,
            "{coll} holds a document of the user after the deletion"
        );
    }
    let _ = redis.quit().await;
}

#[tokio::test]
async fn delete_only_deletes_what_is_stored_and_keeps_later_events() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let events: Vec<Value> = (0..8).map(|i| event(&format!("x-{i}"), "u-x")).collect();
    assert_eq!(stack.api().post_batch(&t.key, &events).await.status, 202);
    wait_events(&stack, &t, doc! {"userId": "u-x"}, 8).await;
    let r = regulate(&stack, &t, "delete_only", &["u-x"]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = finished(&stack, &t, r.body["id"].as_str().unwrap()).await;
    assert_eq!(r["counts"]["events"], 8, "{r}");
    assert!(r["counts"].get("suppressed").is_none(), "{r}");
    assert_eq!(count_events(&stack, &t, doc! {"userId": "u-x"}).await, 0);
    // Not suppressed: a later event is taken and kept.
    let r = stack
        .api()
        .post_event(&t.key, &event("x-later", "u-x"))
        .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (202, &json!("accepted")),
        "{}",
        r.body
    );
    wait_events(&stack, &t, doc! {"userId": "u-x"}, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count_events(&stack, &t, doc! {"eventId": "x-later"}).await,
        1
    );
}

#[tokio::test]
async fn retention_deletes_old_data_and_a_shorter_retention_removes_data_already_stored() {
    let mut settings = test_settings();
    settings.privacy.retention_interval_secs = 1;
    let stack = spawn_stack(Options::api().settings(settings).worker(worker())).await;
    let t = stack.tenant().await;
    let other = stack.tenant().await;
    let acct = t.account.to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let days_ago = |d: i64| BsonDate::from_millis(now - d * 86_400_000);
    let db = &stack.db;
    let ev = |id: &str, acct: &str, d: i64| {
        doc! {"_id": format!("{acct}:{id}"), "eventId": id, "accountId": acct, "eventType": "r",
        "userId": "u", "timestamp": days_ago(d), "receivedAt": days_ago(d)}
    };
    db.collection::<Document>("events")
        .insert_many([
            ev("old-10", &acct, 10),
            ev("mid-3", &acct, 3),
            ev("new", &acct, 0),
            ev("other-10", &other.account.to_string(), 10),
        ])
        .await
        .unwrap();
    db.collection::<Document>("events_quarantine")
        .insert_many([ev("q-40", &acct, 40), ev("q-new", &acct, 0)])
        .await
        .unwrap();
    db.collection::<Document>("events_dlq")
        .insert_many([
            doc! {"_id": "1-0:l-40", "accountId": &acct, "failedAt": days_ago(40)},
            doc! {"_id": "2-0:l-new", "accountId": &acct, "failedAt": days_ago(0)},
        ])
        .await
        .unwrap();
    db.collection::<Document>("anomalies")
        .insert_many([
            doc! {"_id": "a-100", "accountId": &acct, "detectedAt": days_ago(100)},
            doc! {"_id": "a-new", "accountId": &acct, "detectedAt": days_ago(0)},
        ])
        .await
        .unwrap();
    db.collection::<Document>("rollups_hour")
        .insert_many([
            doc! {"_id": "h-10", "accountId": &acct, "hour": days_ago(10), "total": 1},
            doc! {"_id": "h-new", "accountId": &acct, "hour": days_ago(0), "total": 1},
        ])
        .await
        .unwrap();
    let ids = |coll: &'static str| {
        let db = db.clone();
        let acct = acct.clone();
        async move {
            let mut v: Vec<String> = db
                .collection::<Document>(coll)
                .find(doc! {"accountId": acct})
                .await
                .unwrap()
                .map(|d| {
                    d.unwrap()
                        .get_str("_id")
                        .unwrap()
                        .rsplit(':')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect()
                .await;
            v.sort();
            v
        }
    };
    // The defaults: dead letters and quarantine 30 days, anomalies 90; events kept 395.
    let r = stack
        .api()
        .get("/api/v1/account/retention", Some(&t.token))
        .await;
    assert_eq!(
        r.body,
        json!({"eventsDays": 395, "deadLettersDays": 30, "quarantineDays": 30, "anomaliesDays": 90})
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids("events_dlq").await.len() > 1
        || ids("anomalies").await.len() > 1
        || ids("events_quarantine").await.len() > 1
    {
        assert!(Instant::now() < deadline, "defaults not applied in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids("events_dlq").await, ["l-new"]);
    assert_eq!(ids("anomalies").await, ["a-new"]);
    assert_eq!(ids("events_quarantine").await, ["q-new"]);
    assert_eq!(ids("events").await, ["mid-3", "new", "old-10"]);

    // Shortened: applies to what is stored, this account only.
    let r = stack
        .api()
        .authed(
            reqwest::Method::PUT,
            "/api/v1/account/retention",
            &t.token,
            Some(&json!({"eventsDays": 5})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["eventsDays"], 5);
    assert_eq!(r.body["deadLettersDays"], 30);
    let changed = Instant::now();
    while ids("events").await.len() > 2 {
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "5 days not applied in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "a retention of 5 days took effect after {:?}",
        changed.elapsed()
    );
    assert_eq!(ids("events").await, ["mid-3", "new"]);
    assert_eq!(ids("rollups_hour").await, ["h-new"]);
    let r = stack
        .api()
        .authed(
            reqwest::Method::PUT,
            "/api/v1/account/retention",
            &t.token,
            Some(&json!({"eventsDays": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids("events").await.len() > 1 {
        assert!(Instant::now() < deadline, "1 day not applied in 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids("events").await, ["new"]);
    let theirs = db
        .collection::<Document>("events")
        .count_documents(doc! {"accountId": other.account.to_string()})
        .await
        .unwrap();
    assert_eq!(theirs, 1, "another account's retention is its own");
    let r = stack
        .api()
        .get("/api/v1/account/retention", Some(&t.token))
        .await;
    assert_eq!(r.body["eventsDays"], 1);
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_pointer_and_accounts_are_isolated() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    for (body, path) in [
        (json!({"type": "forget", "userIds": ["u"]}), "/type"),
        (json!({"type": "suppress", "userIds": []}), "/userIds"),
        (json!({"type": "suppress", "userIds": [""]}), "/userIds/0"),
        (
            json!({"type": "suppress", "userIds": vec!["u"; 5001]}),
            "/userIds",
        ),
    ] {
        let r = stack
            .api()
            .authed(
                reqwest::Method::POST,
                "/api/v1/regulations",
                &a.token,
                Some(&body),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["error"]["details"][0]["path"], path, "{}", r.body);
    }
    for (body, path) in [
        (json!({"eventsDays": 0}), "/eventsDays"),
        (json!({"anomaliesDays": 3651}), "/anomaliesDays"),
        (json!({"quarantineDays": -1}), "/quarantineDays"),
        (json!({"eventsDays": 2.5}), "/eventsDays"),
    ] {
        let r = stack
            .api()
            .authed(
                reqwest::Method::PUT,
                "/api/v1/account/retention",
                &a.token,
                Some(&body),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["error"]["details"][0]["path"], path, "{}", r.body);
    }
    // A number without a fraction is a whole number of days, as JSON Schema's `integer` says.
    let r = stack
        .api()
        .authed(
            reqwest::Method::PUT,
            "/api/v1/account/retention",
            &a.token,
            Some(&json!({"quarantineDays": 2826.0})),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["quarantineDays"]),
        (200, &json!(2826)),
        "{}",
        r.body
    );
    let r = stack
        .api()
        .get(
            &format!("/api/v1/regulations?userId={}", "u".repeat(129)),
            Some(&a.token),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // A cursor the pattern allows names a page, however far its instant.
    for query in [
        "/api/v1/suppressions?before=-602466035605019626%3A%11",
        "/api/v1/regulations?before=999999999999999999%3Ax",
    ] {
        let r = stack.api().get(query, Some(&a.token)).await;
        assert_eq!(r.status, 200, "{query}: {}", r.body);
    }
    // 5,000 userIds is the most one regulation may name, and is taken.
    let many: Vec<String> = (0..5000).map(|i| format!("bulk-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let r = regulate(&stack, &b, "delete_only", &many).await;
    assert_eq!(r.status, 202, "{}", r.body);

    // A's user, stored; B's regulations name the same userId in B's account only.
    assert_eq!(
        stack
            .api()
            .post_event(&a.key, &event("a-1", "shared-id"))
            .await
            .status,
        202
    );
    wait_events(&stack, &a, doc! {"userId": "shared-id"}, 1).await;
    let r = regulate(&stack, &a, "suppress", &["a-only"]).await;
    let a_reg = r.body["id"].as_str().unwrap().to_owned();
    let r = stack
        .api()
        .get(&format!("/api/v1/regulations/{a_reg}"), Some(&b.token))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = regulate(&stack, &b, "suppress_with_delete", &["shared-id"]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = finished(&stack, &b, r.body["id"].as_str().unwrap()).await;
    assert_eq!(r["counts"]["events"], 0, "{r}");
    let page = regulate_list(&stack, &b).await;
    assert!(
        page["regulations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != a_reg.as_str()),
        "{page}"
    );
    let r = stack
        .api()
        .get("/api/v1/suppressions", Some(&b.token))
        .await;
    assert!(r.body["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["userId"] != "a-only"));
    // A's user is neither deleted nor suppressed by B.
    assert_eq!(
        count_events(&stack, &a, doc! {"userId": "shared-id"}).await,
        1
    );
    let r = stack
        .api()
        .post_event(&a.key, &event("a-2", "shared-id"))
        .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (202, &json!("accepted")),
        "{}",
        r.body
    );
    // Filters.
    let r = stack
        .api()
        .get(
            "/api/v1/regulations?userId=a-only&status=pending&limit=5",
            Some(&a.token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["regulations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["userIds"] == json!(["a-only"])));
    let r = stack
        .api()
        .get("/api/v1/regulations?status=done", Some(&a.token))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}
