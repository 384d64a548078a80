//! Reading a source's message field by field, each problem with its JSON pointer. A message is
//! read as a map of raw values: objects (`properties`, `traits`, `context`) stay the sender's raw
//! JSON and are only scanned ([`checked_object`]), never built into a tree.
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::value::RawValue;
use sluice_http::ApiError;
use sluice_shared::error::Violation;
use sluice_shared::event::{self, QueuedEvent, MAX_PROPERTIES_DEPTH};

/// One message (or a body), its fields by name.
pub struct Fields<'a> {
    map: BTreeMap<String, &'a RawValue>,
    /// The pointer of the message itself (`/batch/3`), prefixed to every problem.
    at: String,
}

/// What a message is worth downstream: JSON values its objects hold, for the request's budget.
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    pub values: usize,
    pub max_values: usize,
}

impl<'a> Fields<'a> {
    /// The fields of the JSON object `raw`, or why it is none.
    pub fn of(raw: &'a RawValue, at: impl Into<String>) -> Result<Self, Violation> {
        let at = at.into();
        match serde_json::from_str::<BTreeMap<String, &'a RawValue>>(raw.get()) {
            Ok(map) => Ok(Self { map, at }),
            Err(_) => Err(Violation {
                path: at,
                message: "must be a JSON object".into(),
            }),
        }
    }

    pub fn pointer(&self, name: &str) -> String {
        format!("{}/{}", self.at, name.replace('~', "~0").replace('/', "~1"))
    }

    /// A field's raw value, `null` read as absent.
    pub fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.map.get(name).copied().filter(|v| v.get() != "null")
    }

    fn problem(&self, name: &str, message: impl Into<String>) -> Violation {
        Violation {
            path: self.pointer(name),
            message: message.into(),
        }
    }

    /// A string field (absent or `null`: `None`).
    pub fn text(&self, name: &str) -> Result<Option<String>, Violation> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        match serde_json::from_str::<String>(raw.get()) {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(self.problem(name, "must be a string")),
        }
    }

    /// An identifier: a string, or a number written as its text (SDKs send numeric user ids),
    /// 1 to `max_chars` characters.
    pub fn id(&self, name: &str, max_chars: usize) -> Result<Option<String>, Violation> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        let text = raw.get();
        let value = if text.starts_with('"') {
            serde_json::from_str::<String>(text).map_err(|_| self.problem(name, "unreadable"))?
        } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            text.to_owned()
        } else {
            return Err(self.problem(name, "must be a string or a number"));
        };
        match value.chars().count() {
            0 => Err(self.problem(name, "must not be empty")),
            n if n > max_chars => {
                Err(self.problem(name, format!("must be at most {max_chars} characters")))
            }
            _ => Ok(Some(value)),
        }
    }

    /// An object field, scanned as `properties` is (values, depth, names, integers) and counted
    /// against `budget`.
    pub fn object(
        &self,
        name: &str,
        budget: &mut Budget,
    ) -> Result<Option<&'a RawValue>, Violation> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        checked_object(raw, &self.pointer(name), budget).map(Some)
    }

    /// A date-time field: RFC 3339, or ISO 8601 without an offset (read as UTC), within the
    /// years a stored event may have.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, Violation> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        match parse_time(&text) {
            Some(t) if event::storable(t) => Ok(Some(t)),
            Some(_) => Err(self.problem(name, "out of range (years 0000 to 9999 in UTC)")),
            None => Err(self.problem(name, "must be an ISO 8601 date-time")),
        }
    }

    /// A number of milliseconds (PostHog's `offset`).
    pub fn millis(&self, name: &str) -> Result<Option<i64>, Violation> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        match serde_json::from_str::<f64>(raw.get()) {
            Ok(n) if n.is_finite() && n.abs() < 1e15 => Ok(Some(n as i64)),
            _ => Err(self.problem(name, "must be a number of milliseconds")),
        }
    }
}

/// Each message judged (an event and the JSON values it holds, or why it is none), counted
/// against the request's budget: the request as a whole is refused (413) only when its messages
/// hold more than `max_request_values` together.
pub fn within_request_budget(
    judged: impl ExactSizeIterator<Item = Result<(QueuedEvent, usize), ApiError>>,
    max_request_values: usize,
) -> Result<Vec<Result<QueuedEvent, ApiError>>, ApiError> {
    let mut values = 0usize;
    let mut out = Vec::with_capacity(judged.len());
    for one in judged {
        if let Ok((_, n)) = &one {
            values += n;
            if values > max_request_values {
                return Err(ApiError::TooManyValues(max_request_values));
            }
        }
        out.push(one.map(|(e, _)| e));
    }
    Ok(out)
}

/// The value of a field read with [`Fields`], its problem kept aside in `problems`.
pub fn take<T>(read: Result<Option<T>, Violation>, problems: &mut Vec<Violation>) -> Option<T> {
    read.map_err(|v| problems.push(v)).ok().flatten()
}

