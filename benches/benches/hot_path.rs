//! The ingest hot path, piece by piece. The Redis round trip needs the Redis `make up` starts
//! (or `SLUICE_REDIS__URL`); it is skipped with a message when none answers.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};
use sluice_shared::event::{validate, QueuedEvent};

fn event_json(i: usize) -> Value {
    json!({"eventId": format!("bench-{i}"), "eventType": "page_view", "userId": format!("user-{}", i % 1000),
        "sessionId": "s-1", "timestamp": "2026-11-22T10:00:00.000Z",
        "properties": {"path": "/pricing", "referrer": "https://example.com/", "amount": 42.5}})
}

fn bench_validation(c: &mut Criterion) {
    let body = serde_json::to_vec(&event_json(1)).expect("serializes");
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_and_validate_one_event", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(&body).expect("valid json");
            validate(&v).expect("valid event")
        })
    });
    let batch: Vec<Value> = (0..100).map(event_json).collect();
    g.throughput(Throughput::Elements(100));
    g.bench_function("validate_a_100_event_batch", |b| {
        b.iter(|| {
            for e in &batch {
                validate(e).expect("valid event");
            }
        })
    });
    g.finish();
}

fn bench_keys_and_entries(c: &mut Criterion) {
    let key = sluice_shared::apikey::generate().key;
    c.bench_function("sha256_of_an_api_key", |b| {
        b.iter(|| sluice_shared::apikey::hash(&key))
    });
    let incoming = validate(&event_json(7)).expect("valid");
    c.bench_function("stamp_and_serialize_the_stream_entry", |b| {
        b.iter_batched(
            || incoming.clone(),
            |i| {
                let q = QueuedEvent::stamp(i, "01a2-account", chrono::Utc::now()).expect("stamps");
                serde_json::to_string(&q).expect("serializes")
            },
            BatchSize::SmallInput,
        )
    });
    let q = QueuedEvent::stamp(incoming, "01a2-account", chrono::Utc::now()).expect("stamps");
    let entry = serde_json::to_string(&q).expect("serializes");
    c.bench_function("stream_entry_to_bson", |b| {
        b.iter(|| {
            let e: QueuedEvent = serde_json::from_str(&entry).expect("decodes");
            sluice_worker::store::to_document(&e).expect("converts")
        })
    });
}

fn bench_redis(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut settings = sluice_shared::config::Settings::load().expect("settings");
    settings.redis.stream_key = format!("bench:{}:events:stream", uuid::Uuid::new_v4().simple());
    let Ok(client) = rt.block_on(sluice_shared::redis::connect(&settings.redis)) else {
        eprintln!(
            "no Redis at {}: skipping the dedup+enqueue bench",
            settings.redis.url
        );
        return;
    };
    let enqueuer = sluice_shared::enqueue::Enqueuer::new(
        client.clone(),
        settings.redis.stream_key.clone(),
        60,
    );
    rt.block_on(enqueuer.load()).expect("script loads");
    let template = QueuedEvent::stamp(
        validate(&event_json(1)).expect("valid"),
        "bench-account",
        chrono::Utc::now(),
    )
    .expect("stamps");
    let mut n = 0u64;
    let mut next = |count: usize| -> Vec<QueuedEvent> {
        (0..count)
            .map(|_| {
                n += 1;
                QueuedEvent {
                    event_id: format!("b{n}"),
                    ..template.clone()
                }
            })
            .collect()
    };
    let mut g = c.benchmark_group("dedup_and_enqueue");
    for size in [1usize, 100] {
        g.throughput(Throughput::Elements(size as u64));
        g.bench_function(format!("lua_round_trip_{size}_events"), |b| {
            b.iter_batched(
                || next(size),
                |events| {
                    rt.block_on(enqueuer.enqueue(&events, "bench"))
                        .expect("enqueued")
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    let _: Result<i64, _> = rt.block_on(fred::prelude::KeysInterface::del(
        &client,
        settings.redis.stream_key.as_str(),
    ));
}

criterion_group!(
    benches,
    bench_validation,
    bench_keys_and_entries,
    bench_redis
);
criterion_main!(benches);
