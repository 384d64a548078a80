//! Regression tests of the hardening review (issue 11): each proves a promise that a line-by-line
//! read found broken — "every 202 ends up exactly once in `events` or `events_dlq`", "no batch
//! larger than `worker.batch_size`", "a worker recovers from a Redis that lost its data".
use std::collections::HashSet;
use std::time::Duration;

use fred::prelude::*;
use mongodb::bson::{doc, Document};
use sluice_store::DeadLetterReason;
use sluice_testkit::servers::OwnMongo;

use crate::helpers::{eventually, ids, spawn_app_with, test_settings, Options, TestApp};

async fn fail_point(mongo: &OwnMongo, on: bool, code: i32) {
    let client = mongodb::Client::with_uri_str(mongo.url()).await.unwrap();
    let cmd = if on {
        doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn",
        "data": {"failCommands": ["insert"], "errorCode": code}}
    } else {
        doc! {"configureFailPoint": "failCommand", "mode": "off"}
    };
    client.database("admin").run_command(cmd).await.unwrap();
}

async fn dead_letter_ids(app: &TestApp) -> Vec<String> {
    use futures::TryStreamExt;
    let docs: Vec<Document> = app
        .dead_letters()
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter()
        .filter_map(|d| d.get_str("eventId").ok().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mongodb_refusing_every_insert_loses_no_accepted_event_and_no_dead_letter() {
    let mongo = OwnMongo::start_with(&["--enable-test-commands"]);
    let mut settings = test_settings();
    settings.mongo.url = mongo.url();
    settings.worker.retry_cap_ms = 500;
    let app = spawn_app_with(Options {
        settings,
        ..Default::default()
    })
    .await;
    // Warm up: the worker has created its indexes and stored one batch.
    let mut accepted = app.produce(&ids("warm", 5)).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 5, Duration::from_secs(30))
            .await,
        5
    );

    // Unauthorized (13) on every insert: a refusal that names no document.
    fail_point(&mongo, true, 13).await;
    accepted.extend(app.produce(&ids("refused", 20)).await);
    // An entry that can never be an event: it must reach the dead letters once MongoDB takes
    // inserts again, not be acknowledged while the dead-letter insert is refused too.
    let redis = app.redis().await;
    let _: String = redis
        .xadd(
            &app.settings.redis.layout().stream(0),
            false,
            None,
            "*",
            vec![("e", "not json")],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        app.count_events(doc! {"eventId": {"$regex": "^refused"}})
            .await,
        0
    );
    fail_point(&mongo, false, 0).await;

    assert_eq!(
        app.wait_for_events(doc! {}, 25, Duration::from_secs(60))
            .await,
        25,
        "every accepted event is stored once MongoDB takes inserts again"
    );
    let stored: HashSet<String> = app.stored_ids().await.into_iter().collect();
    for id in &accepted {
        assert!(stored.contains(id), "{id} was accepted and is not stored");
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            app.dead_letters().count_documents(doc! {}).await.unwrap() == 1
        })
        .await,
        "the undecodable entry is dead-lettered once the refusal ends"
    );
    assert!(
        dead_letter_ids(&app).await.is_empty(),
        "no event was dead-lettered"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.pending().await == 0
        })
        .await,
        "everything is acknowledged in the end"
    );
}

/// A worker in this process whose HTTP port is known; `stop` ends it gracefully and waits.
struct OwnWorker {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl OwnWorker {
    async fn start(settings: &sluice_shared::config::Settings) -> Self {
        let worker = sluice_worker::startup::Application::build(settings.clone())
            .await
            .expect("worker builds");
        let port = worker.port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(worker.run_until(async {
            let _ = rx.await;
        }));
        OwnWorker {
            port,
            stop: Some(tx),
            done,
        }
    }