/// An object's raw JSON, checked like `properties` and counted against `budget`.
pub fn checked_object<'a>(
    raw: &'a RawValue,
    path: &str,
    budget: &mut Budget,
) -> Result<&'a RawValue, Violation> {
    if !raw.get().starts_with('{') {
        return Err(Violation {
            path: path.to_owned(),
            message: "must be a JSON object".into(),
        });
    }
    let left = budget.max_values.saturating_sub(budget.values);
    match sluice_shared::scan::scan(raw, left, MAX_PROPERTIES_DEPTH) {
        Ok(n) => {
            budget.values += n;
            Ok(raw)
        }
        Err(found) => Err(Violation {
            path: format!("{path}{}", found.path),
            message: found.problem.to_string(),
        }),
    }
}

/// RFC 3339, or an ISO 8601 date-time without an offset, read as UTC.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
}

/// The eventId for a sender's message id: the id itself when it is a plain one (Sluice's rule,
/// `[A-Za-z0-9_.:-]{1,128}`), else `h-` and the hex SHA-256 of it — the same for every retry, so
/// deduplication holds for any id a sender uses. The second value is the original when derived.
pub fn event_id_for(message_id: &str) -> (String, Option<String>) {
    if event::is_plain_event_id(message_id) {
        return (message_id.to_owned(), None);
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(message_id.as_bytes());
    (
        format!("h-{}", hex::encode(&digest[..20])),
        Some(message_id.chars().take(1024).collect()),
    )
}

/// The event time by the rule the sources share: a `timestamp` shifted by the sender's clock
/// skew (`receivedAt - sentAt`) when the sender says when it sent; the skew is not applied when
/// it would leave the storable years.
pub fn skew_corrected(
    timestamp: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> DateTime<Utc> {
    event::corrected_timestamp(Some(timestamp), sent_at, received_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields<'static> {
        let raw: &'static RawValue = Box::leak(RawValue::from_string(json.to_owned()).unwrap());
        Fields::of(raw, "/batch/0").unwrap()
    }

    #[test]
    fn problems_carry_the_pointer_of_their_field() {
        let f = fields(r#"{"userId": {"a": 1}, "event": 5, "a/b": []}"#);
        assert_eq!(f.id("userId", 128).unwrap_err().path, "/batch/0/userId");
        assert_eq!(f.text("event").unwrap_err().path, "/batch/0/event");
        let mut budget = Budget {
            values: 0,
            max_values: 10,
        };
        assert_eq!(
            f.object("a/b", &mut budget).unwrap_err().path,
            "/batch/0/a~1b"
        );
    }

    #[test]
    fn ids_may_be_numbers_and_null_is_absent() {
        let f = fields(r#"{"userId": 42, "anonymousId": null, "x": ""}"#);
        assert_eq!(f.id("userId", 128).unwrap().as_deref(), Some("42"));
        assert_eq!(f.id("anonymousId", 128).unwrap(), None);
        assert!(f.id("x", 128).is_err());
    }

    #[test]
    fn objects_are_scanned_against_one_budget() {
        let f = fields(r#"{"properties": {"a": [1, 2, 3]}, "traits": {"b": 1, "c": 2}}"#);
        let mut budget = Budget {
            values: 0,
            max_values: 6,
        };
        assert!(f.object("properties", &mut budget).is_ok());
        assert_eq!(budget.values, 5);
        let err = f.object("traits", &mut budget).unwrap_err();
        assert!(err.path.starts_with("/batch/0/traits"), "{err:?}");
    }

    #[test]
    fn times_are_rfc3339_or_naive_utc() {
        let f = fields(
            r#"{"a": "2024-05-01T10:00:00.123+02:00", "b": "2024-05-01T10:00:00.123456", "c": "yesterday", "d": "9999-12-31T23:30:00-01:00"}"#,
        );
        assert_eq!(
            f.time("a").unwrap().unwrap().to_rfc3339(),
            "2024-05-01T08:00:00.123+00:00"
        );
        assert_eq!(f.time("b").unwrap().unwrap().timestamp_millis() % 1000, 123);
        assert!(f.time("c").is_err());
        assert!(f.time("d").is_err());
    }

    #[test]
    fn plain_message_ids_are_kept_and_others_derived_stably() {
        assert_eq!(
            event_id_for("ajs-next-1a2b"),
            ("ajs-next-1a2b".into(), None)
        );
        let (id, original) = event_id_for("has space/and slash");
        assert!(id.starts_with("h-") && id.len() == 42, "{id}");
        assert!(event::is_plain_event_id(&id));
        assert_eq!(original.as_deref(), Some("has space/and slash"));
        assert_eq!(event_id_for("has space/and slash").0, id);
    }
}
