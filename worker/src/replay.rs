//! Replay of dead letters: each is put back on the stream exactly as it was queued (same eventId,
//! so MongoDB's `_id` stores it at most once) and marked replayed so a second replay skips it.
//! The CLI (`sluice-worker dlq replay`) and analytics' `POST /api/v1/dlq/{id}/replay` both use it.
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc, Document};
use mongodb::Database;
use sluice_shared::enqueue::{Enqueuer, Outcome};
use sluice_shared::names::STREAM_EVENT_FIELD;

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

/// What became of one dead letter put back on the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Replayed {
    Queued,
    /// Its replay was queued already (within the dedup window).
    AlreadyQueued,
    /// It holds no event to put back (an entry that never was one).
    Unreplayable,
}

/// Puts one dead letter back on the stream through the same atomic dedup-and-enqueue step the api
/// uses, guarded by a key of the dead letter (`dlq-replay:{id}`), and marks it replayed.
///
/// The event's own dedup reservation is not used: it is held by the very event that was
/// dead-lettered. MongoDB's `_id` keeps the event stored at most once however often it is replayed.
pub async fn replay_one(
    dlq: &mongodb::Collection<Document>,
    enqueuer: &Enqueuer,
    letter: &Document,
) -> anyhow::Result<Replayed> {
    let id = letter.get("_id").cloned().unwrap_or(bson::Bson::Null);
    let raw = letter
        .get_document("rawEntry")
        .ok()
        .and_then(|r| r.get_str(STREAM_EVENT_FIELD).ok())
        .filter(|raw| serde_json::from_str::<sluice_shared::event::QueuedEvent>(raw).is_ok());
    let Some(raw) = raw else {
        return Ok(Replayed::Unreplayable);
    };
    let key = format!("dlq-replay:{}", id_text(&id));
    let outcome = enqueuer
        .enqueue_raw(
            &[(key, raw.to_owned())],
            &format!("replay:{}", id_text(&id)),
        )
        .await?;
    let (result, stream_id) = match outcome.into_iter().next() {
        Some(Outcome::Accepted(stream_id)) => (Replayed::Queued, Some(stream_id)),
        _ => (Replayed::AlreadyQueued, None),
    };
    dlq.update_one(
        doc! {"_id": &id},
        doc! {"$set": {"replayedAt": bson::DateTime::now(), "replayStreamId": stream_id}},
    )
    .await?;
    Ok(result)
}

fn id_text(id: &bson::Bson) -> String {
    match id {
        bson::Bson::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Re-queues every dead letter matching `filter` that has not been replayed yet.
pub async fn replay(
    db: &Database,
    enqueuer: &Enqueuer,
    filter: &ReplayFilter,
) -> anyhow::Result<ReplayReport> {
    let dlq = store::dead_letters(db);
    let mut cursor = dlq.find(query(filter)).await?;
    let mut report = ReplayReport::default();
    while cursor.advance().await? {
        let letter: Document = cursor.deserialize_current()?;
        match replay_one(&dlq, enqueuer, &letter).await? {
            Replayed::Queued => report.replayed += 1,
            Replayed::AlreadyQueued => {}
            Replayed::Unreplayable => report.unreplayable += 1,
        }
    }
    Ok(report)
}
