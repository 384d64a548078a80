//! Webhook sources in PostgreSQL, and the cache the ingest path reads them through. A secret is
//! kept readable (an HMAC cannot be checked against a hash of its key); it leaves the api only in
//! the answer that creates or rotates it.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use moka::future::Cache;
use sqlx::PgPool;
use uuid::Uuid;

use super::signature::Scheme;

/// A webhook source as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceRecord {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub scheme: String,
    pub event_type: String,
    /// `header` (the delivery's `webhook-id`) or a JSON pointer into the body.
    pub event_id_from: String,
    /// A JSON pointer into the body, if the events are about someone.
    pub user_id_from: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

impl SourceRecord {
    pub fn scheme(&self) -> Option<Scheme> {
        Scheme::parse(&self.scheme)
    }

    /// The secrets a delivery may be signed with at `now`: the current one, and the previous one
    /// while its grace lasts.
    pub fn secrets_at(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_valid_until) {
            if now < until {
                secrets.push(previous);
            }
        }
        secrets
    }
}

/// What a new source is made of.
pub struct NewSource<'a> {
    pub name: &'a str,
    pub scheme: Scheme,
    pub event_type: &'a str,
    pub event_id_from: &'a str,
    pub user_id_from: Option<&'a str>,
    pub secret: &'a str,
}

const COLUMNS: &str = "id, account_id, name, scheme, event_type, event_id_from, user_id_from, \
    secret, previous_secret, previous_valid_until, created_at, rotated_at";

/// Creates a source unless the account already holds `max` (checked with the account's row
/// locked, so concurrent creates cannot pass the limit together). `None`: at the limit.
pub async fn create(
    pool: &PgPool,
    account: Uuid,
    new: &NewSource<'_>,
    max: i64,
) -> anyhow::Result<Option<SourceRecord>> {
    let mut tx = pool.begin().await.context("starting a transaction")?;
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(account)
        .execute(&mut *tx)
        .await
        .context("locking the account")?;
    let (held,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM webhook_sources WHERE account_id = $1 AND deleted_at IS NULL",
    )
    .bind(account)
    .fetch_one(&mut *tx)
    .await
    .context("counting webhook sources")?;
    if held >= max {
        return Ok(None);
    }
    let record: SourceRecord = sqlx::query_as(&format!(
        "INSERT INTO webhook_sources (id, account_id, name, scheme, event_type, event_id_from, \
         user_id_from, secret) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(account)
    .bind(new.name)
    .bind(new.scheme.as_str())
    .bind(new.event_type)
    .bind(new.event_id_from)
    .bind(new.user_id_from)
    .bind(new.secret)
    .fetch_one(&mut *tx)
    .await
    .context("inserting a webhook source")?;
    tx.commit().await.context("committing a webhook source")?;
    Ok(Some(record))
}

pub async fn list(pool: &PgPool, account: Uuid) -> anyhow::Result<Vec<SourceRecord>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_sources WHERE account_id = $1 AND deleted_at IS NULL \
         ORDER BY created_at"
    ))
    .bind(account)
    .fetch_all(pool)
    .await
    .context("listing webhook sources")
}

/// A live source by id, whoever owns it (the ingest path; the owner is checked by the caller
/// where it matters).
pub async fn find(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<SourceRecord>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_sources WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .context("reading a webhook source")
}

/// Deletes an account's source; `false` when it has none by that id.
pub async fn delete(pool: &PgPool, account: Uuid, id: Uuid) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "UPDATE webhook_sources SET deleted_at = now() \
         WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(account)
    .execute(pool)
    .await
    .context("deleting a webhook source")?;
    Ok(done.rows_affected() == 1)
}

/// Gives an account's source a new secret; the current one stays valid for `grace`.
pub async fn rotate(
    pool: &PgPool,
    account: Uuid,
    id: Uuid,
    secret: &str,
    grace: Duration,
) -> anyhow::Result<Option<SourceRecord>> {
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_as(&format!(
        "UPDATE webhook_sources SET previous_secret = secret, secret = $3, \
         previous_valid_until = now() + make_interval(secs => $4::double precision / 1000), \
         rotated_at = now() \
         WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(account)
    .bind(secret)
    .bind(grace_ms as f64)
    .fetch_optional(pool)
    .await
    .context("rotating a webhook source's secret")
}

/// Sources by id as the ingest path reads them: from memory for a short while (unknown ids too,
/// so a flood of made-up ids never reaches PostgreSQL), evicted at once on this instance by a
/// rotation or deletion, and by the TTL on the others.
#[derive(Clone)]
pub struct SourceCache {
    cache: Cache<Uuid, Option<Arc<SourceRecord>>>,
}

impl SourceCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    pub async fn get(&self, pool: &PgPool, id: Uuid) -> anyhow::Result<Option<Arc<SourceRecord>>> {
        if let Some(hit) = self.cache.get(&id).await {
            return Ok(hit);
        }
        let found = find(pool, id).await?.map(Arc::new);
        self.cache.insert(id, found.clone()).await;
        Ok(found)
    }

    pub async fn evict(&self, id: Uuid) {
        self.cache.invalidate(&id).await;
    }
}
