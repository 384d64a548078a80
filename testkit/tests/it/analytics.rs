//! Analytics against the real stack: events go in through the api, a worker stores them and writes
//! rollups, and every figure analytics answers is checked against ground truth computed here.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use fred::prelude::*;
use serde_json::{json, Value};
use sluice_analytics::cache::ManualClock;
use sluice_testkit::{spawn_stack, Options, Stack, Tenant};

use crate::flow::{events, ingest, wait_stored};
use crate::{analytics_with_clock, worker};

/// The api, a worker, and analytics on a clock the test moves.
async fn spawn() -> (Stack, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let stack = spawn_stack(
        Options::api()
            .worker(worker())
            .analytics(analytics_with_clock(clock.clone())),
    )
    .await;
    (stack, clock)
}

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
    ingest(stack, tenant, &data.events).await;
    data
}

fn sum_of_points(ts: &Value) -> i64 {
    ts["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_figure_matches_the_ground_truth_per_account() {
    let (stack, _) = spawn().await;
    let analytics = stack.analytics();
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    let da = ingest_synthetic(&stack, &a, "a", 30).await;
    let db = ingest_synthetic(&stack, &b, "b", 12).await;
    wait_stored(&stack, (da.events.len() + db.events.len()) as u64).await;

    for (tenant, data) in [(&a, &da), (&b, &db)] {
        for (range, minutes) in [
            ("15m", 15),
            ("1h", 60),
            ("24h", 24 * 60),
            ("7d", 7 * 24 * 60),
        ] {
            let r = analytics.summary(&tenant.token, range).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let s = r.body;
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
    let r = analytics.timeseries(&a.token, "range=1h&bucket=1m").await;
    assert_eq!(r.status, 200);
    let points = r.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    let sum = sum_of_points(&r.body);
    // The window's first minute may or may not hold the event 60 minutes old.
    let (low, high) = (truth(&da.events, 59).total, truth(&da.events, 61).total);
    assert!((low..=high).contains(&sum), "{sum} not in {low}..={high}");
    let signups = analytics
        .timeseries(&a.token, "range=24h&bucket=1h&eventType=signup")
        .await;
    assert_eq!(
        sum_of_points(&signups.body),
        2,
        "the two late signups three hours ago"
    );
    let week = analytics.timeseries(&a.token, "range=7d&bucket=1d").await;
    assert_eq!(week.body["points"].as_array().unwrap().len(), 7);
    assert_eq!(sum_of_points(&week.body), da.events.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_and_replayed_events_leave_every_count_unchanged() {
    let (stack, clock) = spawn().await;
    let a = stack.tenant().await;
    let data = ingest_synthetic(&stack, &a, "r", 10).await;
    let n = data.events.len() as u64;
    wait_stored(&stack, n).await;
    let before = stack.analytics().summary(&a.token, "7d").await.body;

    // Redeliver: the same stream entries written again, as a crashed worker's would be.
    let redis = sluice_shared::redis::connect(&stack.settings.redis)
        .await
        .unwrap();
    let layout = stack.settings.redis.layout();
    let mut redelivered = 0;
    for stream in layout.streams() {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> =
            redis.xrange(&stream, "-", "+", Some(200)).await.unwrap();
        for (_, fields) in &entries {
            let _: String = redis
                .xadd(&stream, false, None, "*", vec![("e", fields["e"].clone())])
                .await
                .unwrap();
            redelivered += 1;
        }
    }
    assert!(redelivered > 0);
    // And replay through the api's dedup: all duplicates.
    ingest(&stack, &a, &data.events[..50]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Past the caches' TTL.
    clock.advance(Duration::from_secs(11));
    let r = stack.analytics().summary(&a.token, "7d").await;
    assert_eq!(r.header("x-cache"), Some("miss"));
    let after = r.body;
    assert_eq!(after["totalEvents"], before["totalEvents"]);
    assert_eq!(after["eventsByType"], before["eventsByType"]);
    assert_eq!(after["topUsers"], before["topUsers"]);
    assert_eq!(
        events(&stack)
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap(),
        n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_see_only_their_own_data() {
    let (stack, _) = spawn().await;
    let analytics = stack.analytics();
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    ingest_synthetic(&stack, &a, "iso", 5).await;
    let n = synthetic("iso", 5).events.len() as u64;
    wait_stored(&stack, n).await;

    let bs = analytics.summary(&b.token, "7d").await.body;
    assert_eq!(bs["totalEvents"], 0);
    assert_eq!(bs["topUsers"], json!([]));
    let own = analytics
        .user_events(&a.token, "iso-whale", "limit=5")
        .await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body["events"].as_array().unwrap().len(), 5);
    // B asking for A's user: as if it did not exist.
    let other = analytics.user_events(&b.token, "iso-whale", "").await;
    assert_eq!(other.status, 404);
    assert_eq!(other.body["error"]["code"], "not_found");
    let r = analytics
        .get("/api/v1/analytics/summary", Some("not-a-token"))
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_events_come_newest_first_in_cursor_pages() {
    let (stack, _) = spawn().await;
    let a = stack.tenant().await;
    let events: Vec<Value> = (0..25)
        .map(|i| {
            json!({"eventId": format!("p{i:02}"), "eventType": "view", "userId": "pager",
            "timestamp": at(30 - i)})
        })
        .collect();
    ingest(&stack, &a, &events).await;
    wait_stored(&stack, 25).await;
    let mut seen = Vec::new();
    let mut query = "limit=10".to_owned();
    loop {
        let page = stack
            .analytics()
            .user_events(&a.token, "pager", &query)
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        for e in page.body["events"].as_array().unwrap() {
            seen.push(e["eventId"].as_str().unwrap().to_owned());
        }
        match page.body["nextBefore"].as_str() {
            Some(c) => query = format!("limit=10&before={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, expected);
}
