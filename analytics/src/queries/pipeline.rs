//! `GET /api/v1/analytics/pipeline`: what is the caller's own (their recent ingest, from their
//! minute rollups, and their dead letters) and a coarse state of the shared pipeline. Stream
//! length, lag and consumer names are for operators (`/metrics`), not tenants.
use std::collections::{BTreeMap, HashMap};

use fred::prelude::*;
use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::Database;
use sluice_shared::redis::Backlog;
use sluice_shared::rollup::{floor_to, HOUR_MS, MINUTE_MS};
use sluice_store::dead_letter::field;
use sluice_store::DeadLetterReason;

use super::rollups::{self, Grain};
use super::{store_failed, Result};
use crate::views::{DeadLetterCounts, Ingest, Pipeline, PipelineState};

/// The streams (every partition) whose state the view summarizes.
pub struct Stream<'a> {
    pub redis: &'a sluice_shared::config::RedisSettings,
    /// The backlog at which ingest answers 503.
    pub max_backlog: u64,
}

pub async fn pipeline(
    db: &Database,
    redis: &Client,
    stream: &Stream<'_>,
    account: &str,
    now_ms: i64,
) -> Result<Pipeline> {
    let (ingest, dead_letters, health) = tokio::join!(
        recent_ingest(db, account, now_ms),
        dead_letter_counts(db, account),
        stream_health(redis, stream.redis),
    );
    let state = pipeline_state(
        health.as_ref().map(|(b, _)| b),
        health.and_then(|(_, idle)| idle),
        stream.max_backlog,
    );
    Ok(Pipeline {
        state,
        ingest: ingest?,
        dead_letters: dead_letters?,
    })
}

/// The account's events of the last 5 minutes and hour, from its minute rollups.
async fn recent_ingest(db: &Database, account: &str, now_ms: i64) -> Result<Ingest> {
    let window = floor_to(now_ms - HOUR_MS, MINUTE_MS)..now_ms + 1;
    let rows = rollups::rows(
        db,
        Grain::Minute,
        account,
        std::slice::from_ref(&window),
        None,
    )
    .await?;
    Ok(ingest(&rows, now_ms))
}

/// The ingest figures from minute rows; pure.
fn ingest(rows: &[rollups::Row], now_ms: i64) -> Ingest {
    let since = |ms: i64| -> i64 {
        let from = floor_to(now_ms - ms, MINUTE_MS);
        rows.iter()
            .filter(|(ts, _, _)| *ts >= from)
            .map(|(_, _, n)| n)
            .sum()
    };
    let (last5m, last1h) = (since(5 * MINUTE_MS), since(HOUR_MS));
    Ingest {
        last5m,
        last1h,
        events_per_second: last5m as f64 / 300.0,
    }
}

/// The account's dead letters per reason (every reason present), and how many were replayed.
async fn dead_letter_counts(db: &Database, account: &str) -> Result<DeadLetterCounts> {
    let dlq = sluice_store::dead_letters(db);
    let by_reason = async {
        let groups: Vec<mongodb::bson::Document> = dlq
            .aggregate(vec![
                doc! {"$match": {field::ACCOUNT_ID: account}},
                doc! {"$group": {"_id": format!("${}", field::REASON), "n": {"$sum": 1}}},
            ])
            .await
            .map_err(store_failed("counting dead letters"))?
            .try_collect()
            .await
            .map_err(store_failed("reading dead-letter counts"))?;
        Ok(per_reason(groups.iter().map(|d| {
            let reason = d.get_str("_id").unwrap_or("unknown");
            (reason, d.get("n").and_then(rollups::count).unwrap_or(0))
        })))
    };
    let replayed = async {
        dlq.count_documents(
            doc! {field::ACCOUNT_ID: account, field::REPLAYED_AT: {"$exists": true}},
        )
        .await
        .map_err(store_failed("counting replayed dead letters"))
    };
    let (by_reason, replayed) = tokio::try_join!(by_reason, replayed)?;
    Ok(DeadLetterCounts {
        total: by_reason.values().sum(),
        replayed,
        by_reason,
    })
}

