//! Memory a client can make the api spend: bounded by the bytes it sends, not by the shape of its
//! JSON (issue 11, item 8). The api runs as its own process (the release allocator and all), and
//! its peak resident set is read from /proc, not timed. The worker's half is in the worker's
//! tests (`worker/tests/it/memory.rs`).
use std::io::Write;
use std::time::{Duration, Instant};

use sluice_testkit::{new_tenant, ApiClient};

use crate::{test_settings, TEST_JWT_SECRET};

/// `VmHWM` (peak resident set) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_nested_batches_keep_the_api_small() {
    let settings = test_settings();
    let port = sluice_testkit::servers::free_port();
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice-api"))
            .env("SLUICE_API__PORT", port.to_string())
            .env("SLUICE_REDIS__KEY_PREFIX", &settings.redis.key_prefix)
            .env("SLUICE_AUTH__JWT_SECRET", TEST_JWT_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let api = ApiClient::new(port, reqwest::Client::new());
    let ready = format!("http://127.0.0.1:{port}/api/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(&ready)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the api did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
