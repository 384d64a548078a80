//! Makes the rollups converge to the stored events. `$inc` rollups can miss events: an insert
//! retried after its reply was lost sees its own documents as duplicates (11000) and counts
//! nothing, and a worker killed between a write and its rollups never writes them. Every such
//! event shows up as a duplicate when its entry is written again, so the worker marks the event's
//! (account, hour) bucket *suspect* (`sluice.rollups_suspect`), as it does for a bucket whose
//! rollup write failed. This reconciler recomputes a suspect hour — its hour document and its
//! minute documents — from `events` (an indexed range of one account and one hour) and replaces
//! the counts, but only where no increment came in meanwhile:
//! 1. read the write counter `v` of each rollup document of the hour;
//! 2. count the hour's events per minute and type;
//! 3. wait `worker.reconcile_settle_ms`, longer than any increment of an event counted in 2 takes
//!    to arrive (rollups are written within `worker.rollup_interval_ms` of the insert);
//! 4. replace each document's counts only if its `v` is still the one read in 1.
//!
//! A document that changed is left for the next round. The bound: an increment delayed past the
//! settle time (a worker stalled between insert and rollup write) can still be counted twice
//! until its bucket is next suspect. Unique users (HyperLogLog, idempotent) and top users are not
//! recomputed.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime as BsonDate, Document};
use mongodb::Database;
use sluice_shared::config::Settings;
use sluice_shared::rollup::{
    floor_to, rollup_id, type_field, HOUR_COLLECTION, HOUR_MS, MINUTE_COLLECTION, MINUTE_MS,
    SUSPECT_COLLECTION,
};
use tokio::sync::watch;

/// Marks buckets suspect. Failures are logged: the events stay exact, only their aggregates can
/// stay short.
pub async fn mark(db: &Database, buckets: &BTreeSet<(String, i64)>) {
    if buckets.is_empty() {
        return;
    }
    let coll = db.collection::<Document>(SUSPECT_COLLECTION);
    let ns = coll.namespace();
    let now = BsonDate::now();
    let models: Vec<_> = buckets
        .iter()
        .map(|(acc, hour)| {
            mongodb::options::UpdateOneModel::builder()
                .namespace(ns.clone())
                .filter(doc! {"_id": rollup_id(acc, *hour)})
                .update(doc! {
                    "$set": {"accountId": acc, "hour": BsonDate::from_millis(*hour), "markedAt": now},
                })
                .upsert(true)
                .build()
        })
        .collect();
    match db.client().bulk_write(models).ordered(false).await {
        Ok(_) => {
            metrics::counter!("sluice_worker_rollup_suspect_buckets_total")
                .increment(buckets.len() as u64);
        }
        Err(e) => {
            tracing::warn!(error = %e, buckets = buckets.len(), "cannot mark rollup buckets for reconciliation; their aggregates may stay short");
        }
    }
}

/// Counts of one rollup document: total and per eventType.
type Counts = BTreeMap<String, i64>;