/// Counts per reason, every known reason present (0 when it has none); pure.
fn per_reason<'a>(groups: impl Iterator<Item = (&'a str, i64)>) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = DeadLetterReason::ALL
        .iter()
        .map(|r| (r.to_string(), 0))
        .collect();
    for (reason, n) in groups {
        *out.entry(reason.to_owned()).or_default() += n;
    }
    out
}

/// The coarse state of the pipeline a tenant may see: `ok`, `degraded` (Redis unreachable, or
/// entries waiting with no worker reading them) or `backlogged` (the backlog, in events over
/// every partition, is past half of the limit at which ingest answers 503). Pure.
pub fn pipeline_state(
    backlog: Option<&Backlog>,
    freshest_consumer_idle_ms: Option<u64>,
    max_backlog: u64,
) -> PipelineState {
    /// A worker's read blocks 500 ms at most, so one that has not read for this long is gone.
    const CONSUMER_GONE_MS: u64 = 30_000;
    let Some(b) = backlog else {
        return PipelineState::Degraded;
    };
    let waiting = b.entries > 0;
    let readers = freshest_consumer_idle_ms.is_some_and(|idle| idle <= CONSUMER_GONE_MS);
    if waiting && (!b.groups_exist || !readers) {
        PipelineState::Degraded
    } else if b.events >= max_backlog.div_ceil(2) {
        PipelineState::Backlogged
    } else {
        PipelineState::Ok
    }
}

/// The streams' backlog and how long ago the most recently active consumer of any partition
/// read, or `None` when Redis does not answer. Global figures: they feed the coarse state only,
/// never the reply.
async fn stream_health(
    redis: &Client,
    settings: &sluice_shared::config::RedisSettings,
) -> Option<(Backlog, Option<u64>)> {
    let backlog = sluice_shared::redis::backlog(redis, settings)
        .await
        .map_err(|e| {
            tracing::warn!(
                error = format!("{e:#}"),
                "pipeline: reading the backlog failed"
            )
        })
        .ok()?;
    if !backlog.groups_exist {
        return Some((backlog, None));
    }
    let mut freshest: Option<u64> = None;
    for stream in settings.layout().streams() {
        let consumers: Vec<HashMap<String, Value>> = redis
            .xinfo_consumers(&stream, &settings.group)
            .await
            .map_err(|e| tracing::warn!(error = %e, "pipeline: reading the consumers failed"))
            .ok()?;
        freshest = consumers
            .iter()
            .filter_map(|c| c.get("idle").and_then(|v| v.as_u64()))
            .chain(freshest)
            .min();
    }
    Some((backlog, freshest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_state_is_coarse_and_follows_the_backlog_and_the_readers() {
        let b = |pending, lag| Backlog {
            pending,
            lag,
            length: pending + lag,
            entries: pending + lag,
            events: pending + lag,
            groups_exist: true,
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
        let no_group = Backlog {
            lag: 5,
            length: 5,
            entries: 5,
            events: 5,
            ..Default::default()
        };
        assert_eq!(
            pipeline_state(Some(&no_group), None, 100),
            PipelineState::Degraded
        );
    }

    #[test]
    fn recent_ingest_counts_whole_minutes_back_from_now() {
        let now = 10 * HOUR_MS + 30_000;
        let rows = vec![
            (10 * HOUR_MS, "a".to_owned(), 2),
            (10 * HOUR_MS - 5 * MINUTE_MS, "a".to_owned(), 3),
            (10 * HOUR_MS - 6 * MINUTE_MS, "b".to_owned(), 4),
            (9 * HOUR_MS, "b".to_owned(), 1),
        ];
        let i = ingest(&rows, now);
        assert_eq!((i.last5m, i.last1h), (5, 10));
        assert!((i.events_per_second - 5.0 / 300.0).abs() < 1e-12);
    }

    #[test]
    fn every_reason_is_counted_even_at_zero() {
        let counts = per_reason([("poison", 2), ("poison", 1), ("unknown", 1)].into_iter());
        assert_eq!(
            counts,
            BTreeMap::from([
                ("invalid".to_owned(), 0),
                ("poison".to_owned(), 3),
                ("unknown".to_owned(), 1),
                ("write_rejected".to_owned(), 0),
            ])
        );
    }
}
