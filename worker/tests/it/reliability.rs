//! Fault tests: real processes are killed, real servers stopped, and what is stored is counted by
//! eventId afterwards.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use mongodb::bson::doc;
use sluice_store::{DeadLetter, DeadLetterReason};
use sluice_testkit::servers::{sigterm, OwnMongo, OwnRedis};

use crate::helpers::{
    event, eventually, ids, spawn_app_with, spawn_worker, test_settings, Options, TestApp,
    WorkerProcess,
};

fn without_worker() -> Options {
    Options {
        with_worker: false,
        ..Default::default()
    }
}

async fn assert_exactly_once(app: &TestApp, accepted: &[String]) {
    let stored = app.stored_ids().await;
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no eventId is stored twice");
    let expected: HashSet<&String> = accepted.iter().collect();
    let missing: Vec<_> = expected.difference(&unique).take(5).collect();
    assert!(missing.is_empty(), "accepted but not stored: {missing:?}");
    assert_eq!(unique.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_three_times_mid_stream_loses_and_doubles_nothing() {
    let app = Arc::new(spawn_app_with(without_worker()).await);
    let all = ids("k", 20_000);
    let producer = {
        let app = app.clone();
        let all = all.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for chunk in all.chunks(1_000) {
                accepted.extend(app.produce(chunk).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            accepted
        })
    };
    let name = format!("crashy-{}", uuid::Uuid::new_v4().simple());
    let mut worker = WorkerProcess::start(&app.settings, &name, &[]);
    for round in 1..=3u64 {
        let target = round * 4_000;
        assert!(
            eventually(Duration::from_secs(60), || async {
                app.count_events(doc! {}).await >= target
            })
            .await,
            "round {round}: the worker made no progress"
        );
        worker.kill9();
        // A restarted instance keeps its name and first drains what it had pending.
        worker = WorkerProcess::start(&app.settings, &name, &[]);
    }
    let accepted = producer.await.unwrap();
    assert_eq!(accepted.len(), 20_000);
    assert_eq!(
        app.wait_for_events(doc! {}, 20_000, Duration::from_secs(90))
            .await,
        20_000
    );
    assert_exactly_once(&app, &accepted).await;
    assert_eq!(
        app.dead_letters().count_documents(doc! {}).await.unwrap(),
        0
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.pending().await == 0
        })
        .await
    );
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_survivor_claims_what_a_killed_worker_left_pending() {
    let app = spawn_app_with(without_worker()).await;
    // The doomed worker holds what it reads: big batches, a long flush interval.
    let mut doomed = WorkerProcess::start(
        &app.settings,
        "doomed",
        &[
            ("SLUICE_WORKER__BATCH_SIZE", "5000"),
            ("SLUICE_WORKER__FLUSH_INTERVAL_MS", "600000"),
        ],
    );
    let accepted = app.produce(&ids("s", 1_000)).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.pending().await == 1_000
        })
        .await,
        "the doomed worker read everything"
    );
    doomed.kill9();
    assert_eq!(app.count_events(doc! {}).await, 0);

    let _survivor = WorkerProcess::start(
        &app.settings,
        "survivor",
        &[
            ("SLUICE_WORKER__CLAIM_INTERVAL_MS", "200"),
            ("SLUICE_WORKER__CLAIM_MIN_IDLE_MS", "500"),
        ],
    );
    assert_eq!(
        app.wait_for_events(doc! {}, 1_000, Duration::from_secs(30))
            .await,
        1_000
    );
    assert_exactly_once(&app, &accepted).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.pending().await == 0
        })
        .await
    );
    assert_eq!(
        app.dead_letters().count_documents(doc! {}).await.unwrap(),
        0
    );
}

