//! Rules, anomalies and the live WebSocket through the whole stack: a threshold rule fires once
//! for a burst with 1 and with 3 workers, a z-score rule fires on a spike and not on its baseline,
//! duplicates and redeliveries do not count, a disabled rule stops, anomalies reach a WebSocket
//! client (ticket or JWT subprotocol) with the delay printed, the live tail, and isolation
//! between accounts.
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use fred::prelude::*;
use futures::{SinkExt, StreamExt};
use mongodb::bson::doc;
use serde_json::{json, Value};
use sluice_testkit::{spawn_stack, Options, Reply, Stack, Tenant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::worker;

async fn create_rule(stack: &Stack, t: &Tenant, body: Value) -> Reply {
    stack
        .api()
        .authed(
            reqwest::Method::POST,
            "/api/v1/rules",
            &t.token,
            Some(&body),
        )
        .await
}

async fn anomalies(stack: &Stack, t: &Tenant) -> Vec<Value> {
    let r = stack.api().get("/api/v1/anomalies", Some(&t.token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["anomalies"].as_array().cloned().unwrap_or_default()
}

async fn stored(stack: &Stack, t: &Tenant) -> u64 {
    stack
        .db
        .collection::<mongodb::bson::Document>("events")
        .count_documents(doc! {"accountId": t.account.to_string()})
        .await
        .unwrap()
}

async fn wait_stored(stack: &Stack, t: &Tenant, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = stored(stack, t).await;
        if c >= n {
            assert_eq!(c, n);
            return;
        }
        assert!(Instant::now() < deadline, "{c} of {n} stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (10 s at most) until the account has `n` anomalies, then a moment more to see no
/// extra one arrives; returns them.
async fn settle_anomalies(stack: &Stack, t: &Tenant, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while anomalies(stack, t).await.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    anomalies(stack, t).await
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn event(id: &str, event_type: &str, props: Value) -> Value {
    json!({"eventId": id, "eventType": event_type, "userId": "u1", "properties": props})
}

fn threshold(name: &str, value: f64) -> Value {
    json!({"name": name, "severity": "critical", "cooldownSeconds": 300,
        "condition": {"type": "threshold", "eventType": "checkout", "where": {"plan": "pro"},
            "windowSeconds": 60, "operator": ">=", "value": value}})
}

/// 20 matching events in 5 batches of 4 (and 10 that do not match): the count crosses 10 once.
async fn burst_fires_once(workers: usize) {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let mut extra = Vec::new();
    for i in 1..workers {
        let mut s = stack.settings.clone();
        s.worker.consumer_name = Some(format!("{}-{i}", s.worker.consumer()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        worker()(
            s,
            Box::pin(async {
                let _ = rx.await;
            }),
        )
        .await
        .unwrap();
        extra.push(tx);
    }
    let t = stack.tenant().await;
    let r = create_rule(&stack, &t, threshold("checkout burst", 10.0)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    let rule_id = r.body["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for b in 0..5 {
        let mut batch: Vec<Value> = (0..4)
            .map(|i| event(&format!("c-{b}-{i}"), "checkout", json!({"plan": "pro"})))
            .collect();
        batch.push(event(
            &format!("free-{b}"),
            "checkout",
            json!({"plan": "free"}),
        ));
        batch.push(event(
            &format!("view-{b}"),
            "page_view",
            json!({"plan": "pro"}),
        ));
        let r = stack.api().post_batch(&t.key, &batch).await;
        assert_eq!(r.status, 202, "{}", r.body);
        wait_stored(&stack, &t, 6 * (b + 1)).await;
    }
    let found = settle_anomalies(&stack, &t, 1).await;
    assert_eq!(found.len(), 1, "{workers} workers: {found:?}");
    let a = &found[0];
    assert_eq!(a["ruleId"], rule_id.as_str());
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["kind"], "threshold");
    assert!(a["observed"].as_f64().unwrap() >= 10.0, "{a}");
    assert_eq!(a["threshold"], 10.0);
    assert!(!a["sampleEventIds"].as_array().unwrap().is_empty());
    let one = stack
        .api()
        .get(
            &format!("/api/v1/anomalies/{}", a["id"].as_str().unwrap()),
            Some(&t.token),
        )
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body["id"], a["id"]);
    drop(extra);
}

#[tokio::test]
async fn a_threshold_rule_fires_once_for_a_burst_with_one_worker() {
    burst_fires_once(1).await;
}

#[tokio::test]
async fn a_threshold_rule_fires_once_for_a_burst_with_three_workers() {
    burst_fires_once(3).await;
}

#[tokio::test]
async fn a_zscore_rule_fires_on_a_spike_and_not_on_its_baseline() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let r = create_rule(
        &stack,
        &t,
        json!({"name": "signup spike", "severity": "warning",
            "condition": {"type": "zscore", "eventType": "signup", "bucketSeconds": 1,
                "baselineBuckets": 3, "threshold": 3, "direction": "up"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // The rule judges only buckets it saw whole: its baseline starts the second after it was
    // saved. Wait until that baseline and two more seconds lie in the past, then send events
    // stamped into those seconds.
    let saved: DateTime<Utc> = r.body["updatedAt"].as_str().unwrap().parse().unwrap();
    let first = DateTime::from_timestamp(saved.timestamp() + 1, 0).unwrap();
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + (first + chrono::Duration::seconds(6) - Utc::now())
                .to_std()
                .unwrap_or_default(),
    )
    .await;
    let second = |n: i64, i: usize| {
        let ts =
            first + chrono::Duration::seconds(n) + chrono::Duration::milliseconds(i as i64 * 10);
        json!({"eventId": format!("s-{n}-{i}"), "eventType": "signup", "userId": "u",
            "timestamp": at(ts)})
    };
    // A steady baseline: 10 a second for three seconds, then a fourth ordinary second.
    for n in 0..4 {
        let batch: Vec<Value> = (0..10).map(|i| second(n, i)).collect();
        assert_eq!(stack.api().post_batch(&t.key, &batch).await.status, 202);
        wait_stored(&stack, &t, 10 * (n as u64 + 1)).await;
    }
    let early = settle_anomalies(&stack, &t, 1).await;
    assert!(early.is_empty(), "the baseline is no anomaly: {early:?}");
    // A spike: 60 in the fifth second.
    let batch: Vec<Value> = (0..60).map(|i| second(4, i)).collect();
    assert_eq!(stack.api().post_batch(&t.key, &batch).await.status, 202);
    wait_stored(&stack, &t, 100).await;
    let found = settle_anomalies(&stack, &t, 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["kind"], "zscore");
    // It fires as the bucket's count crosses mean + 3σ (10 + 3·√10 ≈ 19.5), which may be before
    // all 60 are counted.
    let observed = found[0]["observed"].as_f64().unwrap();
    assert!((19.5..=60.0).contains(&observed), "{observed}");
    assert_eq!(found[0]["mean"], 10.0);
    assert!(found[0]["zscore"].as_f64().unwrap() >= 3.0);
}

#[tokio::test]
async fn duplicates_and_redeliveries_do_not_count() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let r = create_rule(&stack, &t, threshold("never", 1_000.0)).await;
    assert_eq!(r.status, 201);
    let rule_id = r.body["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let batch: Vec<Value> = (0..10)
        .map(|i| event(&format!("d-{i}"), "checkout", json!({"plan": "pro"})))
        .collect();
    assert_eq!(stack.api().post_batch(&t.key, &batch).await.status, 202);
    wait_stored(&stack, &t, 10).await;
    // The client's retry: duplicates, answered 200, never queued.
    assert_eq!(stack.api().post_batch(&t.key, &batch).await.status, 200);
    // A redelivery: the same events queued again behind the api's back, as a crashed worker's
    // entries are delivered again. MongoDB keeps them once; they are not counted again.
    let redis = sluice_shared::redis::connect(&stack.settings.redis)
        .await
        .unwrap();
    let layout = stack.settings.redis.layout();
    let now = Utc::now();
    let queued: Vec<sluice_shared::event::QueuedEvent> = (0..10)
        .map(|i| sluice_shared::event::QueuedEvent {
            event_id: format!("d-{i}"),
            account_id: t.account.to_string(),
            event_type: "checkout".into(),
            user_id: "u1".into(),
            session_id: None,
            timestamp: now,
            received_at: now,
            properties: Some(serde_json::value::to_raw_value(&json!({"plan": "pro"})).unwrap()),
            origin: None,
            plan: None,
        })
        .collect();
    let text = serde_json::to_string(&queued).unwrap();
    let _: String = redis
        .xadd(
            layout.stream(0),
            false,
            None,
            "*",
            vec![
                (sluice_shared::names::STREAM_EVENT_FIELD, text.as_str()),
                (sluice_shared::names::STREAM_COUNT_FIELD, "10"),
            ],
        )
        .await
        .unwrap();
    let one = [event("d-new", "checkout", json!({"plan": "pro"}))];
    assert_eq!(stack.api().post_batch(&t.key, &one).await.status, 202);
    wait_stored(&stack, &t, 11).await;
    // Everything queued has been through the worker once the stream's group has nothing pending.
    let counts_key = sluice_rules::window::RuleKeys::new(
        &stack.settings.redis.key_prefix,
        &t.account.to_string(),
        &rule_id,
        1,
    )
    .counts;
    let mut total = 0;
    let settled = sluice_testkit::eventually(Duration::from_secs(10), || {
        let (redis, key) = (redis.clone(), counts_key.clone());
        async move {
            let counts: std::collections::HashMap<String, i64> =
                redis.hgetall(&key).await.unwrap_or_default();
            counts.values().sum::<i64>() == 11
        }
    })
    .await;
    let counts: std::collections::HashMap<String, i64> = redis.hgetall(&counts_key).await.unwrap();
    total += counts.values().sum::<i64>();
    assert!(settled, "the window holds {total}, not 11");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let counts: std::collections::HashMap<String, i64> = redis.hgetall(&counts_key).await.unwrap();
    assert_eq!(
        counts.values().sum::<i64>(),
        11,
        "a redelivery counted again"
    );
}

#[tokio::test]
async fn a_disabled_rule_stops_on_every_worker() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let mut s = stack.settings.clone();
    s.worker.consumer_name = Some(format!("{}-2", s.worker.consumer()));
    let (_keep, rx) = tokio::sync::oneshot::channel::<()>();
    worker()(
        s,
        Box::pin(async {
            let _ = rx.await;
        }),
    )
    .await
    .unwrap();
    let t = stack.tenant().await;
    let r = create_rule(&stack, &t, threshold("any checkout", 1.0)).await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let off = stack
        .api()
        .authed(
            reqwest::Method::PATCH,
            &format!("/api/v1/rules/{id}"),
            &t.token,
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(
        (off.body["enabled"].as_bool(), off.body["version"].as_i64()),
        (Some(false), Some(2))
    );
    // The promise is a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let batch: Vec<Value> = (0..20)
        .map(|i| event(&format!("x-{i}"), "checkout", json!({"plan": "pro"})))
        .collect();
    assert_eq!(stack.api().post_batch(&t.key, &batch).await.status, 202);
    wait_stored(&stack, &t, 20).await;
    assert!(settle_anomalies(&stack, &t, 1).await.is_empty());
    // Enabled again, it fires again.
    let on = stack
        .api()
        .authed(
            reqwest::Method::PATCH,
            &format!("/api/v1/rules/{id}"),
            &t.token,
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(on.status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let more: Vec<Value> = (0..5)
        .map(|i| event(&format!("y-{i}"), "checkout", json!({"plan": "pro"})))
        .collect();
    assert_eq!(stack.api().post_batch(&t.key, &more).await.status, 202);
    wait_stored(&stack, &t, 25).await;
    assert_eq!(settle_anomalies(&stack, &t, 1).await.len(), 1);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_with_token(stack: &Stack, token: &str) -> Socket {
    let port = stack.api().port;
    let mut req = format!("ws://127.0.0.1:{port}/api/v1/live")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("sluice.live, bearer.{token}").parse().unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("sluice.live")
    );
    ws
}

/// A ticket from the stack's api, used on the api at `port` (tickets live in Redis: any
/// instance takes them).
async fn connect_with_ticket(stack: &Stack, t: &Tenant, port: u16) -> Socket {
    let r = stack
        .api()
        .authed(reqwest::Method::POST, "/api/v1/live/ticket", &t.token, None)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ticket = r.body["ticket"].as_str().unwrap();
    let url = format!("ws://127.0.0.1:{port}/api/v1/live?ticket={ticket}");
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    // Single use.
    assert!(tokio_tungstenite::connect_async(url.as_str())
        .await
        .is_err());
    ws
}

/// The next JSON message of `kind` within `within`, skipping others.
async fn next_of(ws: &mut Socket, kind: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        if let Ok(Message::Text(text)) = msg {
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] == kind {
                return Some(v);
            }
        }
    }
}

#[tokio::test]
async fn anomalies_reach_websocket_clients_of_their_account_only() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    let mut ws_token = connect_with_token(&stack, &a.token).await;
    // A second api instance: a client there hears what a worker publishes as well.
    let (_stop_second, second_stops) = tokio::sync::oneshot::channel::<()>();
    let second = sluice_testkit::api()(
        stack.settings.clone(),
        Box::pin(async {
            let _ = second_stops.await;
        }),
    )
    .await
    .unwrap();
    let mut ws_ticket = connect_with_ticket(&stack, &a, second).await;
    let mut ws_b = connect_with_ticket(&stack, &b, stack.api().port).await;
    for ws in [&mut ws_token, &mut ws_ticket, &mut ws_b] {
        assert!(next_of(ws, "hello", Duration::from_secs(5)).await.is_some());
    }
    // Without a token or ticket: refused before the upgrade.
    let port = stack.api().port;
    assert!(
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/v1/live"))
            .await
            .is_err()
    );
    let r = create_rule(&stack, &a, threshold("live", 5.0)).await;
    assert_eq!(r.status, 201);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let batch: Vec<Value> = (0..5)
        .map(|i| event(&format!("l-{i}"), "checkout", json!({"plan": "pro"})))
        .collect();
    let r = stack.api().post_batch(&a.key, &batch).await;
    assert_eq!(r.status, 202);
    let accepted = Instant::now();
    // The promise is 2 s; the test allows ten times that and prints what it saw.
    let got = next_of(&mut ws_token, "anomaly", Duration::from_secs(20))
        .await
        .expect("the anomaly over the WebSocket");
    let delay = accepted.elapsed();
    println!("202 → WebSocket anomaly: {} ms", delay.as_millis());
    assert_eq!(got["anomaly"]["ruleName"], "live");
    assert!(next_of(&mut ws_ticket, "anomaly", Duration::from_secs(5))
        .await
        .is_some());
    assert!(
        next_of(&mut ws_b, "anomaly", Duration::from_secs(2))
            .await
            .is_none(),
        "account B heard A's anomaly"
    );
    // B can neither read nor delete A's anomaly; A can.
    let id = got["anomaly"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/anomalies/{id}");
    assert_eq!(stack.api().get(&path, Some(&b.token)).await.status, 404);
    assert!(anomalies(&stack, &b).await.is_empty());
    let r = stack
        .api()
        .authed(reqwest::Method::DELETE, &path, &b.token, None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(stack.api().get(&path, Some(&a.token)).await.status, 200);
    let r = stack
        .api()
        .authed(reqwest::Method::DELETE, &path, &a.token, None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(stack.api().get(&path, Some(&a.token)).await.status, 404);
}

#[tokio::test]
async fn a_count_that_holds_on_absence_fires_from_the_timer_once() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    // Fewer than 1 checkout in 2 s: true as soon as the rule has watched 2 whole seconds of
    // nothing, with no event to trigger it.
    let mut rule = threshold("no checkouts", 1.0);
    rule["condition"]["operator"] = json!("<");
    rule["condition"]["windowSeconds"] = json!(2);
    let r = create_rule(&stack, &t, rule).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = Instant::now();
    let found = sluice_testkit::eventually(Duration::from_secs(20), || async {
        !anomalies(&stack, &t).await.is_empty()
    })
    .await;
    assert!(found, "no anomaly from the timer");
    println!(
        "absence anomaly {} ms after the rule was created",
        created.elapsed().as_millis()
    );
    let found = settle_anomalies(&stack, &t, 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["observed"], 0.0);
    assert!(found[0]["sampleEventIds"].as_array().unwrap().is_empty());
    // It stays one anomaly while the silence lasts (the edge flag is renewed each tick).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(anomalies(&stack, &t).await.len(), 1);
}

#[tokio::test]
async fn the_live_tail_streams_stored_events_of_the_type_asked() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let mut ws = connect_with_token(&stack, &t.token).await;
    assert!(next_of(&mut ws, "hello", Duration::from_secs(5))
        .await
        .is_some());
    ws.send(Message::Text(
        json!({"subscribe": "events", "eventType": "checkout"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert!(next_of(&mut ws, "subscribed", Duration::from_secs(5))
        .await
        .is_some());
    // The worker learns of the tail within its tick (a second) and the hub's refresh.
    let mut n = 0;
    let got = loop {
        n += 1;
        let batch = [
            event(&format!("t-{n}"), "checkout", json!({"plan": "pro"})),
            event(&format!("v-{n}"), "page_view", json!({})),
        ];
        assert_eq!(stack.api().post_batch(&t.key, &batch).await.status, 202);
        if let Some(v) = next_of(&mut ws, "event", Duration::from_millis(500)).await {
            break v;
        }
        assert!(n < 40, "no tail event within 20 s");
    };
    assert_eq!(got["event"]["eventType"], "checkout");
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert!(next_of(&mut ws, "error", Duration::from_secs(5))
        .await
        .is_some());
}

#[tokio::test]
async fn accounts_see_and_change_only_their_own_rules() {
    let stack = spawn_stack(Options::api()).await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    let r = create_rule(&stack, &a, threshold("mine", 3.0)).await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/rules/{id}");
    for (method, body) in [
        (reqwest::Method::GET, None),
        (reqwest::Method::PUT, Some(threshold("theirs", 1.0))),
        (reqwest::Method::PATCH, Some(json!({"enabled": false}))),
        (reqwest::Method::DELETE, None),
    ] {
        let r = stack
            .api()
            .authed(method.clone(), &path, &b.token, body.as_ref())
            .await;
        assert_eq!(r.status, 404, "{method} {}", r.body);
    }
    let listed = stack.api().get("/api/v1/rules", Some(&b.token)).await;
    assert_eq!(listed.body["rules"], json!([]));
    let listed = stack.api().get("/api/v1/rules", Some(&a.token)).await;
    assert_eq!(listed.body["rules"].as_array().unwrap().len(), 1);
    // A replace keeps the id and raises the version; a bad field is a 400 with its pointer.
    let put = stack
        .api()
        .authed(
            reqwest::Method::PUT,
            &path,
            &a.token,
            Some(&threshold("renamed", 4.0)),
        )
        .await;
    assert_eq!((put.status, put.body["version"].as_i64()), (200, Some(2)));
    let mut bad = threshold("bad", 1.0);
    bad["condition"]["windowSeconds"] = json!(0);
    let r = create_rule(&stack, &a, bad).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["error"]["details"][0]["path"],
        "/condition/windowSeconds"
    );
    let mut unknown_channel = threshold("chan", 1.0);
    unknown_channel["channels"] = json!([uuid::Uuid::new_v4()]);
    let r = create_rule(&stack, &a, unknown_channel).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "/channels/0");
    // Channels: B neither lists nor deletes A's, nor names it in a rule.
    let c = create_channel(&stack, &a, "webhook", "https://example.com/hook").await;
    let cpath = format!("/api/v1/channels/{}", c.body["id"].as_str().unwrap());
    let theirs = stack.api().get("/api/v1/channels", Some(&b.token)).await;
    assert_eq!(theirs.body["channels"], json!([]));
    let r = stack
        .api()
        .authed(reqwest::Method::DELETE, &cpath, &b.token, None)
        .await;
    assert_eq!(r.status, 404);
    let mut borrowed = threshold("borrowed", 1.0);
    borrowed["channels"] = json!([c.body["id"]]);
    assert_eq!(create_rule(&stack, &b, borrowed).await.status, 400);
    let r = stack
        .api()
        .authed(reqwest::Method::DELETE, &cpath, &a.token, None)
        .await;
    assert_eq!(r.status, 204);
    let gone = stack
        .api()
        .authed(reqwest::Method::DELETE, &path, &a.token, None)
        .await;
    assert_eq!(gone.status, 204);
    assert_eq!(stack.api().get(&path, Some(&a.token)).await.status, 404);
    // Anomalies: another account's is 404.
    let r = stack
        .api()
        .get(
            "/api/v1/anomalies/0190a3b2-0000-7000-8000-000000000001",
            Some(&a.token),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = stack
        .api()
        .get("/api/v1/anomalies?limit=0", Some(&a.token))
        .await;
    assert_eq!(r.status, 400);
}

/// A local HTTP receiver standing in for Slack or a webhook endpoint: answers each request with
/// the next of `script` (status, Retry-After), the last one for the rest, or never answers when
/// `hang`; keeps every request (time, headers, body).
struct Receiver {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

/// A request as received: when, its headers (names lower-cased), its body.
type Received = (Instant, Vec<(String, String)>, Vec<u8>);

impl Receiver {
    async fn start(script: Vec<(u16, Option<u64>)>, hang: bool) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = got.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head_end, length) = loop {
                    let r = sock.read(&mut chunk).await.unwrap_or(0);
                    if r == 0 {
                        break (0, 0);
                    }
                    buf.extend_from_slice(&chunk[..r]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                if head_end == 0 {
                    continue;
                }
                while buf.len() < head_end + length {
                    let r = sock.read(&mut chunk).await.unwrap_or(0);
                    if r == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..r]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
                    .collect();
                seen.lock()
                    .unwrap()
                    .push((Instant::now(), headers, buf[head_end..].to_vec()));
                if hang {
                    // Hold the connection open, never answering.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        drop(sock);
                    });
                    continue;
                }
                let (status, after) = script[n.min(script.len() - 1)];
                n += 1;
                let extra = after.map_or(String::new(), |a| format!("Retry-After: {a}\r\n"));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        Self { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        while self.requests().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.requests()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

async fn create_channel(stack: &Stack, t: &Tenant, kind: &str, url: &str) -> Reply {
    let r = stack
        .api()
        .authed(
            reqwest::Method::POST,
            "/api/v1/channels",
            &t.token,
            Some(&json!({"type": kind, "url": url})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r
}

/// Fires `rule` (a threshold of 3 on checkout) with three events.
async fn fire(stack: &Stack, t: &Tenant, channels: Vec<Value>, prefix: &str) {
    let mut rule = threshold(prefix, 3.0);
    rule["channels"] = Value::Array(channels);
    let r = create_rule(stack, t, rule).await;
    assert_eq!(r.status, 201, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let batch: Vec<Value> = (0..3)
        .map(|i| event(&format!("{prefix}-{i}"), "checkout", json!({"plan": "pro"})))
        .collect();
    assert_eq!(stack.api().post_batch(&t.key, &batch).await.status, 202);
}

#[tokio::test]
async fn anomalies_reach_slack_and_a_signed_webhook() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let (slack, hook) = (
        Receiver::start(vec![(200, None)], false).await,
        Receiver::start(vec![(200, None)], false).await,
    );
    let s = create_channel(&stack, &t, "slack", &slack.url()).await;
    assert!(s.body.get("secret").is_none());
    let w = create_channel(&stack, &t, "webhook", &hook.url()).await;
    let secret = w.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let listed = stack.api().get("/api/v1/channels", Some(&t.token)).await;
    assert_eq!(listed.body["channels"].as_array().unwrap().len(), 2);
    assert!(
        !listed.body.to_string().contains(&secret),
        "a listing never shows the secret"
    );
    fire(
        &stack,
        &t,
        vec![s.body["id"].clone(), w.body["id"].clone()],
        "notify",
    )
    .await;
    let to_slack = slack.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(to_slack.len(), 1);
    let text: Value = serde_json::from_slice(&to_slack[0].2).unwrap();
    assert!(text["text"].as_str().unwrap().contains("notify"), "{text}");
    let to_hook = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(to_hook.len(), 1);
    let (_, headers, body) = &to_hook[0];
    // Verified as a receiver would, from the Standard Webhooks spec, with the secret shown once.
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    let (id, ts) = (
        header(headers, "webhook-id"),
        header(headers, "webhook-timestamp"),
    );
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    assert_eq!(header(headers, "webhook-signature"), expected);
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["anomaly"]["id"], id);
    // The anomaly shows both deliveries.
    let shown = sluice_testkit::eventually(Duration::from_secs(10), || async {
        let r = stack
            .api()
            .get(&format!("/api/v1/anomalies/{id}"), Some(&t.token))
            .await;
        r.body["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().filter(|x| x["status"] == "delivered").count() == 2)
    })
    .await;
    assert!(shown);
}

#[tokio::test]
async fn a_receiver_answering_429_gets_the_message_once_after_the_wait() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let t = stack.tenant().await;
    let hook = Receiver::start(vec![(429, Some(1)), (200, None)], false).await;
    let w = create_channel(&stack, &t, "webhook", &hook.url()).await;
    fire(&stack, &t, vec![w.body["id"].clone()], "busy").await;
    let got = hook.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "one refused, one taken");
    let waited = got[1].0 - got[0].0;
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After honoured: {waited:?}"
    );
    assert_eq!(
        header(&got[0].1, "webhook-id"),
        header(&got[1].1, "webhook-id")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.requests().len(), 2, "delivered once, not again");
    let id = header(&got[0].1, "webhook-id").to_owned();
    let r = stack
        .api()
        .get(&format!("/api/v1/anomalies/{id}"), Some(&t.token))
        .await;
    let d = r.body["deliveries"].as_array().unwrap();
    let seen: Vec<(Value, Value)> = d
        .iter()
        .map(|x| (x["status"].clone(), x["httpStatus"].clone()))
        .collect();
    assert!(
        seen.len() == 2
            && seen[0] == (json!("retrying"), json!(429))
            && seen[1] == (json!("delivered"), json!(200)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_channel_that_is_down_does_not_slow_ingest() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let (up_t, down_t) = (stack.tenant().await, stack.tenant().await);
    let up = Receiver::start(vec![(200, None)], false).await;
    let down = Receiver::start(vec![], true).await;
    let c_up = create_channel(&stack, &up_t, "webhook", &up.url()).await;
    let c_down = create_channel(&stack, &down_t, "webhook", &down.url()).await;
    // A rule that fires on every second with events, on each account.
    for (t, c) in [(&up_t, &c_up), (&down_t, &c_down)] {
        let mut rule = threshold("every second", 1.0);
        rule["condition"]["windowSeconds"] = json!(1);
        rule["cooldownSeconds"] = json!(0);
        rule["channels"] = json!([c.body["id"]]);
        assert_eq!(create_rule(&stack, t, rule).await.status, 201);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The same load for both accounts, side by side: 8 rounds of 25 events, a round every 300 ms.
    for round in 0..8 {
        for t in [&up_t, &down_t] {
            let batch: Vec<Value> = (0..25)
                .map(|i| event(&format!("r{round}-{i}"), "checkout", json!({"plan": "pro"})))
                .collect();
            assert_eq!(stack.api().post_batch(&t.key, &batch).await.status, 202);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Counted when the account with the healthy channel has everything stored: the other has
    // everything as well, though its receiver never answered.
    wait_stored(&stack, &up_t, 200).await;
    wait_stored(&stack, &down_t, 200).await;
    let (s_up, s_down) = (stored(&stack, &up_t).await, stored(&stack, &down_t).await);
    println!("stored with the channel up: {s_up}, with it down: {s_down}");
    assert_eq!(s_down, s_up);
    assert!(!down.requests().is_empty(), "the down channel was tried");
    assert!(!up.requests().is_empty(), "the up channel was delivered to");
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_given_up_after_the_bound_and_recorded() {
    let mut settings = sluice_testkit::test_settings();
    settings.rules.delivery_max_attempts = 3;
    settings.rules.delivery_backoff_ms = 100;
    let stack = spawn_stack(Options::api().settings(settings).worker(worker())).await;
    let t = stack.tenant().await;
    let broken = Receiver::start(vec![(500, None)], false).await;
    let w = create_channel(&stack, &t, "webhook", &broken.url()).await;
    fire(&stack, &t, vec![w.body["id"].clone()], "broken").await;
    let got = broken.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(broken.requests().len(), 3, "no attempt after the bound");
    let id = header(&got[0].1, "webhook-id").to_owned();
    let r = stack
        .api()
        .get(&format!("/api/v1/anomalies/{id}"), Some(&t.token))
        .await;
    let statuses: Vec<&str> = r.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["retrying", "retrying", "failed"], "{}", r.body);
}
