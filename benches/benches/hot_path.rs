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
            sluice_store::to_document(&e).expect("converts")
        })
    });
}

fn bench_redis(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut settings = sluice_shared::config::Settings::load().expect("settings");
    settings.redis.key_prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let Ok(client) = rt.block_on(sluice_shared::redis::connect(&settings.redis)) else {
        eprintln!(
            "no Redis at {}: skipping the dedup+enqueue bench",
            settings.redis.url
        );
        return;
    };
    let enqueuer =
        sluice_shared::enqueue::Enqueuer::new(client.clone(), settings.redis.layout(), 60);
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
    // The dedup sets expire by themselves within two windows (120 s).
    let layout = settings.redis.layout();
    for p in layout.all() {
        for key in [layout.stream(p), layout.meta(p)] {
            let _: Result<i64, _> =
                rt.block_on(fred::prelude::KeysInterface::del(&client, key.as_str()));
        }
    }
}

/// A tracking plan's schema of about 2 KB: 20 typed, bounded properties, a pattern, an enum.
fn two_kb_schema() -> Value {
    let mut properties = serde_json::Map::new();
    for i in 0..20 {
        properties.insert(
            format!("field_{i:02}"),
            json!({"type": "string", "minLength": 1, "maxLength": 64, "description": "a string field of the plan"}),
        );
    }
    properties.insert(
        "path".into(),
        json!({"type": "string", "pattern": "^/[a-z/]*$"}),
    );
    properties.insert(
        "referrer".into(),
        json!({"type": "string", "format": "uri"}),
    );
    properties.insert(
        "amount".into(),
        json!({"type": "number", "minimum": 0, "maximum": 1000000}),
    );
    properties.insert("plan".into(), json!({"enum": ["free", "pro", "team"]}));
    json!({"type": "object", "required": ["path", "amount"], "properties": properties,
        "additionalProperties": true})
}

/// What the tracking plan adds to an event's intake: judging it by a 2 KB schema, against the
/// envelope's parse and check alone (`make bench`, or `cargo bench -p sluice-benches -- plan`).
fn bench_tracking_plan(c: &mut Criterion) {
    use sluice_api::plans::{compile, AccountPlan, Mode, TypePlan};
    use std::collections::HashMap;
    use std::sync::Arc;
    let schema = two_kb_schema();
    assert!(serde_json::to_string(&schema).expect("json").len() >= 1800);
    let mut types = HashMap::new();
    types.insert(
        "page_view".to_owned(),
        TypePlan {
            mode: Some(Mode::Enforce),
            latest: Some(1),
            versions: HashMap::from([(1, Arc::new(compile(&schema).expect("compiles")))]),
        },
    );
    let plan = AccountPlan {
        default_mode: Mode::Allow,
        types,
    };
    let body = serde_json::to_string(&event_json(1)).expect("serializes");
    let limits = sluice_shared::event::EventLimits::default();
    let stamp = |text: &str| {
        let parsed = sluice_shared::event::parse_event(text, limits).expect("valid");
        QueuedEvent::stamp(parsed.event, "acc", chrono::Utc::now()).expect("stamps")
    };
    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_and_stamp_without_a_plan", |b| {
        b.iter(|| stamp(&body))
    });
    g.bench_function("parse_stamp_and_judge_by_a_2kb_schema", |b| {
        b.iter(|| {
            let mut e = stamp(&body);
            plan.judge(&mut e).expect("valid by the plan");
            e
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_validation,
    bench_keys_and_entries,
    bench_redis,
    bench_tracking_plan
);
criterion_main!(benches);
