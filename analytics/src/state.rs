//! What the analytics handlers read: the settings, the connections (MongoDB for rollups, events
//! and dead letters; Redis for the sketches and the stream's figures, both only read) and the
//! answer caches.
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::Client;
use mongodb::Database;
use sluice_shared::config::Settings;

use crate::cache::{Clock, TtlCache};

pub struct AppState {
    pub settings: Settings,
    pub db: Database,
    pub redis: Client,
    /// Aggregates and raw reads: `analytics.cache_ttl_ms`.
    pub cache: TtlCache,
    /// The pipeline view: `analytics.pipeline_cache_ttl_ms`, at most a second.
    pub live_cache: TtlCache,
}

impl AppState {
    /// The state over connections already open; the caches judge freshness by `clock`.
    pub fn new(settings: Settings, redis: Client, db: Database, clock: Arc<dyn Clock>) -> Self {
        let a = &settings.analytics;
        let cache = TtlCache::new(
            Duration::from_millis(a.cache_ttl_ms),
            a.cache_max_bytes,
            clock.clone(),
        );
        let live_cache = TtlCache::new(
            Duration::from_millis(a.pipeline_cache_ttl_ms.min(1_000)),
            a.cache_max_bytes / 8,
            clock,
        );
        Self {
            settings,
            db,
            redis,
            cache,
            live_cache,
        }
    }
}
