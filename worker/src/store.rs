//! MongoDB: the events collection and its indexes, the batch write and how its failures are
//! classified, and the dead-letter collection.
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{self, doc, Bson, Document, RawDocumentBuf};
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

/// The events collection as the worker writes it: documents already encoded.
pub fn raw_events(db: &Database) -> Collection<RawDocumentBuf> {
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

/// The stored form of an event, `_id` = `{accountId}:{eventId}`, as the BSON bytes sent to
/// MongoDB. `properties` is transcoded from the client's JSON straight into BSON: no tree of it is
/// ever built, so a batch costs about its bytes in memory whatever shape its events have.
pub fn to_document(e: &QueuedEvent) -> Result<RawDocumentBuf, String> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Stored<'a> {
        #[serde(rename = "_id")]
        id: String,
        event_id: &'a str,
        account_id: &'a str,
        event_type: &'a str,
        user_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
        timestamp: bson::DateTime,
        received_at: bson::DateTime,
        #[serde(skip_serializing_if = "Option::is_none")]
        properties: Option<Transcoded<'a>>,
    }
    let stored = Stored {
        id: event_document_id(&e.account_id, &e.event_id),
        event_id: &e.event_id,
        account_id: &e.account_id,
        event_type: &e.event_type,
        user_id: &e.user_id,
        session_id: e.session_id.as_deref(),
        timestamp: bson::DateTime::from_millis(e.timestamp.timestamp_millis()),
        received_at: bson::DateTime::from_millis(e.received_at.timestamp_millis()),
        properties: e.properties.as_deref().map(Transcoded),
    };
    bson::to_raw_document_buf(&stored).map_err(|err| format!("not storable as BSON: {err}"))
}

/// Raw JSON serialized as whatever the serializer writes (BSON here), value by value.
struct Transcoded<'a>(&'a serde_json::value::RawValue);

impl serde::Serialize for Transcoded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        serde_transcode::transcode(&mut de, s)
    }
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
    /// Documents the server refused for where it stands (a shard unavailable, not primary, stale
    /// config): neither stored nor refused; write them again.
    pub retry_at: Vec<usize>,
}

impl WriteReport {
    /// Adds the report of a write of `part` (indexes into the whole batch) to this one.
    pub fn absorb(&mut self, other: WriteReport, part: &[usize]) {
        let at = |i: usize| part.get(i).copied().unwrap_or(i);
        self.inserted += other.inserted;
        self.duplicates += other.duplicates;
        self.duplicate_at
            .extend(other.duplicate_at.into_iter().map(at));
        self.rejected
            .extend(other.rejected.into_iter().map(|(i, m)| (at(i), m)));
        self.retry_at = other.retry_at.into_iter().map(at).collect();
    }
}

/// A write that did not happen for reasons outside the documents: retry the whole batch.
#[derive(Debug, thiserror::Error)]
#[error("MongoDB did not take the write: {0}")]
pub struct TransientWriteError(#[source] pub mongodb::error::Error);

/// Per-document error codes that mean "not now" (where the server stands) rather than "not this
/// document": the document is written again, never dead-lettered.
const RETRYABLE_DOCUMENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    63,    // StaleShardVersion
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    133,   // FailedToSatisfyReadPreference
    150,   // StaleEpoch
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13388, // StaleConfig
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    // Errors of a shard that cannot be reached through mongos.
    202, // NetworkInterfaceExceededTimeLimit
    279, // ClientDisconnect
];

pub fn is_retryable_document_code(code: i32) -> bool {
    RETRYABLE_DOCUMENT_CODES.contains(&code)
}

enum Failure {
    /// Nothing in the error names a document: the write is retried as a whole.
    Retry(mongodb::error::Error),
    /// The driver refused the documents before sending them (serialization, size): something in
    /// them, without saying which.
    Rejected(mongodb::error::Error),
}

