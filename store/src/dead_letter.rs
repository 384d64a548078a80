//! The `events_dlq` collection and its document: an entry that could not be stored, exactly as it
//! was queued, why, and what became of its replay. One letter per stream entry, however often it
//! is retried (`_id` = `{streamId}:{eventId}`, `entry` for an entry naming no event).
use std::collections::BTreeMap;

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson};
use mongodb::{Collection, Database};
use serde::{Deserialize, Deserializer, Serialize};
use sluice_shared::names::{DLQ_COLLECTION, STREAM_EVENT_FIELD};

use crate::reason::DeadLetterReason;

/// Field names of a dead letter, for query filters, sorts, updates and indexes.
pub mod field {
    pub const ID: &str = "_id";
    pub const ACCOUNT_ID: &str = "accountId";
    pub const EVENT_ID: &str = "eventId";
    pub const REASON: &str = "reason";
    pub const ERROR: &str = "error";
    pub const ATTEMPTS: &str = "attempts";
    pub const STREAM_ID: &str = "streamId";
    pub const CONSUMER: &str = "consumer";
    pub const FAILED_AT: &str = "failedAt";
    pub const RAW_ENTRY: &str = "rawEntry";
    pub const REPLAYED_AT: &str = "replayedAt";
    pub const REPLAY_STREAM_ID: &str = "replayStreamId";
    pub const REPLAY_CLAIMED_AT: &str = "replayClaimedAt";
    pub const REPLAY_FAILURES: &str = "replayFailures";
}

/// A dead letter as stored in `events_dlq`: what the worker writes and every reader
/// deserializes. The fields are in the order the worker has always written them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The entry's event as far as it parses: a document for JSON, its text otherwise, `null`
    /// when the entry had none; absent from the smallest form of a letter.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub event: Option<Bson>,
    /// The entry exactly as queued: what a replay puts back on the stream.
    pub raw_entry: RawEntry,
    pub reason: DeadLetterReason,
    pub error: String,
    /// Deliveries of the entry when it was dead-lettered.
    pub attempts: i64,
    pub stream_id: String,
    /// The worker that dead-lettered it.
    pub consumer: String,
    pub failed_at: bson::DateTime,
    /// `null` when the entry does not say whose it is (an operator's letter, never a tenant's).
    pub account_id: Option<String>,
    pub event_id: Option<String>,
    /// `{streamId}:{eventId}`, or `{streamId}:entry`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Set once the letter was put back on the stream; a letter is replayed once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<bson::DateTime>,
    /// The stream entry of the replay (`null` in MongoDB when an earlier attempt had queued it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_stream_id: Option<String>,
    /// A replay under way since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_claimed_at: Option<bson::DateTime>,
    /// Replays that failed again and were folded back into this letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_failures: Option<i64>,
}

/// A field that is present reads as `Some`, even when it is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bson>, D::Error> {
    Bson::deserialize(d).map(Some)
}

/// A stream entry's fields as a letter keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawEntry {
    /// Field name → text: how every full letter is written.
    Fields(BTreeMap<String, String>),
    /// `[name, text]` pairs: the smallest form (no client-chosen field names), for a letter
    /// MongoDB refused in full.
    Pairs(Vec<(String, String)>),
    /// Anything else (a letter written by hand, or by an older version): kept as it is.
    Other(Bson),
}

impl RawEntry {
    /// The queued event's JSON text, from the full form of a letter only.
    pub fn event_text(&self) -> Option<&str> {
        match self {
            RawEntry::Fields(fields) => fields.get(STREAM_EVENT_FIELD).map(String::as_str),
            RawEntry::Other(Bson::Document(d)) => d.get_str(STREAM_EVENT_FIELD).ok(),
            RawEntry::Pairs(_) | RawEntry::Other(_) => None,
        }
    }
}

/// What the worker knows of an entry that can never be stored: what its letter is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedEntry {
    pub stream_id: String,
    pub account_id: Option<String>,
    pub event_id: Option<String>,
    /// The entry's fields as queued, as text.
    pub fields: BTreeMap<String, String>,
    pub reason: DeadLetterReason,
    pub error: String,
    /// Deliveries so far, this one included.
    pub attempts: u32,
    /// The request that queued the entry (`replay:{letter}` for a replay).
    pub request_id: Option<String>,
}