    async fn stop(mut self) {
        drop(self.stop.take());
        (&mut self.done).await.unwrap().unwrap();
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn without_worker(settings: sluice_shared::config::Settings) -> Options {
    Options {
        with_worker: false,
        settings,
        ..Default::default()
    }
}

/// The sum of `total` over the account's rollup documents of one collection.
async fn rollup_total(app: &TestApp, collection: &str) -> i64 {
    use futures::TryStreamExt;
    let docs: Vec<Document> = app
        .db
        .collection::<Document>(collection)
        .find(doc! {"accountId": app.account_id.to_string()})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.iter().map(|d| d.get_i64("total").unwrap_or(0)).sum()
}

async fn hour_rollup_total(app: &TestApp) -> i64 {
    rollup_total(app, sluice_shared::rollup::HOUR_COLLECTION).await
}

/// Counts of a Prometheus histogram: (observations at or below `le`, all observations).
fn histogram_counts(metrics: &str, name: &str, le: &str) -> (u64, u64) {
    let value = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    (
        value(&format!("{name}_bucket{{le=\"{le}\"}}")),
        value(&format!("{name}_count")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_claim_fills_the_batch_no_read_takes_the_whole_backlog() {
    let mut settings = test_settings();
    // One partition: the test reads and holds that stream by hand.
    settings.redis.partitions = 1;
    settings.worker.claim_interval_ms = 100;
    settings.worker.claim_min_idle_ms = 1_000;
    let app = spawn_app_with(without_worker(settings.clone())).await;
    // A worker that read 100 entries and died holding them.
    app.produce(&ids("held", 100)).await;
    let redis = app.redis().await;
    let _: Value = redis
        .xreadgroup(
            settings.redis.group.as_str(),
            "dead-worker",
            Some(100),
            None,
            false,
            settings.redis.layout().stream(0).as_str(),
            ">",
        )
        .await
        .unwrap();
    let waiting = app.produce(&ids("waiting", 20_000)).await;
    assert_eq!(waiting.len(), 20_000);

    let worker = OwnWorker::start(&settings).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 20_100, Duration::from_secs(120))
            .await,
        20_100
    );
    let (_, metrics) = worker.get("/metrics").await;
    let (_, all) = histogram_counts(&metrics, "sluice_worker_batch_size_events", "100");
    // A batch holds worker.batch_size (100) events, and at most the events of one more entry
    // (an entry, one enqueue call's events, is never split): far from the 20,000 waiting.
    let (bounded, _) = histogram_counts(&metrics, "sluice_worker_batch_size_events", "1000");
    assert!(all >= 21, "{all} batches for 20,100 events: {metrics}");
    assert_eq!(
        bounded, all,
        "every batch holds at most worker.batch_size events plus one entry's"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_recreates_a_consumer_group_redis_lost_and_health_reports_a_stuck_read_loop() {
    let mut settings = test_settings();
    settings.worker.read_stale_after_ms = 2_000;
    let app = spawn_app_with(without_worker(settings.clone())).await;
    let worker = OwnWorker::start(&settings).await;
    app.produce(&ids("before", 5)).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 5, Duration::from_secs(30))
            .await,
        5
    );
    // Redis loses the stream and its group (as after a FLUSHALL or a restart without its AOF).
    let redis = app.redis().await;
    sluice_testkit::stream::delete(&redis, &settings.redis).await;
    app.produce(&ids("after", 5)).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 10, Duration::from_secs(30))
            .await,
        10,
        "the worker recreated the group and stored what came after the loss"
    );
    let (status, _) = worker.get("/api/health").await;
    assert_eq!(status, 200);
    let (_, metrics) = worker.get("/metrics").await;
    assert!(metrics.contains("sluice_worker_group_recreated_total"));

    // A key of another type where the stream belongs: every read fails, PING still answers.
    sluice_testkit::stream::delete(&redis, &settings.redis).await;
    let _: () = redis
        .set(
            &settings.redis.layout().stream(0),
            "not a stream",
            None,
            None,
            false,
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            let (status, body) = worker.get("/api/health").await;
            status == 503 && body.contains("stream_read")
        })
        .await,
        "health says the read loop is not reading"
    );
    sluice_testkit::stream::delete(&redis, &settings.redis).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_writes_the_rollups_of_every_stored_event() {
    let mut settings = test_settings();
    // Rollups are written only when they are due or forced: a minute away, so only the stop writes them.
    settings.worker.rollup_interval_ms = 60_000;
    settings.worker.reconcile_settle_ms = 61_000;
    settings.worker.claim_min_idle_ms = 120_000;
    let app = spawn_app_with(without_worker(settings.clone())).await;
    let worker = OwnWorker::start(&settings).await;
    app.produce(&ids("r", 30)).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 30, Duration::from_secs(30))
            .await,
        30
    );
    assert_eq!(hour_rollup_total(&app).await, 0, "not due yet");
    worker.stop().await;
    assert_eq!(hour_rollup_total(&app).await, 30);
    assert_eq!(app.pending().await, 0, "and the entries are acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollups_converge_to_the_stored_events_after_a_write_met_its_own_earlier_insert() {
    let mut settings = test_settings();
    settings.worker.rollup_interval_ms = 100;
    settings.worker.reconcile_interval_ms = 300;
    settings.worker.reconcile_settle_ms = 1_000;
    let app = spawn_app_with(without_worker(settings.clone())).await;
    // A first attempt stored these and its reply was lost: stored, never counted.
    let now = chrono::Utc::now();
    let earlier: Vec<_> = ids("lost-reply", 10)
        .iter()
        .map(|id| {
            sluice_store::to_document(&sluice_shared::event::QueuedEvent {
                event_id: id.clone(),
                account_id: app.account_id.to_string(),
                event_type: "page_view".into(),
                user_id: "user-1".into(),
                session_id: None,
                timestamp: now,
                received_at: now,
                properties: None,
                origin: None,
                plan: None,
            })
            .unwrap()
        })
        .collect();
    sluice_store::raw_events(&app.db)
        .insert_many(&earlier)
        .await
        .unwrap();
    let worker = OwnWorker::start(&settings).await;
    // The retry: the same events again, and ten new ones.
    let mut all = ids("lost-reply", 10);
    all.extend(ids("new", 10));
    let bodies: Vec<_> = all
        .iter()
        .map(|id| serde_json::json!({"eventId": id, "eventType": "page_view", "userId": "user-1", "timestamp": now.to_rfc3339()}))
        .collect();
    assert_eq!(app.post_batch(bodies).await.status, 202);
    assert_eq!(
        app.wait_for_events(doc! {}, 20, Duration::from_secs(30))
            .await,
        20
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            hour_rollup_total(&app).await == 20
        })
        .await,
        "the hour rollup counts every stored event (it counted {})",
        hour_rollup_total(&app).await
    );
    let minutes = rollup_total(&app, sluice_shared::rollup::MINUTE_COLLECTION).await;
    assert_eq!(minutes, 20, "and so do its minutes");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_the_api_accepts_is_storable_and_what_it_cannot_store_is_refused_with_a_pointer() {
    let app = spawn_app_with(Options::default()).await;
    let cases = [
        (
            serde_json::json!({"eventId": "y10000", "eventType": "a", "userId": "u", "timestamp": "9999-12-31T23:30:00-01:00"}),
            "/timestamp",
        ),
        (
            serde_json::json!({"eventId": "y-1", "eventType": "a", "userId": "u", "timestamp": "0000-01-01T00:30:00+01:00"}),
            "/timestamp",
        ),
        (
            serde_json::json!({"eventId": "s10000", "eventType": "a", "userId": "u", "sentAt": "9999-12-31T23:59:00-00:30"}),
            "/sentAt",
        ),
        (
            serde_json::json!({"eventId": "big", "eventType": "a", "userId": "u", "properties": {"n": {"big": 18446744073709551615u64}}}),
            "/properties/n/big",
        ),
    ];
    for (event, path) in &cases {
        let r = app.post_event(event).await;
        assert_eq!(r.status, 400, "{event}: {:?}", r.body);
        assert_eq!(r.body["error"]["details"][0]["path"], *path, "{:?}", r.body);
    }
    let r = app
        .post_batch(cases.iter().map(|(e, _)| e.clone()).collect())
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["rejected"], 4);
    // The edges that are storable are accepted and stored as sent.
    let edge = serde_json::json!({"eventId": "edge", "eventType": "a", "userId": "u",
        "timestamp": "9999-12-31T23:30:00+01:00", "properties": {"max": 9223372036854775807i64}});
    assert_eq!(app.post_event(&edge).await.status, 202);
    // A client clock so far off that correcting for it would leave year 9999: the event is kept
    // with its own timestamp rather than refused.
    let skewed = serde_json::json!({"eventId": "skewed", "eventType": "a", "userId": "u",
        "timestamp": "9999-12-31T23:30:00Z", "sentAt": "2020-01-01T00:00:00Z"});
    assert_eq!(app.post_event(&skewed).await.status, 202);
    assert_eq!(
        app.wait_for_events(
            doc! {"eventId": {"$in": ["edge", "skewed"]}},
            2,
            Duration::from_secs(30)
        )
        .await,
        2
    );
    let stored = app.find_event("skewed").await.unwrap();
    assert_eq!(
        stored.get_datetime("timestamp").unwrap().timestamp_millis(),
        chrono::DateTime::parse_from_rfc3339("9999-12-31T23:30:00Z")
            .unwrap()
            .timestamp_millis()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count_events(doc! {}).await, 2);
    assert_eq!(
        app.dead_letters().count_documents(doc! {}).await.unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_is_attributed_wherever_its_entry_says_whose_and_the_rest_are_visible_to_operators(
) {
    let settings = test_settings();
    let app = spawn_app_with(without_worker(settings.clone())).await;
    let worker = OwnWorker::start(&settings).await;
    let redis = app.redis().await;
    let stream = settings.redis.layout().stream(0);
    let stream = stream.as_str();
    // JSON naming its account but not an event; and bytes naming nobody.
    let named = serde_json::json!({"accountId": app.account_id.to_string(), "eventId": "named-1"})
        .to_string();
    for body in [named.as_str(), "\u{1}not json"] {
        let _: String = redis
            .xadd(stream, false, None, "*", vec![("e", body)])
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            app.dead_letters().count_documents(doc! {}).await.unwrap() == 2
        })
        .await
    );
    let named = app
        .dead_letters()
        .find_one(doc! {"eventId": "named-1"})
        .await
        .unwrap()
        .expect("the named letter");
    assert_eq!(
        named.get_str("accountId").unwrap(),
        app.account_id.to_string()
    );
    let (_, metrics) = worker.get("/metrics").await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("sluice_worker_dead_letters_unattributed_total") && l.ends_with(" 1")
        ),
        "{metrics}"
    );
    worker.stop().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .args(["dlq", "list", "--unattributed"])
        .env("SLUICE_MONGO__URL", &settings.mongo.url)
        .env("SLUICE_MONGO__DATABASE", &settings.mongo.database)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["reason"], DeadLetterReason::Invalid.as_str());
    assert!(lines[0]["accountId"].is_null());
    assert!(lines[0]["rawEntry"]["e"]
        .as_str()
        .unwrap()
        .contains("not json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_of_large_events_is_refused_by_its_bytes_before_its_entries() {
    let mut settings = test_settings();
    // Far more entries allowed than will be sent; a 200 KB stream is the limit.
    settings.api.max_backlog_bytes = 200_000;
    let app = spawn_app_with(without_worker(settings)).await;
    let pad = "x".repeat(30_000);
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = app
            .post_event(
                &serde_json::json!({"eventId": format!("big-{i}"), "eventType": "a",
                "userId": "u", "properties": {"pad": pad}}),
            )
            .await;
        statuses.push(r.status);
        if r.status == 503 {
            assert_eq!(r.body["error"]["code"], "overloaded");
            assert!(r.headers.get("retry-after").is_some());
            break;
        }
        // Let the backlog poll (every 50 ms in tests) see the stream grow.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!(
        (5..=12).contains(&accepted),
        "about 200 KB of 30 KB events were taken first: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_outside_the_aggregate_window_are_stored_but_make_no_rollup_or_sketch_keys() {
    let settings = test_settings();
    let app = spawn_app_with(Options {
        settings,
        ..Default::default()
    })
    .await;
    let now = chrono::Utc::now();
    let stamps = [
        ("old", now - chrono::Duration::days(30)),
        ("ancient", now - chrono::Duration::days(3_000)),
        ("future", now + chrono::Duration::days(2)),
        ("recent", now - chrono::Duration::days(2)),
    ];
    let events: Vec<_> = stamps
        .iter()
        .map(|(id, t)| serde_json::json!({"eventId": id, "eventType": "a", "userId": "u", "timestamp": t.to_rfc3339()}))
        .collect();
    assert_eq!(app.post_batch(events).await.status, 202);
    assert_eq!(
        app.wait_for_events(doc! {}, 4, Duration::from_secs(30))
            .await,
        4,
        "late and early events are stored"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            hour_rollup_total(&app).await == 1
        })
        .await,
        "only the recent one is counted"
    );
    let redis = app.redis().await;
    let account = app.account_id.to_string();
    let mut keys: Vec<String> = Vec::new();
    for pattern in [
        format!("hll:{{a{account}}}:*"),
        format!("top:{{a{account}}}:*"),
    ] {
        let found: Vec<String> = redis
            .custom(
                fred::types::CustomCommand::new_static(
                    "KEYS",
                    fred::types::ClusterHash::Random,
                    false,
                ),
                vec![pattern],
            )
            .await
            .unwrap();
        keys.extend(found);
    }
    // One minute and one hour HLL, one hour and one day top set: all of the recent event.
    assert_eq!(keys.len(), 4, "{keys:?}");
}

#[test]
fn the_dead_letter_tools_refuse_an_unknown_reason_and_name_the_known_ones() {
    for command in ["list", "replay"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
            .args(["dlq", command, "--reason", "poisoned"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("`poisoned` is not a dead-letter reason: must be one of invalid, write_rejected, poison"),
            "{stderr}"
        );
    }
}
