//! The stream backlog as the api sees it: events the worker group has not acknowledged (its lag
//! plus its pending entries, over every partition, in events), read from Redis in the background
//! so no request waits for it. The
//! overload guard trusts these figures only while the monitor's heart beats: it beats on each
//! read that succeeds.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use sluice_http::Heart;
use sluice_shared::config::RedisSettings;

#[derive(Debug, Default)]
pub struct Backlog {
    entries: AtomicU64,
    bytes: AtomicU64,
    reachable: AtomicBool,
}

impl Backlog {
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// The stream's memory in Redis (its estimate), so a backlog of large events is bounded by
    /// bytes, not only by entries.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn set_bytes(&self, bytes: u64) {
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn redis_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub fn set(&self, entries: Option<u64>) {
        match entries {
            Some(n) => {
                self.entries.store(n, Ordering::Relaxed);
                self.reachable.store(true, Ordering::Relaxed);
            }
            None => self.reachable.store(false, Ordering::Relaxed),
        }
    }
}

/// Events the worker group has not acknowledged over every partition (see
/// `sluice_shared::redis::backlog`).
pub async fn read(client: &Client, settings: &RedisSettings) -> anyhow::Result<u64> {
    Ok(sluice_shared::redis::backlog(client, settings)
        .await?
        .events)
}

/// The streams' memory as Redis estimates it, summed over the partitions.
pub async fn read_all_bytes(client: &Client, settings: &RedisSettings) -> anyhow::Result<u64> {
    let mut total = 0;
    for stream in settings.layout().streams() {
        total += read_bytes(client, &stream).await?;
    }
    Ok(total)
}

/// The stream's memory as Redis estimates it (`MEMORY USAGE … SAMPLES 16`: a few nodes sampled,
/// constant work however long the stream is); 0 when there is no stream.
pub async fn read_bytes(client: &Client, stream: &str) -> anyhow::Result<u64> {
    let reply: Value = client
        .custom(
            fred::types::CustomCommand::new_static(
                "MEMORY",
                fred::types::ClusterHash::from(stream),
                false,
            ),
            vec![
                Value::from("USAGE"),
                Value::from(stream),
                Value::from("SAMPLES"),
                Value::from(16),
            ],
        )
        .await?;
    Ok(reply.as_u64().unwrap_or(0))
}

/// Reads the backlog every `every` into `backlog`; a failed read marks Redis unreachable (ingest
/// then refuses with 503) and leaves `heart` unbeaten.
pub fn spawn_monitor(
    client: Client,
    settings: RedisSettings,
    every: Duration,
    backlog: Arc<Backlog>,
    heart: Heart,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Polls failed in a row; every `heal_after` of them the client is rebuilt.
        let mut failures = 0u32;
        let heal_after =
            (Duration::from_secs(3).as_millis() / every.as_millis().max(1)).max(2) as u32;
        loop {
            tick.tick().await;
            let read = async {
                Ok::<_, anyhow::Error>((
                    read(&client, &settings).await?,
                    read_all_bytes(&client, &settings).await?,
                ))
            };
            match read.await {
                Ok((n, bytes)) => {
                    metrics::gauge!("sluice_stream_backlog_events").set(n as f64);
                    metrics::gauge!("sluice_stream_memory_bytes").set(bytes as f64);
                    backlog.set_bytes(bytes);
                    backlog.set(Some(n));
                    heart.beat();
                    failures = 0;
                }
                Err(e) => {
                    if backlog.redis_reachable() {
                        tracing::warn!(error = %e, "cannot read the stream backlog");
                    }
                    backlog.set(None);
                    failures += 1;
                    if failures.is_multiple_of(heal_after) {
                        tracing::warn!(
                            failures,
                            "Redis keeps failing the backlog poll; rebuilding the client"
                        );
                        sluice_shared::redis::heal(&client).await;
                    }
                }
            }
        }
    })
}
