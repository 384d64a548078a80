//! Reads behind the endpoints. Aggregates come from the rollups the worker writes (MongoDB) and
//! from the sketches beside them (Redis); raw events are read only by account and userId (the
//! shard key), newest first, with a cursor.
use std::collections::BTreeMap;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime as BsonDate, Document};
use mongodb::Database;
use serde_json::{json, Value};
use sluice_shared::names::{DLQ_COLLECTION, EVENTS_COLLECTION};
use sluice_shared::rollup::{
    cover, floor_to, hll_key, top_key, type_field, type_from_field, DAY_MS, HOUR_COLLECTION,
    HOUR_MS, MINUTE_COLLECTION, MINUTE_MS,
};

use crate::error::AnalyticsError;
use crate::params::Cursor;
use crate::views::{self, PipelineState};

/// The reply as the JSON the cache keeps.
fn to_value(view: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(view).map_err(|e| AnalyticsError::unavailable(format!("encoding: {e}")))
}

type Result<T> = std::result::Result<T, AnalyticsError>;

/// `(bucket start, eventType, count)` rows of one rollup collection for an account: one
/// index range scan per time range (no `$or`, which a server may answer with a collection scan).
async fn rollup_rows(
    db: &Database,
    collection: &str,
    field: &str,
    account: &str,
    ranges: &[std::ops::Range<i64>],
    event_type: Option<&str>,
) -> Result<Vec<(i64, String, i64)>> {
    let scans = ranges
        .iter()
        .filter(|r| r.start < r.end)
        .map(|r| rollup_range(db, collection, field, account, r.clone(), event_type));
    let parts = futures::future::try_join_all(scans).await?;
    Ok(parts.into_iter().flatten().collect())
}

async fn rollup_range(
    db: &Database,
    collection: &str,
    field: &str,
    account: &str,
    range: std::ops::Range<i64>,
    event_type: Option<&str>,
) -> Result<Vec<(i64, String, i64)>> {
    let filter = doc! {
        "accountId": account,
        field: {"$gte": BsonDate::from_millis(range.start), "$lt": BsonDate::from_millis(range.end)},
    };
    let projection = match event_type {
        Some(t) => doc! {field: 1, format!("types.{}", type_field(t)): 1},
        None => doc! {field: 1, "types": 1},
    };
    let docs: Vec<Document> = db
        .collection::<Document>(collection)
        .find(filter)
        .projection(projection)
        .await
        .map_err(AnalyticsError::unavailable)?
        .try_collect()
        .await
        .map_err(AnalyticsError::unavailable)?;
    let count = |b: &Bson| match b {
        Bson::Int32(n) => Some(*n as i64),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    };
    let mut rows = Vec::new();
    for d in &docs {
        let (Ok(ts), Ok(types)) = (d.get_datetime(field), d.get_document("types")) else {
            continue;
        };
        for (name, n) in types {
            if let Some(n) = count(n) {
                rows.push((ts.timestamp_millis(), type_from_field(name), n));
            }
        }
    }
    Ok(rows)
}

/// Every rollup row of `[start, end)`: whole hours from the hour rollups, the edges from minutes.
async fn window_rows(
    db: &Database,
    account: &str,
    start: i64,
    end: i64,
    event_type: Option<&str>,
) -> Result<Vec<(i64, String, i64)>> {
    let c = cover(start, end, MINUTE_MS, HOUR_MS).with_open_tail(HOUR_MS);
    let (mut rows, minutes) = tokio::try_join!(
        rollup_rows(
            db,
            HOUR_COLLECTION,
            "hour",
            account,
            std::slice::from_ref(&c.coarse),
            event_type
        ),
        rollup_rows(
            db,
            MINUTE_COLLECTION,
            "minute",
            account,
            &c.fine,
            event_type
        ),
    )?;
    rows.extend(minutes);
    Ok(rows)
}

fn redis_err(e: fred::error::Error) -> AnalyticsError {
    AnalyticsError::unavailable(e)
}

fn buckets(range: std::ops::Range<i64>, step: i64) -> impl Iterator<Item = i64> {
    (range.start..range.end).step_by(step.max(1) as usize)
}

/// Unique users of `[start, end)`: one PFCOUNT over the hour HLLs of whole hours and the minute
/// HLLs of the edges (HyperLogLog, standard error 0.81%).
async fn unique_users(redis: &Client, account: &str, start: i64, end: i64) -> Result<u64> {
    let c = cover(start, end, MINUTE_MS, HOUR_MS).with_open_tail(HOUR_MS);
    let mut keys: Vec<String> = buckets(c.coarse.clone(), HOUR_MS)
        .map(|h| hll_key(account, 'h', h))
        .collect();
    for r in &c.fine {
        keys.extend(buckets(r.clone(), MINUTE_MS).map(|m| hll_key(account, 'm', m)));
    }
    if keys.is_empty() {
        return Ok(0);
    }
    redis.pfcount(keys).await.map_err(redis_err)
}

