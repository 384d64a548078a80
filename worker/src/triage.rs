//! Sorting a batch, before its write and after MongoDB answered for it: which entries become
//! documents and which dead letters, and what the write made of each event. Pure: no I/O.
use std::collections::BTreeMap;

use mongodb::bson::RawDocumentBuf;
use sluice_shared::event::QueuedEvent;
use sluice_shared::names::{STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};
use sluice_store::{to_document, to_quarantine_document, DeadLetterReason, FailedEntry};

use crate::store::WriteReport;
use crate::stream::{Entry, EntryEvent};

/// One event of the batch on its way to MongoDB: the entry it came in, its place there, and the
/// event itself.
pub struct Source<'a> {
    pub entry: &'a Entry,
    pub item: EntryEvent,
    pub event: QueuedEvent,
}

/// A batch sorted before it is written.
#[derive(Default)]
pub struct Triage<'a> {
    /// Encoded documents and, at the same index in `sources`, the event each came from.
    pub docs: Vec<RawDocumentBuf>,
    pub sources: Vec<Source<'a>>,
    /// Events (or whole entries) that can never be stored: poison, undecodable, not storable.
    pub dead: Vec<FailedEntry>,
    /// Events a tracking plan holds in quarantine: their documents for `events_quarantine` and,
    /// at the same index in `held_sources`, the events. They count in no aggregate.
    pub held: Vec<RawDocumentBuf>,
    pub held_sources: Vec<Source<'a>>,
}

/// Sorts the events of `entries` into documents to write and dead letters: the events of an
/// entry delivered more than `max_deliveries` times are poison; an entry that cannot be unpacked,
/// or an event that does not decode or encode, is invalid.
pub fn triage(entries: &[Entry], max_deliveries: u64) -> Triage<'_> {
    let mut t = Triage::default();
    for entry in entries {
        let items = match entry.events() {
            Ok(items) => items,
            Err(error) => {
                t.dead
                    .push(failed_entry(entry, DeadLetterReason::Invalid, error));
                continue;
            }
        };
        for item in items {
            if entry.deliveries > max_deliveries {
                let error = format!(
                    "delivered {} times, more than the {max_deliveries} allowed",
                    entry.deliveries
                );
                t.dead
                    .push(failed_event(entry, &item, DeadLetterReason::Poison, error));
                continue;
            }
            let encoded = item.decode().and_then(|e| {
                let held = e.plan.as_ref().is_some_and(|p| p.quarantine);
                let doc = if held {
                    to_quarantine_document(&e, chrono::Utc::now())
                } else {
                    to_document(&e)
                };
                doc.map(|d| (e, d, held))
            });
            match encoded {
                Ok((event, doc, true)) => {
                    t.held.push(doc);
                    t.held_sources.push(Source { entry, item, event });
                }
                Ok((event, doc, false)) => {
                    t.docs.push(doc);
                    t.sources.push(Source { entry, item, event });
                }
                Err(error) => {
                    t.dead
                        .push(failed_event(entry, &item, DeadLetterReason::Invalid, error))
                }
            }
        }
    }
    t
}

/// What the write made of each event of a batch, once MongoDB answered for every one.
#[derive(Default)]
pub struct Settled<'s, 'a> {
    /// Inserted by this write: what the rollups count.
    pub stored: Vec<&'s Source<'a>>,
    /// Stored before (a retry after a lost reply, a redelivery): their buckets are suspect.
    pub duplicates: Vec<&'s Source<'a>>,
    /// Refused by MongoDB for what they hold.
    pub rejected: Vec<FailedEntry>,
}

pub fn settle<'s, 'a>(sources: &'s [Source<'a>], report: &WriteReport) -> Settled<'s, 'a> {
    let mut settled = Settled::default();
    let mut refusals = vec![None; sources.len()];
    for (index, error) in &report.rejected {
        if let Some(slot) = refusals.get_mut(*index) {
            *slot = Some(error.as_str());
        }
    }
    let mut duplicate = vec![false; sources.len()];
    for &index in &report.duplicate_at {
        if let Some(slot) = duplicate.get_mut(index) {
            *slot = true;
        }
    }
    for (source, (refusal, duplicate)) in sources.iter().zip(refusals.into_iter().zip(duplicate)) {
        match refusal {
            Some(error) => settled.rejected.push(failed_event(
                source.entry,
                &source.item,
                DeadLetterReason::WriteRejected,
                error.to_owned(),
            )),
            None if duplicate => settled.duplicates.push(source),
            None => settled.stored.push(source),
        }
    }
    settled
}

