//! Tracking plans and the events query API through the whole stack: schemas published and read
//! back, each mode with valid and invalid events (single and batched), a version named by the
//! event, quarantine in `events_quarantine`, a mode change reaching a second api instance, and
//! the queries (filters, cursor pages, isolation, the index each shape uses).
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use sluice_shared::names::{EVENTS_COLLECTION, QUARANTINE_COLLECTION};
use sluice_testkit::{spawn_stack, Options, Reply, Stack, Tenant};

use crate::worker;

async fn publish(stack: &Stack, t: &Tenant, event_type: &str, schema: Value) -> Reply {
    stack
        .api()
        .authed(
            reqwest::Method::POST,
            "/api/v1/schemas",
            &t.token,
            Some(&json!({"eventType": event_type, "schema": schema, "description": "test"})),
        )
        .await
}

async fn set_mode(stack: &Stack, t: &Tenant, event_type: &str, mode: &str) {
    let r = stack
        .api()
        .authed(
            reqwest::Method::PUT,
            &format!("/api/v1/schemas/{event_type}/mode"),
            &t.token,
            Some(&json!({"mode": mode})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn count(stack: &Stack, collection: &str, filter: Document) -> u64 {
    stack
        .db
        .collection::<Document>(collection)
        .count_documents(filter)
        .await
        .unwrap()
}

async fn wait_count(stack: &Stack, collection: &str, filter: Document, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = count(stack, collection, filter.clone()).await;
        if c >= n {
            assert_eq!(c, n, "{collection} {filter}");
            return;
        }
        assert!(Instant::now() < deadline, "{collection}: {c} of {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn purchase(id: &str, properties: Value) -> Value {
    json!({"eventId": id, "eventType": "purchase", "userId": "buyer", "properties": properties})
}

#[tokio::test]
async fn each_mode_holds_events_to_their_schema_single_and_batched() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let v1 = publish(
        &stack,
        &t,
        "purchase",
        json!({"type": "object", "required": ["amount"],
        "properties": {"amount": {"type": "number", "minimum": 0}}}),
    )
    .await;
    assert_eq!(
        (v1.status, &v1.body["version"]),
        (201, &json!(1)),
        "{}",
        v1.body
    );
    let v2 = publish(&stack, &t, "purchase", json!({"type": "object", "required": ["amount", "currency"],
        "properties": {"amount": {"type": "number", "minimum": 0}, "currency": {"pattern": "^[A-Z]{3}$"}}}))
    .await;
    assert_eq!(v2.body["version"], 2);
    let good = json!({"amount": 10, "currency": "EUR"});
    let bad = json!({"amount": -1, "currency": "euro"});

    // enforce: refused with every violation's pointer, single and as a batch item.
    set_mode(&stack, &t, "purchase", "enforce").await;
    let r = stack
        .api()
        .post_event(&t.key, &purchase("en-bad", bad.clone()))
        .await;
    assert_eq!(
        (r.status, &r.body["error"]["code"]),
        (400, &json!("invalid_event")),
        "{}",
        r.body
    );
    let mut paths: Vec<&str> = r.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/properties/amount", "/properties/currency"]);
    assert_eq!(
        stack
            .api()
            .post_event(&t.key, &purchase("en-good", good.clone()))
            .await
            .status,
        202
    );
    // The event names version 1, which asks for no currency.
    let mut named = purchase("en-v1", json!({"amount": 3}));
    named["schemaVersion"] = json!(1);
    assert_eq!(stack.api().post_event(&t.key, &named).await.status, 202);
    assert_eq!(
        stack
            .api()
            .post_event(&t.key, &purchase("en-latest", json!({"amount": 3})))
            .await
            .status,
        400
    );
    named["schemaVersion"] = json!(9);
    let r = stack.api().post_event(&t.key, &named).await;
    assert_eq!(
        (r.status, &r.body["error"]["details"][0]["path"]),
        (400, &json!("/schemaVersion"))
    );
    let r = stack
        .api()
        .post_batch(
            &t.key,
            &[
                purchase("en-b1", good.clone()),
                purchase("en-b2", bad.clone()),
            ],
        )
        .await;
    assert_eq!(
        (r.status, &r.body["results"][1]["status"]),
        (202, &json!("rejected")),
        "{}",
        r.body
    );

    // quarantine: taken in (202 `quarantined`), stored in events_quarantine only.
    set_mode(&stack, &t, "purchase", "quarantine").await;
    let r = stack
        .api()
        .post_event(&t.key, &purchase("q-bad", bad.clone()))
        .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (202, &json!("quarantined")),
        "{}",
        r.body
    );
    let r = stack
        .api()
        .post_batch(
            &t.key,
            &[
                purchase("q-b1", good.clone()),
                purchase("q-b2", bad.clone()),
            ],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["quarantined"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(r.body["results"][1]["status"], "quarantined");

    // allow: stored in events with the violations attached.
    set_mode(&stack, &t, "purchase", "allow").await;
    let r = stack
        .api()
        .post_event(&t.key, &purchase("al-bad", bad.clone()))
        .await;
    assert_eq!((r.status, &r.body["status"]), (202, &json!("accepted")));
    // A type without a schema is untouched.
    assert_eq!(
        stack
            .api()
            .post_event(
                &t.key,
                &json!({"eventId": "free", "eventType": "click", "userId": "u"})
            )
            .await
            .status,
        202
    );

    let account = t.account.to_string();
    wait_count(&stack, EVENTS_COLLECTION, doc! {"accountId": &account}, 6).await;
    wait_count(
        &stack,
        QUARANTINE_COLLECTION,
        doc! {"accountId": &account},
        2,
    )
    .await;
    let events = stack.db.collection::<Document>(EVENTS_COLLECTION);
    let held = stack.db.collection::<Document>(QUARANTINE_COLLECTION);
    let en_v1 = events
        .find_one(doc! {"eventId": "en-v1"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(en_v1.get_i64("schemaVersion").unwrap(), 1);
    assert!(en_v1.get("schemaViolations").is_none());
    let allowed = events
        .find_one(doc! {"eventId": "al-bad"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(allowed.get_i64("schemaVersion").unwrap(), 2);
    assert_eq!(allowed.get_array("schemaViolations").unwrap().len(), 2);
    let quarantined = held
        .find_one(doc! {"eventId": "q-bad"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quarantined.get_array("schemaViolations").unwrap().len(), 2);
    assert!(quarantined.get_datetime("quarantinedAt").is_ok());
    for id in ["q-bad", "q-b2", "en-bad", "en-b2", "en-latest"] {
        assert!(
            events
                .find_one(doc! {"eventId": id})
                .await
                .unwrap()
                .is_none(),
            "{id} is not in events"
        );
    }

    // Read back: the plan, the quarantine, one event; another account sees none of it.
    let plan = stack.api().get("/api/v1/schemas", Some(&t.token)).await;
    assert_eq!(plan.body[0]["eventType"], "purchase");
    assert_eq!(
        (
            plan.body[0]["latestVersion"].as_i64(),
            &plan.body[0]["mode"]
        ),
        (Some(2), &json!("allow"))
    );
    let v = stack
        .api()
        .get("/api/v1/schemas/purchase/1", Some(&t.token))
        .await;
    assert_eq!(v.body["schema"]["required"], json!(["amount"]));
    let q = stack
        .api()
        .get("/api/v1/quarantine?eventType=purchase", Some(&t.token))
        .await;
    let ids: Vec<&str> = q.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{}", q.body);
    assert!(q.body["events"][0]["schemaViolations"].is_array());
    let one = stack
        .api()
        .get("/api/v1/events/al-bad", Some(&t.token))
        .await;
    assert_eq!(
        (one.status, &one.body["properties"]["currency"]),
        (200, &json!("euro"))
    );
    let other = stack.tenant().await;
    assert_eq!(
        stack
            .api()
            .get("/api/v1/events/al-bad", Some(&other.token))
            .await
            .status,
        404
    );
    assert_eq!(
        stack
            .api()
            .get("/api/v1/schemas", Some(&other.token))
            .await
            .body,
        json!([])
    );
    assert_eq!(
        stack
            .api()
            .get("/api/v1/schemas/purchase/1", Some(&other.token))
            .await
            .status,
        404
    );
    let theirs = stack
        .api()
        .get("/api/v1/quarantine", Some(&other.token))
        .await;
    assert_eq!(theirs.body["events"], json!([]));
    assert_eq!(
        stack
            .api()
            .get("/api/v1/events", Some(&other.token))
            .await
            .body["events"],
        json!([])
    );
}

#[tokio::test]
async fn schemas_that_do_not_compile_are_too_large_or_hostile_are_refused_or_bounded() {
    let stack = spawn_stack(Options::api()).await;
    let t = stack.tenant().await;
    let r = publish(
        &stack,
        &t,
        "x",
        json!({"properties": {"a": {"type": "nope"}}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"]["details"][0]["path"]
        .as_str()
        .unwrap()
        .starts_with("/schema"));
    let r = publish(
        &stack,
        &t,
        "x",
        json!({"properties": {"a": {"pattern": "(?=look)around"}}}),
    )
    .await;
    assert_eq!(r.status, 400, "look-around needs backtracking: {}", r.body);
    let r = publish(
        &stack,
        &t,
        "x",
        json!({"$ref": "https://example.com/remote.json"}),
    )
    .await;
    assert_eq!(r.status, 400, "no remote references: {}", r.body);
    let big = json!({"description": "x".repeat(70 * 1024)});
    assert_eq!(publish(&stack, &t, "x", big).await.status, 413);
    // An exponential pattern on a backtracking engine, and a self-referencing schema: taken, and
    // ingest judges by them in linear time.
    let r = publish(
        &stack,
        &t,
        "hostile",
        json!({"$defs": {"n": {"type": "object", "additionalProperties": {"$ref": "#/$defs/n"},
        "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}}, "$ref": "#/$defs/n"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    set_mode(&stack, &t, "hostile", "enforce").await;
    let s = format!("{}!", "a".repeat(30_000));
    let r = stack.api().post_event(&t.key, &json!({"eventType": "hostile", "userId": "u", "properties": {"s": s, "k": {"k": {"s": "aaa"}}}})).await;
    assert_eq!(
        (r.status, &r.body["error"]["details"][0]["path"]),
        (400, &json!("/properties/s")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_mode_change_reaches_another_api_instance_within_a_second() {
    let stack = spawn_stack(Options::api()).await;
    let t = stack.tenant().await;
    // A second api instance on the same Redis and PostgreSQL.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let port = sluice_testkit::api()(
        stack.settings.clone(),
        Box::pin(async {
            let _ = stop_rx.await;
        }),
    )
    .await
    .unwrap();
    let other = sluice_testkit::ApiClient::new(port, stack.http.clone());
    assert_eq!(
        publish(&stack, &t, "signup", json!({"required": ["plan"]}))
            .await
            .status,
        201
    );
    let invalid = json!({"eventType": "signup", "userId": "u", "properties": {}});
    // Both instances have judged by the plan (allow) and hold it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(other.post_event(&t.key, &invalid).await.status, 202);
    assert_eq!(stack.api().post_event(&t.key, &invalid).await.status, 202);
    let changed = Instant::now();
    set_mode(&stack, &t, "signup", "enforce").await;
    // The promise is 1 s; the deadline is ten times it, and the delay seen is reported.
    let mut seen = None;
    while changed.elapsed() < Duration::from_secs(10) {
        if other.post_event(&t.key, &invalid).await.status == 400 {
            seen = Some(changed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = seen.expect("the other instance applies the new mode");
    eprintln!("a mode change reached the other api instance after {seen:?}");
    let _ = stop_tx.send(());
}

#[tokio::test]
async fn event_queries_filter_page_without_gaps_or_repeats_and_use_their_index() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    // Whole seconds: stored times keep milliseconds, so the range bounds below are exact.
    let base = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 7200, 0).unwrap();
    let events: Vec<Value> = (0..40)
        .map(|i| {
            json!({"eventId": format!("q{i:02}"), "eventType": if i % 2 == 0 { "view" } else { "buy" },
                "userId": if i % 4 < 2 { "ann" } else { "bob" }, "sessionId": format!("s{}", i % 3),
                // Pairs share an instant, so a page can end between two events of one millisecond.
                "timestamp": (base + chrono::Duration::seconds(i / 2)).to_rfc3339()})
        })
        .collect();
    assert_eq!(stack.api().post_batch(&t.key, &events).await.status, 202);
    let account = t.account.to_string();
    wait_count(&stack, EVENTS_COLLECTION, doc! {"accountId": &account}, 40).await;

    // Pages of 7 while newer events keep arriving: every one of the 40 once, newest first.
    let mut seen: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    for page in 0.. {
        let arriving =
            json!({"eventId": format!("late{page}"), "eventType": "view", "userId": "ann"});
        assert_eq!(stack.api().post_event(&t.key, &arriving).await.status, 202);
        let mut path = format!(
            "/api/v1/events?limit=7&to={}",
            urlencode(&(base + chrono::Duration::hours(1)).to_rfc3339())
        );
        if let Some(b) = &before {
            path.push_str(&format!("&before={}", urlencode(b)));
        }
        let r = stack.api().get(&path, Some(&t.token)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        seen.extend(
            r.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["eventId"].as_str().unwrap().to_owned()),
        );
        match r.body["nextBefore"].as_str() {
            Some(b) => before = Some(b.to_owned()),
            None => break,
        }
        assert!(page < 20);
    }
    let mut expected: Vec<String> = (0..40).rev().map(|i| format!("q{i:02}")).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no event twice: {seen:?}");
    expected.sort();
    assert_eq!(sorted, expected, "no gap");

    for (query, n) in [
        ("eventType=buy", 20),
        ("userId=ann&eventType=view", 10),
        ("sessionId=s1", 13),
        (
            &format!(
                "from={}&to={}",
                urlencode(&(base + chrono::Duration::seconds(10)).to_rfc3339()),
                urlencode(&(base + chrono::Duration::seconds(15)).to_rfc3339())
            ),
            10,
        ),
    ] {
        let r = stack
            .api()
            .get(
                &format!(
                    "/api/v1/events?limit=1000&{query}&before={}",
                    urlencode(&format!(
                        "{}:~",
                        (base + chrono::Duration::hours(1)).timestamp_millis()
                    ))
                ),
                Some(&t.token),
            )
            .await;
        assert_eq!(
            r.body["events"].as_array().map(Vec::len),
            Some(n),
            "{query}: {}",
            r.body
        );
    }

    // Each query shape as the api sends it (its filter, order and index): the plan scans that
    // index, and nothing of the collection.
    for query in [
        "",
        "eventType=buy",
        "userId=ann&eventType=buy",
        "sessionId=s1",
    ] {
        let mut raw = sluice_api::event_queries::RawFilter::default();
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "eventType" => raw.event_type = Some(v),
                "userId" => raw.user_id = Some(v),
                "sessionId" => raw.session_id = Some(v),
                _ => {}
            }
        }
        let f = sluice_api::event_queries::EventFilter::parse(raw, 1000).unwrap();
        let explained = stack
            .db
            .run_command(
                doc! {"explain": {"find": EVENTS_COLLECTION, "filter": f.query(&account),
                "sort": sluice_api::event_queries::sort(), "hint": f.index(), "limit": 100},
                "verbosity": "queryPlanner"},
            )
            .await
            .unwrap();
        let plan = explained
            .get_document("queryPlanner")
            .unwrap()
            .get("winningPlan")
            .unwrap()
            .to_string();
        eprintln!("explain `{query}`: {plan}");
        assert!(
            plan.contains("IXSCAN") && plan.contains(f.index()),
            "`{query}` scans {}: {plan}",
            f.index()
        );
        assert!(!plan.contains("COLLSCAN"), "`{query}`: {plan}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
        .replace(' ', "%20")
        .replace('~', "%7E")
}

#[tokio::test]
async fn a_new_version_frees_quarantined_events_and_a_replay_moves_exactly_those_once() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let strict = json!({"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}});
    assert_eq!(publish(&stack, &t, "purchase", strict).await.status, 201);
    set_mode(&stack, &t, "purchase", "quarantine").await;
    let held: Vec<Value> = vec![
        purchase("h1", json!({"amount": 1.5})),
        purchase("h2", json!({"amount": 2.5})),
        purchase("h3", json!({"amount": "three"})),
        purchase("ok", json!({"amount": 4})),
    ];
    let r = stack.api().post_batch(&t.key, &held).await;
    assert_eq!(r.body["quarantined"].as_u64(), Some(3), "{}", r.body);
    let account = t.account.to_string();
    wait_count(
        &stack,
        QUARANTINE_COLLECTION,
        doc! {"accountId": &account},
        3,
    )
    .await;
    wait_count(&stack, EVENTS_COLLECTION, doc! {"accountId": &account}, 1).await;

    // Version 2 takes any number: h1 and h2 now pass, h3 still does not.
    let looser = json!({"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}});
    assert_eq!(
        publish(&stack, &t, "purchase", looser).await.body["version"],
        2
    );
    let replay = |body: Value| {
        let (api, token) = (stack.api().clone(), t.token.clone());
        async move {
            api.authed(
                reqwest::Method::POST,
                "/api/v1/quarantine/replay",
                &token,
                Some(&body),
            )
            .await
        }
    };
    let r = replay(json!({"eventType": "purchase"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.body["replayed"].as_u64(),
            r.body["stillQuarantined"].as_u64()
        ),
        (Some(2), Some(1))
    );
    wait_count(&stack, EVENTS_COLLECTION, doc! {"accountId": &account}, 3).await;
    assert_eq!(
        count(&stack, QUARANTINE_COLLECTION, doc! {"accountId": &account}).await,
        1
    );
    let events = stack.db.collection::<Document>(EVENTS_COLLECTION);
    let moved = events
        .find_one(doc! {"eventId": "h1"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.get_i64("schemaVersion").unwrap(), 2);
    assert!(moved.get("schemaViolations").is_none());
    let left = stack
        .db
        .collection::<Document>(QUARANTINE_COLLECTION)
        .find_one(doc! {"eventId": "h3"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        left.get_i64("schemaVersion").unwrap(),
        2,
        "judged again by the current version"
    );

    // A second replay moves nothing; the moved events stay stored once.
    let r = replay(json!({})).await;
    assert_eq!(
        (
            r.body["replayed"].as_u64(),
            r.body["stillQuarantined"].as_u64()
        ),
        (Some(0), Some(1))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count(&stack, EVENTS_COLLECTION, doc! {"accountId": &account}).await,
        3
    );
    // Another account's replay touches none of it.
    let other = stack.tenant().await;
    let r = stack
        .api()
        .authed(
            reqwest::Method::POST,
            "/api/v1/quarantine/replay",
            &other.token,
            Some(&json!({})),
        )
        .await;
    assert_eq!(
        (
            r.body["replayed"].as_u64(),
            r.body["stillQuarantined"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(
        count(&stack, QUARANTINE_COLLECTION, doc! {"accountId": &account}).await,
        1
    );
}
