//! Memory a client can make the api spend: bounded by the bytes it sends, not by the shape of its
//! JSON (issue 11, item 8). The api runs as its own process (the release allocator and all), and
//! its peak resident set is read from /proc, not timed. The worker's half is in the worker's
//! tests (`worker/tests/it/memory.rs`).
use std::io::Write;
use std::time::{Duration, Instant};

use sluice_testkit::{new_tenant, ApiClient};

use crate::{test_settings, TEST_JWT_SECRET};

/// A `Vm…:` line of a process's /proc status, in MiB.
fn status_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// `VmHWM` (peak resident set) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    status_mib(pid, "VmHWM:")
}

/// `VmRSS` (current resident set) of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    status_mib(pid, "VmRSS:")
}

/// A gzipped batch of `events` events, each with `objects` empty-named objects in one array:
/// tiny on the wire, a tree of `2 × objects` values each once parsed.
fn nested_batch(events: usize, objects: usize, tag: &str) -> Vec<u8> {
    let array = vec![r#"{"":0}"#; objects].join(",");
    let items: Vec<String> = (0..events)
        .map(|i| {
            format!(
                r#"{{"eventId":"{tag}-{i}","eventType":"a","userId":"u","properties":{{"a":[{array}]}}}}"#
            )
        })
        .collect();
    let body = format!(r#"{{"events":[{}]}}"#, items.join(","));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(body.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// Kills the api when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The api as its own process on `settings`' Redis prefix and database, ready; and its port.
async fn start_api(settings: &sluice_shared::config::Settings) -> (Child, u16) {
    let port = sluice_testkit::servers::free_port();
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice-api"))
            .env("SLUICE_API__PORT", port.to_string())
            .env("SLUICE_REDIS__KEY_PREFIX", &settings.redis.key_prefix)
            .env("SLUICE_MONGO__DATABASE", &settings.mongo.database)
            .env("SLUICE_AUTH__JWT_SECRET", TEST_JWT_SECRET)
            .env("RUST_LOG", "warn")
            // With backtraces on (RUST_BACKTRACE=1 is common in a shell and CI), the first error
            // logged with one, e.g. a Postgres pool timeout on a loaded box, reads this debug
            // binary's DWARF to symbolize it: 223 MiB of the binary's file mapping in the peak,
            // which is the test environment, not what a request costs. Measured with them off.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://127.0.0.1:{port}/api/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(&ready)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the api did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_nested_batches_keep_the_api_small() {
    let settings = test_settings();
    let (child, port) = start_api(&settings).await;
    let pid = child.0.id();
    let api = ApiClient::new(port, reqwest::Client::new());
    let pool = sluice_api::store::pool(&settings.postgres).unwrap();
    let tenant = new_tenant(&pool).await;
    println!("api peak RSS after start: {} MiB", peak_rss_mib(pid));
    let send = |body: Vec<u8>| {
        let (api, key) = (&api, tenant.key.as_str());
        async move {
            api.post_raw(
                "/api/v1/events/batch",
                body,
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                    ("x-api-key", key),
                ],
            )
            .await
        }
    };

    // The shape that took the api to 2.8 GB: 80 events of 9,000 objects each (18,000 values),
    // 10 KB gzipped. Every event holds more values than allowed.
    let attack: Vec<Vec<u8>> = (0..8)
        .map(|i| nested_batch(80, 9_000, &format!("x{i}")))
        .collect();
    assert!(attack[0].len() < 20_000, "{} bytes", attack[0].len());
    let replies = futures::future::join_all(attack.into_iter().map(send)).await;
    for r in &replies {
        assert!(
            r.status == 400 || r.status == 413,
            "{} {:?}",
            r.status,
            r.body
        );
    }
    println!(
        "api peak RSS after the refused batches: {} MiB",
        peak_rss_mib(pid)
    );
    // The most a request may hold and still be taken: 20 events of 4,900 objects (9,802 values
    // each, 196,040 in all), eight at once; all of it is queued.
    let allowed: Vec<Vec<u8>> = (0..8)
        .map(|i| nested_batch(20, 4_900, &format!("ok{i}")))
        .collect();
    // On connections of their own: the api closes a connection whose body it refused unread, and
    // a pooled one could be reused just as it closes (hyper's `IncompleteMessage`).
    let api = ApiClient::new(port, reqwest::Client::new());
    let send = |body: Vec<u8>| {
        let (api, key) = (&api, tenant.key.as_str());
        async move {
            api.post_raw(
                "/api/v1/events/batch",
                body,
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                    ("x-api-key", key),
                ],
            )
            .await
        }
    };
    let replies = futures::future::join_all(allowed.into_iter().map(send)).await;
    for r in &replies {
        assert_eq!(r.status, 202, "{:?}", r.body);
        assert_eq!(r.body["accepted"], 20);
    }
    let api_mib = peak_rss_mib(pid);
    println!("api peak RSS: {api_mib} MiB");
    drop(child);
    assert!(api_mib < 150, "api peak RSS {api_mib} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exporting_a_hundred_thousand_events_keeps_the_api_flat() {
    let settings = test_settings();
    let (child, port) = start_api(&settings).await;
    let pid = child.0.id();
    let pool = sluice_api::store::pool(&settings.postgres).unwrap();
    let tenant = new_tenant(&pool).await;
    let account = tenant.account.to_string();
    // 100,000 stored events of one user, written straight to MongoDB (the ingest path is not
    // what this measures), with the index the export reads by.
    let db = mongodb::Client::with_uri_str(&settings.mongo.url)
        .await
        .unwrap()
        .database(&settings.mongo.database);
    let events = db.collection::<mongodb::bson::Document>("events");
    let start = mongodb::bson::DateTime::from_millis(1_780_000_000_000);
    const N: usize = 100_000;
    let loaded = Instant::now();
    for chunk in 0..N / 10_000 {
        let docs: Vec<mongodb::bson::Document> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| {
                let ts = mongodb::bson::DateTime::from_millis(start.timestamp_millis() + i as i64);
                mongodb::bson::doc! {"_id": format!("{account}:e{i:06}"), "eventId": format!("e{i:06}"),
                    "accountId": &account, "eventType": "page_view", "userId": "heavy",
                    "timestamp": ts, "receivedAt": ts,
                    "properties": {"path": "/products/42", "price": 19.99, "i": i as i64}}
            })
            .collect();
        events.insert_many(docs).ordered(false).await.unwrap();
    }
    events
        .create_index(
            mongodb::IndexModel::builder()
                .keys(mongodb::bson::doc! {"accountId": 1, "userId": 1, "timestamp": -1, "_id": -1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("q_account_user_time".to_owned())
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    println!("loaded {N} events in {} ms", loaded.elapsed().as_millis());
    let before = rss_mib(pid);
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/users/heavy/export"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Read as it streams, counting lines, and watch the api's resident set meanwhile.
    let mut resp = resp;
    let (mut lines, mut bytes, mut peak) = (0usize, 0usize, before);
    let mut next_look = 0usize;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        bytes += chunk.len();
        if bytes >= next_look {
            peak = peak.max(rss_mib(pid));
            next_look = bytes + 1024 * 1024;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    peak = peak.max(rss_mib(pid));
    println!(
        "exported {lines} events ({} MiB) in {secs:.1} s = {:.0} events/s; api RSS {before} MiB before, {peak} MiB at most during",
        bytes / (1024 * 1024),
        lines as f64 / secs
    );
    drop(child);
    assert_eq!(lines, N);
    assert!(
        peak <= before + 32,
        "the api grew from {before} to {peak} MiB exporting {} MiB",
        bytes / (1024 * 1024)
    );
}
