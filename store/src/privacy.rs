//! What Sluice keeps for its users' privacy, in MongoDB beside the events: regulations (requests to
//! suppress or delete users, kept for audit), the suppressed identities of each account, and each
//! account's retention. The api writes requests and reads suppressions; the worker carries
//! regulations out and applies retention (docs/PRIVACY.md).
use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Document};
use mongodb::options::{FindOneAndUpdateOptions, IndexOptions, ReturnDocument, UpdateOneModel};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use sluice_shared::names::{REGULATIONS_COLLECTION, RETENTION_COLLECTION, SUPPRESSIONS_COLLECTION};

/// What a regulation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegulationType {
    /// Refuse the users' new events (answered as a success, never queued).
    Suppress,
    /// Suppress, then delete everything stored of them (and what was queued when it began).
    SuppressWithDelete,
    /// Delete everything stored of them (and what was queued when it began); later events are
    /// kept.
    DeleteOnly,
    /// Lift a suppression.
    Unsuppress,
}

impl RegulationType {
    pub fn suppresses(self) -> bool {
        matches!(self, Self::Suppress | Self::SuppressWithDelete)
    }

    pub fn deletes(self) -> bool {
        matches!(self, Self::SuppressWithDelete | Self::DeleteOnly)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegulationStatus {
    Pending,
    Running,
    Finished,
    Failed,
}

impl RegulationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }
}

pub mod field {
    pub const ID: &str = "_id";
    pub const ACCOUNT_ID: &str = "accountId";
    pub const STATUS: &str = "status";
    pub const USER_IDS: &str = "userIds";
    pub const CREATED_AT: &str = "createdAt";
    pub const STARTED_AT: &str = "startedAt";
    pub const FINISHED_AT: &str = "finishedAt";
    pub const LEASE_UNTIL: &str = "leaseUntil";
    pub const WORKER: &str = "worker";
    pub const COUNTS: &str = "counts";
    pub const ERROR: &str = "error";
    pub const USER_ID: &str = "userId";
    pub const VIA: &str = "via";
    pub const SINCE: &str = "since";
    pub const REGULATION_ID: &str = "regulationId";
}

/// A regulation as stored in `regulations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Regulation {
    /// A UUID.
    #[serde(rename = "_id")]
    pub id: String,
    pub account_id: String,
    #[serde(rename = "type")]
    pub kind: RegulationType,
    pub user_ids: Vec<String>,
    pub status: RegulationStatus,
    pub created_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was done, per store (`events`, `quarantine`, `deadLetters`, …).
    #[serde(default)]
    pub counts: BTreeMap<String, i64>,
    /// While running: the worker carrying it out, and until when it holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<bson::DateTime>,
}

/// One suppressed identity: a userId a regulation named, or an anonymousId linked to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suppression {
    /// `{accountId}:{userId}`.
    #[serde(rename = "_id")]
    pub id: String,
    pub account_id: String,
    pub user_id: String,
    /// The userId the regulation named (this one, or the user an anonymousId is linked to).
    pub via: String,
    pub regulation_id: String,
    pub since: bson::DateTime,
}

/// An account's retention, in days; `None` takes the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    #[serde(rename = "_id")]
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<bson::DateTime>,
}

pub fn regulations(db: &Database) -> Collection<Regulation> {
    db.collection(REGULATIONS_COLLECTION)
}

pub fn suppressions(db: &Database) -> Collection<Suppression> {
    db.collection(SUPPRESSIONS_COLLECTION)
}

pub fn retention(db: &Database) -> Collection<Retention> {
    db.collection(RETENTION_COLLECTION)
}

/// The indexes of the three collections (created by whoever writes them first).
pub async fn ensure_indexes(db: &Database) -> anyhow::Result<()> {
    let named = |keys: Document, name: &str| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().name(name.to_owned()).build())
            .build()
    };
    regulations(db)
        .create_index(named(
            doc! {field::ACCOUNT_ID: 1, field::CREATED_AT: -1, field::ID: -1},
            "account_created",
        ))
        .await
        .context("creating the regulations index")?;
    regulations(db)
        .create_index(named(
            doc! {field::STATUS: 1, field::CREATED_AT: 1},
            "status_created",
        ))
        .await
        .context("creating the regulations status index")?;
    suppressions(db)
        .create_index(named(
            doc! {field::ACCOUNT_ID: 1, field::SINCE: -1, field::ID: -1},
            "account_since",
        ))
        .await
        .context("creating the suppressions index")?;
    Ok(())
}

