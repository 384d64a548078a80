//! What the api's handlers read, and the connections it is made of. Opening the connections is
//! the start-up's I/O ([`Connections::open`]); the state is then put together without any.
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::Client;
use mongodb::Database;
use sluice_http::ApiError;
use sluice_shared::config::Settings;
use sluice_shared::enqueue::{Enqueuer, GroupCommit};
use sluice_shared::jwt::Jwt;
use sqlx::PgPool;

use crate::auth::KeyAuth;
use crate::backlog::Backlog;
use crate::limits::{KeyQuotas, LoginLimiter, PasswordSlots, TrustedProxies};
use crate::plans::cache::PlanCache;
use crate::sources::registry::SourceCache;
use crate::store;
use crate::suppression::{Suppressed, SuppressionCache};

pub struct AppState {
    pub settings: Settings,
    pub auth: KeyAuth,
    pub jwt: Jwt,
    pub login_limiter: Arc<LoginLimiter>,
    pub trusted_proxies: TrustedProxies,
    pub password_slots: PasswordSlots,
    pub quotas: KeyQuotas,
    pub enqueuer: Enqueuer,
    pub backlog: Arc<Backlog>,
    pub redis: Client,
    pub pool: PgPool,
    /// MongoDB, for dead letters only: ingest and readiness never wait on it.
    pub mongo: Database,
    /// Webhook sources, as the webhook intake reads them.
    pub sources: SourceCache,
    /// Tracking plans, as ingest judges events by them.
    pub plans: PlanCache,
    /// Suppressed users, whose events ingest refuses (as a success).
    pub suppressions: SuppressionCache,
    /// This instance's live WebSocket clients, by account.
    pub live: Arc<crate::live_hub::LiveHub>,
    /// Bodies being read before their key is known (the SDK intakes' key travels in the body).
    pub unauthenticated_reads: Arc<tokio::sync::Semaphore>,
}

/// What the api connects to before it serves.
pub struct Connections {
    pub redis: Client,
    /// Subscribed to key revocations.
    pub revocations: SubscriberClient,
    /// Subscribed to the live channel (anomalies, tailed events).
    pub live: SubscriberClient,
    /// PostgreSQL, connected on first use: the api starts (and says so in `/api/health`) without it.
    pub pool: PgPool,
    pub enqueuer: Enqueuer,
    /// Read once, so the first request is judged on a real figure.
    pub backlog: Arc<Backlog>,
    /// MongoDB, connected on first use as well.
    pub mongo: Database,
}

impl Connections {
    /// Waits for Redis (not up yet, or still loading its AOF), then makes sure the consumer group
    /// exists, loads the enqueue script, reads the backlog and subscribes to revocations.
    /// PostgreSQL and MongoDB are not waited for.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let redis = sluice_shared::redis::connect_when_ready(&settings.redis).await?;
        sluice_shared::redis::ensure_groups(&redis, &settings.redis).await?;
        let (r, api) = (&settings.redis, &settings.api);
        let enqueuer = Enqueuer::new(redis.clone(), r.layout(), api.dedup_window_secs)
            .with_wait(r.wait_replicas, r.wait_timeout_ms)
            .with_group_commit(GroupCommit {
                max_wait: Duration::from_micros(api.commit_max_wait_us),
                max_events: api.commit_max_events,
                max_in_flight: api.commit_max_in_flight,
            });
        enqueuer.load().await?;
        let backlog = Arc::new(Backlog::default());
        backlog.set(Some(crate::backlog::read(&redis, r).await?));
        Ok(Self {
            revocations: crate::revocation::subscribe(&settings.redis).await?,
            live: crate::live_hub::subscribe(&settings.redis).await?,
            pool: store::pool(&settings.postgres)?,
            mongo: sluice_store::connect(&settings.mongo, "sluice-api").await?,
            redis,
            enqueuer,
            backlog,
        })
    }
}