/// The dead letter of one event: its own text and request id as the entry's fields (the letter
/// of an event of a packed entry looks like that of an entry of one event), attributed to its
/// account and event wherever its text says which, even when it is not a valid event.
pub fn failed_event(
    entry: &Entry,
    item: &EntryEvent,
    reason: DeadLetterReason,
    error: String,
) -> FailedEntry {
    let (account_id, event_id) = match item.decode() {
        Ok(e) => (Some(e.account_id), Some(e.event_id)),
        Err(_) => loose_ids(item.text.as_bytes()),
    };
    let mut fields = BTreeMap::from([(STREAM_EVENT_FIELD.to_owned(), item.text.clone())]);
    if let Some(rid) = &item.request_id {
        fields.insert(STREAM_REQUEST_ID_FIELD.to_owned(), rid.clone());
    }
    FailedEntry {
        stream_id: item.stream_id(&entry.id),
        account_id,
        event_id,
        fields,
        reason,
        error,
        attempts: u32::try_from(entry.deliveries).unwrap_or(u32::MAX),
        request_id: item.request_id.clone(),
    }
}

/// The dead letter of an entry that cannot be unpacked into events: its raw fields.
pub fn failed_entry(entry: &Entry, reason: DeadLetterReason, error: String) -> FailedEntry {
    let raw = entry
        .fields
        .get(STREAM_EVENT_FIELD)
        .and_then(|v| v.as_bytes());
    let (account_id, event_id) = raw.map(loose_ids).unwrap_or_default();
    let request_id = entry
        .fields
        .get(STREAM_REQUEST_ID_FIELD)
        .and_then(|v| v.as_string());
    FailedEntry {
        stream_id: entry.id.clone(),
        account_id,
        event_id,
        fields: entry.raw_fields().into_iter().collect(),
        reason,
        error,
        attempts: u32::try_from(entry.deliveries).unwrap_or(u32::MAX),
        request_id,
    }
}

