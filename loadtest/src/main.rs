//! `sluice-loadtest`: drives the api at a fixed rate (open loop) or as hard as N connections can
//! (closed loop), and reports throughput, latency, errors, the services' CPU and memory, and, with
//! `--e2e`, how long until every accepted event is in MongoDB.
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sluice_loadtest::events::{Generator, Mix};
use sluice_loadtest::report::{self, EndToEnd, Report, Second, ServiceUse};
use sluice_loadtest::{procstat, schedule};

#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-loadtest", about = "Load generator for the Sluice api")]
struct Args {
    /// Base URL of the api.
    #[arg(long, default_value = "http://127.0.0.1:3001")]
    url: String,
    /// API keys to spread the load over (comma-separated). With none, `--accounts` are created.
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
    /// Accounts (each with a key) to create through the api when no `--keys` are given.
    #[arg(long, default_value_t = 2)]
    accounts: usize,
    /// Open loop: events per second to offer. Without it, closed loop with `--connections`.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: concurrent connections sending back to back.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Open loop: most requests in flight before new ones are counted as errors.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    /// Events per request: 1 uses `/api/v1/events`, more uses `/api/v1/events/batch`.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    #[arg(long, default_value_t = 20)]
    types: u64,
    /// Approximate serialized size of one event.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    #[arg(long, default_value_t = 0.0)]
    duplicate_share: f64,
    #[arg(long, default_value_t = 0.0)]
    invalid_share: f64,
    #[arg(long)]
    gzip: bool,
    /// After the run, wait until every accepted event is in MongoDB and report how long it took.
    #[arg(long)]
    e2e: bool,
    #[arg(
        long,
        default_value = "mongodb://127.0.0.1:27018/?directConnection=true"
    )]
    mongo_url: String,
    #[arg(long, default_value = "sluice")]
    mongo_db: String,
    #[arg(long, default_value_t = 600)]
    e2e_timeout_secs: u64,
    /// Where to write the JSON report and the SVG chart.
    #[arg(long, default_value = "artifacts/loadtest")]
    out: std::path::PathBuf,
    /// No progress bar (for scripts).
    #[arg(long)]
    quiet: bool,
}

struct Shared {
    started: Instant,
    measure_from: Duration,
    hist: Mutex<Histogram<u64>>,
    per_second: Mutex<BTreeMap<u64, (Second, Histogram<u64>)>>,
    statuses: Mutex<BTreeMap<String, u64>>,
    accepted: AtomicU64,
    duplicate: AtomicU64,
    rejected: AtomicU64,
    sent: AtomicU64,
    transport_errors: AtomicU64,
    accepted_ids: Mutex<Vec<String>>,
    e2e: bool,
}

impl Shared {
    fn record(&self, latency: Duration, status: Option<u16>, body: Option<&Value>, events: usize) {
        let at = self.started.elapsed();
        if at < self.measure_from {
            return;
        }
        let us = latency.as_micros().clamp(1, 600_000_000) as u64;
        let second = (at - self.measure_from).as_secs();
        let ok_events = match (status, body) {
            (Some(202), Some(b)) | (Some(200), Some(b)) => {
                if let Some(n) = b.get("accepted").and_then(|v| v.as_u64()) {
                    let d = b["duplicates"].as_u64().unwrap_or(0);
                    let r = b["rejected"].as_u64().unwrap_or(0);
                    self.accepted.fetch_add(n, Ordering::Relaxed);
                    self.duplicate.fetch_add(d, Ordering::Relaxed);
                    self.rejected.fetch_add(r, Ordering::Relaxed);
                    if self.e2e {
                        if let Ok(mut ids) = self.accepted_ids.lock() {
                            for item in b["results"].as_array().into_iter().flatten() {
                                if item["status"] == "accepted" {
                                    ids.push(item["eventId"].as_str().unwrap_or("").to_owned());
                                }
                            }
                        }
                    }
                    n + d
                } else if b["status"] == "accepted" {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    if self.e2e {
                        if let Ok(mut ids) = self.accepted_ids.lock() {
                            ids.push(b["eventId"].as_str().unwrap_or("").to_owned());
                        }
                    }
                    1
                } else {
                    self.duplicate.fetch_add(1, Ordering::Relaxed);
                    1
                }
            }
            (Some(400), Some(b)) => {
                let n = b["rejected"].as_u64().unwrap_or(events as u64);
                self.rejected.fetch_add(n, Ordering::Relaxed);
                0
            }
            _ => 0,
        };
        self.sent.fetch_add(events as u64, Ordering::Relaxed);
        let key = status.map_or_else(|| "transport_error".to_owned(), |s| s.to_string());
        if let Ok(mut s) = self.statuses.lock() {
            *s.entry(key).or_default() += 1;
        }
        let error = !matches!(status, Some(200) | Some(202) | Some(400));
        if status.is_none() {
            self.transport_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut h) = self.hist.lock() {
            let _ = h.record(us);
        }
        if let Ok(mut ps) = self.per_second.lock() {
            let (s, h) = ps.entry(second).or_insert_with(|| {
                (
                    Second {
                        t: second,
                        ..Default::default()
                    },
                    report::histogram(),
                )
            });
            s.requests += 1;
            s.events_ok += ok_events;
            s.errors += u64::from(error);
            let _ = h.record(us);
        }
    }
}

