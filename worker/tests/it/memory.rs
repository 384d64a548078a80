//! Memory a client can make the worker spend: bounded by the bytes it sends, not by the shape of
//! its JSON (issue 11, item 8). The worker runs as its own process; its peak resident memory is
//! read from /proc, not timed. The api's half, with the api as its own process, is in the api's
//! tests (`api/tests/it/memory.rs`): measured here it was this test process, harness included.
use std::io::Write;
use std::time::Duration;

use mongodb::bson::doc;

use crate::helpers::{spawn_app_with, test_settings, Options, WorkerProcess};

/// `VmHWM` (peak resident set) of a process, in MiB.
fn peak_rss_mib(pid: &str) -> u64 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_nested_batches_keep_the_worker_small() {
    let settings = test_settings();
    let app = spawn_app_with(Options {
        with_worker: false,
        settings,
        ..Default::default()
    })
    .await;
    let mut worker = WorkerProcess::start(&app.settings, "memory", &[]);
    println!(
        "test process (the api in-process) peak RSS after start: {} MiB",
        peak_rss_mib("self")
    );
    let send = |body: Vec<u8>| {
        let app = &app;
        async move {
            app.post_raw(
                "/api/v1/events/batch",
                body,
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                    ("x-api-key", &app.key),
                ],
            )
            .await
        }
    };

    // The shape that took the api to 2.8 GB and the worker to 4.0 GB: 80 events of 9,000
    // objects each (18,000 values), 10 KB gzipped. Every event holds more values than allowed.
    let attack: Vec<Vec<u8>> = (0..8)
        .map(|i| nested_batch(80, 9_000, &format!("x{i}")))
        .collect();
    assert!(attack[0].len() < 20_000, "{} bytes", attack[0].len());
    println!(
        "test process peak RSS with the bodies built: {} MiB",
        peak_rss_mib("self")
    );
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
        "test process peak RSS after the refused batches: {} MiB",
        peak_rss_mib("self")
    );
    // The most a request may hold and still be taken: 20 events of 4,900 objects (9,802 values
    // each, 196,040 in all), eight at once; all of it is queued and stored.
    let allowed: Vec<Vec<u8>> = (0..8)
        .map(|i| nested_batch(20, 4_900, &format!("ok{i}")))
        .collect();
    // On connections of their own: the api closes a connection whose body it refused unread, and
    // a pooled one could be reused just as it closes (hyper's `IncompleteMessage`).
    let fresh = sluice_testkit::ApiClient::new(app.stack.api().port, sluice_testkit::http_client());
    let send = |body: Vec<u8>| {
        let (fresh, key) = (&fresh, app.key.as_str());
        async move {
            fresh
                .post_raw(
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
    assert_eq!(
        app.wait_for_events(doc! {}, 160, Duration::from_secs(180))
            .await,
        160
    );

    let worker_mib = peak_rss_mib(&worker.child.id().to_string());
    println!("peak RSS: worker {worker_mib} MiB");
    assert!(worker_mib < 200, "worker peak RSS {worker_mib} MiB");
    worker.kill9();
}