/// Only a refusal the driver makes before sending is about the documents. Every server answer
/// that names no document (a command error of any code — unauthorized, a write block, a quota, a
/// shard down —, a write-concern failure, a network error) is about the server and is retried:
/// taking it as a refusal of every document would dead-letter good events, or, when the
/// dead-letter insert is refused the same way, lose them.
fn is_about_the_documents(e: &mongodb::error::Error) -> bool {
    matches!(
        &*e.kind,
        ErrorKind::InvalidArgument { .. } | ErrorKind::BsonSerialization(_)
    )
}

/// One unordered insert. Re-running it is safe: stored documents come back as duplicate-key
/// errors.
async fn insert<T: serde::Serialize + Send + Sync>(
    events: &Collection<T>,
    docs: &[&T],
) -> Result<WriteReport, Failure> {
    let total = docs.len();
    match events
        .insert_many(docs.iter().copied())
        .ordered(false)
        .await
    {
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
                    } else if is_retryable_document_code(we.code) {
                        report.retry_at.push(we.index);
                    } else {
                        report
                            .rejected
                            .push((we.index, format!("code {}: {}", we.code, we.message)));
                    }
                }
                report.inserted =
                    total - report.duplicates - report.rejected.len() - report.retry_at.len();
                Ok(report)
            }
            _ if is_about_the_documents(&e) => Err(Failure::Rejected(e)),
            _ => Err(Failure::Retry(e)),
        },
    }
}

/// Writes a batch as one unordered insert; documents the server refuses are reported by index
/// (split in halves until each refusal is pinned to one document when the driver does not say
/// which), documents to write again in `retry_at`. A failure that names no document returns at
/// once, for the caller to retry the whole batch.
pub async fn write_batch<T: serde::Serialize + Send + Sync>(
    events: &Collection<T>,
    docs: &[&T],
) -> Result<WriteReport, TransientWriteError> {
    let mut report = WriteReport::default();
    let mut retry_at = Vec::new();
    let mut parts = vec![(0usize, docs)];
    while let Some((offset, part)) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let whole = part.len() == docs.len();
        match insert(events, part).await {
            Ok(r) => {
                report.inserted += r.inserted;
                report.duplicates += r.duplicates;
                report
                    .duplicate_at
                    .extend(r.duplicate_at.into_iter().map(|i| offset + i));
                report
                    .rejected
                    .extend(r.rejected.into_iter().map(|(i, m)| (offset + i, m)));
                retry_at.extend(r.retry_at.into_iter().map(|i| offset + i));
            }
            Err(Failure::Retry(e)) if whole => return Err(TransientWriteError(e)),
            Err(Failure::Retry(e)) => {
                // Halfway through a split: keep what the other parts did, write the rest again.
                tracing::warn!(error = %e, "MongoDB did not take part of a split batch; writing it again");
                retry_at.extend(offset..offset + part.len());
                for (o, p) in parts.drain(..) {
                    retry_at.extend(o..o + p.len());
                }
            }
            Err(Failure::Rejected(e)) if part.len() == 1 => {
                report.rejected.push((offset, e.to_string()));
            }
            Err(Failure::Rejected(_)) => {
                let (left, right) = part.split_at(part.len() / 2);
                parts.push((offset + left.len(), right));
                parts.push((offset, left));
            }
        }
    }
    retry_at.sort_unstable();
    report.retry_at = retry_at;
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
    /// The dead letter this entry is the replay of (request id `replay:{id}`): a replay that
    /// fails again updates that letter instead of adding one.
    pub replay_of: Option<String>,
}

/// Dead letters, newest first: the operator's view, across accounts.
pub async fn list_dead_letters(
    db: &Database,
    unattributed: bool,
    reason: Option<String>,
    limit: i64,
) -> anyhow::Result<Vec<Document>> {
    use futures::TryStreamExt;
    let mut filter = doc! {};
    if unattributed {
        filter.insert("accountId", Bson::Null);
    }
    if let Some(r) = reason {
        filter.insert("reason", r);
    }
    dead_letters(db)
        .find(filter)
        .sort(doc! {"failedAt": -1})
        .limit(limit)
        .await
        .context("listing dead letters")?
        .try_collect()
        .await
        .context("reading dead letters")
}

