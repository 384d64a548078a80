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

/// Parses and checks one event from its JSON text: [`accept_common`] first, and when it declines,
/// [`parse_event_by_schema`], which gives the same answer to every event the first accepts and
/// says why any other is refused.
pub fn parse_event(raw: &str, limits: EventLimits) -> Result<Parsed, Rejection> {
    match accept_common(raw, limits) {
        Some(parsed) => Ok(parsed),
        None => parse_event_by_schema(raw, limits),
    }
}

/// The envelope read straight from the event's text into borrowed fields: what
/// [`accept_common`] checks. Strings with escapes come out owned.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    event_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    user_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    session_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<&'a str>,
    #[serde(borrow, default)]
    sent_at: Option<&'a str>,
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

/// The events nearly every client sends, accepted without building a tree of the envelope and
/// without the schema validator: a plain object with each field once, of its type, within its
/// bounds (checked here by hand, each check as strict as the schema's or stricter), dates in
/// the `2024-05-01T12:00:00.123Z` / `+02:00` form. `None` whenever anything is unusual — an
/// escape in a date, a duplicate or unknown field, a leap second, a number out of range, a
/// problem in `properties` — and the event then goes through [`parse_event_by_schema`]. So this
/// only ever accepts what the schema accepts, with the same result (a property test and the
/// `event_parse` fuzz target hold it to that); it never refuses.
pub fn accept_common(raw: &str, limits: EventLimits) -> Option<Parsed> {
    let e: Envelope = serde_json::from_str(raw).ok()?;
    // Bytes, where the schema counts characters: 1..=128 bytes is within 1..=128 characters.
    let bounded = |s: &str| (1..=128).contains(&s.len());
    if !e.event_id.as_deref().is_none_or(is_plain_event_id)
        || !is_plain_event_type(&e.event_type)
        || !bounded(&e.user_id)
        || !e.session_id.as_deref().is_none_or(bounded)
        || !e
            .schema_version
            .is_none_or(|v| (1..=1_000_000).contains(&v))
    {
        return None;
    }
    let date = |t: Option<&str>| -> Option<Option<DateTime<Utc>>> {
        match t {
            None => Some(None),
            Some(t) if is_common_datetime(t) => {
                let t: DateTime<Utc> = t.parse().ok()?;
                storable(t).then_some(Some(t))
            }
            Some(_) => None,
        }
    };
    let timestamp = date(e.timestamp)?;
    let sent_at = date(e.sent_at)?;
    let values = match e.properties {
        None => 0,
        Some(p) if p.get().starts_with('{') => {
            crate::scan::scan(p, limits.max_values, MAX_PROPERTIES_DEPTH).ok()?
        }
        Some(_) => return None,
    };
    Some(Parsed {
        event: IncomingEvent {
            event_id: e.event_id.map(std::borrow::Cow::into_owned),
            event_type: e.event_type.into_owned(),
            user_id: e.user_id.into_owned(),
            session_id: e.session_id.map(std::borrow::Cow::into_owned),
            timestamp,
            sent_at,
            schema_version: e.schema_version,
            properties: e.properties.map(ToOwned::to_owned),
        },
        values,
    })
}

