//! The event model: the JSON schema a client's event must satisfy, the typed event it becomes, and
//! the server-side stamping (account, receive time, eventId, clock-skew correction) that turns it
//! into the entry queued on the stream. Everything here is pure: no I/O.
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use jsonschema::error::ValidationErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::Violation;

/// Deepest nesting allowed inside `properties` (the `properties` object itself is depth 1).
pub const MAX_PROPERTIES_DEPTH: usize = 16;

/// Draft 2020-12 schema of one event as a client sends it.
pub fn schema_json() -> Value {
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://sluice.dev/schemas/event.json",
        "title": "Sluice event",
        "type": "object",
        "additionalProperties": false,
        "required": ["eventType", "userId"],
        "properties": {
            "eventId": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9_.:-]+$"},
            "eventType": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[a-zA-Z][a-zA-Z0-9_.:-]*$"},
            "userId": {"type": "string", "minLength": 1, "maxLength": 128},
            "sessionId": {"type": "string", "minLength": 1, "maxLength": 128},
            "timestamp": {"type": "string", "format": "date-time"},
            "sentAt": {"type": "string", "format": "date-time"},
            "schemaVersion": {"type": "integer", "minimum": 1, "maximum": 1000000},
            "properties": {"type": "object"}
        }
    })
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema_json())
            .expect("the built-in event schema compiles")
    })
}

/// Values (containers and scalars) one event's `properties` may hold: the work and memory an
/// event costs downstream grow with them, not only with its bytes.
pub const MAX_EVENT_VALUES: usize = 10_000;

/// What one event may cost to take in.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Values `properties` may hold (see [`MAX_EVENT_VALUES`]).
    pub max_values: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_values: MAX_EVENT_VALUES,
        }
    }
}

/// An event as the client sent it, once it satisfied the schema. `properties` stays the raw JSON
/// the client sent (checked, never turned into a tree here): the api's memory per event is its
/// bytes, whatever shape they have.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncomingEvent {
    pub event_id: Option<String>,
    pub event_type: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    /// The tracking-plan version the event says it follows (else the latest applies).
    pub schema_version: Option<u32>,
    #[serde(skip)]
    pub properties: Option<Box<RawValue>>,
}

/// An event as it is queued on the stream and stored: stamped by the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedEvent {
    pub event_id: String,
    pub account_id: String,
    pub event_type: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(with = "millis_rfc3339")]
    pub timestamp: DateTime<Utc>,
    #[serde(with = "millis_rfc3339")]
    pub received_at: DateTime<Utc>,
    /// The client's JSON object, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Box<RawValue>>,
    /// What an event taken in through a source (a Segment or PostHog SDK, a signed webhook)
    /// carries besides the envelope; absent for Sluice's own API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Box<Origin>>,
    /// What the account's tracking plan made of it, when a schema covers its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Box<PlanVerdict>>,
}

/// A tracking plan's verdict on one event: the schema version it was judged by, what it broke,
/// and whether it goes to quarantine instead of `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanVerdict {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantine: bool,
}

/// The intake an event came through, when it is not Sluice's own API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The Segment / RudderStack HTTP API (`/v1/*`).
    Segment,
    /// PostHog capture (`/batch`, `/capture`, `/e`, `/i/v0/e`).
    Posthog,
    /// A signed webhook (`/api/v1/webhooks/{sourceId}`).
    Webhook,
}

/// The fields of a source's message that Sluice's envelope has no place for, kept as they came
/// (the mapping is in docs/SOURCES.md). Objects stay the sender's raw JSON, checked like
/// `properties` and never built into a tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub kind: SourceKind,
    /// The webhook source's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// The Segment call (`track`, `identify`, `page`, `screen`, `group`, `alias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// The sender's own message id, when it was not usable as an eventId as it is (the eventId
    /// is then derived from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// A page's or screen's `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// An alias call's earlier id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<Box<RawValue>>,
}