impl DeadLetter {
    /// The dead letter of `entry`, attributed to its account and event wherever the entry says
    /// which, even when it does not decode as an event.
    pub fn of(entry: &crate::stream::Entry, reason: &'static str, error: String) -> Self {
        let (account_id, event_id) = match entry.decode() {
            Ok(e) => (Some(e.account_id), Some(e.event_id)),
            Err(_) => loose_ids(entry),
        };
        DeadLetter {
            stream_id: entry.id.clone(),
            account_id,
            event_id,
            fields: entry.raw_fields(),
            reason,
            error,
            attempts: entry.deliveries as u32,
            replay_of: entry
                .request_id()
                .and_then(|r| r.strip_prefix("replay:").map(str::to_owned)),
        }
    }
}

/// Folds a failed replay into the letter it replayed: the new failure, and the letter replayable
/// again. False when there is no such letter any more (the caller then stores a new one).
pub async fn refail_replayed_letter(
    dlq: &Collection<Document>,
    d: &DeadLetter,
    consumer: &str,
) -> mongodb::error::Result<bool> {
    let Some(origin) = &d.replay_of else {
        return Ok(false);
    };
    let r = dlq
        .update_one(
            doc! {"_id": origin},
            doc! {
                "$set": {"reason": d.reason, "error": &d.error, "attempts": d.attempts as i64,
                         "streamId": &d.stream_id, "consumer": consumer, "failedAt": bson::DateTime::now()},
                "$unset": {"replayedAt": "", "replayStreamId": "", "replayClaimedAt": ""},
                "$inc": {"replayFailures": 1_i64},
            },
        )
        .await?;
    Ok(r.matched_count == 1)
}

/// `accountId` and `eventId` of an entry whose event is JSON but not a valid event.
fn loose_ids(entry: &crate::stream::Entry) -> (Option<String>, Option<String>) {
    let value = entry
        .fields
        .get(sluice_shared::names::STREAM_EVENT_FIELD)
        .and_then(|v| v.as_bytes())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
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

/// The smallest dead letter of an entry, for when MongoDB refuses the full one: the entry's
/// fields as `[name, text]` pairs (no client-chosen field names), no parsed event.
pub fn minimal_dead_letter_document(d: &DeadLetter, consumer: &str, refusal: &str) -> Document {
    let mut doc = dead_letter_document(d, consumer);
    doc.remove("event");
    let pairs: Vec<Bson> = d
        .fields
        .iter()
        .map(|(k, v)| Bson::Array(vec![Bson::String(k.clone()), Bson::String(v.clone())]))
        .collect();
    doc.insert("rawEntry", Bson::Array(pairs));
    doc.insert(
        "error",
        format!("{} (the full dead letter was refused: {refusal})", d.error),
    );
    doc
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
            properties: Some(
                serde_json::value::RawValue::from_string(
                    r#"{"plan":"pro","n":[1,2.5,{"deep":true}]}"#.into(),
                )
                .unwrap(),
            ),
        }
    }

    #[test]
    fn documents_carry_every_contract_field() {
        let d: Document = to_document(&event()).unwrap().to_document().unwrap();
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
        e.properties = serde_json::from_str(r#"{"n": [1, -2, 2.5, "s", null, true]}"#).unwrap();
        let d = to_document(&e).unwrap().to_document().unwrap();
        let n = d
            .get_document("properties")
            .unwrap()
            .get_array("n")
            .unwrap();
        assert_eq!(n[0], Bson::Int64(1));
        assert_eq!(n[1], Bson::Int64(-2));
        assert_eq!(n[2], Bson::Double(2.5));
    }
}
