//! Replay of dead letters: each is put back on the stream exactly as it was queued (same eventId,
//! so MongoDB's `_id` stores it at most once) and marked replayed: a letter is replayed once, and
//! a second replay of it is refused (409 on the http side, skipped by the CLI).
//! The CLI (`sluice-worker dlq replay`) and analytics' `POST /api/v1/dlq/{id}/replay` both use it.
use anyhow::Context;
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
    /// It was replayed before (or another replay of it is under way): a letter is replayed once.
    AlreadyReplayed,
    /// It holds no event to put back (an entry that never was one).
    Unreplayable,
}

/// How long a claim on a letter (`replayClaimedAt`) holds before a replay that died between the
/// claim and the mark may be taken over. The dedup key keeps such a takeover from queueing twice.
const CLAIM_TIMEOUT_MS: i64 = 60_000;

/// Puts one dead letter back on the stream, once in its life.
///
/// The letter is claimed first (an atomic update that matches only a letter neither replayed nor
/// being replayed), so of two concurrent replays one queues and the other is told
/// `AlreadyReplayed`; a replayed letter stays replayed whatever time passes. The event goes
/// through the same atomic dedup-and-enqueue step the api uses, guarded by a key of the dead letter
/// (`dlq-replay:{id}`), not by the event's own reservation, which the very event that was
/// dead-lettered holds. A failed enqueue releases the claim so the replay can be retried.
/// MongoDB's `_id` keeps the event stored at most once.
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
    let now = bson::DateTime::now();
    let stale = bson::DateTime::from_millis(now.timestamp_millis() - CLAIM_TIMEOUT_MS);
    let claimed = dlq
        .update_one(
            doc! {
                "_id": &id,
                "replayedAt": {"$exists": false},
                "$or": [
                    {"replayClaimedAt": {"$exists": false}},
                    {"replayClaimedAt": {"$lt": stale}},
                ],
            },
            doc! {"$set": {"replayClaimedAt": now}},
        )
        .await
        .context("claiming the dead letter for its replay")?;
    if claimed.matched_count == 0 {
        return Ok(Replayed::AlreadyReplayed);
    }
    let key = format!("dlq-replay:{}", id_text(&id));
    let outcome = match enqueuer
        .enqueue_raw(
            &[(key, raw.to_owned())],
            &format!("replay:{}", id_text(&id)),
        )
        .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            // Not queued: let a later replay try again.
            let _ = dlq
                .update_one(
                    doc! {"_id": &id, "replayClaimedAt": now},
                    doc! {"$unset": {"replayClaimedAt": ""}},
                )
                .await;
            return Err(e.context("queueing the dead letter's event"));
        }
    };
    // A duplicate means a replay that died after queueing (and before marking) queued it already.
    let stream_id = match outcome.into_iter().next() {
        Some(Outcome::Accepted(stream_id)) => Some(stream_id),
        _ => None,
    };
    dlq.update_one(
        doc! {"_id": &id},
        doc! {
            "$set": {"replayedAt": bson::DateTime::now(), "replayStreamId": stream_id},
            "$unset": {"replayClaimedAt": ""},
        },
    )
    .await
    .context("marking the dead letter replayed")?;
    Ok(Replayed::Queued)
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
            Replayed::AlreadyReplayed => {}
            Replayed::Unreplayable => report.unreplayable += 1,
        }
    }
    Ok(report)
}
