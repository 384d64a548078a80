//! Typed, layered settings: built-in defaults → an optional TOML file (`SLUICE_CONFIG`, or
//! `sluice.toml` in the working directory) → `SLUICE_*` environment variables, with `__` between
//! levels (`SLUICE_REDIS__URL`, `SLUICE_API__PORT`).
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Settings {
    pub redis: RedisSettings,
    pub postgres: PostgresSettings,
    pub mongo: MongoSettings,
    pub api: ApiSettings,
    pub worker: WorkerSettings,
    pub auth: AuthSettings,
    pub analytics: AnalyticsSettings,
    pub sources: SourcesSettings,
    pub schemas: SchemasSettings,
    pub rules: RulesSettings,
    pub privacy: PrivacySettings,
}

/// Retention, regulations and suppression (docs/PRIVACY.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PrivacySettings {
    /// Days an account's events are kept (by their `timestamp`) when it set nothing.
    pub events_days: u32,
    /// Days dead letters are kept (by `failedAt`).
    pub dead_letters_days: u32,
    /// Days quarantined events are kept (by their `timestamp`).
    pub quarantine_days: u32,
    /// Days anomalies are kept (by `detectedAt`).
    pub anomalies_days: u32,
    /// The longest retention an account may set, in days.
    pub max_days: u32,
    /// How often a worker applies retention to every account.
    pub retention_interval_secs: u64,
    /// How often a worker looks for a regulation to carry out.
    pub regulation_poll_ms: u64,
    /// A regulation a worker took is taken again by another after this long without progress
    /// (its worker died).
    pub regulation_lease_secs: u64,
    /// How long an api instance holds an account's suppressed users before reading them again,
    /// announcements aside (a missed one heals).
    pub suppression_refresh_secs: u64,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            events_days: 395,
            dead_letters_days: 30,
            quarantine_days: 30,
            anomalies_days: 90,
            max_days: 3650,
            retention_interval_secs: 900,
            regulation_poll_ms: 1_000,
            regulation_lease_secs: 60,
            suppression_refresh_secs: 60,
        }
    }
}

/// Rules, anomalies, channels and the live WebSocket (docs/RULES.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RulesSettings {
    /// Rules one account may hold.
    pub max_per_account: u64,
    /// How often a worker reads every rule again, announcements aside (a missed one heals).
    pub reload_secs: u64,
    /// How often a worker judges the conditions that can hold on absence, and reads which
    /// accounts are tailed.
    pub tick_ms: u64,
    /// Batches of stored events waiting for evaluation in a worker; more are not counted by rules.
    pub queue_batches: usize,
    /// Tail events a live client receives a second at most; the rest are counted as skipped.
    pub live_events_per_sec: u32,
    /// Messages waiting per live client; a client that lets more pile up is dropped.
    pub live_client_buffer: usize,
    /// Seconds between pings to a live client (silent for three, it is closed).
    pub live_ping_secs: u64,
    /// Attempts to deliver an anomaly to a channel before it is recorded as failed.
    pub delivery_max_attempts: u32,
    /// The first retry's wait; it doubles up to `delivery_backoff_cap_ms`.
    pub delivery_backoff_ms: u64,
    pub delivery_backoff_cap_ms: u64,
    /// The longest `Retry-After` (a 429's) honoured as given.
    pub delivery_max_retry_after_secs: u64,
    /// How long one delivery may take.
    pub delivery_timeout_ms: u64,
}

impl Default for RulesSettings {
    fn default() -> Self {
        Self {
            max_per_account: 100,
            reload_secs: 30,
            tick_ms: 1_000,
            queue_batches: 1_000,
            live_events_per_sec: 20,
            live_client_buffer: 256,
            live_ping_secs: 15,
            delivery_max_attempts: 8,
            delivery_backoff_ms: 1_000,
            delivery_backoff_cap_ms: 60_000,
            delivery_max_retry_after_secs: 300,
            delivery_timeout_ms: 10_000,
        }
    }
}

