//! Redis clients configured the same way in every service: bounded command time, endless
//! reconnection, and consumer-group creation that treats an existing group as success.
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;

use crate::config::RedisSettings;

/// `redis.url` as fred's config: one URL, or a Redis Cluster's seed nodes as a comma-separated
/// list of URLs (the first one's credentials and TLS apply to all).
pub fn config(url: &str) -> anyhow::Result<Config> {
    let invalid = || format!("invalid redis.url `{url}`");
    let urls: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.len() < 2 {
        return Config::from_url(url).with_context(invalid);
    }
    let mut config = Config::from_url(urls[0]).with_context(invalid)?;
    let mut hosts = Vec::with_capacity(urls.len());
    for u in &urls {
        match Config::from_url(u).with_context(invalid)?.server {
            ServerConfig::Centralized { server } => hosts.push(server),
            ServerConfig::Clustered { hosts: more, .. } => hosts.extend(more),
            _ => anyhow::bail!("{}: a seed list holds plain redis:// URLs", invalid()),
        }
    }
    config.server = ServerConfig::Clustered {
        hosts,
        policy: Default::default(),
    };
    Ok(config)
}

/// Rebuilds a client after Redis kept failing it: every connection is replaced (on a Redis Cluster
/// the reconnection reads the slot map again). A failover (a master killed, its
/// replica promoted) once left a client failing every command for minutes although the cluster
/// was healthy again; callers that see failures persist call this. Errors are logged, not
/// returned: the next command tells.
pub async fn heal(client: &Client) {
    let within = Duration::from_secs(5);
    match tokio::time::timeout(within, client.force_reconnection()).await {
        Ok(Ok(())) => tracing::info!("reconnected to Redis"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot reconnect to Redis"),
        Err(_) => tracing::warn!("reconnecting to Redis timed out"),
    }
    metrics::counter!("sluice_redis_heals_total").increment(1);
}

/// Whether `redis.url` names a Redis Cluster.
pub fn is_cluster(url: &str) -> bool {
    config(url).is_ok_and(|c| c.server.is_clustered())
}

fn builder(settings: &RedisSettings) -> anyhow::Result<Builder> {
    let config = config(&settings.url)?;
    let mut builder = Builder::from_config(config);
    let timeout = settings.command_timeout();
    builder
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_millis(1_000);
            c.internal_command_timeout = timeout;
            // Two, not one: a command that meets an ASK (its slot being migrated by a reshard)
            // is sent again after ASKING, which takes an attempt left; with one, fred 10 failed
            // the command and ended its routing task (see `supervise`). A command whose
            // connection dropped may be written twice: the enqueue script answers the second
            // as a duplicate, so nothing is queued twice.
            c.max_command_attempts = 2;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(builder)
}

/// A connected client. Fails if Redis is unreachable at start; reconnects forever after.
pub async fn connect(settings: &RedisSettings) -> anyhow::Result<Client> {
    let client = builder(settings)?.build()?;
    let task = client
        .init()
        .await
        .with_context(|| format!("cannot connect to Redis at {}", settings.url))?;
    supervise(client.clone(), task);
    Ok(client)
}

/// A client whose connection (and routing task) is opened on the current runtime, without waiting
/// for it: commands wait for the connection. For a thread that serves requests and wants its own
/// connection; `connect` has checked the URL and Redis at start-up.
pub fn connect_here(settings: &RedisSettings) -> anyhow::Result<Client> {
    let client = builder(settings)?.build()?;
    let task = client.connect();
    supervise(client.clone(), task);
    Ok(client)
}

/// Keeps a client's routing task alive. fred runs one task per client that writes every command
/// and reads every reply; an error it does not expect (seen: a redirection it could not follow
/// during a reshard, "Max attempts reached") ends that task for good, and from then on every
/// command of the client waits for its timeout, `force_reconnection` included. A clean-clone run
/// of the cluster suite saw the api answer 503 for minutes that way after a reshard. So the task
/// is started again (`connect`, which keeps the client's configuration and, for a subscriber, its
/// subscriptions: they are renewed on the reconnection), unless the client was closed on purpose
/// (`quit`, which ends the task with Ok or a canceled error).
fn supervise<C>(client: C, task: fred::types::ConnectHandle)
where
    C: ClientLike + Clone + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut task = task;
        loop {
            let error = match task.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) if e.is_canceled() => return,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                client = client.id(),
                error = %error,
                "the Redis client's routing task ended; starting it again"
            );
            metrics::counter!("sluice_redis_router_restarts_total").increment(1);
            tokio::time::sleep(Duration::from_millis(100)).await;
            task = client.connect();
        }
    });
}

