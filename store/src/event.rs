//! The `events` collection and its document: `_id` = `{accountId}:{eventId}` (MongoDB's `_id` is
//! the final dedup guard), the event's fields, `timestamp` and `receivedAt` as BSON dates.
use mongodb::bson::{self, Document, RawDocumentBuf};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use sluice_shared::error::Violation;
use sluice_shared::event::{Origin, QueuedEvent, SourceKind};
use sluice_shared::names::{event_document_id, EVENTS_COLLECTION, QUARANTINE_COLLECTION};

/// Field names of the stored event, for query filters, sorts and indexes.
pub mod field {
    pub const ID: &str = "_id";
    pub const EVENT_ID: &str = "eventId";
    pub const ACCOUNT_ID: &str = "accountId";
    pub const EVENT_TYPE: &str = "eventType";
    pub const USER_ID: &str = "userId";
    pub const TIMESTAMP: &str = "timestamp";
    pub const RECEIVED_AT: &str = "receivedAt";
    pub const ANONYMOUS_ID: &str = "anonymousId";
    pub const SESSION_ID: &str = "sessionId";
    pub const SCHEMA_VERSION: &str = "schemaVersion";
    pub const QUARANTINED_AT: &str = "quarantinedAt";
}

/// An event as stored in `events`: what every reader deserializes. The worker writes the same
/// shape through [`to_document`], which never builds the `properties` tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// `{accountId}:{eventId}`.
    #[serde(rename = "_id")]
    pub id: String,
    pub event_id: String,
    pub account_id: String,
    pub event_type: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// When it happened, skew-corrected.
    pub timestamp: bson::DateTime,
    /// When the api took it in.
    pub received_at: bson::DateTime,
    /// The client's `properties`, absent when it sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Document>,
    /// The intake, for an event that came through a source (docs/SOURCES.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Document>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Document>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<Document>,
    /// The tracking-plan version it was judged by, when a schema covers its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// What it broke of that schema (mode `allow`, or in quarantine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_violations: Option<Vec<Violation>>,
    /// In `events_quarantine` only: when it was put there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_at: Option<bson::DateTime>,
}

/// `source` of a stored event: which intake took it in, and what of the sender's own naming
/// is not elsewhere in the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    pub kind: SourceKind,
    /// The webhook source's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The Segment call type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The sender's message id, when the eventId had to be derived from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// The events collection, typed for readers.
pub fn events(db: &Database) -> Collection<StoredEvent> {
    db.collection(EVENTS_COLLECTION)
}

/// The events collection as the worker writes it: documents already encoded.
pub fn raw_events(db: &Database) -> Collection<RawDocumentBuf> {
    db.collection(EVENTS_COLLECTION)
}

/// `events_quarantine`: events a tracking plan in `quarantine` mode held back, in the shape of
/// `events` with their violations and `quarantinedAt`.
pub fn quarantine(db: &Database) -> Collection<StoredEvent> {
    db.collection(QUARANTINE_COLLECTION)
}

pub fn raw_quarantine(db: &Database) -> Collection<RawDocumentBuf> {
    db.collection(QUARANTINE_COLLECTION)
}

/// The stored form of an event (a [`StoredEvent`]) as the BSON bytes sent to MongoDB.
/// `properties` is transcoded from the client's JSON straight into BSON: no tree of it is ever
/// built, so a batch costs about its bytes in memory whatever shape its events have.
pub fn to_document(e: &QueuedEvent) -> Result<RawDocumentBuf, String> {
    encode(e, None)
}

