//! `sluice-bench-analytics`: the summary endpoint's latency over the rollups of 10 million events
//! (7 days × 1440 minutes × 10 event types, written straight into MongoDB and Redis), on a cache
//! miss and on a hit. Needs the servers `make up` (or `make infra`) starts; cleans up after itself.
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use mongodb::bson::{doc, DateTime as BsonDate, Document};
use rand::Rng;
use sluice_analytics::cache::ManualClock;
use sluice_shared::rollup::{
    floor_to, hll_key, rollup_id, top_key, DAY_MS, HOUR_COLLECTION, HOUR_MS, MINUTE_COLLECTION,
    MINUTE_MS,
};

const EVENTS: i64 = 10_000_000;
const TYPES: i64 = 10;
const DAYS: i64 = 7;
/// Cache misses measured per range (each one reads MongoDB and Redis).
const MISSES: usize = 200;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut s = sluice_shared::config::Settings::load()?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    s.mongo.database = format!("sluice_bench_{}", &run[..12]);
    s.analytics.port = 0;
    s.auth.jwt_secret = Some(secrecy::SecretString::from(format!("bench-secret-{run}")));
    let account = uuid::Uuid::now_v7().to_string();
    let db = mongodb::Client::with_uri_str(&s.mongo.url)
        .await?
        .database(&s.mongo.database);
    let redis = sluice_shared::redis::connect(&s.redis).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let start = floor_to(now - DAYS * DAY_MS - HOUR_MS, MINUTE_MS);
    let minutes = (now - start) / MINUTE_MS + 1;
    let per_doc = (EVENTS + minutes * TYPES - 1) / (minutes * TYPES);

    eprintln!(
        "writing {minutes} minute and {} hour rollup documents…",
        minutes / 60
    );
    let t = Instant::now();
    let minute_coll = db.collection::<Document>(MINUTE_COLLECTION);
    minute_coll
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"accountId": 1, "minute": 1})
                .build(),
        )
        .await?;
    let hour_coll = db.collection::<Document>(HOUR_COLLECTION);
    hour_coll
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"accountId": 1, "hour": 1})
                .build(),
        )
        .await?;
    let mut batch = Vec::with_capacity(2_000);
    let mut hours = std::collections::BTreeMap::<(i64, i64), i64>::new();
    for m in 0..minutes {
        let minute = start + m * MINUTE_MS;
        let mut types = Document::new();
        for ty in 0..TYPES {
            types.insert(format!("type_{ty}"), per_doc);
            *hours.entry((floor_to(minute, HOUR_MS), ty)).or_default() += per_doc;
        }
        batch.push(
            doc! {"_id": rollup_id(&account, minute), "accountId": &account,
            "minute": BsonDate::from_millis(minute), "total": per_doc * TYPES, "types": types},
        );
        if batch.len() >= 1_000 {
            minute_coll
                .insert_many(std::mem::take(&mut batch))
                .ordered(false)
                .await?;
        }
    }
    if !batch.is_empty() {
        minute_coll.insert_many(batch).ordered(false).await?;
    }
    let mut by_hour = std::collections::BTreeMap::<i64, Document>::new();
    for ((hour, ty), n) in &hours {
        by_hour
            .entry(*hour)
            .or_default()
            .insert(format!("type_{ty}"), *n);
    }
    let hour_docs: Vec<Document> = by_hour
        .into_iter()
        .map(|(hour, types)| {
            let total: i64 = types.values().filter_map(|v| v.as_i64()).sum();
            doc! {"_id": rollup_id(&account, hour), "accountId": &account,
            "hour": BsonDate::from_millis(hour), "total": total, "types": types}
        })
        .collect();
    hour_coll.insert_many(hour_docs).ordered(false).await?;
    let stored: i64 = hours.values().sum();
    eprintln!(
        "rollups of {stored} events written in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Sketches: 1,000 users an hour, top sets of 1,000 per hour and per day.
    let mut rng = rand::rng();
    let mut keys = Vec::new();
    let pipe = redis.pipeline();
    for h in (floor_to(start, HOUR_MS)..=now).step_by(HOUR_MS as usize) {
        let users: Vec<String> = (0..1_000)
            .map(|_| format!("user-{}", rng.random_range(0..50_000)))
            .collect();
        let hk = hll_key(&account, 'h', h);
        let _: () = pipe.pfadd(&hk, users.clone()).await?;
        keys.push(hk);
        for m in (h..h + HOUR_MS).step_by(MINUTE_MS as usize) {
            let mk = hll_key(&account, 'm', m);
            let _: () = pipe.pfadd(&mk, users[..100].to_vec()).await?;
            keys.push(mk);
        }
        let tk = top_key(&account, 'h', h);
        let scored: Vec<(f64, String)> = users
            .iter()
            .map(|u| (rng.random_range(1..200) as f64, u.clone()))
            .collect();
        let _: () = pipe.zadd(&tk, None, None, false, false, scored).await?;
        keys.push(tk);
    }
    for d in (floor_to(start, DAY_MS)..=now).step_by(DAY_MS as usize) {
        let dk = top_key(&account, 'd', d);
        let scored: Vec<(f64, String)> = (0..1_000)
            .map(|i| (rng.random_range(1..5_000) as f64, format!("user-{i}")))
            .collect();
        let _: () = pipe.zadd(&dk, None, None, false, false, scored).await?;
        keys.push(dk);
    }
    let _: Vec<Value> = pipe.all().await?;

    let clock = Arc::new(ManualClock::default());
    let app =
        sluice_analytics::startup::Application::build_with_clock(s.clone(), clock.clone()).await?;
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stop_rx.await;
    }));
    let jwt = sluice_shared::jwt::Jwt::new(s.auth.jwt_secret.as_ref().expect("set above"), 3600);
    let (token, _) = jwt.issue(&account, "bench@sluice.test", chrono::Utc::now())?;
    let http = reqwest::Client::new();

    let mut results = serde_json::Map::new();
    for range in ["7d", "24h", "1h"] {
        let path = format!("{url}/api/v1/analytics/summary?range={range}");
        let check: serde_json::Value = http
            .get(&path)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        eprintln!(
            "{range}: totalEvents {} uniqueUsers {}",
            check["totalEvents"], check["uniqueUsers"]
        );
        for (label, advance, n) in [("miss", true, MISSES), ("hit", false, 2_000)] {
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for _ in 0..n {
                if advance {
                    clock.advance(Duration::from_secs(11));
                }
                let t = Instant::now();
                let r = http.get(&path).bearer_auth(&token).send().await?;
                let cache = r
                    .headers()
                    .get("x-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let _ = r.bytes().await?;
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                anyhow::ensure!(cache == label, "expected a cache {label}, got {cache}");
            }
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "summary range={range} cache={label}: n={n} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms(0.5), ms(0.99), h.max() as f64 / 1000.0
            );
            results.insert(
                format!("{range}_{label}"),
                serde_json::json!({"n": n, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0,
                    "total_events": check["totalEvents"]}),
            );
        }
    }
    let _ = stop_tx.send(());
    db.drop().await?;
    for chunk in keys.chunks(500) {
        let _: i64 = redis.del(chunk.to_vec()).await?;
    }
    std::fs::create_dir_all("artifacts")?;
    std::fs::write(
        "artifacts/bench-analytics.json",
        serde_json::to_vec_pretty(&serde_json::json!({"events": stored, "results": results}))?,
    )?;
    Ok(())
}