impl FailedEntry {
    /// The letter this entry is the replay of: a replay that fails again updates that letter
    /// ([`refail_replayed_letter`]) instead of adding one.
    pub fn replay_of(&self) -> Option<&str> {
        self.request_id.as_deref().and_then(replayed_letter)
    }

    /// `{streamId}:{eventId}`: one letter per stream entry, whichever consumer writes it.
    pub fn letter_id(&self) -> String {
        format!(
            "{}:{}",
            self.stream_id,
            self.event_id.as_deref().unwrap_or("entry")
        )
    }

    /// The full letter: the entry's fields and its event parsed as far as it goes.
    pub fn letter(&self, consumer: &str, failed_at: bson::DateTime) -> DeadLetter {
        let event = match self.fields.get(STREAM_EVENT_FIELD) {
            Some(raw) => serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| bson::to_bson(&v).ok())
                .unwrap_or_else(|| Bson::String(raw.clone())),
            None => Bson::Null,
        };
        DeadLetter {
            event: Some(event),
            raw_entry: RawEntry::Fields(self.fields.clone()),
            reason: self.reason,
            error: self.error.clone(),
            attempts: i64::from(self.attempts),
            stream_id: self.stream_id.clone(),
            consumer: consumer.to_owned(),
            failed_at,
            account_id: self.account_id.clone(),
            event_id: self.event_id.clone(),
            id: self.letter_id(),
            replayed_at: None,
            replay_stream_id: None,
            replay_claimed_at: None,
            replay_failures: None,
        }
    }

    /// The smallest letter, for when MongoDB refuses the full one (`refusal`): the entry's fields
    /// as `[name, text]` pairs, no parsed event.
    pub fn minimal_letter(
        &self,
        consumer: &str,
        failed_at: bson::DateTime,
        refusal: &str,
    ) -> DeadLetter {
        DeadLetter {
            event: None,
            raw_entry: RawEntry::Pairs(
                self.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            error: format!(
                "{} (the full dead letter was refused: {refusal})",
                self.error
            ),
            ..self.letter(consumer, failed_at)
        }
    }
}

/// The dead-letter collection, typed.
pub fn dead_letters(db: &Database) -> Collection<DeadLetter> {
    db.collection(DLQ_COLLECTION)
}

/// Whose dead letters a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Every account's, and those of no account: the operator's view.
    Any,
    /// Only letters no account could be found for (visible to operators only).
    Unattributed,
    Account(&'a str),
}

/// Dead letters of `owner`, newest first, of one reason or all.
pub async fn list_dead_letters(
    db: &Database,
    owner: Owner<'_>,
    reason: Option<DeadLetterReason>,
    limit: i64,
) -> anyhow::Result<Vec<DeadLetter>> {
    let mut filter = doc! {};
    match owner {
        Owner::Any => {}
        Owner::Unattributed => {
            filter.insert(field::ACCOUNT_ID, Bson::Null);
        }
        Owner::Account(account) => {
            filter.insert(field::ACCOUNT_ID, account);
        }
    }
    if let Some(r) = reason {
        filter.insert(field::REASON, r);
    }
    dead_letters(db)
        .find(filter)
        .sort(doc! {field::FAILED_AT: -1})
        .limit(limit)
        .await
        .context("listing dead letters")?
        .try_collect()
        .await
        .context("reading dead letters")
}

/// The letter `id` if it is `account`'s: another account's letter is as absent as a missing one.
pub async fn letter_of_account(
    db: &Database,
    account: &str,
    id: &str,
) -> anyhow::Result<Option<DeadLetter>> {
    dead_letters(db)
        .find_one(doc! {field::ID: id, field::ACCOUNT_ID: account})
        .await
        .context("reading the dead letter")
}