/// Tracking plans (docs/TRACKING_PLANS.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SchemasSettings {
    /// Schema versions an account may publish, all types together.
    pub max_per_account: i64,
    /// Bytes of one schema.
    pub max_schema_bytes: usize,
    /// How long an api instance uses a plan before reading it again, announcements aside.
    pub refresh_secs: u64,
}

impl Default for SchemasSettings {
    fn default() -> Self {
        Self {
            max_per_account: 200,
            max_schema_bytes: 64 * 1024,
            refresh_secs: 60,
        }
    }
}

/// The intakes for other senders: the Segment / RudderStack HTTP API, PostHog capture, signed
/// webhooks (docs/SOURCES.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SourcesSettings {
    /// Bytes of one Segment message (Segment's own limit: 32 KB).
    pub segment_max_message_bytes: usize,
    /// Bytes of one Segment request, decompressed (Segment's own limit: 500 KB).
    pub segment_max_batch_bytes: usize,
    /// Bytes of one PostHog request, decompressed and decoded.
    pub posthog_max_body_bytes: usize,
    /// Messages or events in one request of either SDK intake.
    pub max_messages: usize,
    /// Bodies read at once before their key is known (the key travels in the body); more are
    /// answered 503 at once, so unauthenticated senders cannot hold the api's memory.
    pub max_unauthenticated_reads: usize,
    /// Bytes of one webhook delivery (it becomes one event's `properties`).
    pub webhook_max_body_bytes: usize,
    /// How far a webhook's signed timestamp may be from now, either way.
    pub webhook_tolerance_secs: i64,
    /// After a rotation, how long the previous secret still verifies.
    pub rotation_grace_secs: i64,
    /// How long an api instance caches a webhook source (a rotation or deletion on another
    /// instance reaches this one within it).
    pub source_cache_ttl_ms: u64,
    /// Webhook sources an account may hold.
    pub max_per_account: i64,
}