/// A client of a Redis that serves: retries (with `health::startup_backoff`) while Redis is not
/// up yet or still loading its dataset (`LOADING` to every command, for as long as its AOF takes
/// to replay), and returns once it answered `PING` with `PONG`. An invalid URL fails at once.
/// What services use at start-up, so that they wait rather than exit.
pub async fn connect_when_ready(settings: &RedisSettings) -> anyhow::Result<Client> {
    builder(settings)?;
    Ok(crate::startup::retry_until_ok("redis", || async {
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
    let task = client
        .init()
        .await
        .with_context(|| format!("cannot connect to Redis at {}", settings.url))?;
    supervise(client.clone(), task);
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

/// Creates the consumer group on every partition's stream.
pub async fn ensure_groups(client: &Client, settings: &RedisSettings) -> anyhow::Result<()> {
    for stream in settings.layout().streams() {
        ensure_group(client, &stream, &settings.group).await?;
    }
    Ok(())
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
    /// Entries ever added to the stream (as far as the group's counters tell).
    pub entries_added: u64,
    /// Events ever queued in the partition (its meta hash), when the enqueue script kept count.
    pub queued_events: Option<u64>,
}

impl GroupBacklog {
    /// What the group has not acknowledged yet.
    pub fn total(&self) -> u64 {
        self.pending + self.lag
    }
}

/// Reads the group's backlog without `XINFO STREAM` (which answers the first and last entries
/// whole, and an entry packs up to thousands of events): XLEN, XINFO GROUPS, and the partition's
/// meta hash the enqueue script keeps (its newest entry id and the events queued). Redis's own
/// `lag` can drift (its read counter is not kept exact across every kind of read, and is NULL
/// after some deletions), so: no lag when the group has been handed the newest entry, and never
/// more lag than the stream has entries.
pub async fn group_backlog(
    client: &Client,
    stream: &str,
    group: &str,
) -> anyhow::Result<GroupBacklog> {
    let length: u64 = client.xlen(stream).await.context("XLEN")?;
    let groups: Vec<std::collections::HashMap<String, Value>> =
        match client.xinfo_groups(stream).await {
            Ok(g) => g,
            Err(e) if e.details().contains("no such key") => return Ok(GroupBacklog::default()),
            Err(e) => return Err(e).context("XINFO GROUPS"),
        };
    let (queued_events, last_generated): (Option<u64>, Option<String>) =
        match crate::partition::meta_of_stream(stream) {
            Some(meta) => client
                .hmget(meta, vec!["events", "last"])
                .await
                .context("HMGET the partition's meta")?,
            None => (None, None),
        };
    let Some(g) = groups
        .iter()
        .find(|g| g.get("name").and_then(|v| v.as_string()).as_deref() == Some(group))
    else {
        return Ok(GroupBacklog {
            pending: 0,
            lag: length,
            length,
            group_exists: false,
            entries_added: length,
            queued_events,
        });
    };
    let pending = g.get("pending").and_then(|v| v.as_u64()).unwrap_or(0);
    let last_delivered = g.get("last-delivered-id").and_then(|v| v.as_string());
    let reported_lag = g.get("lag").and_then(|v| v.as_u64());
    let lag = if last_delivered.is_some() && last_delivered == last_generated {
        0
    } else {
        reported_lag.unwrap_or(length).min(length)
    };
    let entries_read = g.get("entries-read").and_then(|v| v.as_u64());
    let entries_added = match (entries_read, reported_lag) {
        (Some(read), Some(lag)) => read + lag,
        _ => length,
    };
    Ok(GroupBacklog {
        pending,
        lag,
        length,
        group_exists: true,
        entries_added,
        queued_events,
    })
}

/// The backlog over every partition, in entries and in events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Entries not acknowledged yet (lag + pending), all partitions.
    pub entries: u64,
    /// Events in them: entries × the partition's events per entry over its life (each entry
    /// carries a call's events; the script counts them in `<prefix>:{p<N>}:meta`).
    pub events: u64,
    pub pending: u64,
    pub lag: u64,
    /// Entries the streams hold.
    pub length: u64,
    /// Whether every partition's group exists.
    pub groups_exist: bool,
}

/// Reads every partition's group backlog (XLEN, XINFO GROUPS and HMGET per partition).
pub async fn backlog(client: &Client, settings: &RedisSettings) -> anyhow::Result<Backlog> {
    let layout = settings.layout();
    let mut total = Backlog {
        groups_exist: true,
        ..Backlog::default()
    };
    for p in layout.all() {
        let b = group_backlog(client, &layout.stream(p), &settings.group).await?;
        let per_entry = match (b.queued_events, b.entries_added) {
            (Some(q), added) if added > 0 => (q as f64 / added as f64).max(1.0),
            _ => 1.0,
        };
        total.entries += b.total();
        total.events += (b.total() as f64 * per_entry).round() as u64;
        total.pending += b.pending;
        total.lag += b.lag;
        total.length += b.length;
        total.groups_exist &= b.group_exists;
    }
    Ok(total)
}

/// Adds `ids` to (or removes them from) an account's suppressed set
/// (`<prefix>:{a<account>}:suppressed`, what ingest reads), then announces the account on
/// `SUPPRESSION_CHANGES_CHANNEL` so every api instance reads the set again.
pub async fn change_suppressed(
    client: &Client,
    prefix: &str,
    account: &str,
    ids: &[String],
    add: bool,
) -> anyhow::Result<()> {
    if !ids.is_empty() {
        let key = crate::names::suppressed_key(prefix, account);
        if add {
            client.sadd::<i64, _, _>(key, ids.to_vec()).await?;
        } else {
            client.srem::<i64, _, _>(key, ids.to_vec()).await?;
        }
    }
    client
        .publish::<Value, _, _>(crate::names::SUPPRESSION_CHANGES_CHANNEL, account)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_list_is_a_cluster() {
        let c = config("redis://127.0.0.1:7001,redis://127.0.0.1:7002").unwrap();
        match c.server {
            ServerConfig::Clustered { hosts, .. } => assert_eq!(hosts.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(is_cluster(
            "redis-cluster://127.0.0.1:7001?node=127.0.0.1:7002"
        ));
        assert!(!is_cluster("redis://127.0.0.1:6380"));
        assert!(config("redis://127.0.0.1:7001,::not a url").is_err());
    }
}
