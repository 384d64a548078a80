//! Rollups written in the same flush as the events they count, for the events whose insert
//! succeeded (never the 11000 duplicates, so a redelivered or replayed event is not counted twice):
//! - MongoDB `rollups_minute` and `rollups_hour`: one document per account and bucket with `total`
//!   and a count per eventType under `types`, `$inc` upserts in one unordered bulk write;
//! - Redis HyperLogLogs of userIds per account per minute and hour (`PFADD`; unique users of a
//!   range are a `PFCOUNT` over its buckets, standard error 0.81%);
//! - Redis sorted sets of per-user counts per account per hour and day (`ZINCRBY`), each capped to
//!   its `top_cap` largest members after every flush.
use std::collections::{BTreeMap, BTreeSet};

use fred::prelude::*;
use mongodb::bson::{doc, DateTime as BsonDate};
use mongodb::options::UpdateOneModel;
use mongodb::Database;
use sluice_shared::event::QueuedEvent;
use sluice_shared::rollup::{
    floor_to, hll_key, rollup_id, top_key, type_field, DAY_MS, HOUR_COLLECTION, HOUR_MS,
    MINUTE_COLLECTION, MINUTE_MS, SKETCH_TTL_SECS,
};

/// Everything one batch adds to the rollups; pure.
#[derive(Debug, Default, PartialEq)]
pub struct Increments {
    /// (account, bucket start) → eventType → events, per minute and per hour.
    pub minute: BTreeMap<(String, i64), BTreeMap<String, i64>>,
    pub hour: BTreeMap<(String, i64), BTreeMap<String, i64>>,
    /// HLL key → userIds.
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// Top-users key → userId → events.
    pub top: BTreeMap<String, BTreeMap<String, i64>>,
}

impl Increments {
    pub fn of<'a>(events: impl IntoIterator<Item = &'a QueuedEvent>) -> Self {
        let mut inc = Increments::default();
        for e in events {
            let ts = e.timestamp.timestamp_millis();
            let (minute, hour, day) = (
                floor_to(ts, MINUTE_MS),
                floor_to(ts, HOUR_MS),
                floor_to(ts, DAY_MS),
            );
            let acc = &e.account_id;
            for (map, bucket) in [(&mut inc.minute, minute), (&mut inc.hour, hour)] {
                *map.entry((acc.clone(), bucket))
                    .or_default()
                    .entry(e.event_type.clone())
                    .or_default() += 1;
            }
            for key in [hll_key(acc, 'm', minute), hll_key(acc, 'h', hour)] {
                inc.users.entry(key).or_default().insert(e.user_id.clone());
            }
            for key in [top_key(acc, 'h', hour), top_key(acc, 'd', day)] {
                *inc.top
                    .entry(key)
                    .or_default()
                    .entry(e.user_id.clone())
                    .or_default() += 1;
            }
        }
        inc
    }

    pub fn is_empty(&self) -> bool {
        self.minute.is_empty()
    }

    /// The (account, hour) buckets these increments touch.
    pub fn hour_buckets(&self) -> impl Iterator<Item = (String, i64)> + '_ {
        self.hour.keys().cloned()
    }

    /// Adds another batch's increments to these.
    pub fn merge(&mut self, other: Increments) {
        for (mine, theirs) in [
            (&mut self.minute, other.minute),
            (&mut self.hour, other.hour),
        ] {
            for (k, types) in theirs {
                let slot = mine.entry(k).or_default();
                for (t, n) in types {
                    *slot.entry(t).or_default() += n;
                }
            }
        }
        for (k, users) in other.users {
            self.users.entry(k).or_default().extend(users);
        }
        for (k, counts) in other.top {
            let slot = self.top.entry(k).or_default();
            for (u, n) in counts {
                *slot.entry(u).or_default() += n;
            }
        }
    }
}

/// The (account, hour) bucket an event counts in.
pub fn hour_bucket(e: &QueuedEvent) -> (String, i64) {
    (
        e.account_id.clone(),
        floor_to(e.timestamp.timestamp_millis(), HOUR_MS),
    )
}

