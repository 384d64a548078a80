//! The plans an api instance judges events by: loaded from PostgreSQL on first use, compiled once,
//! dropped at once when any instance announces a change of that account's plan (pub/sub,
//! [`announce`]), and reloaded after `schemas.refresh_secs` anyway, so a missed announcement
//! heals. While PostgreSQL cannot be read, the plan last loaded goes on being used (ingest does
//! not depend on PostgreSQL for it); an account never loaded is judged by no plan meanwhile,
//! counted in `sluice_plan_load_failures_total`.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use moka::future::Cache;
use sluice_shared::names::PLAN_CHANGES_CHANNEL;
use sqlx::PgPool;
use uuid::Uuid;

use super::{compile, registry, AccountPlan, TypePlan};

#[derive(Clone)]
pub struct PlanCache {
    plans: Cache<Uuid, (Arc<AccountPlan>, Instant)>,
    refresh: Duration,
}

impl PlanCache {
    pub fn new(refresh: Duration) -> Self {
        Self {
            plans: Cache::builder().max_capacity(100_000).build(),
            refresh,
        }
    }

    /// The account's plan, from memory while fresh.
    pub async fn get(&self, pool: &PgPool, account: Uuid) -> Arc<AccountPlan> {
        let held = self.plans.get(&account).await;
        if let Some((plan, loaded)) = &held {
            if loaded.elapsed() < self.refresh {
                return plan.clone();
            }
        }
        match load(pool, account).await {
            Ok(plan) => {
                let plan = Arc::new(plan);
                self.plans
                    .insert(account, (plan.clone(), Instant::now()))
                    .await;
                plan
            }
            Err(e) => {
                tracing::warn!(error = ?e, %account, "cannot load the tracking plan; using the last one loaded");
                metrics::counter!("sluice_plan_load_failures_total").increment(1);
                held.map(|(plan, _)| plan).unwrap_or_default()
            }
        }
    }

    pub async fn forget(&self, account: Uuid) {
        self.plans.invalidate(&account).await;
    }

    pub fn forget_all(&self) {
        self.plans.invalidate_all();
    }
}

/// An account's plan from PostgreSQL, every version compiled.
pub async fn load(pool: &PgPool, account: Uuid) -> anyhow::Result<AccountPlan> {
    let (rows, modes, default_mode) = tokio::try_join!(
        registry::all(pool, account),
        registry::modes(pool, account),
        registry::default_mode(pool, account),
    )?;
    let mut types: HashMap<String, TypePlan> = HashMap::new();
    for row in rows {
        let Ok(version) = u32::try_from(row.version) else {
            continue;
        };
        let compiled = serde_json::from_str(&row.schema)
            .map_err(|e| e.to_string())
            .and_then(|schema| compile(&schema).map_err(|v| v.message));
        match compiled {
            Ok(c) => {
                let t = types.entry(row.event_type).or_default();
                t.versions.insert(version, Arc::new(c));
                t.latest = t.latest.max(Some(version));
            }
            // Published schemas compiled when they were published; a newer library may differ.
            Err(e) => {
                tracing::error!(error = %e, %account, version, "a published schema no longer compiles")
            }
        }
    }
    for (event_type, mode) in modes {
        types.entry(event_type).or_default().mode = Some(mode);
    }
    Ok(AccountPlan {
        default_mode,
        types,
    })
}

/// Tells every api instance (this one too) that `account`'s plan changed.
pub async fn announce(redis: &Client, plans: &PlanCache, account: Uuid) -> anyhow::Result<()> {
    plans.forget(account).await;
    redis
        .publish::<Value, _, _>(PLAN_CHANGES_CHANNEL, account.to_string())
        .await?;
    Ok(())
}