/// The heaviest users of the window, from per-day and per-hour top sets (the window's edges are
/// rounded out to whole hours).
async fn top_users(
    redis: &Client,
    account: &str,
    start: i64,
    end: i64,
    n: usize,
) -> Result<Vec<(String, i64)>> {
    let c = cover(floor_to(start, HOUR_MS), end, HOUR_MS, DAY_MS);
    let mut keys: Vec<String> = buckets(c.coarse.clone(), DAY_MS)
        .map(|d| top_key(account, 'd', d))
        .collect();
    for r in &c.fine {
        keys.extend(buckets(r.clone(), HOUR_MS).map(|h| top_key(account, 'h', h)));
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let tmp = format!("tmp:top:{}", uuid::Uuid::new_v4().simple());
    let mut args: Vec<Value> = vec![json!(tmp), json!(keys.len())];
    args.extend(keys.into_iter().map(|k| json!(k)));
    let args: Vec<fred::types::Value> = args
        .into_iter()
        .map(|v| match v {
            Value::String(s) => fred::types::Value::from(s),
            Value::Number(n) => fred::types::Value::from(n.as_i64().unwrap_or(0)),
            _ => fred::types::Value::Null,
        })
        .collect();
    let pipe = redis.pipeline();
    let _: () = pipe
        .custom(
            CustomCommand::new_static("ZUNIONSTORE", ClusterHash::FirstKey, false),
            args,
        )
        .await
        .map_err(redis_err)?;
    let _: () = pipe
        .zrevrange(&tmp, 0, n as i64 - 1, true)
        .await
        .map_err(redis_err)?;
    let _: () = pipe.del(&tmp).await.map_err(redis_err)?;
    let mut replies: Vec<fred::types::Value> = pipe.all().await.map_err(redis_err)?;
    let ranked = if replies.len() >= 2 {
        replies.swap_remove(1)
    } else {
        fred::types::Value::Null
    };
    let flat: Vec<fred::types::Value> = ranked.into_array();
    let mut out = Vec::new();
    let mut it = flat.into_iter();
    while let (Some(user), Some(score)) = (it.next(), it.next()) {
        if let (Some(user), Some(score)) = (user.as_string(), score.as_f64()) {
            out.push((user, score as i64));
        }
    }
    Ok(out)
}

/// `GET /api/v1/analytics/summary`.
pub async fn summary(
    db: &Database,
    redis: &Client,
    account: &str,
    range: &str,
    range_ms: i64,
    now_ms: i64,
    top_n: usize,
) -> Result<Value> {
    let start = now_ms - range_ms;
    let end = now_ms + 1;
    let (rows, unique, top) = tokio::try_join!(
        window_rows(db, account, start, end, None),
        unique_users(redis, account, start, end),
        top_users(redis, account, start, end, top_n),
    )?;
    let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
    for (_, t, n) in rows {
        *by_type.entry(t).or_default() += n;
    }
    let total: i64 = by_type.values().sum();
    let mut types: Vec<(String, i64)> = by_type.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    to_value(views::Summary {
        range: range.to_owned(),
        total_events: total,
        unique_users: unique,
        events_by_type: types
            .into_iter()
            .map(|(event_type, count)| views::TypeCount {
                share: if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                },
                event_type,
                count,
            })
            .collect(),
        top_users: top
            .into_iter()
            .map(|(user_id, count)| views::UserCount { user_id, count })
            .collect(),
        events_per_second: total as f64 / (range_ms as f64 / 1000.0),
    })
}

/// Zero-filled counts per bucket of `[start, end)`; pure.
pub fn bucketize(rows: &[(i64, i64)], start: i64, end: i64, bucket_ms: i64) -> Vec<(i64, i64)> {
    let first = floor_to(start, bucket_ms);
    let n = ((end - first + bucket_ms - 1) / bucket_ms).max(0) as usize;
    let mut points: Vec<(i64, i64)> = (0..n).map(|i| (first + i as i64 * bucket_ms, 0)).collect();
    for (ts, count) in rows {
        if *ts < first || *ts >= end {
            continue;
        }
        let i = ((ts - first) / bucket_ms) as usize;
        if let Some(p) = points.get_mut(i) {
            p.1 += count;
        }
    }
    points
}

