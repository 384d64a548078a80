//! PostgreSQL: accounts and API keys. Only a key's SHA-256 is ever written.
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sluice_shared::apikey;
use sluice_shared::config::PostgresSettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pool that connects on first use, so the api starts (and reports unhealthy) without PostgreSQL.
pub fn pool(settings: &PostgresSettings) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = settings
        .url
        .expose_secret()
        .parse()
        .context("invalid postgres.url")?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(opts))
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("running PostgreSQL migrations")
}

/// The owner of a valid key, as the ingest path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub account_id: Uuid,
    /// The key's own ingest quota (events per second, burst), if it has one.
    pub quota: Option<(u32, u32)>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[tracing::instrument(name = "Creating an account", skip_all)]
pub async fn create_account(
    pool: &PgPool,
    email: &str,
    password_hash: Option<&str>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO accounts (id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(normalise_email(email))
        .bind(password_hash)
        .execute(pool)
        .await
        .context("inserting an account")?;
    Ok(id)
}

/// Sets a password on an account that has none (accounts made by the admin CLI).
pub async fn set_password_if_none(pool: &PgPool, id: Uuid, hash: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE accounts SET password_hash = $2 WHERE id = $1 AND password_hash IS NULL")
        .bind(id)
        .bind(hash)
        .execute(pool)
        .await
        .context("setting a password")?;
    Ok(())
}

pub async fn find_account_by_email(pool: &PgPool, email: &str) -> anyhow::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT id FROM accounts WHERE email = $1")
        .bind(normalise_email(email))
        .fetch_optional(pool)
        .await
        .context("looking up an account by email")
}

/// Creates a key; the returned text is the only time it exists outside the client.
#[tracing::instrument(name = "Creating an API key", skip_all, fields(account_id = %account_id))]
pub async fn create_key(
    pool: &PgPool,
    account_id: Uuid,
    name: &str,
) -> anyhow::Result<(KeyRecord, String)> {
    let new = apikey::generate();
    let record: KeyRecord = sqlx::query_as(
        "INSERT INTO api_keys (id, account_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, account_id, name, prefix, created_at, last_used_at, revoked_at",
    )
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(name)
    .bind(&new.prefix)
    .bind(&new.hash)
    .fetch_one(pool)
    .await
    .context("inserting an API key")?;
    Ok((record, new.key))
}

/// What [`create_key_within_limit`] did.
#[derive(Debug)]
pub enum KeyCreation {
    Created(KeyRecord, String),
    LimitReached,
    NoAccount,
}

/// Creates a key unless the account already holds `limit` active ones. The account's row is
/// locked for the count and the insert, so concurrent creates queue and cannot pass the limit.
#[tracing::instrument(name = "Creating an API key within the limit", skip_all, fields(account_id = %account_id))]
pub async fn create_key_within_limit(
    pool: &PgPool,
    account_id: Uuid,
    name: &str,
    limit: i64,
) -> anyhow::Result<KeyCreation> {
    let mut tx = pool.begin().await.context("starting a key creation")?;
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await
            .context("locking the account for a key creation")?;
    if locked.is_none() {
        return Ok(KeyCreation::NoAccount);
    }
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL",
    )
    .bind(account_id)
    .fetch_one(&mut *tx)
    .await
    .context("counting active keys")?;
    if active >= limit {
        return Ok(KeyCreation::LimitReached);
    }
    let new = apikey::generate();
    let record: KeyRecord = sqlx::query_as(
        "INSERT INTO api_keys (id, account_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, account_id, name, prefix, created_at, last_used_at, revoked_at",
    )
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(name)
    .bind(&new.prefix)
    .bind(&new.hash)
    .fetch_one(&mut *tx)
    .await
    .context("inserting an API key")?;
    tx.commit().await.context("committing a key creation")?;
    Ok(KeyCreation::Created(record, new.key))
}

/// Marks a key revoked (keeping the first `revoked_at` when it already is) and returns its hash
/// for cache eviction, or `None` if there is no such key (of that account, when one is given).
/// An already revoked key answers too, so a revocation cut short after this step can be retried
/// to completion.
#[tracing::instrument(name = "Revoking an API key", skip_all, fields(key_id = %key_id))]
pub async fn revoke_key(
    pool: &PgPool,
    key_id: Uuid,
    account_id: Option<Uuid>,
) -> anyhow::Result<Option<String>> {
    sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
         WHERE id = $1 AND ($2::uuid IS NULL OR account_id = $2)
         RETURNING key_hash",
    )
    .bind(key_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await
    .context("revoking an API key")
}

pub async fn find_live_key(pool: &PgPool, key_hash: &str) -> anyhow::Result<Option<KeyOwner>> {
    let row: Option<(Uuid, Uuid, Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT id, account_id, quota_per_sec, quota_burst FROM api_keys
         WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await
    .context("looking up an API key")?;
    Ok(row.map(|(key_id, account_id, rate, burst)| KeyOwner {
        key_id,
        account_id,
        quota: rate
            .zip(burst)
            .map(|(r, b)| (r.max(1) as u32, b.max(1) as u32)),
    }))
}

pub async fn set_key_quota(
    pool: &PgPool,
    key_id: Uuid,
    per_sec: u32,
    burst: u32,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE api_keys SET quota_per_sec = $2, quota_burst = $3 WHERE id = $1")
        .bind(key_id)
        .bind(per_sec as i32)
        .bind(burst as i32)
        .execute(pool)
        .await
        .context("setting a key's quota")?;
    Ok(())
}

pub async fn count_active_keys(pool: &PgPool, account_id: Uuid) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL")
        .bind(account_id)
        .fetch_one(pool)
        .await
        .context("counting active keys")
}

/// An account's login record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRecord {
    pub id: Uuid,
    pub email: String,
    pub password_hash: Option<String>,
}

pub async fn find_account(pool: &PgPool, email: &str) -> anyhow::Result<Option<AccountRecord>> {
    sqlx::query_as("SELECT id, email, password_hash FROM accounts WHERE email = $1")
        .bind(normalise_email(email))
        .fetch_optional(pool)
        .await
        .context("looking up an account")
}

pub async fn find_account_by_id(pool: &PgPool, id: Uuid) -> anyhow::Result<Option<AccountRecord>> {
    sqlx::query_as("SELECT id, email, password_hash FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .context("looking up an account by id")
}

/// Creates an account with a password; `None` if the email is taken.
pub async fn register_account(
    pool: &PgPool,
    email: &str,
    password_hash: &str,
) -> anyhow::Result<Option<Uuid>> {
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO accounts (id, email, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(id)
    .bind(normalise_email(email))
    .bind(password_hash)
    .execute(pool)
    .await
    .context("registering an account")?
    .rows_affected();
    Ok((inserted == 1).then_some(id))
}

pub async fn list_keys(pool: &PgPool, account_id: Uuid) -> anyhow::Result<Vec<KeyRecord>> {
    sqlx::query_as(
        "SELECT id, account_id, name, prefix, created_at, last_used_at, revoked_at
         FROM api_keys WHERE account_id = $1 ORDER BY created_at",
    )
    .bind(account_id)
    .fetch_all(pool)
    .await
    .context("listing API keys")
}

/// One write for every key used since the last call, instead of one per event.
pub async fn touch_keys(pool: &PgPool, key_ids: &[Uuid]) -> anyhow::Result<()> {
    if key_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)")
        .bind(key_ids)
        .execute(pool)
        .await
        .context("recording lastUsedAt")?;
    Ok(())
}

pub async fn ping(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .context("PostgreSQL SELECT 1")?;
    Ok(())
}
