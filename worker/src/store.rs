//! MongoDB: the events collection and its indexes, the batch write and how its failures are
//! classified, and the dead-letter collection.
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Collection, Database, IndexModel};
use sluice_shared::config::MongoSettings;
use sluice_shared::event::QueuedEvent;
use sluice_shared::names::{event_document_id, DLQ_COLLECTION, EVENTS_COLLECTION};

/// MongoDB's duplicate-key error: the event is already stored.
pub const DUPLICATE_KEY: i32 = 11000;

pub async fn connect(settings: &MongoSettings) -> anyhow::Result<Database> {
    let mut opts = ClientOptions::parse(&settings.url)
        .await
        .with_context(|| format!("invalid mongo.url `{}`", settings.url))?;
    opts.app_name = Some("sluice-worker".into());
    opts.connect_timeout = Some(Duration::from_secs(2));
    opts.server_selection_timeout = Some(Duration::from_secs(3));
    let client = mongodb::Client::with_options(opts)?;
    Ok(client.database(&settings.database))
}

pub fn events(db: &Database) -> Collection<Document> {
    db.collection(EVENTS_COLLECTION)
}

pub fn dead_letters(db: &Database) -> Collection<Document> {
    db.collection(DLQ_COLLECTION)
}

pub async fn ping(db: &Database) -> anyhow::Result<()> {
    db.run_command(doc! {"ping": 1})
        .await
        .context("MongoDB ping")?;
    Ok(())
}

/// Creates the indexes the analytics queries use, and the hashed shard-key index where the server
/// supports it (a single node of the stand-in refuses hashed indexes; a sharded cluster has it).
pub async fn ensure_indexes(db: &Database) -> anyhow::Result<()> {
    let events = events(db);
    for (name, keys) in [
        (
            "account_time_type",
            doc! {"accountId": 1, "timestamp": -1, "eventType": 1},
        ),
        (
            "account_user_time",
            doc! {"accountId": 1, "userId": 1, "timestamp": -1},
        ),
    ] {
        events
            .create_index(
                IndexModel::builder()
                    .keys(keys)
                    .options(IndexOptions::builder().name(name.to_owned()).build())
                    .build(),
            )
            .await
            .with_context(|| format!("creating index {name}"))?;
    }
    match events
        .create_index(
            IndexModel::builder()
                .keys(doc! {"userId": "hashed"})
                .build(),
        )
        .await
    {
        Ok(_) => tracing::info!("hashed userId index present"),
        Err(e) => {
            tracing::info!(error = %e, "the server refuses a hashed userId index; going on without it (sharding needs a real cluster)")
        }
    }
    let dlq = dead_letters(db);
    dlq.create_index(
        IndexModel::builder()
            .keys(doc! {"accountId": 1, "failedAt": -1})
            .options(
                IndexOptions::builder()
                    .name("account_failed".to_owned())
                    .build(),
            )
            .build(),
    )
    .await
    .context("creating the dead-letter index")?;
    Ok(())
}

/// The stored form of an event, `_id` = `{accountId}:{eventId}`.
pub fn to_document(e: &QueuedEvent) -> Result<Document, String> {
    let mut d = doc! {
        "_id": event_document_id(&e.account_id, &e.event_id),
        "eventId": &e.event_id,
        "accountId": &e.account_id,
        "eventType": &e.event_type,
        "userId": &e.user_id,
    };
    if let Some(s) = &e.session_id {
        d.insert("sessionId", s);
    }
    d.insert(
        "timestamp",
        bson::DateTime::from_millis(e.timestamp.timestamp_millis()),
    );
    d.insert(
        "receivedAt",
        bson::DateTime::from_millis(e.received_at.timestamp_millis()),
    );
    if let Some(p) = &e.properties {
        for (k, v) in p {
            let here = format!("/properties/{k}");
            if k.contains('\0') || sluice_shared::event::nul_key_path(v, &here).is_some() {
                return Err("a property name contains NUL, which BSON cannot store".into());
            }
        }
        let props =
            bson::to_bson(p).map_err(|err| format!("properties are not storable: {err}"))?;
        d.insert("properties", props);
    }
    Ok(d)
}

/// What became of each document of a batch.
#[derive(Debug, Default, PartialEq)]
pub struct WriteReport {
    pub inserted: usize,
    pub duplicates: usize,
    /// Indexes (in the batch) of the documents that were already stored.
    pub duplicate_at: Vec<usize>,
    /// Documents the server refused for what they are (index in the batch, error): permanent.
    pub rejected: Vec<(usize, String)>,
}

/// A write that did not happen for reasons outside the documents: retry the whole batch.
#[derive(Debug, thiserror::Error)]
#[error("transient MongoDB failure: {0}")]
pub struct TransientWriteError(#[source] pub mongodb::error::Error);

/// Server error codes that mean "not now" rather than "not this document".
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    50,    // MaxTimeMSExpired
    112,   // WriteConflict
];

enum Failure {
    Transient(mongodb::error::Error),
    /// The server refused the command for something in it, without saying which document.
    Rejected(mongodb::error::Error),
}

fn is_transient(e: &mongodb::error::Error) -> bool {
    if e.contains_label("RetryableWriteError") || e.contains_label("TransientTransactionError") {
        return true;
    }
    match &*e.kind {
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::InvalidArgument { .. } | ErrorKind::BsonSerialization(_) => false,
        // Unreachable, timed out, pool cleared, and anything unknown: retry, never dead-letter.
        _ => true,
    }
}