struct Bucket {
    suspect_id: String,
    marked_at: BsonDate,
    account: String,
    hour: i64,
    /// `v` of each rollup document of the hour as read before counting (`None`: absent).
    seen: BTreeMap<(&'static str, i64), Option<i64>>,
    /// Counts from `events`: (collection, bucket start) → eventType → n.
    counted: BTreeMap<(&'static str, i64), Counts>,
}

/// One round: recomputes up to `limit` suspect buckets marked more than the settle time ago;
/// returns how many were made exact.
pub async fn run_once(db: &Database, settings: &Settings, limit: i64) -> anyhow::Result<usize> {
    let settle = Duration::from_millis(settings.worker.reconcile_settle_ms);
    let cutoff =
        BsonDate::from_millis(BsonDate::now().timestamp_millis() - settle.as_millis() as i64);
    let suspects: Vec<Document> = db
        .collection::<Document>(SUSPECT_COLLECTION)
        .find(doc! {"markedAt": {"$lte": cutoff}})
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    if suspects.is_empty() {
        return Ok(0);
    }
    let mut buckets = Vec::with_capacity(suspects.len());
    for s in suspects {
        let (Ok(id), Ok(account), Ok(hour), Ok(marked_at)) = (
            s.get_str("_id"),
            s.get_str("accountId"),
            s.get_datetime("hour"),
            s.get_datetime("markedAt"),
        ) else {
            continue;
        };
        let mut b = Bucket {
            suspect_id: id.to_owned(),
            marked_at: *marked_at,
            account: account.to_owned(),
            hour: hour.timestamp_millis(),
            seen: BTreeMap::new(),
            counted: BTreeMap::new(),
        };
        read_versions(db, &mut b).await?;
        count_events(db, settings, &mut b).await?;
        buckets.push(b);
    }
    tokio::time::sleep(settle).await;
    let mut exact = 0;
    for b in &buckets {
        if replace_counts(db, b).await? {
            db.collection::<Document>(SUSPECT_COLLECTION)
                .delete_one(doc! {"_id": &b.suspect_id, "markedAt": b.marked_at})
                .await?;
            exact += 1;
        } else {
            tracing::debug!(bucket = %b.suspect_id, "rollups changed while reconciling; next round");
        }
    }
    if exact > 0 {
        tracing::info!(buckets = exact, "rollups recomputed from the stored events");
        metrics::counter!("sluice_worker_rollup_reconciled_buckets_total").increment(exact as u64);
    }
    Ok(exact)
}

async fn read_versions(db: &Database, b: &mut Bucket) -> anyhow::Result<()> {
    let hour_doc = db
        .collection::<Document>(HOUR_COLLECTION)
        .find_one(doc! {"_id": rollup_id(&b.account, b.hour)})
        .await?;
    b.seen.insert(
        (HOUR_COLLECTION, b.hour),
        hour_doc.map(|d| d.get_i64("v").unwrap_or(0)),
    );
    let minutes: Vec<Document> = db
        .collection::<Document>(MINUTE_COLLECTION)
        .find(doc! {"accountId": &b.account, "minute": {
        "$gte": BsonDate::from_millis(b.hour), "$lt": BsonDate::from_millis(b.hour + HOUR_MS)}})
        .await?
        .try_collect()
        .await?;
    for m in minutes {
        if let Ok(t) = m.get_datetime("minute") {
            b.seen.insert(
                (MINUTE_COLLECTION, t.timestamp_millis()),
                Some(m.get_i64("v").unwrap_or(0)),
            );
        }
    }
    Ok(())
}

/// Counts the hour's events per minute and type, as the worker counts them (events outside the
/// aggregates' time window are stored but not counted).
async fn count_events(db: &Database, settings: &Settings, b: &mut Bucket) -> anyhow::Result<()> {
    let w = &settings.worker;
    let max_age_ms = w.rollup_max_age_days as i64 * 86_400_000;
    let max_future_ms = w.rollup_max_future_secs as i64 * 1_000;
    let pipeline = vec![
        doc! {"$match": {"accountId": &b.account, "timestamp": {
        "$gte": BsonDate::from_millis(b.hour), "$lt": BsonDate::from_millis(b.hour + HOUR_MS)}}},
        doc! {"$match": {"$expr": {"$and": [
            {"$lte": [{"$subtract": ["$receivedAt", "$timestamp"]}, max_age_ms]},
            {"$lte": [{"$subtract": ["$timestamp", "$receivedAt"]}, max_future_ms]},
        ]}}},
        doc! {"$group": {
            "_id": {"m": {"$dateTrunc": {"date": "$timestamp", "unit": "minute"}}, "t": "$eventType"},
            "n": {"$sum": 1},
        }},
    ];
    let rows: Vec<Document> = sluice_store::events(db)
        .aggregate(pipeline)
        .await?
        .try_collect()
        .await?;
    for row in rows {
        let Ok(id) = row.get_document("_id") else {
            continue;
        };
        let (Ok(minute), Ok(ty)) = (id.get_datetime("m"), id.get_str("t")) else {
            continue;
        };
        let n = match row.get("n") {
            Some(mongodb::bson::Bson::Int32(n)) => *n as i64,
            Some(mongodb::bson::Bson::Int64(n)) => *n,
            _ => continue,
        };
        let minute = floor_to(minute.timestamp_millis(), MINUTE_MS);
        for key in [(MINUTE_COLLECTION, minute), (HOUR_COLLECTION, b.hour)] {
            *b.counted
                .entry(key)
                .or_default()
                .entry(ty.to_owned())
                .or_default() += n;
        }
    }
    Ok(())
}

/// Replaces each rollup document's counts if no increment came in since its `v` was read; true if
/// every document of the bucket is exact.
async fn replace_counts(db: &Database, b: &Bucket) -> anyhow::Result<bool> {
    let mut keys: BTreeSet<(&'static str, i64)> = b.seen.keys().copied().collect();
    keys.extend(b.counted.keys().copied());
    let empty = Counts::new();
    let mut all = true;
    // Minutes first, the hour last: a reader of the hour never sees it ahead of its minutes.
    let ordered = keys
        .iter()
        .filter(|k| k.0 == MINUTE_COLLECTION)
        .chain(keys.iter().filter(|k| k.0 == HOUR_COLLECTION));
    for key @ (coll, start) in ordered {
        let counts = b.counted.get(key).unwrap_or(&empty);
        let seen = b.seen.get(key).copied().flatten();
        let mut types = Document::new();
        for (t, n) in counts {
            types.insert(type_field(t), n);
        }
        let field = if *coll == HOUR_COLLECTION {
            "hour"
        } else {
            "minute"
        };
        let filter = match seen {
            Some(0) => {
                doc! {"_id": rollup_id(&b.account, *start), "$or": [{"v": 0_i64}, {"v": {"$exists": false}}]}
            }
            Some(v) => doc! {"_id": rollup_id(&b.account, *start), "v": v},
            None => doc! {"_id": rollup_id(&b.account, *start), "v": {"$exists": false}},
        };
        let update = doc! {
            "$set": {"total": counts.values().sum::<i64>(), "types": types,
                     "accountId": &b.account, field: BsonDate::from_millis(*start)},
            "$inc": {"v": 1_i64},
        };
        match db
            .collection::<Document>(coll)
            .update_one(filter, update)
            .upsert(seen.is_none())
            .await
        {
            Ok(r) if r.matched_count == 1 || r.upserted_id.is_some() => {}
            Ok(_) => all = false,
            Err(e) if is_duplicate_key(&e) => all = false,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(all)
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == sluice_store::DUPLICATE_KEY)
        || e.to_string().contains("E11000")
}

pub fn spawn(
    db: Database,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_millis(settings.worker.reconcile_interval_ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = run_once(&db, &settings, 100).await {
                tracing::warn!(error = ?e, "rollup reconciliation failed");
            }
        }
    })
}
