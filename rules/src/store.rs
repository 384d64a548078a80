//! Rules and anomalies in MongoDB (`sluice.rules`, `sluice.anomalies`). A rule's spec is kept as
//! its JSON text beside the fields queries need, so property paths with dots or `$` in `where`
//! never meet MongoDB's rules for field names.
use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::model::{RuleSpec, Severity};

pub const RULES_COLLECTION: &str = "rules";
pub const ANOMALIES_COLLECTION: &str = "anomalies";

/// A stored rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub account_id: String,
    /// Raised by every change; the window state is per version.
    pub version: i64,
    pub enabled: bool,
    /// The [`RuleSpec`] as JSON text.
    pub spec: String,
    pub created_at: bson::DateTime,
    pub updated_at: bson::DateTime,
}

impl RuleDoc {
    pub fn spec(&self) -> anyhow::Result<RuleSpec> {
        serde_json::from_str(&self.spec).with_context(|| format!("rule {} does not read", self.id))
    }
}

/// One attempt to deliver an anomaly to a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub channel_id: String,
    pub attempt: u32,
    /// `delivered`, `retrying` or `failed` (given up).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: bson::DateTime,
}

/// A raised anomaly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub account_id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub rule_version: i64,
    pub severity: Severity,
    /// `threshold` or `zscore`.
    pub kind: String,
    pub message: String,
    /// The count that made it fire (the window's, or the bucket's).
    pub observed: f64,
    /// The rule's value, or its z-score threshold.
    pub threshold: f64,
    /// Z-score rules: the baseline's mean and standard deviation, and the score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stddev: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zscore: Option<f64>,
    pub window_from: bson::DateTime,
    pub window_to: bson::DateTime,
    /// Up to 10 eventIds of the events that made it fire (none when it fired on absence).
    pub sample_event_ids: Vec<String>,
    pub detected_at: bson::DateTime,
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
}

/// A BSON date of a chrono one (millisecond precision).
pub fn bson_date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}

/// The chrono date of a BSON one.
pub fn utc(d: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(d.timestamp_millis()).unwrap_or_default()
}

pub fn rules(db: &Database) -> Collection<RuleDoc> {
    db.collection(RULES_COLLECTION)
}

pub fn anomalies(db: &Database) -> Collection<AnomalyDoc> {
    db.collection(ANOMALIES_COLLECTION)
}

pub async fn ensure_indexes(db: &Database) -> anyhow::Result<()> {
    rules(db)
        .create_index(
            IndexModel::builder()
                .keys(doc! {"accountId": 1, "createdAt": 1})
                .options(
                    IndexOptions::builder()
                        .name("rules_account".to_owned())
                        .build(),
                )
                .build(),
        )
        .await
        .context("creating the rules index")?;
    anomalies(db)
        .create_index(
            IndexModel::builder()
                .keys(doc! {"accountId": 1, "detectedAt": -1, "_id": -1})
                .options(
                    IndexOptions::builder()
                        .name("anomalies_account_time".to_owned())
                        .build(),
                )
                .build(),
        )
        .await
        .context("creating the anomalies index")?;
    Ok(())
}

/// Every enabled rule of every account (what workers evaluate).
pub async fn enabled_rules(db: &Database) -> anyhow::Result<Vec<RuleDoc>> {
    rules(db)
        .find(doc! {"enabled": true})
        .await
        .context("reading the rules")?
        .try_collect()
        .await
        .context("reading the rules")
}

pub async fn account_rules(db: &Database, account: &str) -> anyhow::Result<Vec<RuleDoc>> {
    rules(db)
        .find(doc! {"accountId": account})
        .sort(doc! {"createdAt": 1, "_id": 1})
        .await
        .context("listing rules")?
        .try_collect()
        .await
        .context("listing rules")
}

pub async fn count_rules(db: &Database, account: &str) -> anyhow::Result<u64> {
    rules(db)
        .count_documents(doc! {"accountId": account})
        .await
        .context("counting rules")
}

pub async fn rule_of_account(
    db: &Database,
    account: &str,
    id: &str,
) -> anyhow::Result<Option<RuleDoc>> {
    rules(db)
        .find_one(doc! {"_id": id, "accountId": account})
        .await
        .context("reading the rule")
}

