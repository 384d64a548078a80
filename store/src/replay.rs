//! Replay of dead letters: each is put back on the stream exactly as it was queued (same eventId,
//! so MongoDB's `_id` stores it at most once) and marked replayed: a letter is replayed once, and
//! a second replay of it is refused (409 `already_replayed` on the http side, skipped by the CLI).
//! The worker's CLI (`sluice-worker dlq replay`) and `POST /api/v1/dlq/{id}/replay` both use it.
use anyhow::Context;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};
use sluice_shared::enqueue::{Enqueuer, Outcome};

use crate::dead_letter::{dead_letters, field, DeadLetter};
use crate::reason::DeadLetterReason;

/// Which letters a bulk replay takes (every one not replayed yet, narrowed by each field set).
#[derive(Debug, Default, Clone)]
pub struct ReplayFilter {
    pub reason: Option<DeadLetterReason>,
    pub account: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Letters that failed before this (exclusive).
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub replayed: u64,
    /// Dead letters with no event to put back (an entry that never held one).
    pub unreplayable: u64,
}

/// The letters `filter` takes, as a MongoDB filter.
pub fn query(filter: &ReplayFilter) -> Document {
    let mut q = doc! {field::REPLAYED_AT: {"$exists": false}};
    if let Some(r) = filter.reason {
        q.insert(field::REASON, r);
    }
    if let Some(a) = &filter.account {
        q.insert(field::ACCOUNT_ID, a);
    }
    let mut range = Document::new();
    if let Some(t) = filter.since {
        range.insert("$gte", bson::DateTime::from_millis(t.timestamp_millis()));
    }
    if let Some(t) = filter.until {
        range.insert("$lt", bson::DateTime::from_millis(t.timestamp_millis()));
    }
    if !range.is_empty() {
        q.insert(field::FAILED_AT, range);
    }
    q
}

// How a replay names its entry lives beside the letter that reads it back.
pub use crate::dead_letter::{replayed_letter, request_id_of_replay};

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
    dlq: &Collection<DeadLetter>,
    enqueuer: &Enqueuer,
    letter: &DeadLetter,
) -> anyhow::Result<Replayed> {
    let id = letter.id.as_str();
    let raw = letter
        .raw_entry
        .event_text()
        .filter(|raw| serde_json::from_str::<sluice_shared::event::QueuedEvent>(raw).is_ok());
    let Some(raw) = raw else {
        return Ok(Replayed::Unreplayable);
    };
    let now = bson::DateTime::now();
    let stale = bson::DateTime::from_millis(now.timestamp_millis() - CLAIM_TIMEOUT_MS);
    let claimed = dlq
        .update_one(
            doc! {
                field::ID: id,
                field::REPLAYED_AT: {"$exists": false},
                "$or": [
                    {field::REPLAY_CLAIMED_AT: {"$exists": false}},
                    {field::REPLAY_CLAIMED_AT: {"$lt": stale}},
                ],
            },
            doc! {"$set": {field::REPLAY_CLAIMED_AT: now}},
        )
        .await
        .context("claiming the dead letter for its replay")?;
    if claimed.matched_count == 0 {
        return Ok(Replayed::AlreadyReplayed);
    }
    let key = format!("dlq-replay:{id}");
    let outcome = match enqueuer
        .enqueue_raw(&[(key, raw.to_owned())], &request_id_of_replay(id))
        .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            // Not queued: let a later replay try again.
            let _ = dlq
                .update_one(
                    doc! {field::ID: id, field::REPLAY_CLAIMED_AT: now},
                    doc! {"$unset": {field::REPLAY_CLAIMED_AT: ""}},
                )
                .await;
            return Err(e.context("queueing the dead letter's event"));
        }
    };
    // A duplicate means a replay that died after queueing (and before marking) queued it already.
    let stream_id = match outcome.into_iter().next() {
        Some(Outcome::Accepted(stream_id)) => Some(stream_id.to_string()),
        _ => None,
    };
    dlq.update_one(
        doc! {field::ID: id},
        doc! {
            "$set": {field::REPLAYED_AT: bson::DateTime::now(), field::REPLAY_STREAM_ID: stream_id},
            "$unset": {field::REPLAY_CLAIMED_AT: ""},
        },
    )
    .await
    .context("marking the dead letter replayed")?;
    Ok(Replayed::Queued)
}

/// Re-queues every dead letter matching `filter` that has not been replayed yet.
pub async fn replay(
    db: &Database,
    enqueuer: &Enqueuer,
    filter: &ReplayFilter,
) -> anyhow::Result<ReplayReport> {
    let dlq = dead_letters(db);
    let mut cursor = dlq.find(query(filter)).await?;
    let mut report = ReplayReport::default();
    while cursor.advance().await? {
        let letter = cursor.deserialize_current()?;
        match replay_one(&dlq, enqueuer, &letter).await? {
            Replayed::Queued => report.replayed += 1,
            Replayed::AlreadyReplayed => {}
            Replayed::Unreplayable => report.unreplayable += 1,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_request_id_names_its_letter_and_nothing_else_does() {
        let rid = request_id_of_replay("1-0:e1");
        assert_eq!(rid, "replay:1-0:e1");
        assert_eq!(replayed_letter(&rid), Some("1-0:e1"));
        assert_eq!(replayed_letter("0190c3f2-request"), None);
    }

    #[test]
    fn the_replay_filter_narrows_to_letters_not_replayed_yet() {
        assert_eq!(
            query(&ReplayFilter::default()),
            doc! {"replayedAt": {"$exists": false}}
        );
        let q = query(&ReplayFilter {
            reason: Some(DeadLetterReason::Poison),
            account: Some("acc".into()),
            since: None,
            until: None,
        });
        assert_eq!(
            q,
            doc! {"replayedAt": {"$exists": false}, "reason": DeadLetterReason::Poison, "accountId": "acc"}
        );
    }
}