impl Origin {
    pub fn new(kind: SourceKind) -> Self {
        Self {
            kind,
            source_id: None,
            call: None,
            message_id: None,
            anonymous_id: None,
            name: None,
            category: None,
            group_id: None,
            previous_id: None,
            traits: None,
            context: None,
            integrations: None,
        }
    }
}

/// Longest event name a source may send (`Order Completed`, `$pageview`): its names are kept
/// verbatim, where Sluice's own API asks for an identifier.
pub const MAX_SOURCE_EVENT_TYPE_CHARS: usize = 200;

/// Why a source's event name cannot be kept, if it cannot: empty, longer than
/// [`MAX_SOURCE_EVENT_TYPE_CHARS`] characters, or holding a control character.
pub fn source_event_type_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.chars().count() > MAX_SOURCE_EVENT_TYPE_CHARS {
        return Some(format!(
            "must be at most {MAX_SOURCE_EVENT_TYPE_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Some("must be printable text (no control characters)".into());
    }
    None
}

/// Whether `id` can be an eventId as it is: 1..128 of `[A-Za-z0-9_.:-]`, Sluice's own rule.
pub fn is_plain_event_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Why a client's document is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON.
    Malformed(String),
    /// JSON, but not an event: every violation with its pointer.
    Invalid(Vec<Violation>),
}

/// An accepted event and how many values its `properties` hold (for per-request budgets).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub event: IncomingEvent,
    pub values: usize,
}

/// Envelope fields a client may leave out; sent as `null` they are absent (SDKs send `null` for
/// unset fields).
const OPTIONAL_FIELDS: &[&str] = &[
    "eventId",
    "sessionId",
    "timestamp",
    "sentAt",
    "properties",
    "schemaVersion",
];

/// Parses and checks one event from its JSON text. Only the envelope's scalars are ever parsed
/// into values: a container where the schema wants a scalar is checked as an empty one of its
/// kind, and `properties` is scanned in place (see [`crate::scan`]), so no document a client
/// sends costs more memory than its size.
pub fn parse_event(raw: &str, limits: EventLimits) -> Result<Parsed, Rejection> {
    let fields: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_str(raw).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => Rejection::Invalid(vec![Violation {
                path: String::new(),
                message: "an event is a JSON object".into(),
            }]),
            _ => Rejection::Malformed(e.to_string()),
        })?;
    let mut envelope = Map::new();
    let mut properties = None;
    for (name, value) in fields {
        let text = value.get();
        if text == "null" && OPTIONAL_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let checked = match text.as_bytes().first() {
            Some(b'{') => Value::Object(Map::new()),
            Some(b'[') => Value::Array(Vec::new()),
            _ => serde_json::from_str(text).map_err(|e| Rejection::Malformed(e.to_string()))?,
        };
        if name == "properties" && checked.is_object() {
            properties = Some(value);
        }
        envelope.insert(name, checked);
    }
    let envelope = Value::Object(envelope);
    let mut violations = schema_violations(&envelope);
    let mut values = 0;
    if let Some(props) = properties {
        match crate::scan::scan(props, limits.max_values, MAX_PROPERTIES_DEPTH) {
            Ok(n) => values = n,
            Err(crate::scan::Found {
                problem: crate::scan::Problem::Unreadable(e),
                ..
            }) => return Err(Rejection::Malformed(e)),
            Err(found) => violations.push(Violation {
                path: format!("/properties{}", found.path),
                message: found.problem.to_string(),
            }),
        }
    }
    if !violations.is_empty() {
        return Err(Rejection::Invalid(violations));
    }
    // The schema guarantees the shape; a failure here would be a date the schema's format check
    // accepts and chrono does not, reported as such.
    let mut event = IncomingEvent::deserialize(&envelope).map_err(|e| {
        Rejection::Invalid(vec![Violation {
            path: String::new(),
            message: e.to_string(),
        }])
    })?;
    for (path, t) in [("/timestamp", event.timestamp), ("/sentAt", event.sent_at)] {
        if t.is_some_and(|t| !storable(t)) {
            violations.push(Violation {
                path: path.into(),
                message: "out of range once normalised to UTC (years 0000 to 9999)".into(),
            });
        }
    }
    if !violations.is_empty() {
        return Err(Rejection::Invalid(violations));
    }
    event.properties = properties.map(ToOwned::to_owned);
    Ok(Parsed { event, values })
}

