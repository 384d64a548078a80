//! `GET /api/v1/analytics/timeseries`: counts per bucket, by the events' own timestamps.
use mongodb::bson::DateTime as BsonDate;
use mongodb::Database;
use sluice_shared::rollup::{floor_to, HOUR_MS};

use super::rollups::{self, Grain};
use super::Result;
use crate::params::{Bucket, Range};
use crate::views::{Point, Timeseries};

/// `range / bucket` points, the last one the bucket holding `now_ms` (still filling).
pub async fn timeseries(
    db: &Database,
    account: &str,
    range: Range,
    bucket: Bucket,
    event_type: Option<&str>,
    now_ms: i64,
) -> Result<Timeseries> {
    let bucket_ms = bucket.ms();
    let end = floor_to(now_ms, bucket_ms) + bucket_ms;
    let start = end - (range.ms() / bucket_ms) * bucket_ms;
    // Buckets of an hour or more read hour rollups; finer ones read minutes.
    let grain = if bucket_ms >= HOUR_MS {
        Grain::Hour
    } else {
        Grain::Minute
    };
    let window = start..end;
    let rows = rollups::rows(
        db,
        grain,
        account,
        std::slice::from_ref(&window),
        event_type,
    )
    .await?;
    let rows: Vec<(i64, i64)> = rows.into_iter().map(|(ts, _, n)| (ts, n)).collect();
    Ok(Timeseries {
        bucket,
        points: bucketize(&rows, start, end, bucket_ms)
            .into_iter()
            .map(|(ts, count)| Point {
                ts: super::iso(BsonDate::from_millis(ts)).unwrap_or_default(),
                count,
            })
            .collect(),
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
