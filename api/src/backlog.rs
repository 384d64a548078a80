//! The stream backlog as the api sees it: entries the worker group has not acknowledged (its lag
//! plus its pending entries), read from Redis in the background so no request waits for it.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;

#[derive(Debug, Default)]
pub struct Backlog {
    entries: AtomicU64,
    reachable: AtomicBool,
}

impl Backlog {
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
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

/// `lag + pending` of `group`; when Redis cannot tell the lag (after deletions), the stream length.
pub async fn read(client: &Client, stream: &str, group: &str) -> anyhow::Result<u64> {
    let groups: Vec<std::collections::HashMap<String, Value>> =
        match client.xinfo_groups(stream).await {
            Ok(g) => g,
            Err(e) if e.details().contains("no such key") => return Ok(0),
            Err(e) => return Err(e.into()),
        };
    let Some(g) = groups
        .iter()
        .find(|g| g.get("name").and_then(|v| v.as_string()).as_deref() == Some(group))
    else {
        // No group yet: every entry is waiting.
        return Ok(client.xlen(stream).await?);
    };
    let pending = g.get("pending").and_then(|v| v.as_u64()).unwrap_or(0);
    let lag = match g.get("lag").and_then(|v| v.as_u64()) {
        Some(lag) => lag,
        None => client.xlen(stream).await?,
    };
    Ok(lag + pending)
}

pub fn spawn_monitor(
    client: Client,
    stream: String,
    group: String,
    every: Duration,
    backlog: Arc<Backlog>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match read(&client, &stream, &group).await {
                Ok(n) => {
                    metrics::gauge!("sluice_stream_backlog_entries").set(n as f64);
                    backlog.set(Some(n));
                }
                Err(e) => {
                    if backlog.redis_reachable() {
                        tracing::warn!(error = %e, "cannot read the stream backlog");
                    }
                    backlog.set(None);
                }
            }
        }
    })
}
