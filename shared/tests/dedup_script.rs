//! The enqueue script against a real Redis (`SLUICE_REDIS__URL`, as the other suites): all or
//! nothing, one entry per call, and the two live dedup generations, with members crafted byte by
//! byte rather than found by hashing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use fred::prelude::*;
use fred::types::scripts::Script;
use sluice_shared::config::RedisSettings;
use sluice_shared::enqueue::ENQUEUE_LUA;
use sluice_shared::partition::Partitions;

/// A one-partition layout of this test's own (its keys share one hash tag: one slot on a
/// cluster too).
fn keys() -> Partitions {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    Partitions::new(format!("test-dedup-{tag}"), 1)
}

async fn client() -> Client {
    let settings = RedisSettings {
        url: std::env::var("SLUICE_REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6380".into()),
        ..RedisSettings::default()
    };
    sluice_shared::redis::connect(&settings).await.unwrap()
}

/// One call in dedup generation `generation`: whether it wrote an entry, and the flags.
async fn call(
    redis: &Client,
    k: &Partitions,
    generation: u64,
    members: &[[u8; 12]],
) -> (bool, Vec<i64>) {
    let n = members.len();
    let events = format!("[{}]", vec!["{}"; n].join(","));
    let mut args: Vec<Value> = vec![
        Value::from(chrono::Utc::now().timestamp() + 120),
        Value::from(n as i64),
        Value::from("e"),
        Value::from("rid"),
        Value::from("n"),
        Value::from(events),
        Value::from("\"r\""),
    ];
    args.extend(members.iter().map(|m| Value::Bytes(m.to_vec().into())));
    let keys = vec![
        k.stream(0),
        k.dedup(0, generation),
        k.dedup(0, generation.saturating_sub(1)),
        k.meta(0),
    ];
    let reply: Value = Script::from_lua(ENQUEUE_LUA)
        .evalsha_with_reload(redis, keys, args)
        .await
        .unwrap();
    let Value::Array(mut parts) = reply else {
        panic!("{reply:?}")
    };
    let flags = match parts.pop() {
        Some(Value::Array(f)) => f.into_iter().map(|v| v.as_i64().unwrap()).collect(),
        other => panic!("{other:?}"),
    };
    (!parts.pop().unwrap().is_null(), flags)
}

/// Deletes the test partition's keys (the dedup hashes expire by themselves).
async fn clean(redis: &Client, k: &Partitions) {
    let _: i64 = redis.del(vec![k.stream(0), k.meta(0)]).await.unwrap();
}

fn member(head: [u8; 2], rest: &[u8; 10]) -> [u8; 12] {
    let mut m = [0u8; 12];
    m[..2].copy_from_slice(&head);
    m[2..].copy_from_slice(rest);
    m
}

#[tokio::test]
async fn each_member_is_reserved_once_and_a_call_queues_all_or_nothing() {
    let (redis, k) = (client().await, keys());
    let a = member([0, 7], b"aaaaaaaaaa");
    let b = member([0, 7], b"bbbbbbbbbb");
    let c = member([0, 8], b"aaaaaaaaaa");
    // Two in one call: one entry for both.
    assert_eq!(call(&redis, &k, 10, &[a, b]).await, (true, vec![1, 1]));
    // Members that differ in one byte are different events.
    assert_eq!(call(&redis, &k, 10, &[c]).await, (true, vec![1]));
    for m in [a, b, c] {
        assert_eq!(call(&redis, &k, 10, &[m]).await, (false, vec![0]));
    }
    // All or nothing: one reserved member keeps the new one out of the stream.
    let d = member([0, 7], b"dddddddddd");
    assert_eq!(call(&redis, &k, 10, &[d, a]).await, (false, vec![1, 0]));
    assert_eq!(call(&redis, &k, 10, &[d]).await, (true, vec![1]));
    let entries: u64 = redis.xlen(k.stream(0)).await.unwrap();
    assert_eq!(entries, 3, "one entry per call that queued");
    let events: i64 = redis.hget(k.meta(0), "events").await.unwrap();
    assert_eq!(events, 4);
    clean(&redis, &k).await;
}

#[tokio::test]
async fn a_member_is_caught_in_the_next_generation_and_forgotten_in_the_one_after() {
    let (redis, k) = (client().await, keys());
    let a = member([9, 9], b"generation");
    assert_eq!(call(&redis, &k, 20, &[a]).await, (true, vec![1]));
    assert_eq!(call(&redis, &k, 21, &[a]).await, (false, vec![0]));
    // Generation 22 looks in 22 and 21 only: 20's reservation is past the window.
    assert_eq!(call(&redis, &k, 22, &[a]).await, (true, vec![1]));
    let ttl: i64 = redis.ttl(k.dedup(0, 22)).await.unwrap();
    assert!(ttl > 0, "the generation's set expires whole: {ttl}");
    clean(&redis, &k).await;
}