impl Default for SourcesSettings {
    fn default() -> Self {
        Self {
            segment_max_message_bytes: 32 * 1024,
            segment_max_batch_bytes: 500 * 1024,
            posthog_max_body_bytes: 5 * 1024 * 1024,
            max_messages: 2_500,
            max_unauthenticated_reads: 64,
            webhook_max_body_bytes: 64 * 1024,
            webhook_tolerance_secs: 300,
            rotation_grace_secs: 24 * 3600,
            source_cache_ttl_ms: 1_000,
            max_per_account: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AnalyticsSettings {
    pub host: String,
    pub port: u16,
    /// How long an answer is served from the cache.
    pub cache_ttl_ms: u64,
    /// The pipeline view is live: it is cached for at most this long.
    pub pipeline_cache_ttl_ms: u64,
    /// Upper bound of the cache's memory (estimated from the answers' JSON size).
    pub cache_max_bytes: u64,
    /// Users listed in `topUsers`.
    pub top_users: usize,
    /// After readiness turns off at shutdown, how long the service keeps serving before it closes
    /// its listener (load balancers polling `/api/ready` stop sending meanwhile).
    pub drain_gap_ms: u64,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 3002,
            cache_ttl_ms: 10_000,
            pipeline_cache_ttl_ms: 1_000,
            cache_max_bytes: 64 * 1024 * 1024,
            top_users: 10,
            drain_gap_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// `dev` lets a service start without a JWT secret (using a fixed, public one); any other
    /// profile refuses to.
    pub profile: String,
    /// HS256 key shared by the api (which signs) and analytics (which verifies); 32 bytes or more.
    pub jwt_secret: Option<SecretString>,
    pub jwt_ttl_secs: u64,
    /// Register and login calls per client IP per minute.
    pub login_per_minute: u32,
    /// Default ingest quota of a key, in events per second and burst (a key may set its own).
    pub key_quota_per_sec: u32,
    pub key_quota_burst: u32,
    /// Active (unrevoked) keys an account may hold.
    pub max_active_keys: i64,
    /// The dashboard's origin, the only one CORS lets call the api from a browser.
    pub cors_origin: String,
    /// Password hashes (argon2id, about 19 MiB each) computed at once; more wait, then get 503.
    pub max_concurrent_password_hashes: usize,
    /// How long a register or login waits for a hashing slot before it is refused (503).
    pub password_hash_wait_ms: u64,
    /// How often addresses idle long enough to have a full login allowance again are dropped
    /// from the per-IP limiter, so rotating addresses cannot grow it without bound.
    pub login_limiter_prune_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            profile: "production".into(),
            jwt_secret: None,
            jwt_ttl_secs: 24 * 3600,
            login_per_minute: 100,
            key_quota_per_sec: 50_000,
            key_quota_burst: 100_000,
            max_active_keys: 20,
            cors_origin: "http://127.0.0.1:8080".into(),
            max_concurrent_password_hashes: 4,
            password_hash_wait_ms: 1_000,
            login_limiter_prune_secs: 60,
        }
    }
}

/// Used only under the `dev` profile when no secret is configured; never in production.
const DEV_JWT_SECRET: &str = "sluice-dev-profile-jwt-secret-not-for-production-use";

/// What to tell an operator whose secret is missing, short or copied from the repository.
const GENERATE_SECRET: &str =
    "generate one with `head -c 48 /dev/urandom | base64` and set SLUICE_AUTH__JWT_SECRET";

impl AuthSettings {
    /// The JWT secret, or why a service that signs or checks tokens must not start.
    pub fn jwt_secret(&self) -> Result<SecretString, SettingsError> {
        use secrecy::ExposeSecret;
        match &self.jwt_secret {
            Some(s) if self.profile != "dev" && published::secret(s.expose_secret()) => {
                Err(SettingsError::Invalid {
                    setting: "auth.jwt_secret",
                    reason: format!(
                        "is a placeholder published in the repository (deploy/, docs/ or the dev \
                         profile's default), so anyone can forge tokens with it; {GENERATE_SECRET}"
                    ),
                })
            }
            Some(s) if s.expose_secret().len() >= 32 => Ok(s.clone()),
            Some(_) if self.profile != "dev" => Err(SettingsError::Invalid {
                setting: "auth.jwt_secret",
                reason: format!("must be at least 32 bytes; {GENERATE_SECRET}"),
            }),
            None if self.profile != "dev" => Err(SettingsError::Invalid {
                setting: "auth.jwt_secret",
                reason: format!("is required outside the dev profile; {GENERATE_SECRET}"),
            }),
            _ => Ok(SecretString::from(DEV_JWT_SECRET)),
        }
    }
}

/// The secrets anyone can read in the repository: the placeholders of the deployment files and
/// the docs, read from those files at build time so the list cannot drift from them.
mod published {
    /// Files whose values are placeholders (`KEY=value`, `key: value`, URL passwords).
    const FILES: [&str; 4] = [
        include_str!("../../deploy/k8s/config.yaml"),
        include_str!("../../deploy/.env.example"),
        include_str!("../../deploy/docker-compose.yml"),
        include_str!("../../docs/DEPLOY.md"),
    ];
    /// Words placeholders are made of: an edited copy (`change-me-…-xxxxy`) is still one.
    const MARKERS: [&str; 3] = ["change-me", "replace-me", "changeme"];

    /// The value of each `KEY=value` or `key: value` line, and the password of each URL in one.
    fn values() -> impl Iterator<Item = &'static str> {
        FILES.into_iter().flat_map(str::lines).flat_map(|line| {
            let line = line.trim().trim_start_matches("- ");
            let value = match (line.find('='), line.find(": ")) {
                (Some(e), Some(c)) if c < e => &line[c + 2..],
                (Some(e), _) => &line[e + 1..],
                (None, Some(c)) => &line[c + 2..],
                (None, None) => "",
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            [Some(value), super::url_password(value)]
                .into_iter()
                .flatten()
                .filter(|v| !v.is_empty())
        })
    }