impl AppState {
    /// The state over `connections`; fails on a setting that does not parse, naming it.
    pub fn new(settings: Settings, jwt: Jwt, connections: &Connections) -> anyhow::Result<Self> {
        let (api, auth) = (&settings.api, &settings.auth);
        Ok(Self {
            auth: KeyAuth::new(connections.redis.clone(), connections.pool.clone(), api),
            jwt,
            login_limiter: Arc::new(LoginLimiter::per_minute(auth.login_per_minute)),
            trusted_proxies: TrustedProxies::parse(&api.trusted_proxies)?,
            password_slots: PasswordSlots::new(
                auth.max_concurrent_password_hashes,
                Duration::from_millis(auth.password_hash_wait_ms),
            ),
            quotas: KeyQuotas::new(auth.key_quota_per_sec, auth.key_quota_burst),
            enqueuer: connections.enqueuer.clone(),
            backlog: connections.backlog.clone(),
            redis: connections.redis.clone(),
            pool: connections.pool.clone(),
            mongo: connections.mongo.clone(),
            sources: SourceCache::new(Duration::from_millis(settings.sources.source_cache_ttl_ms)),
            plans: PlanCache::new(Duration::from_secs(settings.schemas.refresh_secs.max(1))),
            suppressions: SuppressionCache::new(
                &settings.redis.key_prefix,
                Duration::from_secs(settings.privacy.suppression_refresh_secs.max(1)),
            ),
            live: Arc::new(crate::live_hub::LiveHub::new(
                settings.rules.live_client_buffer,
            )),
            unauthenticated_reads: Arc::new(tokio::sync::Semaphore::new(
                settings.sources.max_unauthenticated_reads,
            )),
            settings,
        })
    }

    /// A place among the bodies read before their key is known, or 503 when they are all taken.
    pub fn unauthenticated_read(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.unauthenticated_reads
            .try_acquire()
            .map_err(|_| ApiError::UnauthenticatedReadsBusy)
    }

    /// The account's suppressed users; 503 when they were never read and Redis cannot be.
    pub async fn suppressed(&self, account: uuid::Uuid) -> Result<Arc<Suppressed>, ApiError> {
        self.suppressions
            .get(&self.redis, account)
            .await
            .map_err(ApiError::QueueUnavailable)
    }

    /// Refuses early, before the body is read, when the queue cannot take more.
    pub fn check_queue(&self) -> Result<(), ApiError> {
        if !self.backlog.redis_reachable() {
            return Err(ApiError::QueueUnavailable(anyhow::anyhow!(
                "Redis did not answer the last backlog poll"
            )));
        }
        let api = &self.settings.api;
        if self.backlog.entries() > api.max_backlog || self.backlog.bytes() > api.max_backlog_bytes
        {
            return Err(ApiError::Overloaded);
        }
        Ok(())
    }
}

/// The enqueuer of one actix worker: its own Redis connection and group committers, opened on the
/// worker's thread (`startup::with_state` registers one per worker as app data), so that a
/// request is queued without crossing to another thread and back. Measured (PERFORMANCE.md): api
/// CPU per single event 43–44 µs through the shared enqueuer, 35–40 µs through the worker's.
pub struct WorkerEnqueuer(Enqueuer);

impl WorkerEnqueuer {
    /// Opened on the calling thread's runtime; the shared one if its connection cannot be built.
    pub fn here(state: &AppState) -> Self {
        match sluice_shared::redis::connect_here(&state.settings.redis) {
            Ok(client) => Self(state.enqueuer.on_this_runtime(client)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the worker's own Redis connection; it queues through the shared one");
                Self(state.enqueuer.clone())
            }
        }
    }

    /// The enqueuer of the worker serving `req` (the shared one where none is registered).
    pub fn of<'a>(req: &'a actix_web::HttpRequest, state: &'a AppState) -> &'a Enqueuer {
        req.app_data::<actix_web::web::Data<WorkerEnqueuer>>()
            .map_or(&state.enqueuer, |here| &here.0)
    }
}