fn models(db: &Database, inc: &Increments) -> Vec<UpdateOneModel> {
    let mut out = Vec::with_capacity(inc.minute.len() + inc.hour.len());
    for (coll, field, counts) in [
        (MINUTE_COLLECTION, "minute", &inc.minute),
        (HOUR_COLLECTION, "hour", &inc.hour),
    ] {
        let ns = db.collection::<mongodb::bson::Document>(coll).namespace();
        for ((acc, bucket), types) in counts {
            // `v` counts the writes of a document, so the reconciler can replace its counts only
            // if no increment came in meanwhile.
            let mut inc = doc! {"total": types.values().sum::<i64>(), "v": 1_i64};
            for (t, n) in types {
                inc.insert(format!("types.{}", type_field(t)), n);
            }
            out.push(
                UpdateOneModel::builder()
                    .namespace(ns.clone())
                    .filter(doc! {"_id": rollup_id(acc, *bucket)})
                    .update(doc! {
                        "$inc": inc,
                        "$setOnInsert": {"accountId": acc, field: BsonDate::from_millis(*bucket)},
                    })
                    .upsert(true)
                    .build(),
            );
        }
    }
    out
}

/// Applies the increments; false when a store failed (the aggregates of these events are then
/// short until the reconciler recomputes their buckets). A failure is not retried: `$inc` is not
/// idempotent, and an unknown partial write retried would count twice.
pub async fn apply(db: &Database, redis: &Client, inc: &Increments, top_cap: usize) -> bool {
    if inc.is_empty() {
        return true;
    }
    let mut complete = true;
    if let Err(e) = db.client().bulk_write(models(db, inc)).ordered(false).await {
        tracing::warn!(error = %e, "rollup write failed; these buckets go to the reconciler");
        metrics::counter!("sluice_worker_rollup_failures_total", "store" => "mongodb").increment(1);
        complete = false;
    }
    if let Err(e) = apply_sketches(redis, inc, top_cap).await {
        tracing::warn!(error = %e, "sketch update failed; unique and top users of this batch are short");
        metrics::counter!("sluice_worker_rollup_failures_total", "store" => "redis").increment(1);
    }
    complete
}

async fn apply_sketches(redis: &Client, inc: &Increments, top_cap: usize) -> anyhow::Result<()> {
    let pipe = redis.pipeline();
    for (key, users) in &inc.users {
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let _: () = pipe.pfadd(key, users).await?;
        let _: () = pipe.expire(key, SKETCH_TTL_SECS, None).await?;
    }
    for (key, counts) in &inc.top {
        for (user, n) in counts {
            let _: () = pipe.zincrby(key, *n as f64, user.as_str()).await?;
        }
        let _: () = pipe.zremrangebyrank(key, 0, -(top_cap as i64) - 1).await?;
        let _: () = pipe.expire(key, SKETCH_TTL_SECS, None).await?;
    }
    let _: Vec<Value> = pipe.all().await?;
    Ok(())
}

/// Indexes the analytics range queries use.
pub async fn ensure_indexes(db: &Database) -> anyhow::Result<()> {
    use mongodb::IndexModel;
    for (coll, field) in [(MINUTE_COLLECTION, "minute"), (HOUR_COLLECTION, "hour")] {
        db.collection::<mongodb::bson::Document>(coll)
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"accountId": 1, field: 1})
                    .build(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn ev(acc: &str, user: &str, ty: &str, h: u32, m: u32) -> QueuedEvent {
        let ts = Utc.with_ymd_and_hms(2024, 3, 1, h, m, 30).unwrap();
        QueuedEvent {
            event_id: format!("{user}{h}{m}"),
            account_id: acc.into(),
            event_type: ty.into(),
            user_id: user.into(),
            session_id: None,
            timestamp: ts,
            received_at: Utc::now(),
            properties: None,
            origin: None,
            plan: None,
        }
    }

    #[test]
    fn increments_bucket_by_the_events_own_timestamp() {
        let events = [
            ev("a", "u1", "click", 10, 5),
            ev("a", "u1", "click", 10, 5),
            ev("a", "u2", "view", 10, 6),
            ev("b", "u1", "click", 11, 0),
        ];
        let inc = Increments::of(&events);
        let t = |h, m| {
            Utc.with_ymd_and_hms(2024, 3, 1, h, m, 0)
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(inc.minute[&("a".into(), t(10, 5))]["click"], 2);
        assert_eq!(inc.minute[&("a".into(), t(10, 6))]["view"], 1);
        assert_eq!(inc.hour[&("a".into(), t(10, 0))]["click"], 2);
        assert_eq!(inc.hour[&("a".into(), t(10, 0))]["view"], 1);
        assert_eq!(inc.hour[&("b".into(), t(11, 0))]["click"], 1);
        assert_eq!(inc.users[&hll_key("a", 'h', t(10, 0))].len(), 2);
        assert_eq!(inc.top[&top_key("a", 'h', t(10, 0))]["u1"], 2);
        assert_eq!(inc.top[&top_key("a", 'd', t(0, 0))]["u2"], 1);
        assert_eq!(inc.minute.values().flat_map(|t| t.values()).sum::<i64>(), 4);
    }
}