    /// True when `secret` is (or is made from) a placeholder the repository publishes.
    pub(super) fn secret(secret: &str) -> bool {
        let lower = secret.to_ascii_lowercase();
        secret == super::DEV_JWT_SECRET
            || MARKERS.iter().any(|m| lower.contains(m))
            || values().any(|v| v == secret)
            // A long secret found anywhere in those files was copied from them.
            || (secret.len() >= 16 && FILES.iter().any(|f| f.contains(secret)))
    }
}

/// The password of a `scheme://user:password@host/…` URL.
fn url_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let password = &userinfo[userinfo.find(':')? + 1..];
    (!password.is_empty()).then_some(password)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// One server (`redis://host:port`), or a Redis Cluster: its seed nodes as a comma-separated
    /// list of URLs (`redis://127.0.0.1:7001,redis://127.0.0.1:7002,…`) or fred's
    /// `redis-cluster://host:port?node=host:port&…`.
    pub url: String,
    /// What every Sluice key starts with: streams `<prefix>:{p<N>}:events`.
    pub key_prefix: String,
    /// How many streams (P) the events are spread over, by a hash of `accountId:eventId`.
    /// Changing it on a live system: docs/PERFORMANCE.md, "Changing the partition count".
    pub partitions: u16,
    /// The consumer group of the workers, on every stream.
    pub group: String,
    /// How long one Redis command may take before the caller gives up (and answers 503).
    pub command_timeout_ms: u64,
    /// Replicas that must have an enqueue before it is answered 202 (`WAIT`); 0 answers once the
    /// master has it (replication is asynchronous: docs/RELIABILITY.md states what a failover can
    /// lose then).
    pub wait_replicas: u32,
    /// How long `WAIT` may take; fewer replicas than `wait_replicas` by then is a 503.
    pub wait_timeout_ms: u64,
    /// The one stream of before partitioning: refused when set, so an old configuration fails
    /// at start instead of being ignored.
    #[serde(default)]
    pub stream_key: Option<String>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6380".into(),
            key_prefix: crate::names::KEY_PREFIX.into(),
            partitions: 8,
            group: crate::names::CONSUMER_GROUP.into(),
            command_timeout_ms: 2_000,
            wait_replicas: 0,
            wait_timeout_ms: 100,
            stream_key: None,
        }
    }
}