/// Folds a failed replay into the letter it replayed: the new failure, and the letter replayable
/// again. False when there is no such letter any more (the caller then stores a new one).
pub async fn refail_replayed_letter(
    dlq: &Collection<DeadLetter>,
    failed: &FailedEntry,
    consumer: &str,
    failed_at: bson::DateTime,
) -> mongodb::error::Result<bool> {
    let Some(origin) = failed.replay_of() else {
        return Ok(false);
    };
    let r = dlq
        .update_one(
            doc! {field::ID: origin},
            doc! {
                "$set": {
                    field::REASON: failed.reason,
                    field::ERROR: &failed.error,
                    field::ATTEMPTS: i64::from(failed.attempts),
                    field::STREAM_ID: &failed.stream_id,
                    field::CONSUMER: consumer,
                    field::FAILED_AT: failed_at,
                },
                "$unset": {field::REPLAYED_AT: "", field::REPLAY_STREAM_ID: "", field::REPLAY_CLAIMED_AT: ""},
                "$inc": {field::REPLAY_FAILURES: 1_i64},
            },
        )
        .await?;
    Ok(r.matched_count == 1)
}

/// The request id a replay queues its entry under: the worker reads it back to fold a failed
/// replay into its letter.
pub fn request_id_of_replay(letter_id: &str) -> String {
    format!("replay:{letter_id}")
}

