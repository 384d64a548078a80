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