fn body_of(events: Vec<Value>, batch: bool, gzip: bool) -> anyhow::Result<Vec<u8>> {
    let json = if batch {
        serde_json::to_vec(&json!({ "events": events }))?
    } else {
        serde_json::to_vec(&events.into_iter().next().unwrap_or(Value::Null))?
    };
    if !gzip {
        return Ok(json);
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&json)?;
    Ok(e.finish()?)
}

async fn send(
    client: &reqwest::Client,
    args: &Args,
    key: &str,
    body: Vec<u8>,
) -> (Option<u16>, Option<Value>) {
    let path = if args.batch > 1 {
        "/api/v1/events/batch"
    } else {
        "/api/v1/events"
    };
    let mut req = client
        .post(format!("{}{path}", args.url))
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .body(body);
    if args.gzip {
        req = req.header("content-encoding", "gzip");
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.json::<Value>().await.ok();
            (Some(status), body)
        }
        Err(_) => (None, None),
    }
}

/// Registers accounts and creates a key for each, through the api.
async fn setup_keys(client: &reqwest::Client, args: &Args) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    for _ in 0..args.accounts.max(1) {
        let email = format!("loadtest-{}@sluice.test", uuid::Uuid::new_v4().simple());
        let creds = json!({"email": email, "password": "loadtest password 123"});
        let r = client
            .post(format!("{}/api/v1/auth/register", args.url))
            .json(&creds)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "register: {}", r.status());
        let login: Value = client
            .post(format!("{}/api/v1/auth/login", args.url))
            .json(&creds)
            .send()
            .await?
            .json()
            .await?;
        let token = login["token"].as_str().context("login gave no token")?;
        let key: Value = client
            .post(format!("{}/api/v1/keys", args.url))
            .bearer_auth(token)
            .json(&json!({"name": "loadtest", }))
            .send()
            .await?
            .json()
            .await?;
        keys.push(key["key"].as_str().context("no key created")?.to_owned());
    }
    Ok(keys)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections.max(256))
        .timeout(Duration::from_secs(30))
        .build()?;
    let keys = if args.keys.is_empty() {
        setup_keys(&client, &args).await?
    } else {
        args.keys.clone()
    };
    let run = format!("lt{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mix = Mix {
        users: args.users,
        types: args.types,
        payload_bytes: args.payload_bytes,
        duplicate_share: args.duplicate_share,
        invalid_share: args.invalid_share,
    };
    let generator = Arc::new(Mutex::new(Generator::new(mix, &run)));
    let shared = Arc::new(Shared {
        started: Instant::now(),
        measure_from: Duration::from_secs(args.warmup_secs),
        hist: Mutex::new(report::histogram()),
        per_second: Mutex::new(BTreeMap::new()),
        statuses: Mutex::new(BTreeMap::new()),
        accepted: AtomicU64::new(0),
        duplicate: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        transport_errors: AtomicU64::new(0),
        accepted_ids: Mutex::new(Vec::new()),
        e2e: args.e2e,
    });
    let total = Duration::from_secs(args.warmup_secs + args.duration_secs);
    let make_body = {
        let generator = generator.clone();
        let batch = args.batch;
        let gzip = args.gzip;
        move || -> anyhow::Result<Vec<u8>> {
            let mut rng = rand::rng();
            let events: Vec<Value> = {
                let mut g = generator
                    .lock()
                    .map_err(|_| anyhow::anyhow!("generator poisoned"))?;
                (0..batch.max(1)).map(|_| g.event(&mut rng).0).collect()
            };
            body_of(events, batch > 1, gzip)
        }
    };

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total.as_secs());
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let progress = {
        let shared = shared.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let sent = shared.accepted.load(Ordering::Relaxed)
                    + shared.duplicate.load(Ordering::Relaxed);
                let (errors, p99) = shared
                    .per_second
                    .lock()
                    .ok()
                    .and_then(|ps| {
                        ps.values()
                            .last()
                            .map(|(s, h)| (s.errors, h.value_at_quantile(0.99) as f64 / 1000.0))
                    })
                    .unwrap_or((0, 0.0));
                bar.set_message(format!(
                    "{} ev/s · errors/s {errors} · p99 {p99:.1} ms",
                    sent - last
                ));
                last = sent;
                bar.inc(1);
            }
        })
    };

    let before = procstat::sample();
    let run_started = Instant::now();
    let args_arc = Arc::new(args.clone());
    let keys = Arc::new(keys);
    match args.rate {
        Some(rate) => {
            let rps = rate / args.batch.max(1) as f64;
            let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
            let start = tokio::time::Instant::now();
            let mut i: u64 = 0;
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                let due = schedule::due(i, rps);
                if due >= total {
                    break;
                }
                tokio::time::sleep_until(start + due).await;
                let scheduled = Instant::now() - (tokio::time::Instant::now() - (start + due));
                let body = make_body()?;
                let key = keys[i as usize % keys.len()].clone();
                let (client, args, shared, sem) = (
                    client.clone(),
                    args_arc.clone(),
                    shared.clone(),
                    in_flight.clone(),
                );
                match sem.try_acquire_owned() {
                    Ok(permit) => {
                        tasks.spawn(async move {
                            let (status, body) = send(&client, &args, &key, body).await;
                            shared.record(scheduled.elapsed(), status, body.as_ref(), args.batch);
                            drop(permit);
                        });
                    }
                    Err(_) => shared.record(scheduled.elapsed(), None, None, args.batch),
                }
                while tasks.try_join_next().is_some() {}
                i += 1;
            }
            while tasks.join_next().await.is_some() {}
        }
        None => {
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..args.connections.max(1) {
                let (client, args, shared, keys) = (
                    client.clone(),
                    args_arc.clone(),
                    shared.clone(),
                    keys.clone(),
                );
                let make_body = make_body.clone();
                tasks.spawn(async move {
                    while run_started.elapsed() < total {
                        let Ok(body) = make_body() else { break };
                        let t = Instant::now();
                        let (status, resp) =
                            send(&client, &args, &keys[c % keys.len()], body).await;
                        shared.record(t.elapsed(), status, resp.as_ref(), args.batch);
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let measured = run_started
        .elapsed()
        .saturating_sub(Duration::from_secs(args.warmup_secs))
        .as_secs_f64()
        .max(0.001);
    let after = procstat::sample();
    progress.abort();
    bar.finish_and_clear();

    let ticks = 100.0; // USER_HZ on Linux
    let services: BTreeMap<String, ServiceUse> = after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or_default();
            (
                name.to_string(),
                ServiceUse {
                    cpu_cores: (a.cpu_ticks.saturating_sub(b.cpu_ticks)) as f64
                        / ticks
                        / run_started.elapsed().as_secs_f64(),
                    rss_mib_end: a.rss_kib as f64 / 1024.0,
                    rss_mib_peak: a.hwm_kib as f64 / 1024.0,
                },
            )
        })
        .collect();

    let end_to_end = if args.e2e {
        Some(check_stored(&args, &shared, &run).await?)
    } else {
        None
    };
    let hist = shared
        .hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| report::histogram());
    let timeline: Vec<Second> = shared
        .per_second
        .lock()
        .map(|ps| {
            ps.values()
                .map(|(s, h)| Second {
                    p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                    ..s.clone()
                })
                .collect()
        })
        .unwrap_or_default();
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let duplicate = shared.duplicate.load(Ordering::Relaxed);
    let report = Report {
        mode: if args.rate.is_some() {
            "open-loop".into()
        } else {
            format!("closed-loop ({} connections)", args.connections)
        },
        url: args.url.clone(),
        batch_size: args.batch,
        gzip: args.gzip,
        duration_secs: measured,
        asked_events_per_sec: args.rate,
        achieved_events_per_sec: (accepted + duplicate) as f64 / measured,
        achieved_requests_per_sec: hist.len() as f64 / measured,
        events_sent: shared.sent.load(Ordering::Relaxed),
        events_accepted: accepted,
        events_duplicate: duplicate,
        events_rejected: shared.rejected.load(Ordering::Relaxed),
        status_counts: shared
            .statuses
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default(),
        transport_errors: shared.transport_errors.load(Ordering::Relaxed),
        latency: report::percentiles(&hist),
        end_to_end,
        services,
        timeline,
    };
    std::fs::create_dir_all(&args.out)?;
    let json_path = args.out.join("report.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    let svg_path = args.out.join("chart.svg");
    report.chart(&svg_path)?;
    print!("{}", report.human());
    println!(
        "report: {} · chart: {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

/// Waits until every accepted eventId of this run is in MongoDB.
async fn check_stored(args: &Args, shared: &Shared, run: &str) -> anyhow::Result<EndToEnd> {
    use mongodb::bson::doc;
    let ids: Vec<String> = shared
        .accepted_ids
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let accepted = ids.len() as u64;
    let client = mongodb::Client::with_uri_str(&args.mongo_url).await?;
    let events = client
        .database(&args.mongo_db)
        .collection::<mongodb::bson::Document>("events");
    // This run's ids share a prefix; the `_id` index answers the range query.
    let filter = doc! {"eventId": {"$gte": format!("{run}-"), "$lt": format!("{run}.")}};
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.e2e_timeout_secs);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = events.count_documents(filter.clone()).await?;
        if stored >= accepted {
            return Ok(EndToEnd {
                accepted_ids: accepted,
                stored,
                missing: 0,
                seconds_until_all_stored: Some(started.elapsed().as_secs_f64()),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(EndToEnd {
        accepted_ids: accepted,
        stored,
        missing: accepted.saturating_sub(stored),
        seconds_until_all_stored: None,
    })
}