/// The letter a request id replays, if it is a replay's.
pub fn replayed_letter(request_id: &str) -> Option<&str> {
    request_id.strip_prefix("replay:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::Document;

    fn failed(reason: DeadLetterReason) -> FailedEntry {
        FailedEntry {
            stream_id: "1700000000000-3".into(),
            account_id: Some("acc".into()),
            event_id: Some("e1".into()),
            fields: BTreeMap::from([
                ("e".to_owned(), r#"{"eventId":"e1","n":[1,2.5]}"#.to_owned()),
                ("rid".to_owned(), "req-1".to_owned()),
            ]),
            reason,
            error: "code 121: refused".into(),
            attempts: 2,
            request_id: Some("req-1".into()),
        }
    }

    fn at() -> bson::DateTime {
        bson::DateTime::from_millis(1_700_000_000_123)
    }

    /// The letter as the worker built it before the typed document (`dead_letter_document`).
    fn as_before(f: &FailedEntry, consumer: &str) -> Document {
        let raw = &f.fields["e"];
        let event = serde_json::from_str::<serde_json::Value>(raw)
            .ok()
            .and_then(|v| bson::to_bson(&v).ok())
            .unwrap_or_else(|| Bson::String(raw.clone()));
        let mut doc = doc! {
            "event": event,
            "rawEntry": bson::to_bson(&f.fields).unwrap(),
            "reason": f.reason.as_str(),
            "error": &f.error,
            "attempts": f.attempts as i64,
            "streamId": &f.stream_id,
            "consumer": consumer,
            "failedAt": at(),
        };
        doc.insert(
            "accountId",
            f.account_id.clone().map(Bson::String).unwrap_or(Bson::Null),
        );
        doc.insert(
            "eventId",
            f.event_id.clone().map(Bson::String).unwrap_or(Bson::Null),
        );
        doc.insert(
            "_id",
            format!(
                "{}:{}",
                f.stream_id,
                f.event_id.as_deref().unwrap_or("entry")
            ),
        );
        doc
    }

    #[test]
    fn a_letter_is_written_in_the_shape_it_always_had() {
        for reason in DeadLetterReason::ALL {
            let f = failed(reason);
            let written = bson::to_raw_document_buf(&f.letter("w1", at())).unwrap();
            let before = bson::to_raw_document_buf(&as_before(&f, "w1")).unwrap();
            assert_eq!(written.as_bytes(), before.as_bytes());
        }
        let mut anonymous = failed(DeadLetterReason::Invalid);
        anonymous.account_id = None;
        anonymous.event_id = None;
        anonymous.fields = BTreeMap::from([("e".to_owned(), "{not json".to_owned())]);
        let letter = anonymous.letter("w1", at());
        assert_eq!(letter.id, "1700000000000-3:entry");
        assert_eq!(letter.event, Some(Bson::String("{not json".into())));
        let d = bson::to_document(&letter).unwrap();
        assert_eq!(d.get("accountId"), Some(&Bson::Null));
        assert_eq!(d.get("eventId"), Some(&Bson::Null));
        assert_eq!(
            bson::to_raw_document_buf(&letter).unwrap().as_bytes(),
            bson::to_raw_document_buf(&as_before(&anonymous, "w1"))
                .unwrap()
                .as_bytes()
        );
    }

    #[test]
    fn the_smallest_letter_has_pairs_and_no_event() {
        let f = failed(DeadLetterReason::WriteRejected);
        let d = bson::to_document(&f.minimal_letter("w1", at(), "too deep")).unwrap();
        assert!(!d.contains_key("event"));
        let pairs = d.get_array("rawEntry").unwrap();
        assert_eq!(
            pairs[0],
            Bson::Array(vec![
                Bson::String("e".into()),
                Bson::String(f.fields["e"].clone())
            ])
        );
        assert_eq!(
            d.get_str("error").unwrap(),
            "code 121: refused (the full dead letter was refused: too deep)"
        );
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "rawEntry",
                "reason",
                "error",
                "attempts",
                "streamId",
                "consumer",
                "failedAt",
                "accountId",
                "eventId",
                "_id"
            ]
        );
    }

    #[test]
    fn a_dead_letter_round_trips() {
        let f = failed(DeadLetterReason::Poison);
        let mut replayed = f.letter("w1", at());
        replayed.replayed_at = Some(at());
        replayed.replay_stream_id = Some("1700000000001-0".into());
        replayed.replay_failures = Some(1);
        let mut no_event = f.letter("w1", at());
        no_event.event = Some(Bson::Null);
        for letter in [
            f.letter("w1", at()),
            f.minimal_letter("w1", at(), "refused"),
            replayed,
            no_event,
        ] {
            let bytes = bson::to_raw_document_buf(&letter).unwrap();
            let back: DeadLetter = bson::from_slice(bytes.as_bytes()).unwrap();
            assert_eq!(back, letter);
        }
    }

    #[test]
    fn a_letter_written_by_hand_still_reads() {
        let d = doc! {
            "_id": "acc:x", "accountId": "acc", "eventId": "x", "reason": DeadLetterReason::Invalid,
            "error": "test", "attempts": 1, "failedAt": at(), "streamId": "1-0",
            "consumer": "someone", "rawEntry": "some bytes", "replayStreamId": Bson::Null,
        };
        let letter: DeadLetter = bson::from_document(d).unwrap();
        assert_eq!(letter.attempts, 1);
        assert_eq!(letter.event, None);
        assert_eq!(
            letter.raw_entry,
            RawEntry::Other(Bson::String("some bytes".into()))
        );
        assert_eq!(letter.raw_entry.event_text(), None);
        assert_eq!(letter.replay_stream_id, None);
    }

    #[test]
    fn only_a_full_letter_gives_back_its_event() {
        let f = failed(DeadLetterReason::Poison);
        let full = f.letter("w1", at());
        assert_eq!(full.raw_entry.event_text(), Some(f.fields["e"].as_str()));
        assert_eq!(
            f.minimal_letter("w1", at(), "r").raw_entry.event_text(),
            None
        );
    }

    #[test]
    fn a_replay_that_fails_again_names_its_letter() {
        let mut f = failed(DeadLetterReason::Poison);
        assert_eq!(f.replay_of(), None);
        f.request_id = Some(request_id_of_replay("1-0:e1"));
        assert_eq!(f.replay_of(), Some("1-0:e1"));
    }

    #[test]
    fn the_field_names_are_the_stored_ones() {
        let f = failed(DeadLetterReason::Poison);
        let mut letter = f.letter("w1", at());
        letter.replayed_at = Some(at());
        letter.replay_stream_id = Some("2-0".into());
        letter.replay_claimed_at = Some(at());
        letter.replay_failures = Some(1);
        let d = bson::to_document(&letter).unwrap();
        for name in [
            field::ID,
            field::ACCOUNT_ID,
            field::EVENT_ID,
            field::REASON,
            field::ERROR,
            field::ATTEMPTS,
            field::STREAM_ID,
            field::CONSUMER,
            field::FAILED_AT,
            field::RAW_ENTRY,
            field::REPLAYED_AT,
            field::REPLAY_STREAM_ID,
            field::REPLAY_CLAIMED_AT,
            field::REPLAY_FAILURES,
        ] {
            assert!(d.contains_key(name), "{name}");
        }
    }
}
