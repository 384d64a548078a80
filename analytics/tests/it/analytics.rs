use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{spawn_stack, Stack, Tenant};

struct Synthetic {
    events: Vec<Value>,
}

fn at(minutes_ago: i64) -> String {
    (Utc::now() - chrono::Duration::minutes(minutes_ago))
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Events over the last 50 minutes across types and users, plus late ones 3 hours and 2 days old.
fn synthetic(prefix: &str, users: usize) -> Synthetic {
    let types = ["page_view", "click", "purchase"];
    let mut events = Vec::new();
    let mut n = 0;
    for minute in 1..=50i64 {
        for k in 0..(minute % 4 + 1) {
            let user = format!("{prefix}-user-{}", (n * 7 + k as usize) % users);
            let ty = types[(n + k as usize) % types.len()];
            events.push(
                json!({"eventId": format!("{prefix}-{n}"), "eventType": ty, "userId": user,
                "timestamp": at(minute)}),
            );
            n += 1;
        }
    }
    // Heavy hitter, so top users has a clear winner.
    for i in 0..20 {
        events.push(
            json!({"eventId": format!("{prefix}-hh-{i}"), "eventType": "click",
            "userId": format!("{prefix}-whale"), "timestamp": at(10 + i % 5)}),
        );
    }
    // Late arrivals: they belong to their own old buckets.
    for (i, minutes_ago) in [180i64, 181, 2 * 24 * 60].iter().enumerate() {
        events.push(
            json!({"eventId": format!("{prefix}-late-{i}"), "eventType": "signup",
            "userId": format!("{prefix}-late-user"), "timestamp": at(*minutes_ago)}),
        );
    }
    Synthetic { events }
}

struct Truth {
    total: i64,
    by_type: BTreeMap<String, i64>,
    users: BTreeSet<String>,
    per_user: BTreeMap<String, i64>,
}

fn truth(events: &[Value], within_minutes: i64) -> Truth {
    let now = Utc::now();
    let mut t = Truth {
        total: 0,
        by_type: BTreeMap::new(),
        users: BTreeSet::new(),
        per_user: BTreeMap::new(),
    };
    for e in events {
        let ts: DateTime<Utc> = e["timestamp"].as_str().unwrap().parse().unwrap();
        if now - ts > chrono::Duration::minutes(within_minutes) {
            continue;
        }
        t.total += 1;
        *t.by_type
            .entry(e["eventType"].as_str().unwrap().into())
            .or_default() += 1;
        let u = e["userId"].as_str().unwrap().to_owned();
        *t.per_user.entry(u.clone()).or_default() += 1;
        t.users.insert(u);
    }
    t
}

fn check_summary(s: &Value, t: &Truth, range: &str) {
    assert_eq!(s["range"], range);
    assert_eq!(s["totalEvents"], t.total, "{range}: total");
    let got: BTreeMap<String, i64> = s["eventsByType"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["eventType"].as_str().unwrap().into(),
                x["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, t.by_type, "{range}: by type");
    let shares: f64 = s["eventsByType"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9);
    // HyperLogLog: standard error 0.81%; allow 3 of them, and at least one user.
    let unique = s["uniqueUsers"].as_i64().unwrap();
    let expected = t.users.len() as i64;
    assert!(
        (unique - expected).abs() as f64 <= (expected as f64 * 0.0243).max(1.0),
        "{range}: unique users {unique} vs {expected}"
    );
    let top = &s["topUsers"][0];
    let (whale, whale_count) = t.per_user.iter().max_by_key(|(_, n)| **n).unwrap();
    assert_eq!(top["userId"], whale.as_str(), "{range}: top user");
    assert_eq!(top["count"], *whale_count, "{range}: top user's count");
    let eps = s["eventsPerSecond"].as_f64().unwrap();
    assert!(eps > 0.0);
}

async fn ingest_synthetic(stack: &Stack, tenant: &Tenant, prefix: &str, users: usize) -> Synthetic {
    let data = synthetic(prefix, users);
    stack.ingest(tenant, &data.events).await;
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_figure_matches_the_ground_truth_per_account() {
    let stack = spawn_stack().await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    let da = ingest_synthetic(&stack, &a, "a", 30).await;
    let db = ingest_synthetic(&stack, &b, "b", 12).await;
    stack
        .wait_stored((da.events.len() + db.events.len()) as u64)
        .await;

    for (tenant, data) in [(&a, &da), (&b, &db)] {
        for (range, minutes) in [
            ("15m", 15),
            ("1h", 60),
            ("24h", 24 * 60),
            ("7d", 7 * 24 * 60),
        ] {
            let (status, _, s) = stack
                .get(
                    &tenant.token,
                    &format!("/api/v1/analytics/summary?range={range}"),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{s}");
            // 15m: events at 1..=15 minutes ago are inside; the boundary minute may fall either
            // side of the clock, so compare with the window the service used (minute resolution).
            if range == "15m" {
                let t14 = truth(&data.events, 14);
                let t16 = truth(&data.events, 16);
                let total = s["totalEvents"].as_i64().unwrap();
                assert!(
                    (t14.total..=t16.total).contains(&total),
                    "15m total {total}"
                );
                continue;
            }
            check_summary(&s, &truth(&data.events, minutes), range);
        }
    }

    // The time series of the last hour: one point a minute, counting by the events' own time.
    let (status, _, ts) = stack
        .get(&a.token, "/api/v1/analytics/timeseries?range=1h&bucket=1m")
        .await;
    assert_eq!(status, StatusCode::OK);
    let points = ts["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    let sum: i64 = points.iter().map(|p| p["count"].as_i64().unwrap()).sum();
    // The window's first minute may or may not hold the event 60 minutes old.
    let (low, high) = (truth(&da.events, 59).total, truth(&da.events, 61).total);
    assert!((low..=high).contains(&sum), "{sum} not in {low}..={high}");
    let (_, _, clicks) = stack
        .get(
            &a.token,
            "/api/v1/analytics/timeseries?range=24h&bucket=1h&eventType=signup",
        )
        .await;
    let signups: i64 = clicks["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .sum();
    assert_eq!(signups, 2, "the two late signups three hours ago");
    let (_, _, week) = stack
        .get(&a.token, "/api/v1/analytics/timeseries?range=7d&bucket=1d")
        .await;
    assert_eq!(week["points"].as_array().unwrap().len(), 7);
    let week_total: i64 = week["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .sum();
    assert_eq!(week_total, da.events.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_and_replayed_events_leave_every_count_unchanged() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    let data = ingest_synthetic(&stack, &a, "r", 10).await;
    let n = data.events.len() as u64;
    stack.wait_stored(n).await;
    let (_, _, before) = stack
        .get(&a.token, "/api/v1/analytics/summary?range=7d")
        .await;

    // Redeliver: the same stream entries written again, as a crashed worker's would be.
    let redis = sluice_shared::redis::connect(&stack.settings.redis)
        .await
        .unwrap();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis
        .xrange(&stack.settings.redis.stream_key, "-", "+", Some(200))
        .await
        .unwrap();
    assert!(!entries.is_empty());
    for (_, fields) in &entries {
        let _: String = redis
            .xadd(
                &stack.settings.redis.stream_key,
                false,
                None,
                "*",
                vec![("e", fields["e"].clone())],
            )
            .await
            .unwrap();
    }
    // And replay through the api's dedup: all duplicates.
    stack.ingest(&a, &data.events[..50]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.expire_cache();
    let (_, cache, after) = stack
        .get(&a.token, "/api/v1/analytics/summary?range=7d")
        .await;
    assert_eq!(cache, "miss");
    assert_eq!(after["totalEvents"], before["totalEvents"]);
    assert_eq!(after["eventsByType"], before["eventsByType"]);
    assert_eq!(after["topUsers"], before["topUsers"]);
    let events = sluice_worker::store::events(&stack.db);
    assert_eq!(
        events
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap(),
        n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_see_only_their_own_data() {
    let stack = spawn_stack().await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    ingest_synthetic(&stack, &a, "iso", 5).await;
    let n = synthetic("iso", 5).events.len() as u64;
    stack.wait_stored(n).await;

    let (_, _, bs) = stack
        .get(&b.token, "/api/v1/analytics/summary?range=7d")
        .await;
    assert_eq!(bs["totalEvents"], 0);
    assert_eq!(bs["topUsers"], json!([]));
    let (status, _, own) = stack
        .get(&a.token, "/api/v1/analytics/users/iso-whale/events?limit=5")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own["events"].as_array().unwrap().len(), 5);
    // B asking for A's user: as if it did not exist.
    let (status, _, body) = stack
        .get(&b.token, "/api/v1/analytics/users/iso-whale/events")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _, _) = stack.get("not-a-token", "/api/v1/analytics/summary").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_events_come_newest_first_in_cursor_pages() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    let events: Vec<Value> = (0..25)
        .map(|i| {
            json!({"eventId": format!("p{i:02}"), "eventType": "view", "userId": "pager",
            "timestamp": at(30 - i)})
        })
        .collect();
    stack.ingest(&a, &events).await;
    stack.wait_stored(25).await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/analytics/users/pager/events?limit=10".to_owned();
    loop {
        let (status, _, page) = stack.get(&a.token, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for e in page["events"].as_array().unwrap() {
            seen.push(e["eventId"].as_str().unwrap().to_owned());
        }
        match page["nextBefore"].as_str() {
            Some(c) => path = format!("/api/v1/analytics/users/pager/events?limit=10&before={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_hits_expires_with_its_clock_and_computes_concurrent_misses_once() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    let path = "/api/v1/analytics/summary?range=1h";
    let (_, first, _) = stack.get(&a.token, path).await;
    let (_, second, _) = stack.get(&a.token, path).await;
    assert_eq!((first.as_str(), second.as_str()), ("miss", "hit"));
    stack.clock.advance(Duration::from_millis(9_900));
    assert_eq!(stack.get(&a.token, path).await.1, "hit");
    stack.clock.advance(Duration::from_millis(200));
    assert_eq!(stack.get(&a.token, path).await.1, "miss");

    let before = stack.state.cache.computations();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let http = stack.http.clone();
        let url = format!("{}/api/v1/analytics/summary?range=7d", stack.analytics);
        let token = a.token.clone();
        tasks.spawn(async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.headers()["x-cache"].to_str().unwrap().to_owned()
        });
    }
    let mut misses = 0;
    while let Some(c) = tasks.join_next().await {
        misses += usize::from(c.unwrap() == "miss");
    }
    assert_eq!(stack.state.cache.computations() - before, 1);
    assert_eq!(misses, 1);
}

#[tokio::test]
async fn bad_parameters_are_400_in_the_contract_shape() {
    let stack = spawn_stack().await;
    let a = stack.tenant().await;
    for (path, pointer) in [
        ("/api/v1/analytics/summary?range=2h", "/range"),
        ("/api/v1/analytics/timeseries?range=7d&bucket=1m", "/bucket"),
        ("/api/v1/analytics/timeseries?range=1h&bucket=3m", "/bucket"),
        ("/api/v1/analytics/users/u/events?limit=0", "/limit"),
        ("/api/v1/analytics/users/u/events?limit=abc", "/limit"),
        (
            "/api/v1/analytics/users/u/events?before=nonsense",
            "/before",
        ),
        ("/api/v1/dlq?reason=whatever", "/reason"),
        ("/api/v1/dlq?limit=1000", "/limit"),
    ] {
        let (status, _, body) = stack.get(&a.token, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body["error"]["code"], "invalid_request", "{path}");
        assert_eq!(body["error"]["details"][0]["path"], pointer, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_per_account_only() {
    let stack = spawn_stack().await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    // A server-side rule refuses one kind of event: it is dead-lettered as write_rejected.
    // The worker created the collection (with its indexes) at start.
    stack
        .db
        .run_command(mongodb::bson::doc! {"collMod": "events", "validator": {"eventType": {"$ne": "refused"}}})
        .await
        .unwrap();
    stack
        .ingest(
            &a,
            &[
                json!({"eventId": "dl-1", "eventType": "refused", "userId": "u"}),
                json!({"eventId": "ok-1", "eventType": "fine", "userId": "u"}),
            ],
        )
        .await;
    let dlq = sluice_worker::store::dead_letters(&stack.db);
    for _ in 0..100 {
        if dlq.count_documents(mongodb::bson::doc! {}).await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, list) = stack
        .get(&a.token, "/api/v1/dlq?reason=write_rejected")
        .await;
    assert_eq!(status, StatusCode::OK);
    let letters = list["deadLetters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{list}");
    assert_eq!(letters[0]["eventId"], "dl-1");
    let id = letters[0]["id"].as_str().unwrap();
    let (_, _, other) = stack.get(&b.token, "/api/v1/dlq").await;
    assert_eq!(other["deadLetters"], json!([]));

    let replay = |token: String| {
        let url = format!("{}/api/v1/dlq/{}/replay", stack.analytics, id);
        let http = stack.http.clone();
        async move { http.post(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(
        replay(b.token.clone()).await.status(),
        StatusCode::NOT_FOUND
    );
    // Lift the rule, then replay: stored once; a second replay adds nothing.
    stack
        .db
        .run_command(mongodb::bson::doc! {"collMod": "events", "validator": {}})
        .await
        .unwrap();
    let r = replay(a.token.clone()).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let events = sluice_worker::store::events(&stack.db);
    for _ in 0..100 {
        if events
            .count_documents(mongodb::bson::doc! {"eventId": "dl-1"})
            .await
            .unwrap()
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        events
            .count_documents(mongodb::bson::doc! {"eventId": "dl-1"})
            .await
            .unwrap(),
        1
    );
    let again = replay(a.token.clone()).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["error"]["code"], "already_replayed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        events
            .count_documents(mongodb::bson::doc! {"eventId": "dl-1"})
            .await
            .unwrap(),
        1
    );

    let (status, _, p) = stack.get(&a.token, "/api/v1/analytics/pipeline").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["deadLetters"]["total"], 1);
    assert_eq!(p["deadLetters"]["replayed"], 1);
    assert!(p.get("consumers").is_none(), "{p}");
}

#[tokio::test]
async fn a_method_a_known_path_does_not_serve_is_405_with_allow_and_the_document_covers_every_route(
) {
    let stack = spawn_stack().await;
    let resp = stack
        .http
        .delete(format!("{}/api/v1/analytics/summary", stack.analytics))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("DELETE"));
    let resp = stack
        .http
        .get(format!("{}/api/v1/dlq/some-id/replay", stack.analytics))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    // An unknown path stays 404.
    let resp = stack
        .http
        .get(format!("{}/api/v1/nothing", stack.analytics))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let spec: serde_json::Value = stack
        .http
        .get(format!("{}/api/openapi.json", stack.analytics))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routes = [
        ("get", "/api/v1/analytics/summary"),
        ("get", "/api/v1/analytics/timeseries"),
        ("get", "/api/v1/analytics/users/{userId}/events"),
        ("get", "/api/v1/analytics/pipeline"),
        ("get", "/api/v1/dlq"),
        ("post", "/api/v1/dlq/{id}/replay"),
        ("get", "/api/health"),
        ("get", "/api/ready"),
        ("get", "/api/live"),
        ("get", "/metrics"),
    ];
    for (method, path) in routes {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    let documented: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "nothing documented that is not served"
    );
}
