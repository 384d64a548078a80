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
    Ok(json!({
        "range": range,
        "totalEvents": total,
        "uniqueUsers": unique,
        "eventsByType": types.iter().map(|(t, n)| json!({
            "eventType": t,
            "count": n,
            "share": if total > 0 { *n as f64 / total as f64 } else { 0.0 },
        })).collect::<Vec<_>>(),
        "topUsers": top.iter().map(|(u, n)| json!({"userId": u, "count": n})).collect::<Vec<_>>(),
        "eventsPerSecond": total as f64 / (range_ms as f64 / 1000.0),
    }))
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
    Ok(json!({
        "bucket": bucket,
        "points": points.iter().map(|(ts, n)| json!({
            "ts": BsonDate::from_millis(*ts).try_to_rfc3339_string().unwrap_or_default(),
            "count": n,
        })).collect::<Vec<_>>(),
    }))
}

fn iso(d: &Document, field: &str) -> Value {
    d.get_datetime(field)
        .ok()
        .and_then(|t| t.try_to_rfc3339_string().ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn to_json(b: Option<&Bson>) -> Value {
    b.map(|b| b.clone().into_relaxed_extjson())
        .unwrap_or(Value::Null)
}

/// Up to `limit` documents matching `filter`, newest first by `time_field` then `_id`, strictly
/// after the position `after` (`(millis, _id)` of the previous page's last document): a cursor,
/// never an offset.
async fn newest_first(
    db: &Database,
    collection: &str,
    mut filter: Document,
    time_field: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Document>> {
    if let Some((millis, id)) = after {
        let at = BsonDate::from_millis(millis);
        filter.insert(
            "$or",
            vec![
                doc! {time_field: {"$lt": at}},
                doc! {time_field: at, "_id": {"$lt": id}},
            ],
        );
    }
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
    let events: Vec<Value> = docs
        .iter()
        .map(|d| {
            json!({
                "eventId": to_json(d.get("eventId")),
                "eventType": to_json(d.get("eventType")),
                "userId": to_json(d.get("userId")),
                "sessionId": to_json(d.get("sessionId")),
                "timestamp": iso(d, "timestamp"),
                "receivedAt": iso(d, "receivedAt"),
                "properties": to_json(d.get("properties")),
            })
        })
        .collect();
    Ok(json!({"events": events, "nextBefore": next}))
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
    let letters: Vec<Value> = docs
        .iter()
        .map(|d| {
            json!({
                "id": to_json(d.get("_id")),
                "eventId": to_json(d.get("eventId")),
                "reason": to_json(d.get("reason")),
                "error": to_json(d.get("error")),
                "attempts": to_json(d.get("attempts")),
                "failedAt": iso(d, "failedAt"),
                "replayedAt": iso(d, "replayedAt"),
                "event": to_json(d.get("event")),
            })
        })
        .collect();
    Ok(json!({"deadLetters": letters, "nextBefore": next}))
}

/// `GET /api/v1/analytics/pipeline`: the stream and its consumers (shared by all accounts, no
/// tenant data in them) and the caller's dead letters.
pub async fn pipeline(
    db: &Database,
    redis: &Client,
    stream: &str,
    group: &str,
    account: &str,
) -> Result<Value> {
    let backlog = sluice_shared::redis::group_backlog(redis, stream, group)
        .await
        .map_err(AnalyticsError::unavailable)?;
    let consumers: Vec<std::collections::HashMap<String, fred::types::Value>> =
        if backlog.group_exists {
            redis
                .xinfo_consumers(stream, group)
                .await
                .map_err(redis_err)?
        } else {
            Vec::new()
        };
    let dlq = db.collection::<Document>(DLQ_COLLECTION);
    let (dlq_size, replayed) = tokio::try_join!(
        dlq.count_documents(doc! {"accountId": account}),
        dlq.count_documents(doc! {"accountId": account, "replayedAt": {"$exists": true}}),
    )
    .map_err(AnalyticsError::unavailable)?;
    let mut by_reason = serde_json::Map::new();
    for reason in ["invalid", "write_rejected", "poison"] {
        let n = dlq
            .count_documents(doc! {"accountId": account, "reason": reason})
            .await
            .map_err(AnalyticsError::unavailable)?;
        by_reason.insert(reason.into(), json!(n));
    }
    Ok(json!({
        "streamLength": backlog.length,
        "pending": backlog.pending,
        "lag": backlog.lag,
        "backlog": backlog.total(),
        "consumers": consumers.iter().map(|c| json!({
            "name": c.get("name").and_then(|v| v.as_string()),
            "pending": c.get("pending").and_then(|v| v.as_u64()).unwrap_or(0),
            "idleMs": c.get("idle").and_then(|v| v.as_u64()).unwrap_or(0),
        })).collect::<Vec<_>>(),
        "dlqSize": dlq_size,
        "counters": {"deadLetteredByReason": by_reason, "replayed": replayed},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketize_zero_fills_and_sums() {
        let rows = [(0, 2), (30_000, 1), (60_000, 5), (240_000, 1), (-60_000, 9)];
        let p = bucketize(&rows, 0, 180_000, 60_000);
        assert_eq!(p, vec![(0, 3), (60_000, 5), (120_000, 0)]);
        let p = bucketize(&rows, 0, 300_000, 300_000);
        assert_eq!(p, vec![(0, 9)]);
    }
}
