//! Periodic upkeep of the stream beside the consumer loop: trim what every consumer has
//! acknowledged (never an entry still pending or undelivered), remove stale consumers, and refresh
//! the pending, lag and length gauges.
use std::time::Duration;

use fred::prelude::*;
use sluice_shared::config::Settings;
use tokio::sync::watch;

use crate::stream;

/// One round of upkeep over every partition; returns how many entries were trimmed.
pub async fn run_once(redis: &Client, settings: &Settings, me: &str) -> anyhow::Result<u64> {
    let mut trimmed = 0;
    for (p, key) in settings.redis.layout().streams().iter().enumerate() {
        trimmed += run_partition(redis, settings, me, key, p).await?;
    }
    Ok(trimmed)
}

async fn run_partition(
    redis: &Client,
    settings: &Settings,
    me: &str,
    key: &str,
    p: usize,
) -> anyhow::Result<u64> {
    let group = &settings.redis.group;
    let state = stream::group_state(redis, key, group).await?;
    let backlog = sluice_shared::redis::group_backlog(redis, key, group).await?;
    let partition = p.to_string();
    metrics::gauge!("sluice_worker_pending_entries", "partition" => partition.clone())
        .set(backlog.pending as f64);
    metrics::gauge!("sluice_stream_length_entries", "partition" => partition.clone())
        .set(backlog.length as f64);
    metrics::gauge!("sluice_worker_lag_entries", "partition" => partition).set(backlog.lag as f64);
    let trimmed = match stream::trim_floor(&state) {
        Some(floor) => stream::trim_below(redis, key, &floor).await?,
        None => 0,
    };
    if trimmed > 0 {
        metrics::counter!("sluice_stream_trimmed_entries_total").increment(trimmed);
    }
    let removed = stream::remove_stale_consumers(
        redis,
        key,
        group,
        me,
        Duration::from_millis(settings.worker.stale_consumer_idle_ms),
    )
    .await?;
    if !removed.is_empty() {
        tracing::info!(consumers = ?removed, "removed stale consumers with nothing pending");
    }
    Ok(trimmed)
}

pub fn spawn(
    redis: Client,
    settings: Settings,
    me: String,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_millis(settings.worker.maintenance_interval_ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = run_once(&redis, &settings, &me).await {
                tracing::warn!(error = ?e, "stream maintenance failed");
            }
        }
    })
}