/// Every identity of `account` whose events are refused.
pub async fn suppressed_of(db: &Database, account: &str) -> anyhow::Result<HashSet<String>> {
    let mut cursor = db
        .collection::<Document>(SUPPRESSIONS_COLLECTION)
        .find(doc! {field::ACCOUNT_ID: account})
        .projection(doc! {field::USER_ID: 1, field::ID: 0})
        .await
        .context("reading suppressions")?;
    let mut out = HashSet::new();
    while let Some(d) = cursor.try_next().await.context("reading suppressions")? {
        if let Ok(id) = d.get_str(field::USER_ID) {
            out.insert(id.to_owned());
        }
    }
    Ok(out)
}

/// Suppresses `ids` of `account` (each `via` the user it belongs to), keeping the first
/// suppression of an identity already suppressed. Returns how many were new.
pub async fn suppress(
    db: &Database,
    account: &str,
    ids: &[(String, String)],
    regulation: &str,
) -> anyhow::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let now = bson::DateTime::now();
    let coll = suppressions(db);
    let models: Vec<UpdateOneModel> = ids
        .iter()
        .map(|(id, via)| {
            UpdateOneModel::builder()
                .namespace(coll.namespace())
                .filter(doc! {field::ID: format!("{account}:{id}")})
                .update(doc! {"$setOnInsert": {
                    field::ACCOUNT_ID: account,
                    field::USER_ID: id,
                    field::VIA: via,
                    field::REGULATION_ID: regulation,
                    field::SINCE: now,
                }})
                .upsert(true)
                .build()
        })
        .collect();
    let mut new = 0;
    for chunk in models.chunks(1_000) {
        let r = db
            .client()
            .bulk_write(chunk.to_vec())
            .ordered(false)
            .await
            .context("writing suppressions")?;
        new += r.upserted_count as u64;
    }
    Ok(new)
}

/// Lifts the suppression of `user_ids` of `account` and of every identity suppressed through
/// them. Returns how many were lifted.
pub async fn unsuppress(db: &Database, account: &str, user_ids: &[String]) -> anyhow::Result<u64> {
    let r = suppressions(db)
        .delete_many(doc! {
            field::ACCOUNT_ID: account,
            "$or": [{field::USER_ID: {"$in": user_ids}}, {field::VIA: {"$in": user_ids}}],
        })
        .await
        .context("lifting suppressions")?;
    Ok(r.deleted_count)
}

/// Narrows `filter` to what sorts after the cursor `(date, _id)` in the order newest first.
fn after(filter: &mut Document, date: &str, before: Option<(i64, String)>) {
    if let Some((ms, id)) = before {
        let at = bson::DateTime::from_millis(ms);
        filter.insert(
            "$or",
            vec![
                doc! {date: {"$lt": at}},
                doc! {date: at, field::ID: {"$lt": id}},
            ],
        );
    }
}

/// A page of an account's suppressions, newest first, after the cursor `(since, _id)`.
pub async fn list_suppressions(
    db: &Database,
    account: &str,
    before: Option<(i64, String)>,
    limit: i64,
) -> anyhow::Result<Vec<Suppression>> {
    let mut filter = doc! {field::ACCOUNT_ID: account};
    after(&mut filter, field::SINCE, before);
    suppressions(db)
        .find(filter)
        .sort(doc! {field::SINCE: -1, field::ID: -1})
        .limit(limit)
        .await?
        .try_collect()
        .await
        .context("listing suppressions")
}

/// A page of an account's regulations, newest first, after the cursor `(createdAt, _id)`.
pub async fn list_regulations(
    db: &Database,
    account: &str,
    status: Option<RegulationStatus>,
    user_id: Option<&str>,
    before: Option<(i64, String)>,
    limit: i64,
) -> anyhow::Result<Vec<Regulation>> {
    let mut filter = doc! {field::ACCOUNT_ID: account};
    if let Some(s) = status {
        filter.insert(field::STATUS, s.as_str());
    }
    if let Some(u) = user_id {
        filter.insert(field::USER_IDS, u);
    }
    after(&mut filter, field::CREATED_AT, before);
    regulations(db)
        .find(filter)
        .sort(doc! {field::CREATED_AT: -1, field::ID: -1})
        .limit(limit)
        .await?
        .try_collect()
        .await
        .context("listing regulations")
}