pub async fn insert_rule(db: &Database, rule: &RuleDoc) -> anyhow::Result<()> {
    rules(db)
        .insert_one(rule)
        .await
        .context("storing the rule")?;
    Ok(())
}

/// Replaces the rule if it is still at `expected_version` (a concurrent edit wins otherwise:
/// false).
pub async fn replace_rule(
    db: &Database,
    rule: &RuleDoc,
    expected_version: i64,
) -> anyhow::Result<bool> {
    let r = rules(db)
        .replace_one(
            doc! {"_id": &rule.id, "accountId": &rule.account_id, "version": expected_version},
            rule,
        )
        .await
        .context("replacing the rule")?;
    Ok(r.matched_count == 1)
}

pub async fn delete_rule(db: &Database, account: &str, id: &str) -> anyhow::Result<bool> {
    let r = rules(db)
        .delete_one(doc! {"_id": id, "accountId": account})
        .await
        .context("deleting the rule")?;
    Ok(r.deleted_count == 1)
}

pub async fn insert_anomaly(db: &Database, anomaly: &AnomalyDoc) -> anyhow::Result<()> {
    anomalies(db)
        .insert_one(anomaly)
        .await
        .context("storing the anomaly")?;
    Ok(())
}

/// Appends a delivery attempt to an anomaly.
pub async fn record_delivery(db: &Database, id: &str, delivery: &Delivery) -> anyhow::Result<()> {
    let d = bson::to_bson(delivery).context("a delivery as BSON")?;
    anomalies(db)
        .update_one(doc! {"_id": id}, doc! {"$push": {"deliveries": d}})
        .await
        .context("recording a delivery")?;
    Ok(())
}

/// What `GET /api/v1/anomalies` asks for.
#[derive(Debug, Clone, Default)]
pub struct AnomalyQuery {
    pub since: Option<DateTime<Utc>>,
    pub severity: Option<Severity>,
    pub rule_id: Option<String>,
    /// Strictly older than this (detectedAt, id): the cursor.
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

/// An account's anomalies, newest first.
pub async fn list_anomalies(
    db: &Database,
    account: &str,
    q: &AnomalyQuery,
) -> anyhow::Result<Vec<AnomalyDoc>> {
    let mut filter = doc! {"accountId": account};
    let mut time = Document::new();
    if let Some(since) = q.since {
        // `$gt` a millisecond before, not `$gte`: the MongoDB stand-in here misreads `$gte` on
        // dates (docs/TRACKING_PLANS.md); the two mean the same on millisecond dates.
        let just_before = since - chrono::Duration::milliseconds(1);
        time.insert("$gt", bson_date(just_before));
    }
    if let Some(severity) = q.severity {
        filter.insert("severity", severity.as_str());
    }
    if let Some(rule) = &q.rule_id {
        filter.insert("ruleId", rule.as_str());
    }
    if let Some((at, id)) = &q.before {
        let at = bson_date(*at);
        filter.insert(
            "$or",
            vec![
                Bson::Document(doc! {"detectedAt": {"$lt": at}}),
                Bson::Document(doc! {"detectedAt": at, "_id": {"$lt": id.as_str()}}),
            ],
        );
    }
    if !time.is_empty() {
        filter.insert("detectedAt", time);
    }
    anomalies(db)
        .find(filter)
        .sort(doc! {"detectedAt": -1, "_id": -1})
        .limit(q.limit)
        .await
        .context("listing anomalies")?
        .try_collect()
        .await
        .context("reading anomalies")
}

pub async fn delete_anomaly(db: &Database, account: &str, id: &str) -> anyhow::Result<bool> {
    let r = anomalies(db)
        .delete_one(doc! {"_id": id, "accountId": account})
        .await
        .context("deleting the anomaly")?;
    Ok(r.deleted_count == 1)
}

pub async fn anomaly_of_account(
    db: &Database,
    account: &str,
    id: &str,
) -> anyhow::Result<Option<AnomalyDoc>> {
    anomalies(db)
        .find_one(doc! {"_id": id, "accountId": account})
        .await
        .context("reading the anomaly")
}
