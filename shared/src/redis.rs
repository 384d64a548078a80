//! Redis clients configured the same way in every service: bounded command time, endless
//! reconnection, and consumer-group creation that treats an existing group as success.
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;

use crate::config::RedisSettings;

fn builder(settings: &RedisSettings) -> anyhow::Result<Builder> {
    let config = Config::from_url(&settings.url)
        .with_context(|| format!("invalid redis.url `{}`", settings.url))?;
    let mut builder = Builder::from_config(config);
    let timeout = settings.command_timeout();
    builder
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_millis(1_000);
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(builder)
}

/// A connected client. Fails if Redis is unreachable at start; reconnects forever after.
pub async fn connect(settings: &RedisSettings) -> anyhow::Result<Client> {
    let client = builder(settings)?.build()?;
    client
        .init()
        .await
        .with_context(|| format!("cannot connect to Redis at {}", settings.url))?;
    Ok(client)
}

/// A client of a Redis that serves: retries (with `health::startup_backoff`) while Redis is not
/// up yet or still loading its dataset (`LOADING` to every command, for as long as its AOF takes
/// to replay), and returns once it answered `PING` with `PONG`. An invalid URL fails at once.
/// What services use at start-up, so that they wait rather than exit.
pub async fn connect_when_ready(settings: &RedisSettings) -> anyhow::Result<Client> {
    builder(settings)?;
    Ok(crate::health::retry_until_ok("redis", || async {
        let client = connect(settings).await?;
        match ping(&client).await {
            Ok(()) => Ok(client),
            Err(e) => {
                let _ = client.quit().await;
                Err(e)
            }
        }
    })
    .await)
}

/// As `connect_when_ready`, for blocking reads.
pub async fn connect_blocking_when_ready(settings: &RedisSettings) -> anyhow::Result<Client> {
    let mut s = settings.clone();
    s.command_timeout_ms = s.command_timeout_ms.max(10_000);
    connect_when_ready(&s).await
}

/// A client for blocking reads: no default timeout shorter than the block itself.
pub async fn connect_blocking(settings: &RedisSettings) -> anyhow::Result<Client> {
    let mut s = settings.clone();
    s.command_timeout_ms = s.command_timeout_ms.max(10_000);
    connect(&s).await
}

pub async fn connect_subscriber(
    settings: &RedisSettings,
) -> anyhow::Result<fred::clients::SubscriberClient> {
    let client = builder(settings)?.build_subscriber_client()?;
    client
        .init()
        .await
        .with_context(|| format!("cannot connect to Redis at {}", settings.url))?;
    Ok(client)
}

/// Creates the consumer group (and the stream) if missing. Starts at id 0 so entries queued before
/// any worker ran are read too.
pub async fn ensure_group(client: &Client, stream: &str, group: &str) -> anyhow::Result<()> {
    match client
        .xgroup_create::<Value, _, _, _>(stream, group, "0", true)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
        Err(e) => Err(e).context("XGROUP CREATE failed"),
    }
}

pub async fn ping(client: &Client) -> anyhow::Result<()> {
    client.ping::<Value>(None).await.context("Redis PING")?;
    Ok(())
}

/// Where a consumer group stands: entries delivered but unacknowledged (`pending`), entries not yet
/// delivered (`lag`), and the stream's length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupBacklog {
    pub pending: u64,
    pub lag: u64,
    pub length: u64,
    pub group_exists: bool,
}

impl GroupBacklog {
    /// What the group has not acknowledged yet.
    pub fn total(&self) -> u64 {
        self.pending + self.lag
    }
}

/// Reads the group's backlog. Redis's own `lag` can drift (its read counter is not kept exact
/// across every kind of read, and is NULL after some deletions), so: no lag when the group has
/// been handed the stream's last entry, and never more lag than the stream has entries.
pub async fn group_backlog(
    client: &Client,
    stream: &str,
    group: &str,
) -> anyhow::Result<GroupBacklog> {
    let info: std::collections::HashMap<String, Value> =
        match client.xinfo_stream(stream, false, None).await {
            Ok(i) => i,
            Err(e) if e.details().contains("no such key") => return Ok(GroupBacklog::default()),
            Err(e) => return Err(e).context("XINFO STREAM"),
        };
    let length = info.get("length").and_then(|v| v.as_u64()).unwrap_or(0);
    let last_generated = info.get("last-generated-id").and_then(|v| v.as_string());
    let groups: Vec<std::collections::HashMap<String, Value>> =
        client.xinfo_groups(stream).await.context("XINFO GROUPS")?;
    let Some(g) = groups
        .iter()
        .find(|g| g.get("name").and_then(|v| v.as_string()).as_deref() == Some(group))
    else {
        return Ok(GroupBacklog {
            pending: 0,
            lag: length,
            length,
            group_exists: false,
        });
    };
    let pending = g.get("pending").and_then(|v| v.as_u64()).unwrap_or(0);
    let last_delivered = g.get("last-delivered-id").and_then(|v| v.as_string());
    let lag = if last_delivered.is_some() && last_delivered == last_generated {
        0
    } else {
        g.get("lag")
            .and_then(|v| v.as_u64())
            .unwrap_or(length)
            .min(length)
    };
    Ok(GroupBacklog {
        pending,
        lag,
        length,
        group_exists: true,
    })
}