/// The form of a quarantined event in `events_quarantine`: the stored form and `quarantinedAt`.
pub fn to_quarantine_document(
    e: &QueuedEvent,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<RawDocumentBuf, String> {
    encode(e, Some(bson::DateTime::from_millis(at.timestamp_millis())))
}

fn encode(
    e: &QueuedEvent,
    quarantined_at: Option<bson::DateTime>,
) -> Result<RawDocumentBuf, String> {
    /// [`StoredEvent`], borrowed: the same fields in the same order.
    #[derive(Serialize)]
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
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<Source<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        anonymous_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        category: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        traits: Option<Transcoded<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        context: Option<Transcoded<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        integrations: Option<Transcoded<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        schema_version: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        schema_violations: Option<&'a [Violation]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        quarantined_at: Option<bson::DateTime>,
    }
    /// [`SourceInfo`], borrowed.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Source<'a> {
        kind: SourceKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
    }
    let origin: Option<&Origin> = e.origin.as_deref();
    let text = |f: fn(&Origin) -> &Option<String>| origin.and_then(|o| f(o).as_deref());
    let object = |f: fn(&Origin) -> &Option<Box<serde_json::value::RawValue>>| {
        origin.and_then(|o| f(o).as_deref()).map(Transcoded)
    };
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
        source: origin.map(|o| Source {
            kind: o.kind,
            id: o.source_id.as_deref(),
            call: o.call.as_deref(),
            message_id: o.message_id.as_deref(),
        }),
        anonymous_id: text(|o| &o.anonymous_id),
        name: text(|o| &o.name),
        category: text(|o| &o.category),
        group_id: text(|o| &o.group_id),
        previous_id: text(|o| &o.previous_id),
        traits: object(|o| &o.traits),
        context: object(|o| &o.context),
        integrations: object(|o| &o.integrations),
        schema_version: e.plan.as_ref().map(|p| i64::from(p.schema_version)),
        schema_violations: e
            .plan
            .as_ref()
            .map(|p| p.violations.as_slice())
            .filter(|v| !v.is_empty()),
        quarantined_at,
    };
    bson::to_raw_document_buf(&stored).map_err(|err| format!("not storable as BSON: {err}"))
}

impl StoredEvent {
    /// The event as it was queued, from its stored form (a quarantine replay queues it again):
    /// every field the document keeps; objects as their JSON.
    pub fn to_queued(&self) -> Result<QueuedEvent, String> {
        use serde_json::value::RawValue;
        let raw = |d: &Option<Document>| -> Result<Option<Box<RawValue>>, String> {
            d.as_ref()
                .map(|d| {
                    let json = bson::Bson::Document(d.clone()).into_relaxed_extjson();
                    RawValue::from_string(json.to_string()).map_err(|e| e.to_string())
                })
                .transpose()
        };
        let time = |d: bson::DateTime| {
            chrono::DateTime::from_timestamp_millis(d.timestamp_millis())
                .ok_or_else(|| "a stored time out of range".to_owned())
        };
        let origin = match &self.source {
            None => None,
            Some(s) => {
                let mut o = Origin::new(s.kind);
                o.source_id = s.id.clone();
                o.call = s.call.clone();
                o.message_id = s.message_id.clone();
                o.anonymous_id = self.anonymous_id.clone();
                o.name = self.name.clone();
                o.category = self.category.clone();
                o.group_id = self.group_id.clone();
                o.previous_id = self.previous_id.clone();
                o.traits = raw(&self.traits)?;
                o.context = raw(&self.context)?;
                o.integrations = raw(&self.integrations)?;
                Some(Box::new(o))
            }
        };
        Ok(QueuedEvent {
            event_id: self.event_id.clone(),
            account_id: self.account_id.clone(),
            event_type: self.event_type.clone(),
            user_id: self.user_id.clone(),
            session_id: self.session_id.clone(),
            timestamp: time(self.timestamp)?,
            received_at: time(self.received_at)?,
            properties: raw(&self.properties)?,
            origin,
            plan: None,
        })
    }
}

/// Raw JSON serialized as whatever the serializer writes (BSON here), value by value.
struct Transcoded<'a>(&'a serde_json::value::RawValue);