/// Whether a time can be queued and stored: RFC 3339 (what the stream carries) has four-digit
/// years, so `9999-12-31T23:30:00-01:00` (year 10000 in UTC) cannot be.
pub fn storable(t: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    (0..=9999).contains(&t.year())
}

/// Checks `value` against the schema and the rules a schema cannot express; every violation is
/// reported with a JSON pointer. (The ingest path uses [`parse_event`], which never builds
/// `properties`; this is the same check for a value already in hand.)
pub fn validate(value: &Value) -> Result<IncomingEvent, Vec<Violation>> {
    match parse_event(&value.to_string(), EventLimits::default()) {
        Ok(p) => Ok(p.event),
        Err(Rejection::Invalid(v)) => Err(v),
        Err(Rejection::Malformed(m)) => Err(vec![Violation {
            path: String::new(),
            message: m,
        }]),
    }
}

fn schema_violations(value: &Value) -> Vec<Violation> {
    validator()
        .iter_errors(value)
        .flat_map(|e| {
            let base = e.instance_path().as_str().to_owned();
            match e.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
                    .iter()
                    .map(|p| Violation {
                        path: format!("{base}/{}", escape_pointer(p)),
                        message: format!("unknown field `{p}` is not allowed"),
                    })
                    .collect::<Vec<_>>(),
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    vec![Violation {
                        path: format!("{base}/{}", escape_pointer(name)),
                        message: format!("`{name}` is required"),
                    }]
                }
                _ => vec![Violation {
                    path: base,
                    message: e.to_string(),
                }],
            }
        })
        .collect()
}

fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The event time the server records: the client's `timestamp` (or the receive time), shifted by
/// the client clock's skew when `sentAt` says what the client clock read at send time. A skew that
/// would move the time out of years 0000–9999 (a clock set centuries off) is not applied: the
/// client's `timestamp` is kept, so the event is stored rather than refused for its clock.
pub fn corrected_timestamp(
    timestamp: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> DateTime<Utc> {
    let Some(ts) = timestamp else {
        return received_at;
    };
    let Some(sent) = sent_at else {
        return ts;
    };
    ts.checked_add_signed(received_at.signed_duration_since(sent))
        .filter(|t| storable(*t))
        .unwrap_or(ts)
}

impl QueuedEvent {
    /// Stamps a validated event with what only the server may set.
    pub fn stamp(
        incoming: IncomingEvent,
        account_id: &str,
        received_at: DateTime<Utc>,
    ) -> Result<Self, Violation> {
        let timestamp = corrected_timestamp(incoming.timestamp, incoming.sent_at, received_at);
        Ok(Self {
            event_id: incoming
                .event_id
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            account_id: account_id.to_owned(),
            event_type: incoming.event_type,
            user_id: incoming.user_id,
            session_id: incoming.session_id,
            timestamp,
            received_at,
            properties: incoming.properties,
            origin: None,
            // The version the event names, for the tracking plan to judge it by (which replaces
            // this with its verdict).
            plan: incoming.schema_version.map(|v| {
                Box::new(PlanVerdict {
                    schema_version: v,
                    violations: Vec::new(),
                    quarantine: false,
                })
            }),
        })
    }
}

/// RFC 3339 with milliseconds and `Z`: the precision a BSON date keeps.
mod millis_rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn paths(v: Value) -> Vec<String> {
        validate(&v)
            .unwrap_err()
            .into_iter()
            .map(|v| v.path)
            .collect()
    }

    #[test]
    fn a_minimal_event_is_valid() {
        let e = validate(&json!({"eventType": "click", "userId": "u1"})).unwrap();
        assert_eq!(e.event_type, "click");
        assert_eq!(e.event_id, None);
    }

    #[test]
    fn every_violation_is_reported_with_a_pointer() {
        let mut p = paths(json!({"eventType": "1bad", "accountId": "x", "sessionId": ""}));
        p.sort();
        assert_eq!(p, vec!["/accountId", "/eventType", "/sessionId", "/userId"]);
    }

    #[test]
    fn event_ids_are_limited_in_charset_and_length() {
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "eventId": "has space"})),
            vec!["/eventId"]
        );
        let long = "a".repeat(129);
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "eventId": long})),
            vec!["/eventId"]
        );
        assert!(
            validate(&json!({"eventType": "a", "userId": "u", "eventId": "a-b_c.d:e"})).is_ok()
        );
    }

    #[test]
    fn dates_must_be_rfc3339() {
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "timestamp": "yesterday"})),
            vec!["/timestamp"]
        );
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "sentAt": "2024-13-01T00:00:00Z"})),
            vec!["/sentAt"]
        );
    }

    #[test]
    fn properties_must_be_an_object_of_bounded_depth() {
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "properties": [1]})),
            vec!["/properties"]
        );
        let mut deep = json!(1);
        for _ in 0..16 {
            deep = json!({ "k": deep });
        }
        assert!(validate(&json!({"eventType": "a", "userId": "u", "properties": deep})).is_ok());
        let deeper = json!({ "k": deep });
        // The pointer names the first container too deep.
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "properties": deeper})),
            vec![format!("/properties{}", "/k".repeat(16))]
        );
    }

    #[test]
    fn property_names_with_nul_are_refused_with_their_pointer() {
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "properties": {"ok": [{"b\u{0}d": 1}]}})),
            vec!["/properties/ok/0/b\u{0}d"]
        );
    }

    #[test]
    fn null_in_an_optional_field_means_absent() {
        let e = validate(&json!({"eventType": "a", "userId": "u", "eventId": null,
            "sessionId": null, "timestamp": null, "sentAt": null, "properties": null}))
        .unwrap();
        assert_eq!(e.event_id, None);
        assert!(e.properties.is_none());
        assert_eq!(
            paths(json!({"eventType": "a", "userId": null})),
            vec!["/userId"]
        );
    }

    #[test]
    fn timestamps_out_of_range_in_utc_are_refused_at_their_field() {
        assert_eq!(
            paths(
                json!({"eventType": "a", "userId": "u", "timestamp": "9999-12-31T23:30:00-01:00"})
            ),
            vec!["/timestamp"]
        );
        assert_eq!(
            paths(
                json!({"eventType": "a", "userId": "u", "timestamp": "0000-01-01T00:30:00+01:00"})
            ),
            vec!["/timestamp"]
        );
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "sentAt": "9999-12-31T23:59:00-00:30"})),
            vec!["/sentAt"]
        );
        assert!(validate(
            &json!({"eventType": "a", "userId": "u", "timestamp": "9999-12-31T23:30:00+01:00"})
        )
        .is_ok());
    }

    #[test]
    fn unstorable_integers_and_oversized_properties_are_refused_with_their_pointer() {
        assert_eq!(
            paths(
                json!({"eventType": "a", "userId": "u", "properties": {"n": [1, 18446744073709551615u64]}})
            ),
            vec!["/properties/n/1"]
        );
        let many: Vec<u8> = vec![0; MAX_EVENT_VALUES];
        assert_eq!(
            paths(json!({"eventType": "a", "userId": "u", "properties": {"many": many}})),
            vec![format!("/properties/many/{}", MAX_EVENT_VALUES - 2)]
        );
    }

    #[test]
    fn containers_where_a_string_belongs_are_refused_without_being_read() {
        let p = paths(json!({"eventType": [1, 2, 3], "userId": {"a": 1}}));
        assert_eq!(p, vec!["/eventType", "/userId"]);
        assert_eq!(
            parse_event("[1, 2]", EventLimits::default()).unwrap_err(),
            Rejection::Invalid(vec![Violation {
                path: String::new(),
                message: "an event is a JSON object".into()
            }])
        );
        assert!(matches!(
            parse_event("{\"eventType\": ", EventLimits::default()),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn properties_are_kept_verbatim() {
        let raw =
            r#"{"eventType":"a","userId":"u","properties":{"b": [1, 2.5, {"c": null}], "a": "x"}}"#;
        let p = parse_event(raw, EventLimits::default()).unwrap();
        assert_eq!(p.values, 7);
        assert_eq!(
            p.event.properties.unwrap().get(),
            r#"{"b": [1, 2.5, {"c": null}], "a": "x"}"#
        );
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn skew_is_corrected_by_the_gap_between_sent_and_received() {
        // The client clock runs 5 minutes slow: it said 10:00 when the server read 10:05.
        let got = corrected_timestamp(
            Some(t("2024-01-01T09:59:00Z")),
            Some(t("2024-01-01T10:00:00Z")),
            t("2024-01-01T10:05:00Z"),
        );
        assert_eq!(got, t("2024-01-01T10:04:00Z"));
    }

    #[test]
    fn a_skew_that_would_leave_the_storable_years_is_not_applied() {
        // A client clock 2,438 years fast: the correction would land in year -412.
        let ts = t("2026-12-01T12:23:45Z");
        assert_eq!(
            corrected_timestamp(
                Some(ts),
                Some(t("4464-02-11T08:01:17Z")),
                t("2026-12-01T12:23:46Z")
            ),
            ts
        );
    }

    #[test]
    fn without_sent_at_the_timestamp_stands_and_without_timestamp_receive_time_is_used() {
        let rx = t("2024-01-01T10:05:00Z");
        assert_eq!(
            corrected_timestamp(Some(t("2024-01-01T09:00:00Z")), None, rx),
            t("2024-01-01T09:00:00Z")
        );
        assert_eq!(
            corrected_timestamp(None, Some(t("2024-01-01T09:00:00Z")), rx),
            rx
        );
    }

    #[test]
    fn stamping_sets_the_account_and_generates_a_uuid_v7() {
        let incoming = validate(&json!({"eventType": "a", "userId": "u"})).unwrap();
        let rx = t("2024-01-01T10:05:00Z");
        let q = QueuedEvent::stamp(incoming, "acc", rx).unwrap();
        assert_eq!(q.account_id, "acc");
        assert_eq!(q.timestamp, rx);
        let id = uuid::Uuid::parse_str(&q.event_id).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    #[test]
    fn queued_events_round_trip_through_json_with_millisecond_dates() {
        let incoming = validate(&json!({"eventType": "a", "userId": "u", "eventId": "e1",
            "timestamp": "2024-01-01T10:00:00.123456Z", "properties": {"x": [1, {"y": null}]}}))
        .unwrap();
        let q = QueuedEvent::stamp(incoming, "acc", t("2024-01-01T10:05:00Z")).unwrap();
        let text = serde_json::to_string(&q).unwrap();
        assert!(
            text.contains("\"timestamp\":\"2024-01-01T10:00:00.123Z\""),
            "{text}"
        );
        let back: QueuedEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back.event_id, "e1");
        assert_eq!(
            back.properties.as_ref().map(|p| p.get()),
            q.properties.as_ref().map(|p| p.get())
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(24, 256, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("eventType".to_owned()),
                        Just("userId".to_owned()),
                        Just("eventId".to_owned()),
                        Just("timestamp".to_owned()),
                        Just("sentAt".to_owned()),
                        Just("properties".to_owned()),
                        ".{0,12}"
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn no_document_makes_validation_or_stamping_panic(v in arb_json()) {
            if let Ok(incoming) = validate(&v) {
                let _ = QueuedEvent::stamp(incoming, "acc", Utc::now());
            }
        }

        #[test]
        fn no_byte_string_makes_parsing_and_validation_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                let _ = validate(&v);
            }
        }

        #[test]
        fn any_valid_timestamps_correct_without_panicking(
            ts in -62_000_000_000i64..250_000_000_000,
            sent in -62_000_000_000i64..250_000_000_000,
        ) {
            let ts = DateTime::from_timestamp(ts, 0).unwrap();
            let sent = DateTime::from_timestamp(sent, 0).unwrap();
            let _ = corrected_timestamp(Some(ts), Some(sent), Utc::now());
        }
    }
}