/// One unordered insert. Re-running it is safe: stored documents come back as duplicate-key
/// errors.
async fn insert(
    events: &Collection<Document>,
    docs: Vec<Document>,
) -> Result<WriteReport, Failure> {
    let total = docs.len();
    match events.insert_many(docs).ordered(false).await {
        Ok(r) => Ok(WriteReport {
            inserted: r.inserted_ids.len(),
            ..Default::default()
        }),
        Err(e) => match &*e.kind {
            ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
                let mut report = WriteReport::default();
                for we in failure.write_errors.iter().flatten() {
                    if we.code == DUPLICATE_KEY {
                        report.duplicates += 1;
                        report.duplicate_at.push(we.index);
                    } else {
                        report
                            .rejected
                            .push((we.index, format!("code {}: {}", we.code, we.message)));
                    }
                }
                report.inserted = total - report.duplicates - report.rejected.len();
                Ok(report)
            }
            _ if is_transient(&e) => Err(Failure::Transient(e)),
            _ => Err(Failure::Rejected(e)),
        },
    }
}

/// Writes a batch as one unordered insert; documents the server refuses are reported by index
/// (split in halves until each refusal is pinned to one document when the server does not say
/// which). A transient failure returns at once, for the caller to retry the whole batch.
pub async fn write_batch(
    events: &Collection<Document>,
    docs: Vec<Document>,
) -> Result<WriteReport, TransientWriteError> {
    let mut report = WriteReport::default();
    let mut parts = vec![(0usize, docs)];
    while let Some((offset, mut part)) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        match insert(events, part.clone()).await {
            Ok(r) => {
                report.inserted += r.inserted;
                report.duplicates += r.duplicates;
                report
                    .duplicate_at
                    .extend(r.duplicate_at.into_iter().map(|i| offset + i));
                report
                    .rejected
                    .extend(r.rejected.into_iter().map(|(i, m)| (offset + i, m)));
            }
            Err(Failure::Transient(e)) => return Err(TransientWriteError(e)),
            Err(Failure::Rejected(e)) if part.len() == 1 => {
                report.rejected.push((offset, e.to_string()));
            }
            Err(Failure::Rejected(_)) => {
                let right = part.split_off(part.len() / 2);
                parts.push((offset + part.len(), right));
                parts.push((offset, part));
            }
        }
    }
    Ok(report)
}

/// A dead letter: the entry exactly as queued, and why it could not be stored.
pub struct DeadLetter {
    pub stream_id: String,
    pub account_id: Option<String>,
    pub event_id: Option<String>,
    pub fields: std::collections::HashMap<String, String>,
    pub reason: &'static str,
    pub error: String,
    pub attempts: u32,
}

pub fn dead_letter_document(d: &DeadLetter, consumer: &str) -> Document {
    let event = d
        .fields
        .get(sluice_shared::names::STREAM_EVENT_FIELD)
        .map(|raw| {
            serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| bson::to_bson(&v).ok())
                .unwrap_or_else(|| Bson::String(raw.clone()))
        })
        .unwrap_or(Bson::Null);
    let mut doc = doc! {
        "event": event,
        "rawEntry": bson::to_bson(&d.fields).unwrap_or(Bson::Null),
        "reason": d.reason,
        "error": &d.error,
        "attempts": d.attempts as i64,
        "streamId": &d.stream_id,
        "consumer": consumer,
        "failedAt": bson::DateTime::now(),
    };
    doc.insert(
        "accountId",
        d.account_id.clone().map(Bson::String).unwrap_or(Bson::Null),
    );
    doc.insert(
        "eventId",
        d.event_id.clone().map(Bson::String).unwrap_or(Bson::Null),
    );
    // One dead letter per stream entry, however often it is retried.
    doc.insert("_id", format!("{}:{}", d.stream_id, consumer_free_key(d)));
    doc
}

fn consumer_free_key(d: &DeadLetter) -> &str {
    d.event_id.as_deref().unwrap_or("entry")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn event() -> QueuedEvent {
        QueuedEvent {
            event_id: "e1".into(),
            account_id: "acc".into(),
            event_type: "click".into(),
            user_id: "u1".into(),
            session_id: Some("s1".into()),
            timestamp: Utc.with_ymd_and_hms(2024, 1, 1, 10, 0, 0).unwrap(),
            received_at: Utc.with_ymd_and_hms(2024, 1, 1, 10, 0, 1).unwrap(),
            properties: serde_json::from_str(r#"{"plan":"pro","n":[1,2.5,{"deep":true}]}"#)
                .unwrap(),
        }
    }

    #[test]
    fn documents_carry_every_contract_field() {
        let d = to_document(&event()).unwrap();
        assert_eq!(d.get_str("_id").unwrap(), "acc:e1");
        for f in ["eventId", "accountId", "eventType", "userId", "sessionId"] {
            assert!(d.get_str(f).is_ok(), "{f}");
        }
        assert_eq!(
            d.get_datetime("timestamp").unwrap().timestamp_millis(),
            event().timestamp.timestamp_millis()
        );
        assert!(d.get_datetime("receivedAt").is_ok());
        assert_eq!(
            d.get_document("properties")
                .unwrap()
                .get_str("plan")
                .unwrap(),
            "pro"
        );
    }

    #[test]
    fn unrepresentable_properties_are_reported_not_panicked_on() {
        let mut e = event();
        e.properties = serde_json::from_str(r#"{"big": 18446744073709551615}"#).unwrap();
        assert!(to_document(&e).is_err());
        e.properties = serde_json::from_str(r#"{"a": [{"b\u0000": 1}]}"#).unwrap();
        assert!(to_document(&e).is_err());
    }
}