impl Serialize for Transcoded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        serde_transcode::transcode(&mut de, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use mongodb::bson::{doc, Bson};

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
            origin: None,
            plan: None,
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
    fn a_written_document_reads_back_as_the_stored_event_with_the_same_values() {
        let e = event();
        let raw = to_document(&e).unwrap();
        let stored: StoredEvent = bson::from_slice(raw.as_bytes()).unwrap();
        assert_eq!(
            stored,
            StoredEvent {
                id: "acc:e1".into(),
                event_id: "e1".into(),
                account_id: "acc".into(),
                event_type: "click".into(),
                user_id: "u1".into(),
                session_id: Some("s1".into()),
                timestamp: bson::DateTime::from_millis(e.timestamp.timestamp_millis()),
                received_at: bson::DateTime::from_millis(e.received_at.timestamp_millis()),
                properties: Some(doc! {"plan": "pro", "n": [1_i64, 2.5, {"deep": true}]}),
                source: None,
                anonymous_id: None,
                name: None,
                category: None,
                group_id: None,
                previous_id: None,
                traits: None,
                context: None,
                integrations: None,
                schema_version: None,
                schema_violations: None,
                quarantined_at: None,
            }
        );
        // And the typed form writes the very same bytes: one shape, two ways to produce it.
        assert_eq!(
            bson::to_raw_document_buf(&stored).unwrap().as_bytes(),
            raw.as_bytes()
        );
    }

    #[test]
    fn optional_fields_are_absent_not_null_and_read_back_as_none() {
        let mut e = event();
        e.session_id = None;
        e.properties = None;
        let raw = to_document(&e).unwrap();
        let d = raw.to_document().unwrap();
        assert!(!d.contains_key("sessionId") && !d.contains_key("properties"));
        let stored: StoredEvent = bson::from_slice(raw.as_bytes()).unwrap();
        assert_eq!((stored.session_id, stored.properties), (None, None));
    }

    #[test]
    fn a_source_event_keeps_what_its_sender_sent_beside_the_envelope() {
        let mut e = event();
        let raw = |s: &str| Some(serde_json::value::RawValue::from_string(s.into()).unwrap());
        let mut origin = Origin::new(SourceKind::Segment);
        origin.call = Some("page".into());
        origin.anonymous_id = Some("anon-1".into());
        origin.name = Some("Home".into());
        origin.traits = raw(r#"{"plan":"pro"}"#);
        origin.context = raw(r#"{"library":{"name":"analytics-python"}}"#);
        origin.integrations = raw(r#"{"All":true}"#);
        e.origin = Some(Box::new(origin));
        let raw_doc = to_document(&e).unwrap();
        let stored: StoredEvent = bson::from_slice(raw_doc.as_bytes()).unwrap();
        assert_eq!(
            stored.source,
            Some(SourceInfo {
                kind: SourceKind::Segment,
                id: None,
                call: Some("page".into()),
                message_id: None
            })
        );
        assert_eq!(stored.anonymous_id.as_deref(), Some("anon-1"));
        assert_eq!(stored.name.as_deref(), Some("Home"));
        assert_eq!(stored.traits, Some(doc! {"plan": "pro"}));
        assert_eq!(
            stored.context,
            Some(doc! {"library": {"name": "analytics-python"}})
        );
        assert_eq!(stored.integrations, Some(doc! {"All": true}));
        assert_eq!(
            bson::to_raw_document_buf(&stored).unwrap().as_bytes(),
            raw_doc.as_bytes(),
            "the typed form writes the same bytes"
        );
    }

    #[test]
    fn a_stored_event_queues_again_as_it_was_queued() {
        let mut e = event();
        let mut origin = Origin::new(SourceKind::Posthog);
        origin.anonymous_id = Some("anon".into());
        e.origin = Some(Box::new(origin));
        let stored: StoredEvent = bson::from_slice(to_document(&e).unwrap().as_bytes()).unwrap();
        let again = stored.to_queued().unwrap();
        assert_eq!(
            to_document(&again).unwrap().as_bytes(),
            to_document(&e).unwrap().as_bytes(),
            "the same document again"
        );
    }

    #[test]
    fn the_field_names_are_the_stored_ones() {
        let d = to_document(&event()).unwrap().to_document().unwrap();
        for f in [
            field::ID,
            field::EVENT_ID,
            field::ACCOUNT_ID,
            field::EVENT_TYPE,
            field::USER_ID,
            field::TIMESTAMP,
            field::RECEIVED_AT,
        ] {
            assert!(d.contains_key(f), "{f}");
        }
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