/// Takes the oldest pending regulation, or one whose worker stopped renewing its lease, for
/// `worker` until `lease_until`.
pub async fn claim(
    db: &Database,
    worker: &str,
    lease_until: bson::DateTime,
) -> anyhow::Result<Option<Regulation>> {
    let now = bson::DateTime::now();
    regulations(db)
        .find_one_and_update(
            doc! {"$or": [
                {field::STATUS: "pending"},
                {field::STATUS: "running", field::LEASE_UNTIL: {"$lt": now}},
            ]},
            doc! {
                "$set": {field::STATUS: "running", field::WORKER: worker, field::LEASE_UNTIL: lease_until},
                "$min": {field::STARTED_AT: now},
            },
        )
        .with_options(
            FindOneAndUpdateOptions::builder()
                .sort(doc! {field::CREATED_AT: 1})
                .return_document(ReturnDocument::After)
                .build(),
        )
        .await
        .context("claiming a regulation")
}

/// Renews `worker`'s lease on a running regulation; false when another worker took it over.
pub async fn renew(
    db: &Database,
    id: &str,
    worker: &str,
    lease_until: bson::DateTime,
) -> anyhow::Result<bool> {
    let r = regulations(db)
        .update_one(
            doc! {field::ID: id, field::WORKER: worker, field::STATUS: "running"},
            doc! {"$set": {field::LEASE_UNTIL: lease_until}},
        )
        .await
        .context("renewing a regulation's lease")?;
    Ok(r.matched_count == 1)
}

/// Records how a regulation ended.
pub async fn finish(
    db: &Database,
    id: &str,
    worker: &str,
    outcome: Result<&BTreeMap<String, i64>, &str>,
) -> anyhow::Result<()> {
    let now = bson::DateTime::now();
    let set = match outcome {
        Ok(counts) => {
            let counts: Document = counts
                .iter()
                .map(|(k, v)| (k.clone(), bson::Bson::Int64(*v)))
                .collect();
            doc! {field::STATUS: "finished", field::FINISHED_AT: now, field::COUNTS: counts}
        }
        Err(e) => doc! {field::STATUS: "failed", field::FINISHED_AT: now, field::ERROR: e},
    };
    regulations(db)
        .update_one(
            doc! {field::ID: id, field::WORKER: worker},
            doc! {"$set": set, "$unset": {field::LEASE_UNTIL: ""}},
        )
        .await
        .context("recording a regulation's end")?;
    Ok(())
}

/// An account's retention settings as stored (`None` when it set nothing).
pub async fn retention_of(db: &Database, account: &str) -> anyhow::Result<Option<Retention>> {
    retention(db)
        .find_one(doc! {field::ID: account})
        .await
        .context("reading retention")
}

/// Replaces an account's retention settings.
pub async fn set_retention(db: &Database, r: &Retention) -> anyhow::Result<()> {
    retention(db)
        .replace_one(doc! {field::ID: &r.account_id}, r)
        .upsert(true)
        .await
        .context("writing retention")?;
    Ok(())
}

/// Every account that set its own retention.
pub async fn all_retention(db: &Database) -> anyhow::Result<Vec<Retention>> {
    retention(db)
        .find(doc! {})
        .await?
        .try_collect()
        .await
        .context("reading retention settings")
}

/// The identities suppressed through `user_ids` (linked anonymousIds), the userIds themselves
/// left out.
pub async fn suppressed_via(
    db: &Database,
    account: &str,
    user_ids: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut cursor = db
        .collection::<Document>(SUPPRESSIONS_COLLECTION)
        .find(doc! {field::ACCOUNT_ID: account, field::VIA: {"$in": user_ids}})
        .projection(doc! {field::USER_ID: 1, field::ID: 0})
        .await
        .context("reading suppressions")?;
    let mut out = Vec::new();
    while let Some(d) = cursor.try_next().await.context("reading suppressions")? {
        if let Ok(id) = d.get_str(field::USER_ID) {
            if !user_ids.iter().any(|u| u == id) {
                out.push(id.to_owned());
            }
        }
    }
    Ok(out)
}
