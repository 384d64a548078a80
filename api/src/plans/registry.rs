//! Tracking plans in PostgreSQL: published schema versions (never changed), per-type modes and
//! the account's default mode.
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Mode;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchemaRow {
    pub event_type: String,
    pub version: i32,
    pub schema: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What publishing a version came to.
pub enum Published {
    Version(SchemaRow),
    /// The account holds `schemas.max_per_account` versions already.
    LimitReached,
}

/// Publishes the next version of an event type's schema (1 for the first), with the account row
/// locked so two publishes never take the same number and the limit holds.
pub async fn publish(
    pool: &PgPool,
    account: Uuid,
    event_type: &str,
    schema: &str,
    description: Option<&str>,
    max: i64,
) -> anyhow::Result<Published> {
    let mut tx = pool.begin().await.context("starting a transaction")?;
    sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(account)
        .execute(&mut *tx)
        .await
        .context("locking the account")?;
    let (held,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM event_schemas WHERE account_id = $1")
            .bind(account)
            .fetch_one(&mut *tx)
            .await
            .context("counting schema versions")?;
    if held >= max {
        return Ok(Published::LimitReached);
    }
    let row: SchemaRow = sqlx::query_as(
        "INSERT INTO event_schemas (account_id, event_type, version, schema, description) \
         SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4 FROM event_schemas \
         WHERE account_id = $1 AND event_type = $2 \
         RETURNING event_type, version, schema, description, created_at",
    )
    .bind(account)
    .bind(event_type)
    .bind(schema)
    .bind(description)
    .fetch_one(&mut *tx)
    .await
    .context("inserting a schema version")?;
    tx.commit().await.context("committing a schema version")?;
    Ok(Published::Version(row))
}

/// Every version of every type of an account, oldest first.
pub async fn all(pool: &PgPool, account: Uuid) -> anyhow::Result<Vec<SchemaRow>> {
    sqlx::query_as(
        "SELECT event_type, version, schema, description, created_at FROM event_schemas \
         WHERE account_id = $1 ORDER BY event_type, version",
    )
    .bind(account)
    .fetch_all(pool)
    .await
    .context("reading schema versions")
}

/// Per-type modes of an account.
pub async fn modes(pool: &PgPool, account: Uuid) -> anyhow::Result<Vec<(String, Mode)>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, mode FROM event_type_modes WHERE account_id = $1")
            .bind(account)
            .fetch_all(pool)
            .await
            .context("reading event type modes")?;
    Ok(rows
        .into_iter()
        .filter_map(|(t, m)| Mode::parse(&m).map(|m| (t, m)))
        .collect())
}

pub async fn set_mode(
    pool: &PgPool,
    account: Uuid,
    event_type: &str,
    mode: Mode,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO event_type_modes (account_id, event_type, mode) VALUES ($1, $2, $3) \
         ON CONFLICT (account_id, event_type) DO UPDATE SET mode = $3, updated_at = now()",
    )
    .bind(account)
    .bind(event_type)
    .bind(mode.as_str())
    .execute(pool)
    .await
    .context("setting an event type's mode")?;
    Ok(())
}

/// The account's default mode (`allow` when none is set).
pub async fn default_mode(pool: &PgPool, account: Uuid) -> anyhow::Result<Mode> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT schema_mode FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(pool)
            .await
            .context("reading the account's schema mode")?;
    Ok(row
        .and_then(|(m,)| m)
        .and_then(|m| Mode::parse(&m))
        .unwrap_or_default())
}

pub async fn set_default_mode(pool: &PgPool, account: Uuid, mode: Mode) -> anyhow::Result<()> {
    sqlx::query("UPDATE accounts SET schema_mode = $2 WHERE id = $1")
        .bind(account)
        .bind(mode.as_str())
        .execute(pool)
        .await
        .context("setting the account's schema mode")?;
    Ok(())
}