impl RedisSettings {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    pub fn layout(&self) -> crate::partition::Partitions {
        crate::partition::Partitions::new(self.key_prefix.clone(), self.partitions.max(1))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PostgresSettings {
    pub url: SecretString,
    pub max_connections: u32,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5433/sluice"),
            max_connections: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MongoSettings {
    pub url: String,
    pub database: String,
}

impl Default for MongoSettings {
    fn default() -> Self {
        Self {
            url: "mongodb://127.0.0.1:27018/?directConnection=true".into(),
            database: crate::names::MONGO_DATABASE.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    pub host: String,
    pub port: u16,
    /// How long an (account, eventId) pair is remembered in Redis for dedup: at least this long,
    /// and at most twice (the dedup sets of a partition expire whole, one per window).
    pub dedup_window_secs: u64,
    /// Events the worker group has not acknowledged (lag + pending, over every partition) above
    /// which ingest answers 503.
    pub max_backlog: u64,
    /// Group commit: how long a partition's enqueue waits for more events to share its Redis
    /// call, while an earlier call of that partition is still in flight (an idle partition sends
    /// at once).
    pub commit_max_wait_us: u64,
    /// Group commit: the most events one Redis call carries (a request's events are never split,
    /// so one call may exceed it by one request).
    pub commit_max_events: usize,
    /// Group commit: calls of one partition in flight at once; a request that finds them all in
    /// flight waits (up to `commit_max_wait_us`) for company.
    pub commit_max_in_flight: usize,
    /// How often the backlog is read from Redis.
    pub backlog_poll_ms: u64,
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
    /// JSON values (containers and scalars) one event's `properties` may hold (400 above it).
    pub max_event_values: usize,
    /// JSON values all the events of one request may hold together (413 above it).
    pub max_request_values: usize,
    /// Bytes the stream may hold (Redis's own estimate, `MEMORY USAGE`) above which ingest
    /// answers 503 `overloaded`, whatever the number of entries.
    pub max_backlog_bytes: u64,
    /// How long a valid key stays in the in-process cache (revocation evicts it at once).
    pub key_cache_ttl_secs: u64,
    /// How long an unknown key stays cached as unknown, so a flood of bad keys never reaches PostgreSQL.
    pub negative_key_cache_ttl_secs: u64,
    /// How often `lastUsedAt` is written for the keys used since the last write.
    pub last_used_flush_secs: u64,
    pub workers: usize,
    /// Proxies (CIDRs, a list or a comma-separated string) whose `X-Forwarded-For` is believed:
    /// the client is the right-most hop that is not one of them. Empty: trust no header.
    #[serde(deserialize_with = "comma_list")]
    pub trusted_proxies: Vec<String>,
    /// API-key lookups in PostgreSQL at once (cache misses); more are answered 503 at once, so a
    /// flood of unknown keys cannot take the whole pool.
    pub key_lookup_concurrency: usize,
    /// How long a client may take to send a request body, from the end of its headers (408 after).
    pub body_read_timeout_secs: u64,
    /// How long Redis holds a key's owner as fresh (every api instance shares it).
    pub redis_key_cache_ttl_secs: u64,
    /// How long Redis remembers that a key is unknown.
    pub redis_negative_key_cache_ttl_secs: u64,
    /// How long a revoked key's tombstone stays in Redis; at least `key_stale_if_error_secs`.
    pub key_tombstone_ttl_secs: u64,
    /// While PostgreSQL is unreachable, a key confirmed within this many seconds keeps working
    /// (stale-if-error); 0 turns that off.
    pub key_stale_if_error_secs: u64,
    /// After readiness turns off at shutdown, how long the api keeps serving before it closes its
    /// listener (load balancers polling `/api/ready` stop sending meanwhile).
    pub drain_gap_ms: u64,
}

/// A list given either as a list (TOML) or as one comma-separated string (an env variable).
fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 3001,
            dedup_window_secs: 600,
            max_backlog: 500_000,
            commit_max_wait_us: 1_000,
            commit_max_events: 512,
            commit_max_in_flight: 1,
            backlog_poll_ms: 250,
            max_event_bytes: 64 * 1024,
            max_batch_bytes: 5 * 1024 * 1024,
            max_batch_events: 1000,
            max_event_values: crate::event::MAX_EVENT_VALUES,
            max_request_values: 200_000,
            max_backlog_bytes: 1024 * 1024 * 1024,
            key_cache_ttl_secs: 60,
            negative_key_cache_ttl_secs: 5,
            last_used_flush_secs: 10,
            workers: 0,
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1/128".into()],
            key_lookup_concurrency: 4,
            body_read_timeout_secs: 30,
            redis_key_cache_ttl_secs: 300,
            redis_negative_key_cache_ttl_secs: 30,
            key_tombstone_ttl_secs: 3_600,
            key_stale_if_error_secs: 3_600,
            drain_gap_ms: 2_000,
        }
    }
}

impl ApiSettings {
    pub fn backlog_poll(&self) -> Duration {
        Duration::from_millis(self.backlog_poll_ms)
    }
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs)
    }
    pub fn drain_gap(&self) -> Duration {
        Duration::from_millis(self.drain_gap_ms)
    }
}