/// The schema's `eventType` rule: `^[a-zA-Z][a-zA-Z0-9_.:-]*$`, 1..100 characters.
fn is_plain_event_type(s: &str) -> bool {
    s.len() <= 100
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && is_plain_event_id(s)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]` then `Z` or `±HH:MM`, a real calendar day, seconds 00–59:
/// a strict subset of the schema's `date-time` (which also takes `t`, `z` and leap seconds).
fn is_common_datetime(t: &str) -> bool {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r.clone())?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    let shaped = at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':');
    if !shaped || !(1..=days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return false;
        }
        i += 1 + digits;
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len()
                && at(i + 3, b':')
                && num(i + 1..i + 3).is_some_and(|h| h <= 23)
                && num(i + 4..i + 6).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

/// Parses and checks one event from its JSON text against the schema, reporting every
/// violation. Only the envelope's scalars are ever parsed into values: a container where the
/// schema wants a scalar is checked as an empty one of its kind, and `properties` is scanned in
/// place (see [`crate::scan`]), so no document a client sends costs more memory than its size.
pub fn parse_event_by_schema(raw: &str, limits: EventLimits) -> Result<Parsed, Rejection> {
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
        let mut buf = [0u8; 24];
        match write(t, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf`, as `to_rfc3339_opts(Millis, true)` writes it, for
    /// years 0000–9999 outside a leap second (chrono writes the rest); no allocation on the hot
    /// path, where the two times of every queued event are written.
    pub(super) fn write<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; 24]) -> Option<&'b str> {
        use chrono::{Datelike, Timelike};
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let nanos = t.nanosecond();
        if nanos >= 1_000_000_000 {
            return None;
        }
        let mut put = |at: usize, n: u32, width: usize| {
            let mut n = n;
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, year, 4);
        put(5, t.month(), 2);
        put(8, t.day(), 2);
        put(11, t.hour(), 2);
        put(14, t.minute(), 2);
        put(17, t.second(), 2);
        put(20, nanos / 1_000_000, 3);
        for (at, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (23, b'Z'),
        ] {
            buf[at] = c;
        }
        std::str::from_utf8(buf).ok()
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

    /// Both readings of `raw`, when the fast one accepts it: they must agree.
    fn agree(raw: &str) -> bool {
        let Some(fast) = accept_common(raw, EventLimits::default()) else {
            return false;
        };
        let slow = parse_event_by_schema(raw, EventLimits::default())
            .unwrap_or_else(|e| panic!("accepted by hand, refused by the schema: {raw} {e:?}"));
        let (f, s) = (&fast.event, &slow.event);
        assert_eq!(fast.values, slow.values, "{raw}");
        assert_eq!(f.event_id, s.event_id, "{raw}");
        assert_eq!(f.event_type, s.event_type, "{raw}");
        assert_eq!(f.user_id, s.user_id, "{raw}");
        assert_eq!(f.session_id, s.session_id, "{raw}");
        assert_eq!(f.timestamp, s.timestamp, "{raw}");
        assert_eq!(f.sent_at, s.sent_at, "{raw}");
        assert_eq!(f.schema_version, s.schema_version, "{raw}");
        assert_eq!(
            f.properties.as_ref().map(|p| p.get()),
            s.properties.as_ref().map(|p| p.get()),
            "{raw}"
        );
        true
    }

    #[test]
    fn common_events_are_accepted_by_hand_as_the_schema_accepts_them() {
        for raw in [
            r#"{"eventType":"page_view","userId":"u1"}"#,
            r#"{"eventId":"b1-2","eventType":"page_view","userId":"user-1","properties":{"path":"/p","price":19.99}}"#,
            r#"{"eventId":"e","eventType":"a.b:c-d_e","userId":"\u00e9t\u00e9","sessionId":"s",
                "timestamp":"2024-02-29T23:59:59.123456789+05:30","sentAt":"0000-01-01T00:00:00Z",
                "schemaVersion":1000000,"properties":{}}"#,
            r#"{"eventType":"a","userId":"u","eventId":null,"sessionId":null,"timestamp":null,
                "sentAt":null,"schemaVersion":null,"properties":null}"#,
        ] {
            assert!(agree(raw), "the common path declined {raw}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_schema() {
        for raw in [
            r#"{"eventType":"a","userId":"u","extra":1}"#,
            r#"{"eventType":"a","userId":"u","userId":"v"}"#,
            r#"{"eventType":"1a","userId":"u"}"#,
            r#"{"eventType":"a","userId":""}"#,
            r#"{"eventType":"a","userId":"u","timestamp":"2024-02-30T00:00:00Z"}"#,
            r#"{"eventType":"a","userId":"u","timestamp":"2024-01-01t00:00:00Z"}"#,
            r#"{"eventType":"a","userId":"u","timestamp":"2016-12-31T23:59:60Z"}"#,
            r#"{"eventType":"a","userId":"u","timestamp":"9999-12-31T23:30:00-01:00"}"#,
            r#"{"eventType":"a","userId":"u","timestamp":"2024-01-01T00:00:00\u005a"}"#,
            r#"{"eventType":"a","userId":"u","schemaVersion":0}"#,
            r#"{"eventType":"a","userId":"u","schemaVersion":1.0}"#,
            r#"{"eventType":"a","userId":"u","properties":[]}"#,
            r#"{"eventType":"a","userId":"u","properties":{"\u0000":1}}"#,
            r#"{"eventType":"a","userId":"u","properties":{"n":18446744073709551615}}"#,
            r#"[{"eventType":"a","userId":"u"}]"#,
        ] {
            assert!(
                accept_common(raw, EventLimits::default()).is_none(),
                "the common path took {raw}"
            );
        }
    }

    /// Text of an event whose fields are each drawn from common, edge and wrong values (mostly
    /// common, so that whole events are often valid).
    fn arb_event_text() -> impl Strategy<Value = String> {
        let id = prop_oneof![
            6 => "[A-Za-z0-9_.:-]{1,128}",
            1 => "[A-Za-z0-9_.:-]{0,130}",
            1 => ".{0,20}",
        ];
        let event_type = prop_oneof![
            6 => "[a-zA-Z][a-zA-Z0-9_.:-]{0,99}",
            1 => "[a-zA-Z0-9_.:-]{0,102}",
            1 => ".{0,130}",
        ];
        let text = prop_oneof![
            6 => ".{1,40}",
            1 => ".{0,130}",
            1 => "[a-z]{126,130}",
            1 => "[a-z\\\"\n]{0,6}",
        ];
        let date = prop_oneof![
            6 => "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
            2 => "[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,10})?([Zz]|[+-][0-2][0-9]:[0-6][0-9])",
            1 => ".{0,30}",
        ];
        let field = |name: &'static str, v: BoxedStrategy<String>| {
            prop_oneof![
                1 => Just(String::new()),
                1 => Just(format!(",\"{name}\":null")),
                4 => v.prop_map(move |v| format!(",\"{name}\":{v}")),
            ]
        };
        let quoted =
            |s: BoxedStrategy<String>| s.prop_map(|s| serde_json::to_string(&s).unwrap()).boxed();
        let number = prop_oneof![
            4 => (0u32..1_000_002).prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => Just("1.0".to_owned()),
            1 => Just("\"3\"".to_owned()),
        ];
        let props = prop_oneof![
            2 => Just("{}".to_owned()),
            2 => Just("{\"path\":\"/p\",\"price\":19.99,\"n\":[1,{\"a\":null}]}".to_owned()),
            1 => Just("[]".to_owned()),
            1 => Just("{\"a\":18446744073709551615}".to_owned()),
            2 => arb_json().prop_map(|v| v.to_string()),
        ];
        (
            field("eventId", quoted(id.boxed())),
            prop_oneof![
                8 => quoted(event_type.boxed()),
                1 => Just("7".to_owned()),
                1 => Just("{}".to_owned())
            ],
            quoted(text.clone().boxed()),
            field("sessionId", quoted(text.boxed())),
            field("timestamp", quoted(date.clone().boxed())),
            field("sentAt", quoted(date.boxed())),
            field("schemaVersion", number.boxed()),
            field("properties", props.boxed()),
            prop_oneof![
                8 => Just(""),
                1 => Just(",\"other\":1"),
                1 => Just(",\"userId\":\"x\"")
            ],
        )
            .prop_map(|(id, ty, user, session, ts, sent, version, props, extra)| {
                format!(
                    "{{\"eventType\":{ty},\"userId\":{user}{id}{session}{ts}{sent}{version}{props}{extra}}}"
                )
            })
    }

    proptest! {
        #[test]
        fn times_are_written_as_chrono_writes_them(
            secs in -62_167_219_200i64..253_402_300_800i64,
            nanos in 0u32..2_000_000_000,
        ) {
            let Some(t) = DateTime::<Utc>::from_timestamp(secs, nanos) else {
                return Ok(());
            };
            let mut buf = [0u8; 24];
            if let Some(text) = millis_rfc3339::write(&t, &mut buf) {
                prop_assert_eq!(text, t.to_rfc3339_opts(SecondsFormat::Millis, true));
            } else {
                prop_assert!(nanos >= 1_000_000_000, "{t:?} left to chrono");
            }
        }
    }

    #[test]
    fn what_is_accepted_by_hand_the_schema_accepts_the_same() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config {
            rng_seed: proptest::test_runner::RngSeed::Random,
            ..Config::default()
        });
        let strategy = arb_event_text();
        let mut accepted = 0;
        for _ in 0..4000 {
            let raw = strategy.new_tree(&mut runner).unwrap().current();
            accepted += usize::from(agree(&raw));
        }
        // Both ways are exercised: enough accepted by hand to compare, enough left to the schema.
        assert!(
            (100..=3900).contains(&accepted),
            "{accepted} of 4000 accepted by hand"
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
