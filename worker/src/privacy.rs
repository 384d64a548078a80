//! The worker's privacy work, beside the consumers and never in their way (docs/PRIVACY.md):
//! - regulations: one at a time, the oldest pending first, held under a lease (a worker that dies
//!   leaves it to another). Identity links are followed, suppressions written (MongoDB for the
//!   record, the account's Redis set for ingest) and announced; a deletion first waits until every
//!   entry queued before it took effect is stored (or dead-lettered) and acknowledged, then
//!   deletes the users' documents from every store, each delete targeted by account and userId.
//! - retention: every `privacy.retention_interval_secs`, each account's data older than its
//!   retention is deleted by range (account, then the date the retention counts by: the index
//!   order of every collection, so no pass scans a collection).
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use fred::prelude::*;
use fred::types::scan::Scanner;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::Database;
use sluice_rules::store::ANOMALIES_COLLECTION;
use sluice_shared::config::Settings;
use sluice_shared::names::{DLQ_COLLECTION, EVENTS_COLLECTION, QUARANTINE_COLLECTION};
use sluice_shared::rollup::{DAY_MS, HOUR_COLLECTION, HOUR_MS, MINUTE_COLLECTION, MINUTE_MS};
use sluice_store::privacy::{self as store, Regulation, RegulationType};
use tokio::sync::watch;

const DAY_SECS: i64 = 86_400;