/// `GET /api/v1/analytics/timeseries`: `range / bucket` points, the last one the bucket holding
/// `now` (still filling).
pub async fn timeseries(
    db: &Database,
    account: &str,
    range_ms: i64,
    bucket: &str,
    bucket_ms: i64,
    event_type: Option<&str>,
    now_ms: i64,
) -> Result<Value> {
    let end = floor_to(now_ms, bucket_ms) + bucket_ms;
    let start = end - (range_ms / bucket_ms) * bucket_ms;
    // Buckets of an hour or more read hour rollups; finer ones read minutes.
    let (coll, field) = if bucket_ms >= HOUR_MS {
        (HOUR_COLLECTION, "hour")
    } else {
        (MINUTE_COLLECTION, "minute")
    };
    let window = start..end;
    let rows = rollup_rows(
        db,
        coll,
        field,
        account,
        std::slice::from_ref(&window),
        event_type,
    )
    .await?;
    let rows: Vec<(i64, i64)> = rows.into_iter().map(|(ts, _, n)| (ts, n)).collect();
    let points = bucketize(&rows, start, end, bucket_ms);
    to_value(views::Timeseries {
        bucket: bucket.to_owned(),
        points: points
            .iter()
            .map(|(ts, count)| views::Point {
                ts: BsonDate::from_millis(*ts)
                    .try_to_rfc3339_string()
                    .unwrap_or_default(),
                count: *count,
            })
            .collect(),
    })
}

fn iso(d: &Document, field: &str) -> Option<String> {
    d.get_datetime(field)
        .ok()
        .and_then(|t| t.try_to_rfc3339_string().ok())
}

/// A string field; `None` when absent or not a string.
fn text(d: &Document, field: &str) -> Option<String> {
    d.get_str(field).ok().map(str::to_owned)
}

fn to_json(b: Option<&Bson>) -> Value {
    b.map(|b| b.clone().into_relaxed_extjson())
        .unwrap_or(Value::Null)
}