/// A read whose reply never arrives (the connection cut after Redis handed the entry over) leaves
/// the entry pending for this worker and for no one else to see; the worker's next read after
/// the failure takes its own pending entries again instead of leaving them to a claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_handed_over_in_a_reply_that_never_arrived_is_read_again_without_a_claim() {
    let mut settings = test_settings();
    // One partition: the test hands that stream's entry over by hand.
    settings.redis.partitions = 1;
    let app = spawn_app_with(Options {
        settings,
        ..without_worker()
    })
    .await;
    let redis = app.redis().await;
    let stream = app.settings.redis.layout().stream(0);
    // A real entry, as the api writes it, taken out of the stream before any worker runs.
    app.produce_singly(&["handed-over".to_owned()]).await;
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis.xrange(&stream, "-", "+", None).await.unwrap();
    let (id, fields) = entries.into_iter().next().expect("the entry");
    let _: i64 = redis.xdel(&stream, id).await.unwrap();

    // No claim can take anything within the test.
    let _worker = WorkerProcess::start(
        &app.settings,
        "cut-off",
        &[("SLUICE_WORKER__CLAIM_MIN_IDLE_MS", "600000")],
    );
    app.produce_singly(&["before".to_owned()]).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 1, Duration::from_secs(30))
            .await,
        1,
        "the worker is reading new entries"
    );

    // Added and handed to the worker's consumer in one step, while its blocking read waits: the
    // read sees nothing new, as if the reply carrying the entry had been lost.
    let mut args = vec![app.settings.redis.group.clone(), "cut-off".to_owned()];
    for (k, v) in fields {
        args.push(k);
        args.push(v);
    }
    let handed: Value = redis
        .eval(
            "local f = {} for i = 3, #ARGV do f[#f + 1] = ARGV[i] end \
             redis.call('XADD', KEYS[1], '*', unpack(f)) \
             return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 10, 'STREAMS', KEYS[1], '>')",
            vec![stream.clone()],
            args,
        )
        .await
        .unwrap();
    assert!(!handed.is_null(), "the entry was handed to cut-off");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.count_events(doc! {"eventId": "handed-over"}).await,
        0,
        "without a failed read the worker cannot know of it"
    );
    assert_eq!(app.pending().await, 1);

    // The worker's connections are cut (only its own: the Redis is shared with the tests running
    // beside this one): its read fails, and it reads again.
    let cut = crate::helpers::cut_redis_connections_of(&redis, _worker.child.id()).await;
    assert!(cut > 0, "the worker holds connections to Redis");
    let started = std::time::Instant::now();
    assert_eq!(
        app.wait_for_events(doc! {"eventId": "handed-over"}, 1, Duration::from_secs(20))
            .await,
        1,
        "the entry pending for the worker is stored without waiting for a claim"
    );
    eprintln!(
        "stored {:?} after the connections were cut",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.pending().await == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_seconds_without_mongodb_lose_nothing_and_dead_letter_nothing() {
    let mut mongo = OwnMongo::start();
    let mut settings = test_settings();
    settings.mongo.url = mongo.url();
    let app = Arc::new(
        spawn_app_with(Options {
            with_worker: false,
            settings,
            ..Default::default()
        })
        .await,
    );
    let mut worker = WorkerProcess::start(
        &app.settings,
        "through-outage",
        &[("SLUICE_WORKER__RETRY_CAP_MS", "2000")],
    );
    let mut accepted = app.produce(&ids("before", 1_000)).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 1_000, Duration::from_secs(30))
            .await,
        1_000
    );

    mongo.stop();
    // Load keeps coming while MongoDB is away: the api does not need it.
    for second in 0..20 {
        accepted.extend(app.produce(&ids(&format!("during{second}"), 100)).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(worker.is_running(), "the worker survives the outage");
    mongo.restart();

    assert_eq!(
        app.wait_for_events(doc! {}, 3_000, Duration::from_secs(60))
            .await,
        3_000
    );
    assert_exactly_once(&app, &accepted).await;
    assert_eq!(
        app.dead_letters().count_documents(doc! {}).await.unwrap(),
        0
    );
    assert!(worker.is_running());
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.pending().await == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_from_its_aof_keeps_every_202() {
    let mut redis = OwnRedis::start();
    let mut settings = test_settings();
    settings.redis.url = redis.url();
    settings.redis.command_timeout_ms = 1_000;
    // No claim within the test: a read whose reply died with Redis left its entries pending for
    // this worker, and the worker must re-read them itself, not wait for a claim.
    settings.worker.claim_min_idle_ms = 600_000;
    let app = Arc::new(
        spawn_app_with(Options {
            settings,
            ..Default::default()
        })
        .await,
    );

    // Eight clients send single events and retry anything that is not 202/200.
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8 {
        let app = app.clone();
        clients.spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..250 {
                let id = format!("r{c}-{i}");
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let r = app.post_event(&event(&id)).await;
                    if r.status == 202 || r.status == 200 {
                        acknowledged.push(id);
                        break;
                    }
                    assert_eq!(r.status, 503, "{:?}", r.body);
                    assert!(
                        std::time::Instant::now() < deadline,
                        "Redis never came back"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            acknowledged
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();

    let mut acknowledged = Vec::new();
    while let Some(ids) = clients.join_next().await {
        acknowledged.extend(ids.unwrap());
    }
    assert_eq!(acknowledged.len(), 2_000);
    let stored = app
        .wait_for_events(doc! {}, 2_000, Duration::from_secs(60))
        .await;
    assert_eq!(stored, 2_000, "{}", app.whereabouts(&acknowledged).await);
    assert_exactly_once(&app, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_with_its_reason_and_the_stream_keeps_flowing() {
    let mut settings = test_settings();
    // One partition: the test reads and holds that stream by hand.
    settings.redis.partitions = 1;
    settings.worker.claim_interval_ms = 200;
    settings.worker.claim_min_idle_ms = 1_000;
    let app = spawn_app_with(Options {
        with_worker: false,
        settings,
        ..Default::default()
    })
    .await;
    // A validation rule on the server that refuses one kind of document.
    app.db
        .create_collection("events")
        .validator(doc! {"eventType": {"$ne": "forbidden"}})
        .await
        .unwrap();
    let redis = app.redis().await;
    let stream = app.settings.redis.layout().stream(0);
    let stream = stream.as_str();
    let group = app.settings.redis.group.as_str();

    // 1. A malformed entry written straight to Redis.
    let _: String = redis
        .xadd(stream, false, None, "*", vec![("e", "{not json")])
        .await
        .unwrap();
    // 2. An entry that has been delivered too often (a batch that kept crashing its workers).
    let poison = serde_json::json!({"eventId": "too-often", "accountId": app.account_id.to_string(),
        "eventType": "click", "userId": "u", "timestamp": "2024-01-01T00:00:00.000Z",
        "receivedAt": "2024-01-01T00:00:00.000Z"});
    let poison_id: String = redis
        .xadd(stream, false, None, "*", vec![("e", poison.to_string())])
        .await
        .unwrap();
    let _: Value = redis
        .xreadgroup(group, "ghost", Some(2), None, false, stream, ">")
        .await
        .unwrap();
    for _ in 0..6 {
        let _: Value = redis
            .xclaim(
                stream,
                group,
                "ghost",
                0,
                poison_id.as_str(),
                None,
                None,
                None,
                false,
                false,
            )
            .await
            .unwrap();
    }
    // The malformed entry is the ghost's too; make it ours to find by acking nothing: the worker
    // claims both once they have been idle.
    // 3. Through the api: one document the server refuses, between good ones.
    let r = app
        .post_batch(vec![
            event("good-1"),
            serde_json::json!({"eventId": "refused", "eventType": "forbidden", "userId": "u"}),
            event("good-2"),
        ])
        .await;
    assert_eq!(r.status, 202);

    let _worker = spawn_worker(&app.settings).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 2, Duration::from_secs(20))
            .await,
        2
    );
    let dlq = app.dead_letters();
    assert!(
        eventually(Duration::from_secs(20), || async {
            dlq.count_documents(doc! {}).await.unwrap() == 3
        })
        .await,
        "three dead letters"
    );
    let refused = dlq
        .find_one(doc! {"eventId": "refused"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        refused.get_str("reason").unwrap(),
        DeadLetterReason::WriteRejected.as_str()
    );
    assert_eq!(
        refused.get_str("accountId").unwrap(),
        app.account_id.to_string()
    );
    assert_eq!(
        refused
            .get_document("event")
            .unwrap()
            .get_str("eventType")
            .unwrap(),
        "forbidden"
    );
    for field in ["error", "streamId", "consumer"] {
        assert!(refused.get_str(field).is_ok(), "{field}");
    }
    // Every reader deserializes the letters the worker wrote.
    let typed: DeadLetter = mongodb::bson::from_document(refused.clone()).unwrap();
    assert_eq!(typed.reason, DeadLetterReason::WriteRejected);
    assert_eq!(typed.event_id.as_deref(), Some("refused"));
    assert!(refused.get_datetime("failedAt").is_ok());
    assert!(refused.get_i64("attempts").unwrap() >= 1);

    let too_often = dlq
        .find_one(doc! {"eventId": "too-often"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        too_often.get_str("reason").unwrap(),
        DeadLetterReason::Poison.as_str()
    );
    assert!(too_often.get_i64("attempts").unwrap() > 5);
    let malformed = dlq
        .find_one(doc! {"reason": DeadLetterReason::Invalid})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        malformed
            .get_document("rawEntry")
            .unwrap()
            .get_str("e")
            .unwrap(),
        "{not json"
    );

    // All acknowledged: nothing blocks the stream; a later event still flows.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.pending().await == 0
        })
        .await
    );
    assert_eq!(app.post_event(&event("after")).await.status, 202);
    assert_eq!(
        app.wait_for_events(doc! {}, 3, Duration::from_secs(20))
            .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_acknowledges_the_batch_in_hand_before_exit() {
    let app = spawn_app_with(without_worker()).await;
    let mut worker = WorkerProcess::start(
        &app.settings,
        "terminated",
        &[
            ("SLUICE_WORKER__BATCH_SIZE", "5000"),
            ("SLUICE_WORKER__FLUSH_INTERVAL_MS", "600000"),
        ],
    );
    let accepted = app.produce(&ids("t", 300)).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.pending().await == 300
        })
        .await,
        "the worker holds the whole batch"
    );
    assert_eq!(app.count_events(doc! {}).await, 0);
    sigterm(&worker.child);
    let status = worker
        .wait_exit(Duration::from_secs(12))
        .await
        .expect("exits within the shutdown deadline");
    assert!(status.success(), "{status:?}");
    assert_eq!(app.count_events(doc! {}).await, 300);
    assert_eq!(app.pending().await, 0, "acknowledged before exit");
    assert_exactly_once(&app, &accepted).await;

    // Another worker finds nothing left to redeliver.
    let _next = spawn_worker(&app.settings).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count_events(doc! {}).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_dead_letters_stores_them_once_and_a_second_replay_adds_nothing() {
    let mut settings = test_settings();
    // One partition: the test reads and holds that stream by hand.
    settings.redis.partitions = 1;
    settings.worker.claim_interval_ms = 200;
    settings.worker.claim_min_idle_ms = 1_000;
    settings.worker.max_deliveries = 1;
    let app = spawn_app_with(Options {
        with_worker: false,
        settings,
        ..Default::default()
    })
    .await;
    // Three valid events become poison: read twice by a consumer that never acks.
    let accepted = app.produce(&ids("p", 3)).await;
    let redis = app.redis().await;
    let stream = app.settings.redis.layout().stream(0);
    let (stream, group) = (stream.as_str(), app.settings.redis.group.as_str());
    let _: Value = redis
        .xreadgroup(group, "ghost", Some(10), None, false, stream, ">")
        .await
        .unwrap();
    let _: Value = redis
        .xreadgroup(group, "ghost", Some(10), None, false, stream, "0")
        .await
        .unwrap();
    let _worker = spawn_worker(&app.settings).await;
    let dlq = app.dead_letters();
    assert!(
        eventually(Duration::from_secs(20), || async {
            dlq.count_documents(doc! {"reason": DeadLetterReason::Poison})
                .await
                .unwrap()
                == 3
        })
        .await
    );
    assert_eq!(app.count_events(doc! {}).await, 0);

    let replay = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
            .args(["dlq", "replay"])
            .args(args)
            .env("SLUICE_REDIS__URL", &app.settings.redis.url)
            .env("SLUICE_REDIS__KEY_PREFIX", &app.settings.redis.key_prefix)
            .env(
                "SLUICE_REDIS__PARTITIONS",
                app.settings.redis.partitions.to_string(),
            )
            .env("SLUICE_MONGO__URL", &app.settings.mongo.url)
            .env("SLUICE_MONGO__DATABASE", &app.settings.mongo.database)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let account = app.account_id.to_string();
    let poison = DeadLetterReason::Poison.as_str();
    let first = replay(&["--reason", poison, "--account", &account]);
    assert_eq!(first["replayed"], 3);
    assert_eq!(
        app.wait_for_events(doc! {}, 3, Duration::from_secs(20))
            .await,
        3
    );
    assert_exactly_once(&app, &accepted).await;
    let second = replay(&["--reason", poison]);
    assert_eq!(second["replayed"], 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count_events(doc! {}).await, 3);
    assert_eq!(
        dlq.count_documents(doc! {"replayedAt": {"$exists": true}})
            .await
            .unwrap(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_keeps_every_unacknowledged_entry_and_stale_consumers_go() {
    let mut settings = test_settings();
    // One partition: the test reads and holds that stream by hand.
    settings.redis.partitions = 1;
    settings.worker.stale_consumer_idle_ms = 0;
    let app = spawn_app_with(Options {
        with_worker: false,
        settings,
        ..Default::default()
    })
    .await;
    let redis = app.redis().await;
    let (stream, group) = (
        app.settings.redis.layout().stream(0),
        app.settings.redis.group.clone(),
    );
    // One event per request: one entry per event, so entries are counted here.
    app.produce_singly(&ids("before", 500)).await;
    let first_worker = spawn_worker(&app.settings).await;
    assert_eq!(
        app.wait_for_events(doc! {}, 500, Duration::from_secs(20))
            .await,
        500
    );
    drop(first_worker);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // A consumer takes five entries and holds them unacknowledged.
    app.produce_singly(&ids("held", 5)).await;
    let _: Value = redis
        .xreadgroup(
            group.as_str(),
            "holder",
            Some(5),
            None,
            false,
            stream.as_str(),
            ">",
        )
        .await
        .unwrap();
    app.produce_singly(&ids("after", 50)).await;
    let _worker = spawn_worker(&app.settings).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.count_events(doc! {}).await >= 550
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.pending().await == 5
        })
        .await
    );
    let trimmed = sluice_worker::maintenance::run_once(&redis, &app.settings, "someone")
        .await
        .unwrap();
    let len: u64 = redis.xlen(stream.as_str()).await.unwrap();
    // Everything below the oldest unacknowledged entry goes; it and what follows stay.
    assert!(trimmed >= 500, "trimmed {trimmed}");
    assert_eq!(len, 55, "the five held and the fifty after them are kept");
    // Everything was delivered: the backlog is the five held entries, however Redis counts lag.
    let backlog = sluice_shared::redis::group_backlog(&redis, &stream, &group)
        .await
        .unwrap();
    assert_eq!((backlog.pending, backlog.lag), (5, 0));
    // The holder still has its five and can acknowledge them.
    let pending: Value = redis
        .xpending(stream.as_str(), group.as_str(), ("-", "+", 10, "holder"))
        .await
        .unwrap();
    assert_eq!(pending.into_array().len(), 5);

    // A consumer with nothing pending is removed; the holder is not.
    let _: Value = redis
        .xgroup_createconsumer(stream.as_str(), group.as_str(), "idle-one")
        .await
        .unwrap();
    sluice_worker::maintenance::run_once(&redis, &app.settings, "someone")
        .await
        .unwrap();
    let consumers: Vec<std::collections::HashMap<String, Value>> = redis
        .xinfo_consumers(stream.as_str(), group.as_str())
        .await
        .unwrap();
    let names: Vec<String> = consumers
        .iter()
        .map(|c| c["name"].as_string().unwrap())
        .collect();
    assert!(names.contains(&"holder".to_owned()));
    assert!(!names.contains(&"idle-one".to_owned()));
    // Once the holder acknowledges, nothing is pending: the round trims the rest (this once failed
    // on the nil that XPENDING answers for "oldest pending").
    let held: Value = redis
        .xpending(stream.as_str(), group.as_str(), ("-", "+", 10, "holder"))
        .await
        .unwrap();
    let held_ids: Vec<String> = held
        .into_array()
        .into_iter()
        .filter_map(|row| row.into_array().first().and_then(|v| v.as_string()))
        .collect();
    let _: u64 = redis
        .xack(stream.as_str(), group.as_str(), held_ids)
        .await
        .unwrap();
    sluice_worker::maintenance::run_once(&redis, &app.settings, "someone")
        .await
        .unwrap();
    let backlog = sluice_shared::redis::group_backlog(&redis, &stream, &group)
        .await
        .unwrap();
    assert_eq!(backlog.total(), 0);
    assert!(backlog.length <= 1, "trimmed to the last delivered entry");
}