impl AnalyticsSettings {
    pub fn drain_gap(&self) -> Duration {
        Duration::from_millis(self.drain_gap_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WorkerSettings {
    pub host: String,
    pub port: u16,
    /// Stable name of this consumer in the group; defaults to the host name.
    pub consumer_name: Option<String>,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    /// Deliveries (read from XPENDING) after which an entry is poison: dead-lettered and acked.
    pub max_deliveries: u64,
    /// How often entries left pending by other consumers are looked for (XAUTOCLAIM).
    pub claim_interval_ms: u64,
    /// How long an entry must have been idle in another consumer's hands before it is claimed.
    pub claim_min_idle_ms: u64,
    /// How often the stream is trimmed below its oldest unacknowledged entry, stale consumers
    /// removed, and the pending and lag gauges refreshed.
    pub maintenance_interval_ms: u64,
    /// A consumer with nothing pending and idle this long is removed from the group.
    pub stale_consumer_idle_ms: u64,
    /// How long shutdown may take to flush and acknowledge the batch in hand.
    pub shutdown_deadline_ms: u64,
    /// Members kept in each per-hour and per-day top-users set.
    pub top_cap: usize,
    /// How often the rollups of the batches flushed meanwhile are written, as one bulk write.
    pub rollup_interval_ms: u64,
    /// Events whose `timestamp` is more than this many days before their receipt are stored but
    /// counted in no aggregate (analytics' longest range is 7 days; this bounds the rollup keys
    /// one tenant can create).
    pub rollup_max_age_days: u64,
    /// Events stamped more than this far after their receipt are stored but not counted.
    pub rollup_max_future_secs: u64,
    /// How often suspect rollup buckets are recomputed from the stored events.
    pub reconcile_interval_ms: u64,
    /// How long the reconciler waits for increments in flight before replacing counts.
    pub reconcile_settle_ms: u64,
    /// `/api/health` reports the worker unhealthy when its read loop has not heard from Redis
    /// for this long.
    pub read_stale_after_ms: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 3003,
            consumer_name: None,
            batch_size: 100,
            flush_interval_ms: 500,
            retry_base_ms: 100,
            retry_cap_ms: 5_000,
            max_deliveries: 5,
            claim_interval_ms: 30_000,
            claim_min_idle_ms: 60_000,
            maintenance_interval_ms: 30_000,
            stale_consumer_idle_ms: 3_600_000,
            shutdown_deadline_ms: 10_000,
            top_cap: 1_000,
            rollup_interval_ms: 1_000,
            rollup_max_age_days: 8,
            rollup_max_future_secs: 3_600,
            reconcile_interval_ms: 60_000,
            reconcile_settle_ms: 5_000,
            read_stale_after_ms: 30_000,
        }
    }
}

impl WorkerSettings {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// The configured consumer name, else the host name, else a fixed fallback.
    pub fn consumer(&self) -> String {
        if let Some(name) = self.consumer_name.as_deref().filter(|n| !n.is_empty()) {
            return name.to_owned();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker-1".to_owned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

impl Settings {
    /// Reads the layered configuration and validates it.
    pub fn load() -> Result<Self, SettingsError> {
        let file = std::env::var("SLUICE_CONFIG").unwrap_or_else(|_| "sluice.toml".into());
        let settings: Settings = config::Config::builder()
            .add_source(config::File::with_name(&file).required(false))
            .add_source(
                config::Environment::with_prefix("SLUICE")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |setting, reason: &str| {
            Err(SettingsError::Invalid {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.worker.batch_size == 0 || self.worker.batch_size > 10_000 {
            return invalid("worker.batch_size", "must be between 1 and 10000");
        }
        if self.worker.max_deliveries == 0 {
            return invalid("worker.max_deliveries", "must be above 0");
        }
        if self.worker.claim_interval_ms == 0 || self.worker.maintenance_interval_ms == 0 {
            return invalid(
                "worker.claim_interval_ms",
                "claim and maintenance intervals must be above 0",
            );
        }
        if self.worker.reconcile_settle_ms <= self.worker.rollup_interval_ms {
            return invalid(
                "worker.reconcile_settle_ms",
                "must exceed worker.rollup_interval_ms (increments in flight must land first)",
            );
        }
        if self.worker.flush_interval_ms == 0 {
            return invalid("worker.flush_interval_ms", "must be above 0");
        }
        if self.sources.max_messages == 0 || self.sources.max_unauthenticated_reads == 0 {
            return invalid(
                "sources.max_messages",
                "sources.max_messages and sources.max_unauthenticated_reads must be above 0",
            );
        }
        if self.sources.webhook_tolerance_secs <= 0 || self.sources.rotation_grace_secs < 0 {
            return invalid(
                "sources.webhook_tolerance_secs",
                "must be above 0 (and sources.rotation_grace_secs not below 0)",
            );
        }
        if self.api.max_batch_events == 0 {
            return invalid("api.max_batch_events", "must be above 0");
        }
        if self.api.max_event_bytes > self.api.max_batch_bytes {
            return invalid("api.max_event_bytes", "must not exceed api.max_batch_bytes");
        }
        if self.api.max_event_values == 0 || self.api.max_request_values < self.api.max_event_values
        {
            return invalid(
                "api.max_request_values",
                "must be at least api.max_event_values, which must be above 0",
            );
        }
        if self.api.dedup_window_secs == 0 {
            return invalid("api.dedup_window_secs", "must be above 0");
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}', ' ', '*'])
        {
            return invalid(
                "redis.key_prefix",
                "must be non-empty, without braces, spaces or `*`",
            );
        }
        if self.redis.stream_key.is_some() {
            return invalid(
                "redis.stream_key",
                "is gone: events go to the streams <redis.key_prefix>:{p<N>}:events (docs/DEPLOY.md, \"Upgrading from the single-stream version\")",
            );
        }
        if !(1..=1024).contains(&self.redis.partitions) {
            return invalid("redis.partitions", "must be 1 to 1024");
        }
        if self.api.commit_max_events == 0 || self.api.commit_max_events > 4000 {
            return invalid("api.commit_max_events", "must be 1 to 4000");
        }
        if self.api.key_tombstone_ttl_secs < self.api.key_stale_if_error_secs {
            return invalid(
                "api.key_tombstone_ttl_secs",
                "must be at least api.key_stale_if_error_secs, or a revoked key could be served stale",
            );
        }
        if self.api.key_lookup_concurrency == 0 {
            return invalid("api.key_lookup_concurrency", "must be above 0");
        }
        if self.auth.max_concurrent_password_hashes == 0 {
            return invalid("auth.max_concurrent_password_hashes", "must be above 0");
        }
        if self.api.body_read_timeout_secs == 0 {
            return invalid("api.body_read_timeout_secs", "must be above 0");
        }
        use secrecy::ExposeSecret;
        if self.auth.profile != "dev"
            && url_password(self.postgres.url.expose_secret()).is_some_and(published::secret)
        {
            return invalid(
                "postgres.url",
                "carries a placeholder password published in the repository (deploy/ or docs/); \
                 set the database user's real password in SLUICE_POSTGRES__URL",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let s = Settings::default();
        assert_eq!(s.api.port, 3001);
        assert_eq!(s.worker.port, 3003);
        assert!(s.redis.url.contains(":6380"));
        assert!(s.mongo.url.contains(":27018"));
        assert_eq!(s.redis.layout().stream(0), "sluice:{p0}:events");
        assert_eq!(s.redis.partitions, 8);
        let mut old = Settings::default();
        old.redis.stream_key = Some("events:stream".into());
        let err = old.validate().unwrap_err().to_string();
        assert!(err.contains("redis.stream_key"), "{err}");
        assert_eq!(s.redis.group, "workers");
        assert_eq!(s.api.dedup_window_secs, 600);
        assert_eq!(s.worker.batch_size, 100);
        assert_eq!(s.worker.flush_interval_ms, 500);
        s.validate().unwrap();
    }

    #[test]
    fn a_missing_or_short_jwt_secret_is_refused_outside_dev() {
        let mut a = AuthSettings::default();
        assert!(a
            .jwt_secret()
            .unwrap_err()
            .to_string()
            .contains("auth.jwt_secret"));
        a.jwt_secret = Some(SecretString::from("short"));
        assert!(a.jwt_secret().is_err());
        a.jwt_secret = Some(SecretString::from("x".repeat(32)));
        assert!(a.jwt_secret().is_ok());
        let dev = AuthSettings {
            profile: "dev".into(),
            ..Default::default()
        };
        assert!(dev.jwt_secret().is_ok());
    }

    #[test]
    fn every_jwt_secret_published_in_the_repository_is_refused_outside_dev() {
        let published = [
            "replace-me-with-48-random-bytes-base64-encoded-xxxxx", // deploy/k8s/config.yaml
            "change-me-to-48-random-bytes-base64-encoded-xxxxxxxx", // deploy/.env.example
            "change-me-to-48-random-bytes-base64-encoded-xxxxxxxy", // an edited copy
            DEV_JWT_SECRET,
        ];
        for secret in published {
            let a = AuthSettings {
                jwt_secret: Some(SecretString::from(secret)),
                ..Default::default()
            };
            let err = a.jwt_secret().unwrap_err().to_string();
            assert!(err.contains("auth.jwt_secret"), "{err}");
            assert!(err.contains("head -c 48 /dev/urandom | base64"), "{err}");
            let dev = AuthSettings {
                profile: "dev".into(),
                ..a
            };
            assert!(dev.jwt_secret().is_ok(), "the dev profile takes {secret}");
        }
        let own = AuthSettings {
            jwt_secret: Some(SecretString::from(
                "q3V0c2lkZS10aGUtcmVwb3NpdG9yeS0wMTIzNDU2Nzg5",
            )),
            ..Default::default()
        };
        assert!(own.jwt_secret().is_ok());
    }

    #[test]
    fn the_placeholders_are_read_from_the_deploy_files_themselves() {
        // Every SECRET or PASSWORD value the deploy files carry is a placeholder the check knows.
        let files = [
            include_str!("../../deploy/k8s/config.yaml"),
            include_str!("../../deploy/.env.example"),
        ];
        let mut seen = 0;
        for line in files.iter().flat_map(|f| f.lines()) {
            let Some((key, value)) = line.split_once('=').or_else(|| line.split_once(": ")) else {
                continue;
            };
            if key.contains("SECRET") || key.contains("PASSWORD") {
                assert!(published::secret(value.trim()), "{line}");
                seen += 1;
            }
        }
        assert!(seen >= 3, "the deploy files' secrets were not found");
    }

    #[test]
    fn a_postgres_url_with_a_published_password_is_refused_outside_dev() {
        let mut s = Settings::default();
        // deploy/k8s/config.yaml's URL, and deploy/.env.example's POSTGRES_PASSWORD in compose's URL.
        for url in [
            "postgres://sluice:replace-me@postgres.sluice.svc:5432/sluice",
            "postgres://sluice:change-me@postgres:5432/sluice",
        ] {
            s.postgres.url = SecretString::from(url);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains("postgres.url"), "{err}");
            assert!(
                !err.contains("replace-me@"),
                "the message must not echo the URL: {err}"
            );
        }
        s.auth.profile = "dev".into();
        s.validate().unwrap();
        s.auth.profile = "production".into();
        for ok in [
            "postgres://sluice:Zk3mQ9vLx2@db:5432/sluice",
            "postgres://postgres@127.0.0.1:5433/sluice",
        ] {
            s.postgres.url = SecretString::from(ok);
            s.validate().unwrap();
        }
    }

    #[test]
    fn url_password_reads_only_the_userinfo() {
        assert_eq!(url_password("postgres://u:p%40ss@h/db"), Some("p%40ss"));
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("postgres://h/db?x=a:b@c"), None);
        assert_eq!(url_password("not a url"), None);
    }

    #[test]
    fn a_zero_batch_size_is_refused_by_name() {
        let mut s = Settings::default();
        s.worker.batch_size = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("worker.batch_size"), "{err}");
    }
}