/// Up to `limit` documents matching `filter`, newest first by `time_field` then `_id`, strictly
/// after the position `after` (`(millis, _id)` of the previous page's last document): a cursor,
/// never an offset. The position is two range scans (the rest of its instant, then everything
/// older), not an `$or`, which a server may answer with a collection scan.
async fn newest_first(
    db: &Database,
    collection: &str,
    filter: Document,
    time_field: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Document>> {
    let Some((millis, id)) = after else {
        return page(db, collection, filter, time_field, limit).await;
    };
    // No event is stored outside years 0001..=9999 (and some servers refuse such dates in a
    // query): a position beyond them is "everything older than the edge".
    if !(MIN_STORED_MS..=MAX_STORED_MS).contains(&millis) {
        let mut older = filter;
        if millis > MAX_STORED_MS {
            older.insert(
                time_field,
                doc! {"$lte": BsonDate::from_millis(MAX_STORED_MS)},
            );
        } else {
            older.insert(
                time_field,
                doc! {"$lt": BsonDate::from_millis(MIN_STORED_MS)},
            );
        }
        return page(db, collection, older, time_field, limit).await;
    }
    let at = BsonDate::from_millis(millis);
    let mut same_instant = filter.clone();
    same_instant.insert(time_field, at);
    same_instant.insert("_id", doc! {"$lt": id});
    let mut older = filter;
    older.insert(time_field, doc! {"$lt": at});
    let (mut docs, older) = tokio::try_join!(
        page(db, collection, same_instant, time_field, limit),
        page(db, collection, older, time_field, limit),
    )?;
    docs.extend(older);
    docs.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(docs)
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z.
const MIN_STORED_MS: i64 = -62_135_596_800_000;
const MAX_STORED_MS: i64 = 253_402_300_799_999;

async fn page(
    db: &Database,
    collection: &str,
    filter: Document,
    time_field: &str,
    limit: i64,
) -> Result<Vec<Document>> {
    db.collection::<Document>(collection)
        .find(filter)
        .sort(doc! {time_field: -1, "_id": -1})
        .limit(limit)
        .await
        .map_err(AnalyticsError::unavailable)?
        .try_collect()
        .await
        .map_err(AnalyticsError::unavailable)
}

/// The cursor of the page after `docs`, when the page was full.
fn next_cursor(docs: &[Document], limit: i64, time_field: &str, id_field: &str) -> Option<String> {
    let last = docs.last().filter(|_| docs.len() as i64 == limit)?;
    Some(
        Cursor {
            millis: last.get_datetime(time_field).ok()?.timestamp_millis(),
            id: last.get_str(id_field).ok()?.to_owned(),
        }
        .encode(),
    )
}

/// `GET /api/v1/analytics/users/{userId}/events`: a targeted query (account + shard key).
pub async fn user_events(
    db: &Database,
    account: &str,
    user_id: &str,
    limit: i64,
    before: Option<&Cursor>,
) -> Result<Value> {
    let filter = doc! {"accountId": account, "userId": user_id};
    // `_id` is `{account}:{eventId}`; the cursor carries the eventId.
    let after = before.map(|c| (c.millis, format!("{account}:{}", c.id)));
    let docs = newest_first(db, EVENTS_COLLECTION, filter, "timestamp", after, limit).await?;
    if docs.is_empty() && before.is_none() {
        return Err(AnalyticsError::NotFound(
            "no events of this user in your account".into(),
        ));
    }
    let next = next_cursor(&docs, limit, "timestamp", "eventId");
    let events = docs
        .iter()
        .map(|d| views::StoredEvent {
            event_id: text(d, "eventId"),
            event_type: text(d, "eventType"),
            user_id: text(d, "userId"),
            session_id: text(d, "sessionId"),
            timestamp: iso(d, "timestamp"),
            received_at: iso(d, "receivedAt"),
            properties: to_json(d.get("properties")),
        })
        .collect();
    to_value(views::UserEvents {
        events,
        next_before: next,
    })
}

/// `GET /api/v1/dlq`: the account's dead letters, newest first.
pub async fn dead_letters(
    db: &Database,
    account: &str,
    reason: Option<&str>,
    limit: i64,
    before: Option<&Cursor>,
) -> Result<Value> {
    let mut filter = doc! {"accountId": account};
    if let Some(r) = reason {
        filter.insert("reason", r);
    }
    let after = before.map(|c| (c.millis, c.id.clone()));
    let docs = newest_first(db, DLQ_COLLECTION, filter, "failedAt", after, limit).await?;
    let next = next_cursor(&docs, limit, "failedAt", "_id");
    let dead_letters = docs
        .iter()
        .map(|d| views::DeadLetter {
            id: text(d, "_id"),
            event_id: text(d, "eventId"),
            reason: text(d, "reason"),
            error: to_json(d.get("error")),
            attempts: to_json(d.get("attempts")),
            failed_at: iso(d, "failedAt"),
            replayed_at: iso(d, "replayedAt"),
            event: to_json(d.get("event")),
        })
        .collect();
    to_value(views::DeadLetters {
        dead_letters,
        next_before: next,
    })
}

/// The coarse state of the pipeline a tenant may see: `ok`, `degraded` (Redis unreachable, or
/// entries waiting with no worker reading them) or `backlogged` (the backlog is past half of the
/// limit at which ingest answers 503). Pure.
pub fn pipeline_state(
    backlog: Option<&sluice_shared::redis::GroupBacklog>,
    freshest_consumer_idle_ms: Option<u64>,
    max_backlog: u64,
) -> PipelineState {
    /// A worker's read blocks 500 ms at most, so one that has not read for this long is gone.
    const CONSUMER_GONE_MS: u64 = 30_000;
    let Some(b) = backlog else {
        return PipelineState::Degraded;
    };
    let waiting = b.total() > 0;
    let readers = freshest_consumer_idle_ms.is_some_and(|idle| idle <= CONSUMER_GONE_MS);
    if waiting && (!b.group_exists || !readers) {
        PipelineState::Degraded
    } else if b.total() >= max_backlog.div_ceil(2) {
        PipelineState::Backlogged
    } else {
        PipelineState::Ok
    }
}

/// The stream's backlog and how long ago its most recently active consumer read, or `None` when
/// Redis does not answer. Global figures: they feed the coarse state only, never the reply.
async fn stream_health(
    redis: &Client,
    stream: &str,
    group: &str,
) -> Option<(sluice_shared::redis::GroupBacklog, Option<u64>)> {
    let backlog = sluice_shared::redis::group_backlog(redis, stream, group)
        .await
        .map_err(|e| tracing::warn!(error = %e, "pipeline: reading the backlog failed"))
        .ok()?;
    if !backlog.group_exists {
        return Some((backlog, None));
    }
    let consumers: Vec<std::collections::HashMap<String, fred::types::Value>> = redis
        .xinfo_consumers(stream, group)
        .await
        .map_err(|e| tracing::warn!(error = %e, "pipeline: reading the consumers failed"))
        .ok()?;
    let freshest = consumers
        .iter()
        .filter_map(|c| c.get("idle").and_then(|v| v.as_u64()))
        .min();
    Some((backlog, freshest))
}

/// `GET /api/v1/analytics/pipeline`: what is the caller's own (their recent ingest, from their
/// minute rollups, and their dead letters) and a coarse state of the shared pipeline. Stream
/// length, lag and consumer names are for operators (`/metrics`), not tenants.
pub async fn pipeline(
    db: &Database,
    redis: &Client,
    stream: &str,
    group: &str,
    max_backlog: u64,
    account: &str,
    now_ms: i64,
) -> Result<Value> {
    let dlq = db.collection::<Document>(DLQ_COLLECTION);
    let by_reason = async {
        let mut cursor = dlq
            .aggregate(vec![
                doc! {"$match": {"accountId": account}},
                doc! {"$group": {"_id": "$reason", "n": {"$sum": 1}}},
            ])
            .await
            .map_err(AnalyticsError::unavailable)?;
        let mut out: BTreeMap<String, i64> = ["invalid", "write_rejected", "poison"]
            .iter()
            .map(|r| (r.to_string(), 0))
            .collect();
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(AnalyticsError::unavailable)?
        {
            let reason = d.get_str("_id").unwrap_or("unknown").to_owned();
            let n = match d.get("n") {
                Some(Bson::Int32(n)) => *n as i64,
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Double(f)) => *f as i64,
                _ => 0,
            };
            *out.entry(reason).or_default() += n;
        }
        Ok::<_, AnalyticsError>(out)
    };
    let replayed = async {
        dlq.count_documents(doc! {"accountId": account, "replayedAt": {"$exists": true}})
            .await
            .map_err(AnalyticsError::unavailable)
    };
    let hour = async {
        let start = now_ms - HOUR_MS;
        let window = floor_to(start, MINUTE_MS)..now_ms + 1;
        rollup_rows(
            db,
            MINUTE_COLLECTION,
            "minute",
            account,
            std::slice::from_ref(&window),
            None,
        )
        .await
    };
    let (by_reason, replayed, rows, health) = tokio::join!(
        by_reason,
        replayed,
        hour,
        stream_health(redis, stream, group)
    );
    let (by_reason, replayed, rows) = (by_reason?, replayed?, rows?);
    let since = |ms: i64| -> i64 {
        let from = floor_to(now_ms - ms, MINUTE_MS);
        rows.iter()
            .filter(|(ts, _, _)| *ts >= from)
            .map(|(_, _, n)| n)
            .sum()
    };
    let (last5m, last1h) = (since(5 * MINUTE_MS), since(HOUR_MS));
    let state = pipeline_state(
        health.as_ref().map(|(b, _)| b),
        health.and_then(|(_, idle)| idle),
        max_backlog,
    );
    to_value(views::Pipeline {
        state,
        ingest: views::Ingest {
            last5m,
            last1h,
            events_per_second: last5m as f64 / 300.0,
        },
        dead_letters: views::DeadLetterCounts {
            total: by_reason.values().sum::<i64>(),
            replayed,
            by_reason,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_state_is_coarse_and_follows_the_backlog_and_the_readers() {
        use sluice_shared::redis::GroupBacklog;
        let b = |pending, lag| GroupBacklog {
            pending,
            lag,
            length: pending + lag,
            group_exists: true,
        };
        assert_eq!(pipeline_state(None, None, 100), PipelineState::Degraded);
        assert_eq!(pipeline_state(Some(&b(0, 0)), None, 100), PipelineState::Ok);
        assert_eq!(
            pipeline_state(Some(&b(0, 10)), Some(400), 100),
            PipelineState::Ok
        );
        assert_eq!(
            pipeline_state(Some(&b(20, 30)), Some(400), 100),
            PipelineState::Backlogged
        );
        assert_eq!(
            pipeline_state(Some(&b(0, 10)), None, 100),
            PipelineState::Degraded
        );
        assert_eq!(
            pipeline_state(Some(&b(0, 10)), Some(60_000), 100),
            PipelineState::Degraded
        );
        let no_group = GroupBacklog {
            lag: 5,
            length: 5,
            ..Default::default()
        };
        assert_eq!(
            pipeline_state(Some(&no_group), None, 100),
            PipelineState::Degraded
        );
    }

    #[test]
    fn bucketize_zero_fills_and_sums() {
        let rows = [(0, 2), (30_000, 1), (60_000, 5), (240_000, 1), (-60_000, 9)];
        let p = bucketize(&rows, 0, 180_000, 60_000);
        assert_eq!(p, vec![(0, 3), (60_000, 5), (120_000, 0)]);
        let p = bucketize(&rows, 0, 300_000, 300_000);
        assert_eq!(p, vec![(0, 9)]);
    }
}