/// `accountId` and `eventId` of text that is JSON but not a valid event.
fn loose_ids(text: &[u8]) -> (Option<String>, Option<String>) {
    let value = serde_json::from_slice::<serde_json::Value>(text).ok();
    let text = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    (text("accountId"), text("eventId"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::types::Value;

    fn entry(id: &str, event: &str, deliveries: u64) -> Entry {
        Entry {
            id: id.into(),
            fields: [
                (STREAM_EVENT_FIELD.to_owned(), Value::from(event)),
                (STREAM_REQUEST_ID_FIELD.to_owned(), Value::from("req-7")),
            ]
            .into(),
            deliveries,
        }
    }

    fn event(id: &str) -> String {
        serde_json::json!({
            "eventId": id, "accountId": "acc", "eventType": "click", "userId": "u1",
            "timestamp": "2024-01-01T10:00:00Z", "receivedAt": "2024-01-01T10:00:01Z",
        })
        .to_string()
    }

    #[test]
    fn a_batch_is_sorted_into_documents_and_dead_letters_in_order() {
        let entries = [
            entry("1-0", &event("a"), 1),
            entry("2-0", "{not json", 1),
            entry("3-0", &event("b"), 6),
            entry("4-0", &event("c"), 5),
        ];
        let t = triage(&entries, 5);
        assert_eq!(t.docs.len(), 2);
        let ids: Vec<&str> = t
            .sources
            .iter()
            .map(|s| s.event.event_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(t.docs[1].get_str("_id").unwrap(), "acc:c");
        let dead: Vec<(&str, DeadLetterReason)> = t
            .dead
            .iter()
            .map(|d| (d.stream_id.as_str(), d.reason))
            .collect();
        assert_eq!(
            dead,
            [
                ("2-0", DeadLetterReason::Invalid),
                ("3-0", DeadLetterReason::Poison)
            ]
        );
        let poison = &t.dead[1];
        assert_eq!(poison.event_id.as_deref(), Some("b"));
        assert_eq!(poison.attempts, 6);
        assert_eq!(poison.error, "delivered 6 times, more than the 5 allowed");
        assert_eq!(poison.request_id.as_deref(), Some("req-7"));
        assert_eq!(poison.fields["e"], event("b"));
    }

    #[test]
    fn a_packed_entry_is_judged_event_by_event_and_its_letters_are_single_events() {
        let packed = format!("[{}, {{\"eventId\": 7}}, {}]", event("a"), event("b"));
        let mut e = entry("9-0", &packed, 1);
        e.fields.insert(
            STREAM_REQUEST_ID_FIELD.to_owned(),
            Value::from(r#"["r0","r1","r2"]"#),
        );
        let t = triage(std::slice::from_ref(&e), 5);
        let ids: Vec<&str> = t
            .sources
            .iter()
            .map(|s| s.event.event_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(t.dead.len(), 1);
        let d = &t.dead[0];
        assert_eq!(
            (d.stream_id.as_str(), d.reason),
            ("9-0.1", DeadLetterReason::Invalid)
        );
        assert_eq!(d.request_id.as_deref(), Some("r1"));
        assert_eq!(d.fields["e"], r#"{"eventId": 7}"#);
        // Poison: every event of the entry gets its own letter.
        e.deliveries = 6;
        let t = triage(std::slice::from_ref(&e), 5);
        assert!(t.docs.is_empty());
        let dead: Vec<&str> = t.dead.iter().map(|d| d.stream_id.as_str()).collect();
        assert_eq!(dead, ["9-0.0", "9-0.1", "9-0.2"]);
        assert_eq!(t.dead[2].event_id.as_deref(), Some("b"));
        assert_eq!(t.dead[2].fields["e"], event("b"));
    }

    #[test]
    fn an_event_bson_cannot_hold_is_invalid_not_a_document() {
        let huge = serde_json::json!({
            "eventId": "big", "accountId": "acc", "eventType": "click", "userId": "u1",
            "timestamp": "2024-01-01T10:00:00Z", "receivedAt": "2024-01-01T10:00:01Z",
            "properties": {"n": 18446744073709551615u64},
        });
        let entries = [entry("1-0", &huge.to_string(), 1)];
        let t = triage(&entries, 5);
        assert!(t.docs.is_empty());
        assert_eq!(t.dead[0].reason, DeadLetterReason::Invalid);
        assert_eq!(t.dead[0].event_id.as_deref(), Some("big"));
    }

    #[test]
    fn a_letter_is_attributed_wherever_the_entry_says_whose() {
        let named = r#"{"accountId": "acc", "eventId": "named-1"}"#;
        let entries = [entry("1-0", named, 1), entry("2-0", "\u{1}not json", 1)];
        let t = triage(&entries, 5);
        assert_eq!(t.dead[0].account_id.as_deref(), Some("acc"));
        assert_eq!(t.dead[0].event_id.as_deref(), Some("named-1"));
        assert_eq!(
            (
                t.dead[1].account_id.as_deref(),
                t.dead[1].event_id.as_deref()
            ),
            (None, None)
        );
    }

    #[test]
    fn a_replayed_entry_names_the_letter_it_replays() {
        let mut e = entry("1-0", "{not json", 1);
        e.fields.insert(
            STREAM_REQUEST_ID_FIELD.to_owned(),
            Value::from(sluice_store::replay::request_id_of_replay("9-0:x")),
        );
        let t = triage(std::slice::from_ref(&e), 5);
        assert_eq!(t.dead[0].replay_of(), Some("9-0:x"));
    }

    #[test]
    fn the_write_report_settles_each_event_as_stored_duplicate_or_rejected() {
        let entries = [
            entry("1-0", &event("a"), 1),
            entry("2-0", &event("b"), 1),
            entry("3-0", &event("c"), 1),
        ];
        let t = triage(&entries, 5);
        let report = WriteReport {
            inserted: 1,
            duplicates: 1,
            duplicate_at: vec![2],
            rejected: vec![(0, "code 121: refused".into())],
            retry_at: vec![],
        };
        let s = settle(&t.sources, &report);
        let ids =
            |v: &[&Source]| -> Vec<String> { v.iter().map(|s| s.event.event_id.clone()).collect() };
        assert_eq!(ids(&s.stored), ["b"]);
        assert_eq!(ids(&s.duplicates), ["c"]);
        assert_eq!(s.rejected.len(), 1);
        assert_eq!(s.rejected[0].reason, DeadLetterReason::WriteRejected);
        assert_eq!(s.rejected[0].event_id.as_deref(), Some("a"));
        assert_eq!(s.rejected[0].error, "code 121: refused");
    }
}
