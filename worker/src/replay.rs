//! Replay of dead letters: each is put back on the stream exactly as it was queued (same eventId,
//! so MongoDB's `_id` stores it at most once) and marked replayed so a second replay skips it.
use chrono::{DateTime, Utc};
use fred::prelude::*;
use mongodb::bson::{self, doc, Document};
use mongodb::Database;
use sluice_shared::names::{STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};

use crate::store;

#[derive(Debug, Default, Clone)]
pub struct ReplayFilter {
    pub reason: Option<String>,
    pub account: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub replayed: u64,
    /// Dead letters with no event to put back (an entry that never held one).
    pub unreplayable: u64,
}

pub fn query(filter: &ReplayFilter) -> Document {
    let mut q = doc! {"replayedAt": {"$exists": false}};
    if let Some(r) = &filter.reason {
        q.insert("reason", r);
    }
    if let Some(a) = &filter.account {
        q.insert("accountId", a);
    }
    if let Some(t) = filter.since {
        q.insert(
            "failedAt",
            doc! {"$gte": bson::DateTime::from_millis(t.timestamp_millis())},
        );
    }
    q
}

/// Re-queues every dead letter matching `filter` that has not been replayed yet.
///
/// The 10-minute dedup reservation is bypassed on purpose: it is held by the very event that was
/// dead-lettered. Idempotence comes from the `_id` in MongoDB and the `replayedAt` mark.
pub async fn replay(
    db: &Database,
    redis: &Client,
    stream: &str,
    filter: &ReplayFilter,
) -> anyhow::Result<ReplayReport> {
    let dlq = store::dead_letters(db);
    let mut cursor = dlq.find(query(filter)).await?;
    let mut report = ReplayReport::default();
    while cursor.advance().await? {
        let letter: Document = cursor.deserialize_current()?;
        let id = letter.get("_id").cloned().unwrap_or(bson::Bson::Null);
        let raw = letter
            .get_document("rawEntry")
            .ok()
            .and_then(|r| r.get_str(STREAM_EVENT_FIELD).ok())
            .filter(|raw| serde_json::from_str::<sluice_shared::event::QueuedEvent>(raw).is_ok());
        let Some(raw) = raw else {
            report.unreplayable += 1;
            continue;
        };
        let stream_id: String = redis
            .xadd(
                stream,
                false,
                None,
                "*",
                vec![
                    (STREAM_EVENT_FIELD, raw.to_owned()),
                    (STREAM_REQUEST_ID_FIELD, format!("replay:{id}")),
                ],
            )
            .await?;
        dlq.update_one(
            doc! {"_id": &id},
            doc! {"$set": {"replayedAt": bson::DateTime::now(), "replayStreamId": stream_id}},
        )
        .await?;
        report.replayed += 1;
    }
    Ok(report)
}