/// Starts the regulation runner and the retention pass; both stop at shutdown.
pub fn spawn(
    redis: Client,
    db: Database,
    settings: Settings,
    me: String,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let runner = Runner {
        redis: redis.clone(),
        db: db.clone(),
        settings: settings.clone(),
        me,
    };
    let mut stop = shutdown.clone();
    let regulations = tokio::spawn(async move {
        let every = Duration::from_millis(runner.settings.privacy.regulation_poll_ms.max(50));
        loop {
            match runner.run_next().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = ?e, "regulations: cannot take the next one"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    });
    let mut stop = shutdown;
    let retention = tokio::spawn(async move {
        let every = Duration::from_secs(settings.privacy.retention_interval_secs.max(1));
        loop {
            match retention_pass(&redis, &db, &settings).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "retention pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "retention pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    });
    vec![regulations, retention]
}

struct Runner {
    redis: Client,
    db: Database,
    settings: Settings,
    me: String,
}

impl Runner {
    fn lease(&self) -> bson::DateTime {
        let secs = self.settings.privacy.regulation_lease_secs.max(5) as i64;
        bson::DateTime::from_millis(Utc::now().timestamp_millis() + secs * 1000)
    }

    /// Carries out the next regulation, if any; true when one was taken.
    async fn run_next(&self) -> anyhow::Result<bool> {
        let Some(reg) = store::claim(&self.db, &self.me, self.lease()).await? else {
            return Ok(false);
        };
        tracing::info!(regulation = %reg.id, kind = ?reg.kind, users = reg.user_ids.len(), "regulation started");
        let started = std::time::Instant::now();
        let outcome = self.carry_out(&reg).await;
        match &outcome {
            Ok(counts) => {
                tracing::info!(regulation = %reg.id, ?counts, secs = started.elapsed().as_secs_f64(), "regulation finished");
                metrics::counter!("sluice_regulations_total", "outcome" => "finished").increment(1);
                store::finish(&self.db, &reg.id, &self.me, Ok(counts)).await?;
            }
            Err(e) => {
                tracing::error!(regulation = %reg.id, error = ?e, "regulation failed");
                metrics::counter!("sluice_regulations_total", "outcome" => "failed").increment(1);
                store::finish(&self.db, &reg.id, &self.me, Err(&format!("{e:#}"))).await?;
            }
        }
        Ok(true)
    }

    async fn renew(&self, reg: &Regulation) -> anyhow::Result<()> {
        if !store::renew(&self.db, &reg.id, &self.me, self.lease()).await? {
            anyhow::bail!("another worker took the regulation over");
        }
        Ok(())
    }

    async fn carry_out(&self, reg: &Regulation) -> anyhow::Result<BTreeMap<String, i64>> {
        let acct = reg.account_id.as_str();
        let mut counts = BTreeMap::new();
        let linked = linked_identities(&self.db, acct, &reg.user_ids).await?;
        let identities: Vec<String> = reg
            .user_ids
            .iter()
            .cloned()
            .chain(linked.iter().map(|(id, _)| id.clone()))
            .collect();
        counts.insert("identities".into(), identities.len() as i64);
        match reg.kind {
            RegulationType::Unsuppress => {
                let via = store::suppressed_via(&self.db, acct, &reg.user_ids).await?;
                let n = store::unsuppress(&self.db, acct, &reg.user_ids).await?;
                let all: Vec<String> = identities.iter().cloned().chain(via).collect();
                self.set_suppressed(acct, &all, false).await?;
                counts.insert("unsuppressed".into(), n as i64);
                return Ok(counts);
            }
            k if k.suppresses() => {
                let pairs: Vec<(String, String)> = reg
                    .user_ids
                    .iter()
                    .map(|u| (u.clone(), u.clone()))
                    .chain(linked.iter().cloned())
                    .collect();
                let n = store::suppress(&self.db, acct, &pairs, &reg.id).await?;
                self.set_suppressed(acct, &identities, true).await?;
                counts.insert("suppressed".into(), n as i64);
            }
            _ => {}
        }
        if !reg.kind.deletes() {
            return Ok(counts);
        }
        // Every api instance refuses the users' events within a second of the request; what was
        // queued before must be stored (or dead-lettered) before the delete, or it would land
        // after it.
        let settle = reg.created_at.timestamp_millis() + 2_000 - Utc::now().timestamp_millis();
        if settle > 0 {
            tokio::time::sleep(Duration::from_millis(settle as u64)).await;
        }
        let queued = self.wait_for_backlog(reg).await?;
        tracing::info!(regulation = %reg.id, unacknowledged = queued, "the backlog before the deletion is stored");
        self.renew(reg).await?;
        let deleted = delete_identities(&self.redis, &self.db, acct, &identities).await?;
        counts.extend(deleted);
        Ok(counts)
    }

    /// Adds or removes identities of the account's Redis set, then announces the change.
    async fn set_suppressed(&self, acct: &str, ids: &[String], add: bool) -> anyhow::Result<()> {
        let prefix = &self.settings.redis.key_prefix;
        sluice_shared::redis::change_suppressed(&self.redis, prefix, acct, ids, add).await
    }

    /// Waits until every partition's entries up to its newest one now are acknowledged (stored
    /// or dead-lettered); returns the entries that were still unacknowledged when it began.
    async fn wait_for_backlog(&self, reg: &Regulation) -> anyhow::Result<u64> {
        let layout = self.settings.redis.layout();
        let group = &self.settings.redis.group;
        let mut marks = Vec::new();
        let mut first = 0;
        for p in layout.all() {
            let stream = layout.stream(p);
            let last: Option<String> = self.redis.hget(layout.meta(p), "last").await?;
            if let Some(last) = last.and_then(|l| parse_id(&l)) {
                marks.push((stream.clone(), last));
            }
            first += sluice_shared::redis::group_backlog(&self.redis, &stream, group)
                .await?
                .total();
        }
        let mut beat = std::time::Instant::now();
        loop {
            let mut waiting = false;
            for (stream, mark) in &marks {
                if !acknowledged_through(&self.redis, stream, group, *mark).await? {
                    waiting = true;
                    break;
                }
            }
            if !waiting {
                return Ok(first);
            }
            if beat.elapsed() > Duration::from_secs(5) {
                self.renew(reg).await?;
                beat = std::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A stream id as (milliseconds, sequence).
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Whether the group has been handed every entry up to `mark` and none of them is pending.
async fn acknowledged_through(
    redis: &Client,
    stream: &str,
    group: &str,
    mark: (u64, u64),
) -> anyhow::Result<bool> {
    let groups: Vec<std::collections::HashMap<String, Value>> =
        match redis.xinfo_groups(stream).await {
            Ok(g) => g,
            Err(e) if e.details().contains("no such key") => return Ok(true),
            Err(e) => return Err(e).context("XINFO GROUPS"),
        };
    let Some(g) = groups
        .iter()
        .find(|g| g.get("name").and_then(|v| v.as_string()).as_deref() == Some(group))
    else {
        // No group: nothing was ever read, and nothing can be stored before it exists.
        return Ok(false);
    };
    let delivered = g
        .get("last-delivered-id")
        .and_then(|v| v.as_string())
        .and_then(|s| parse_id(&s));
    if delivered.is_none_or(|d| d < mark) {
        return Ok(false);
    }
    // The oldest pending entry, if any, must be newer than the mark.
    let (count, oldest, _, _): (u64, Option<String>, Option<String>, Value) = redis
        .xpending(stream, group, ())
        .await
        .context("XPENDING")?;
    Ok(count == 0 || oldest.and_then(|o| parse_id(&o)).is_some_and(|o| o > mark))
}

/// The identities linked to `user_ids` in the account's stored events: the anonymousId an
/// identify (or any call) carried beside a userId, an alias call's previousId, and PostHog's
/// `$anon_distinct_id` — each with the userId it is linked to.
pub async fn linked_identities(
    db: &Database,
    account: &str,
    user_ids: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for coll in [EVENTS_COLLECTION, QUARANTINE_COLLECTION] {
        let mut cursor = db
            .collection::<Document>(coll)
            .find(doc! {
                "accountId": account,
                "userId": {"$in": user_ids},
                "$or": [
                    {"anonymousId": {"$exists": true}},
                    {"previousId": {"$exists": true}},
                    {"properties.$anon_distinct_id": {"$exists": true}},
                ],
            })
            .projection(doc! {"userId": 1, "anonymousId": 1, "previousId": 1, "properties.$anon_distinct_id": 1})
            .await
            .context("reading identity links")?;
        while let Some(d) = cursor.try_next().await.context("reading identity links")? {
            let Ok(user) = d.get_str("userId") else {
                continue;
            };
            let anon = d
                .get_document("properties")
                .ok()
                .and_then(|p| p.get_str("$anon_distinct_id").ok());
            for id in [
                d.get_str("anonymousId").ok(),
                d.get_str("previousId").ok(),
                anon,
            ]
            .into_iter()
            .flatten()
            {
                if id != user && !user_ids.iter().any(|u| u == id) {
                    out.entry(id.to_owned()).or_insert_with(|| user.to_owned());
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Deletes every document of `identities` in the account (as userId or anonymousId), the
/// anomalies' samples of their events, and their members of the top-user sets. Counts per store.
pub async fn delete_identities(
    redis: &Client,
    db: &Database,
    account: &str,
    identities: &[String],
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    let theirs = doc! {"accountId": account, "$or": [
        {"userId": {"$in": identities}},
        {"anonymousId": {"$in": identities}},
    ]};
    // Anomaly samples name eventIds: which are theirs is read before the events go.
    let samples = pull_anomaly_samples(db, account, &theirs).await?;
    counts.insert("anomalySamples".into(), samples);
    for (name, coll) in [
        ("events", EVENTS_COLLECTION),
        ("quarantine", QUARANTINE_COLLECTION),
    ] {
        let r = db
            .collection::<Document>(coll)
            .delete_many(theirs.clone())
            .await
            .with_context(|| format!("deleting from {coll}"))?;
        counts.insert(name.into(), r.deleted_count as i64);
    }
    let letters = db
        .collection::<Document>(DLQ_COLLECTION)
        .delete_many(doc! {"accountId": account, "$or": [
            {"event.userId": {"$in": identities}},
            {"event.anonymousId": {"$in": identities}},
        ]})
        .await
        .context("deleting dead letters")?;
    counts.insert("deadLetters".into(), letters.deleted_count as i64);
    let mut removed = 0i64;
    for key in scan_keys(redis, &format!("top:{{a{account}}}:*")).await? {
        removed += redis
            .zrem::<i64, _, _>(key, identities.to_vec())
            .await
            .context("ZREM from a top-user set")?;
    }
    counts.insert("topUsers".into(), removed);
    Ok(counts)
}

/// Removes from the account's anomalies the sampled eventIds of the events `theirs` selects.
async fn pull_anomaly_samples(
    db: &Database,
    account: &str,
    theirs: &Document,
) -> anyhow::Result<i64> {
    let anomalies = db.collection::<Document>(ANOMALIES_COLLECTION);
    let mut cursor = anomalies
        .find(doc! {"accountId": account, "sampleEventIds.0": {"$exists": true}})
        .projection(doc! {"sampleEventIds": 1})
        .await
        .context("reading anomaly samples")?;
    let mut sampled: BTreeSet<String> = BTreeSet::new();
    while let Some(d) = cursor.try_next().await.context("reading anomaly samples")? {
        if let Ok(ids) = d.get_array("sampleEventIds") {
            sampled.extend(ids.iter().filter_map(|b| b.as_str().map(str::to_owned)));
        }
    }
    if sampled.is_empty() {
        return Ok(0);
    }
    let sampled: Vec<String> = sampled.into_iter().collect();
    let mut pulled = 0;
    for chunk in sampled.chunks(1_000) {
        let mut filter = theirs.clone();
        filter.insert("eventId", doc! {"$in": chunk});
        let mine: Vec<Bson> = db
            .collection::<Document>(EVENTS_COLLECTION)
            .find(filter)
            .projection(doc! {"eventId": 1})
            .await?
            .try_collect::<Vec<Document>>()
            .await
            .context("matching anomaly samples")?
            .into_iter()
            .filter_map(|d| {
                d.get_str("eventId")
                    .ok()
                    .map(|s| Bson::String(s.to_owned()))
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        pulled += mine.len() as i64;
        anomalies
            .update_many(
                doc! {"accountId": account, "sampleEventIds": {"$in": mine.clone()}},
                doc! {"$pull": {"sampleEventIds": {"$in": mine}}},
            )
            .await
            .context("pulling anomaly samples")?;
    }
    Ok(pulled)
}

/// Every key matching `pattern`, whose hash tag puts them all on one node (SCAN there).
async fn scan_keys(redis: &Client, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pages = redis.scan(pattern, Some(500), None);
    while let Some(page) = pages.next().await {
        let mut page = page.context("SCAN")?;
        if let Some(found) = page.take_results() {
            keys.extend(
                found
                    .into_iter()
                    .filter_map(|k| k.as_str().map(|s| s.to_string())),
            );
        }
    }
    Ok(keys)
}

/// One retention pass over every account with data; returns the documents and keys deleted.
pub async fn retention_pass(
    redis: &Client,
    db: &Database,
    settings: &Settings,
) -> anyhow::Result<u64> {
    let custom: BTreeMap<String, store::Retention> = store::all_retention(db)
        .await?
        .into_iter()
        .map(|r| (r.account_id.clone(), r))
        .collect();
    let mut accounts: BTreeSet<String> = custom.keys().cloned().collect();
    for coll in [
        EVENTS_COLLECTION,
        QUARANTINE_COLLECTION,
        DLQ_COLLECTION,
        ANOMALIES_COLLECTION,
    ] {
        let found = db
            .collection::<Document>(coll)
            .distinct("accountId", doc! {})
            .await
            .with_context(|| format!("the accounts of {coll}"))?;
        accounts.extend(
            found
                .into_iter()
                .filter_map(|b| b.as_str().map(str::to_owned)),
        );
    }
    let d = &settings.privacy;
    let now = Utc::now().timestamp_millis();
    let cutoff = |days: u32| bson::DateTime::from_millis(now - days as i64 * DAY_SECS * 1000);
    let mut deleted = 0;
    for account in accounts {
        let r = custom.get(&account);
        let events = cutoff(r.and_then(|r| r.events_days).unwrap_or(d.events_days));
        let letters = cutoff(
            r.and_then(|r| r.dead_letters_days)
                .unwrap_or(d.dead_letters_days),
        );
        let held = cutoff(
            r.and_then(|r| r.quarantine_days)
                .unwrap_or(d.quarantine_days),
        );
        let raised = cutoff(r.and_then(|r| r.anomalies_days).unwrap_or(d.anomalies_days));
        let minute_end = bson::DateTime::from_millis(events.timestamp_millis() - MINUTE_MS);
        let hour_end = bson::DateTime::from_millis(events.timestamp_millis() - HOUR_MS);
        for (coll, field, before) in [
            (EVENTS_COLLECTION, "timestamp", events),
            (QUARANTINE_COLLECTION, "timestamp", held),
            (DLQ_COLLECTION, "failedAt", letters),
            (ANOMALIES_COLLECTION, "detectedAt", raised),
            // A bucket goes once all of it is older than the cutoff.
            (MINUTE_COLLECTION, "minute", minute_end),
            (HOUR_COLLECTION, "hour", hour_end),
        ] {
            let r = db
                .collection::<Document>(coll)
                .delete_many(doc! {"accountId": &account, field: {"$lt": before}})
                .await
                .with_context(|| format!("retention of {coll}"))?;
            if r.deleted_count > 0 {
                metrics::counter!("sluice_retention_deleted_total", "store" => coll)
                    .increment(r.deleted_count);
            }
            deleted += r.deleted_count;
        }
        deleted += expire_sketches(redis, &account, events.timestamp_millis()).await?;
    }
    Ok(deleted)
}

/// Deletes the account's unique-user sketches and top-user sets of buckets wholly older than
/// `cutoff_ms` (they expire 8 days after their last write anyway).
async fn expire_sketches(redis: &Client, account: &str, cutoff_ms: i64) -> anyhow::Result<u64> {
    let mut gone = Vec::new();
    for kind in ["hll", "top"] {
        for key in scan_keys(redis, &format!("{kind}:{{a{account}}}:*")).await? {
            let mut parts = key.rsplitn(3, ':');
            let (Some(bucket), Some(unit)) = (parts.next(), parts.next()) else {
                continue;
            };
            let span = match unit {
                "m" => MINUTE_MS,
                "h" => HOUR_MS,
                "d" => DAY_MS,
                _ => continue,
            };
            if bucket.parse::<i64>().is_ok_and(|b| b + span <= cutoff_ms) {
                gone.push(key);
            }
        }
    }
    let n = gone.len() as u64;
    for key in gone {
        redis
            .del::<i64, _>(key)
            .await
            .context("DEL an old sketch")?;
    }
    Ok(n)
}
