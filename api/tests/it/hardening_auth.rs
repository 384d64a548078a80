//! Issue 11, items 10 to 16: login limiter and trusted proxies, hashing slots, unknown-key floods,
//! body timeouts, revocation retries and races, PostgreSQL outages, the active-key limit.
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value as RedisValue;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_api::store;
use sluice_shared::config::Settings;
use sluice_shared::names::{api_key_cache_key, KEY_REVOCATIONS_CHANNEL};
use sluice_testkit::postgres::OwnPostgres;
use sluice_testkit::servers::OwnRedis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{post_event, spawn_api, test_settings};

const PASSWORD: &str = "a long enough password";

fn email() -> String {
    format!("{}@t.sluice", uuid::Uuid::new_v4().simple())
}

fn on_own_postgres(settings: &mut Settings, pg: &OwnPostgres) {
    settings.postgres.url = secrecy::SecretString::from(pg.url());
}

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = req
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("the api answers");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

async fn login(
    url: &str,
    email: &str,
    password: &str,
    xff: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    call(req).await
}

async fn register(url: &str, email: &str) -> StatusCode {
    call(
        reqwest::Client::new()
            .post(format!("{url}/api/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD})),
    )
    .await
    .0
}

async fn token(url: &str) -> String {
    let e = email();
    assert_eq!(register(url, &e).await, StatusCode::CREATED);
    let (s, _, b) = login(url, &e, PASSWORD, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["token"].as_str().unwrap().to_owned()
}

async fn create_key(url: &str, token: &str, name: &str) -> (StatusCode, Value) {
    let (s, _, b) = call(
        reqwest::Client::new()
            .post(format!("{url}/api/v1/keys"))
            .bearer_auth(token)
            .json(&json!({ "name": name })),
    )
    .await;
    (s, b)
}

async fn delete_key(url: &str, token: &str, id: &str) -> (StatusCode, Value) {
    let (s, _, b) = call(
        reqwest::Client::new()
            .delete(format!("{url}/api/v1/keys/{id}"))
            .bearer_auth(token),
    )
    .await;
    (s, b)
}

fn assert_unavailable_names_postgres(
    what: &str,
    s: StatusCode,
    h: &reqwest::header::HeaderMap,
    b: &Value,
) {
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{what}: {b}");
    assert_eq!(b["error"]["code"], "unavailable", "{what}: {b}");
    let message = b["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("PostgreSQL"), "{what}: {message}");
    assert!(!message.contains("event queue"), "{what}: {message}");
    assert!(h.contains_key("retry-after"), "{what}");
}

// ---- 10: the login limiter, trusted proxies, hashing slots ----

#[tokio::test]
async fn rotating_x_forwarded_for_does_not_void_the_login_limit() {
    let mut settings = test_settings();
    settings.auth.login_per_minute = 5;
    // The api is reached directly: no proxy is trusted, so the header is the client's own words.
    settings.api.trusted_proxies = vec![];
    let (url, _stop) = spawn_api(&settings).await;
    let e = email();
    let mut statuses = vec![];
    for i in 0..12 {
        let xff = format!("203.0.113.{i}");
        statuses.push(login(&url, &e, "the wrong password!", Some(&xff)).await.0);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "12 logins with a fresh X-Forwarded-For each: {statuses:?}"
    );
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_each_get_their_own_login_limit() {
    let mut settings = test_settings();
    settings.auth.login_per_minute = 5;
    settings.api.trusted_proxies = vec!["127.0.0.0/8".into(), "10.0.0.0/8".into()];
    let (url, _stop) = spawn_api(&settings).await;
    let e = email();
    // Client 198.51.100.1 reaches the api through an ingress (10.1.2.3) and then a local nginx;
    // what it puts in front of the header itself (rotating) does not matter.
    let mut last = StatusCode::OK;
    for i in 0..6 {
        let xff = format!("6.6.6.{i}, 198.51.100.1, 10.1.2.3");
        last = login(&url, &e, "the wrong password!", Some(&xff)).await.0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS, "client 1 is limited");
    let (s, _, b) = login(
        &url,
        &e,
        "the wrong password!",
        Some("198.51.100.2, 10.1.2.3"),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "client 2 behind the same proxy has its own allowance: {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_beyond_the_hashing_slots_gets_503_with_retry_after() {
    let mut settings = test_settings();
    settings.auth.login_per_minute = 100_000;
    settings.auth.max_concurrent_password_hashes = 1;
    settings.auth.password_hash_wait_ms = 0;
    let (url, _stop) = spawn_api(&settings).await;
    let e = email();
    assert_eq!(register(&url, &e).await, StatusCode::CREATED);
    let flood = (0..30).map(|_| login(&url, &e, "the wrong password!", None));
    let answers = futures::future::join_all(flood).await;
    let mut refused = 0;
    for (s, h, b) in &answers {
        match *s {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(b["error"]["code"], "overloaded", "{b}");
                assert!(h.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert!(
        refused > 0,
        "30 concurrent logins, 1 hashing slot: none refused"
    );
    // The slot is free again afterwards.
    assert_eq!(login(&url, &e, PASSWORD, None).await.0, StatusCode::OK);
}

/// Resident memory of this process (the api runs in it), in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_of_logins_do_not_grow_the_api_by_the_memory_of_each_hash() {
    let mut settings = test_settings();
    settings.auth.login_per_minute = 100_000;
    settings.auth.password_hash_wait_ms = 10_000;
    let (url, _stop) = spawn_api(&settings).await;
    let e = email();
    assert_eq!(register(&url, &e).await, StatusCode::CREATED);
    let wave = || async {
        let answers =
            futures::future::join_all((0..8).map(|_| login(&url, &e, "the wrong password!", None)))
                .await;
        assert!(answers
            .iter()
            .all(|(s, _, _)| *s == StatusCode::UNAUTHORIZED));
    };
    wave().await;
    let after_first = rss_mib();
    for _ in 0..5 {
        wave().await;
    }
    let after_six = rss_mib();
    println!("RSS after one wave of 8 logins {after_first} MiB, after six {after_six} MiB");
    // Each argon2 hash works in 19 MiB; 40 more hashes must not leave 40 × 19 MiB behind.
    assert!(
        after_six < after_first + 60,
        "RSS grew from {after_first} to {after_six} MiB over 40 logins"
    );
}

// ---- 11: unknown-key floods ----

async fn waiting_on_locks(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%api_keys%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_flood_cannot_take_the_postgres_pool_from_logins() {
    let pg = OwnPostgres::start();
    let mut settings = test_settings();
    on_own_postgres(&mut settings, &pg);
    settings.postgres.max_connections = 4;
    settings.api.key_lookup_concurrency = 1;
    settings.auth.login_per_minute = 100_000;
    let (url, _stop) = spawn_api(&settings).await;
    let e = email();
    assert_eq!(register(&url, &e).await, StatusCode::CREATED);
    let pool = store::pool(&settings.postgres).unwrap();
    let account = store::create_account(&pool, &email(), None).await.unwrap();
    let (_, known) = store::create_key(&pool, account, "known").await.unwrap();
    assert_eq!(post_event(&url, &known, "k1").await.0, 202);

    // Every lookup in PostgreSQL now hangs, as a slow or overloaded database would.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let flood_url = url.clone();
    let flood = tokio::spawn(async move {
        let requests = (0..40).map(|i| {
            let url = flood_url.clone();
            async move {
                let key = format!("slk_unknown_{i}_{}", uuid::Uuid::new_v4().simple());
                post_event(&url, &key, "x").await
            }
        });
        futures::future::join_all(requests).await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting_on_locks(&pool).await == 0 {
        assert!(Instant::now() < deadline, "no lookup reached PostgreSQL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (s, _, b) = login(&url, &e, PASSWORD, None).await;
    let known_status = post_event(&url, &known, "k2").await.0;
    lock.rollback().await.unwrap();
    let flood = flood.await.unwrap();
    assert_eq!(s, StatusCode::OK, "a login during the flood: {b}");
    assert_eq!(known_status, 202, "a cached key during the flood");
    for (status, body, retry_after) in flood {
        match status {
            401 => {}
            503 => {
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                assert!(retry_after);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
}

// ---- 12: body timeouts ----

/// Sends the headers and a first part of a body, then nothing; the answer, if one comes.
async fn trickle(url: &str, path: &str, key: Option<&str>) -> Option<String> {
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n"
    );
    if let Some(key) = key {
        head.push_str(&format!("x-api-key: {key}\r\n"));
    }
    head.push_str("\r\n{\"eventType\": ");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                    break;
                }
            }
        }
    }
    (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_body_trickled_past_the_timeout_gets_408_in_the_error_shape() {
    let mut settings = test_settings();
    settings.api.body_read_timeout_secs = 1;
    let (url, _stop) = spawn_api(&settings).await;
    let pool = store::pool(&settings.postgres).unwrap();
    let account = store::create_account(&pool, &email(), None).await.unwrap();
    let (_, key) = store::create_key(&pool, account, "slow").await.unwrap();
    assert_eq!(post_event(&url, &key, "warm").await.0, 202);

    for (path, key) in [
        ("/api/v1/events", Some(key.as_str())),
        ("/api/v1/events/batch", Some(key.as_str())),
        ("/api/v1/auth/login", None),
    ] {
        let started = Instant::now();
        let answer = trickle(&url, path, key)
            .await
            .unwrap_or_else(|| panic!("{path}: no answer within 6 s to a stalled body"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(
            answer.contains(r#""code":"request_timeout""#),
            "{path}: {answer}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
}

// ---- 13: revocation ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_cut_short_by_redis_completes_when_the_delete_is_retried() {
    let mut redis = OwnRedis::start();
    let mut settings = test_settings();
    settings.redis.url = redis.url();
    settings.redis.command_timeout_ms = 1_000;
    let (url, _stop) = spawn_api(&settings).await;
    let t = token(&url).await;
    let (_, created) = create_key(&url, &t, "doomed").await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(post_event(&url, &key, "before").await.0, 202);

    redis.kill9();
    let (s, b) = delete_key(&url, &t, &id).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    redis.restart();
    // Wait until the api's revocation listener has subscribed again.
    let watcher = sluice_shared::redis::connect(&settings.redis)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let subs: Vec<RedisValue> = watcher
            .pubsub_numsub(KEY_REVOCATIONS_CHANNEL)
            .await
            .unwrap_or_default();
        if subs.get(1).and_then(|v| v.as_i64()).is_some_and(|n| n > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the api did not resubscribe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (s, b) = delete_key(&url, &t, &id).await;
        if s != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break (s, b);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, StatusCode::NO_CONTENT, "the retried DELETE: {body}");
    let retried_at = Instant::now();
    let mut refused = false;
    while !refused && retried_at.elapsed() < Duration::from_secs(1) {
        refused = post_event(&url, &key, "after").await.0 == 401;
    }
    assert!(
        refused,
        "the key is refused within a second of the retried DELETE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_read_postgres_before_a_revocation_does_not_cache_the_revoked_key() {
    let pg = OwnPostgres::start();
    let mut settings = test_settings();
    on_own_postgres(&mut settings, &pg);
    let (url, _stop) = spawn_api(&settings).await;
    let pool = store::pool(&settings.postgres).unwrap();
    let account = store::create_account(&pool, &email(), None).await.unwrap();
    let (record, key) = store::create_key(&pool, account, "raced").await.unwrap();
    let hash = sluice_shared::apikey::hash(&key);

    // The api's first lookup of the key stops in PostgreSQL, after it found Redis empty.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let first_url = url.clone();
    let first_key = key.clone();
    let first = tokio::spawn(async move { post_event(&first_url, &first_key, "raced-1").await.0 });
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting_on_locks(&pool).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the lookup did not reach PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile a revocation lays its tombstone and broadcasts (the api has nothing to evict)...
    let redis = sluice_shared::redis::connect(&settings.redis)
        .await
        .unwrap();
    let _: RedisValue = redis
        .set(
            api_key_cache_key(&hash),
            "-",
            Some(Expiration::EX(3_600)),
            None,
            false,
        )
        .await
        .unwrap();
    let _: RedisValue = redis
        .publish(KEY_REVOCATIONS_CHANNEL, hash.as_str())
        .await
        .unwrap();
    // ...and the lookup reads the row as it was before the revocation committed.
    lock.rollback().await.unwrap();
    let first = first.await.unwrap();
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(record.id)
        .execute(&pool)
        .await
        .unwrap();

    let (second, body, _) = post_event(&url, &key, "raced-2").await;
    assert_eq!(
        second, 401,
        "the revoked key was cached by the racing lookup (first answer {first}): {body}"
    );
}

// ---- 14 and 15: PostgreSQL down ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_known_keys_keep_working_past_every_cache_ttl() {
    let mut pg = OwnPostgres::start();
    let mut settings = test_settings();
    on_own_postgres(&mut settings, &pg);
    settings.api.key_cache_ttl_secs = 1;
    settings.api.negative_key_cache_ttl_secs = 1;
    settings.api.redis_key_cache_ttl_secs = 1;
    settings.api.redis_negative_key_cache_ttl_secs = 1;
    settings.api.key_stale_if_error_secs = 8;
    settings.api.key_tombstone_ttl_secs = 8;
    let (url, _stop) = spawn_api(&settings).await;
    let pool = store::pool(&settings.postgres).unwrap();
    let account = store::create_account(&pool, &email(), None).await.unwrap();
    let (_, key) = store::create_key(&pool, account, "stale").await.unwrap();
    assert_eq!(post_event(&url, &key, "before").await.0, 202);
    let confirmed = Instant::now();

    pg.stop();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (s, b, _) = post_event(&url, &key, "during").await;
    assert_eq!(
        s, 202,
        "a known key past every TTL while PostgreSQL is down: {b}"
    );
    // An instance started during the outage knows the key from Redis.
    let fresh = sluice_api::startup::Application::build(settings.clone())
        .await
        .unwrap();
    let fresh_url = format!("http://127.0.0.1:{}", fresh.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fresh.run_until(async {
        let _ = rx.await;
    }));
    let (s, b, _) = post_event(&fresh_url, &key, "during-fresh").await;
    assert_eq!(s, 202, "a new instance serves the key from Redis: {b}");
    let (s, b, _) = post_event(&url, "slk_never_seen_key", "unknown").await;
    assert_eq!(s, 503, "an unknown key cannot be judged: {b}");

    // Bounded: once the stale window is over the key is no longer served.
    let until = confirmed + Duration::from_secs(10);
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    let (s, b, _) = post_event(&url, &key, "too-late").await;
    assert_eq!(s, 503, "past the stale window: {b}");
    assert_eq!(b["error"]["code"], "unavailable");

    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let s = post_event(&url, &key, "after").await.0;
        if s == 202 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 202, "served again once PostgreSQL is back");
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_login_register_and_unknown_keys_say_postgresql_is_unavailable() {
    let mut pg = OwnPostgres::start();
    let mut settings = test_settings();
    on_own_postgres(&mut settings, &pg);
    let (url, _stop) = spawn_api(&settings).await;
    pg.stop();

    let (s, h, b) = login(&url, &email(), PASSWORD, None).await;
    assert_unavailable_names_postgres("login", s, &h, &b);
    let (s, h, b) = call(
        reqwest::Client::new()
            .post(format!("{url}/api/v1/auth/register"))
            .json(&json!({"email": email(), "password": PASSWORD})),
    )
    .await;
    assert_unavailable_names_postgres("register", s, &h, &b);
    let (s, h, b) = call(
        reqwest::Client::new()
            .post(format!("{url}/api/v1/events"))
            .header("x-api-key", "slk_not_a_known_key")
            .json(&json!({"eventType": "click", "userId": "u"})),
    )
    .await;
    assert_unavailable_names_postgres("an unknown key", s, &h, &b);
}

// ---- 16: the active-key limit ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_key_creates_never_pass_the_active_key_limit() {
    let mut settings = test_settings();
    settings.auth.max_active_keys = 5;
    settings.postgres.max_connections = 8;
    let (url, _stop) = spawn_api(&settings).await;
    let t = token(&url).await;
    let creates = (0..40).map(|i| {
        let (url, t) = (url.clone(), t.clone());
        async move { create_key(&url, &t, &format!("k{i}")).await }
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    for (s, b) in &answers {
        assert!(
            *s == StatusCode::CREATED
                || (*s == StatusCode::CONFLICT && b["error"]["code"] == "too_many_keys"),
            "{s}: {b}"
        );
    }
    assert_eq!(created, 5, "exactly max_active_keys creates succeed");
    let (_, _, keys) = call(
        reqwest::Client::new()
            .get(format!("{url}/api/v1/keys"))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(keys.as_array().unwrap().len(), 5);
}
