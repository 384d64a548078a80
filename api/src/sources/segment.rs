//! The Segment / RudderStack HTTP API: a body (`/v1/batch` or one call such as `/v1/track`) read
//! into its messages, and each message mapped onto a Sluice event. Pure: no I/O. The mapping is
//! written down in docs/SOURCES.md.
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_http::ApiError;
use sluice_shared::error::Violation;
use sluice_shared::event::{self, Origin, QueuedEvent, SourceKind};

use super::fields::{event_id_for, skew_corrected, take, within_request_budget, Budget, Fields};

/// The calls of the Segment spec, each its own endpoint and, in a batch, a message's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl Call {
    pub const ALL: [Call; 6] = [
        Call::Track,
        Call::Identify,
        Call::Page,
        Call::Screen,
        Call::Group,
        Call::Alias,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Call::Track => "track",
            Call::Identify => "identify",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Group => "group",
            Call::Alias => "alias",
        }
    }

    pub fn parse(name: &str) -> Option<Call> {
        Call::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What one Segment request may cost (Segment's own limits by default).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of one message's JSON (Segment: 32 KB).
    pub max_message_bytes: usize,
    /// Messages in one request.
    pub max_messages: usize,
    /// JSON values one message's objects may hold together.
    pub max_event_values: usize,
    /// JSON values the whole request's messages may hold together.
    pub max_request_values: usize,
}

/// A request as read: its key (when it travels in the body), when it was sent, and its
/// messages, each still raw.
pub struct Body<'a> {
    pub write_key: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    /// `context` and `integrations` given once for the batch: a message without its own takes these.
    pub context: Option<&'a RawValue>,
    pub integrations: Option<&'a RawValue>,
    /// Each message with the pointer it is reported under.
    pub messages: Vec<(String, &'a RawValue)>,
}

#[derive(Deserialize)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(borrow, default)]
    integrations: Option<&'a RawValue>,
}

fn malformed(e: serde_json::Error) -> ApiError {
    ApiError::MalformedJson(e.to_string())
}

fn only_object(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get().starts_with('{'))
}

/// The `writeKey` of a body, if it is a JSON object that has one (read before the rest is judged,
/// so a body without a key is 401 whatever else is wrong with it).
pub fn write_key(text: &str) -> Option<String> {
    let root: &RawValue = serde_json::from_str(text).ok()?;
    Fields::of(root, "").ok()?.text("writeKey").ok().flatten()
}

/// Reads a body: `/v1/batch` (`call` `None`) holds `{"batch": [...]}`, a call's endpoint one
/// message.
pub fn parse_body<'a>(
    text: &'a str,
    call: Option<Call>,
    limits: &Limits,
) -> Result<Body<'a>, ApiError> {
    let root: &RawValue = serde_json::from_str(text).map_err(malformed)?;
    if !root.get().starts_with('{') {
        return Err(ApiError::invalid(vec![Violation {
            path: String::new(),
            message: "the body must be a JSON object".into(),
        }]));
    }
    let top = Fields::of(root, "").map_err(|v| ApiError::invalid(vec![v]))?;
    let write_key = top
        .text("writeKey")
        .map_err(|v| ApiError::invalid(vec![v]))?;
    let sent_at = top.time("sentAt").map_err(|v| ApiError::invalid(vec![v]))?;
    if call.is_some() {
        return Ok(Body {
            write_key,
            sent_at,
            context: None,
            integrations: None,
            messages: vec![(String::new(), root)],
        });
    }
    let envelope: BatchEnvelope = serde_json::from_str(root.get()).map_err(|e| {
        ApiError::invalid(vec![Violation {
            path: "/batch".into(),
            message: format!("a batch is {{\"batch\": [ ... ]}}: {e}"),
        }])
    })?;
    let batch = envelope.batch.ok_or_else(|| {
        ApiError::invalid(vec![Violation {
            path: "/batch".into(),
            message: "a batch is {\"batch\": [ ... ]}".into(),
        }])
    })?;
    if batch.is_empty() {
        return Err(ApiError::invalid(vec![Violation {
            path: "/batch".into(),
            message: format!("must hold 1 to {} messages", limits.max_messages),
        }]));
    }
    if batch.len() > limits.max_messages {
        return Err(ApiError::TooManyEvents(limits.max_messages));
    }
    Ok(Body {
        write_key,
        sent_at,
        context: only_object(envelope.context),
        integrations: only_object(envelope.integrations),
        messages: batch
            .into_iter()
            .enumerate()
            .map(|(i, raw)| (format!("/batch/{i}"), raw))
            .collect(),
    })
}

/// Every message of `body` as a Sluice event, or its problems; the request as a whole is
/// refused (413) only when its messages hold more JSON values together than one request may.
pub fn judge_all(
    body: &Body<'_>,
    endpoint: Option<Call>,
    account_id: &str,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<Vec<Result<QueuedEvent, ApiError>>, ApiError> {
    let judged = body
        .messages
        .iter()
        .map(|(at, raw)| judge(at, raw, endpoint, body, account_id, received_at, limits));
    within_request_budget(judged, limits.max_request_values)
}

/// One message as a Sluice event and the JSON values it holds, or every problem it has, each
/// with its pointer.
fn judge(
    at: &str,
    raw: &RawValue,
    endpoint: Option<Call>,
    body: &Body<'_>,
    account_id: &str,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<(QueuedEvent, usize), ApiError> {
    if raw.get().len() > limits.max_message_bytes {
        return Err(ApiError::PayloadTooLarge {
            what: "message",
            limit: limits.max_message_bytes,
        });
    }
    let m = Fields::of(raw, at).map_err(|v| ApiError::invalid(vec![v]))?;
    let p = &mut Vec::new();
    let declared = take(m.text("type"), p);
    let call = endpoint.or_else(|| declared.as_deref().and_then(Call::parse));
    let message_id = take(m.id("messageId", 1024), p);
    let user_id = take(m.id("userId", 128), p);
    let anonymous_id = take(m.id("anonymousId", 128), p);
    let event_name = take(m.text("event"), p);
    let name = take(m.text("name"), p);
    let category = take(m.text("category"), p);
    let group_id = take(m.id("groupId", 1024), p);
    let previous_id = take(m.id("previousId", 1024), p);
    let mut budget = Budget {
        values: 0,
        max_values: limits.max_event_values,
    };
    let properties = take(m.object("properties", &mut budget), p).map(ToOwned::to_owned);
    let traits = take(m.object("traits", &mut budget), p).map(ToOwned::to_owned);
    let context = take(m.object("context", &mut budget), p)
        .or(body.context)
        .map(ToOwned::to_owned);
    let integrations = take(m.object("integrations", &mut budget), p)
        .or(body.integrations)
        .map(ToOwned::to_owned);
    let timestamp = take(m.time("timestamp"), p);
    let original = take(m.time("originalTimestamp"), p);
    let sent_at = take(m.time("sentAt"), p);

    let event_type = match call {
        None => {
            p.push(Violation {
                path: m.pointer("type"),
                message: "must be one of track, identify, page, screen, group, alias".into(),
            });
            None
        }
        Some(Call::Track) => match event_name {
            None if m.raw("event").is_none() => {
                p.push(Violation {
                    path: m.pointer("event"),
                    message: "a track call names its event".into(),
                });
                None
            }
            None => None,
            Some(n) => match event::source_event_type_problem(&n) {
                None => Some(n),
                Some(problem) => {
                    p.push(Violation {
                        path: m.pointer("event"),
                        message: problem,
                    });
                    None
                }
            },
        },
        Some(other) => Some(other.name().to_owned()),
    };
    let user = user_id.or_else(|| anonymous_id.clone());
    if m.raw("userId").is_none() && m.raw("anonymousId").is_none() {
        p.push(Violation {
            path: m.pointer("userId"),
            message: "userId or anonymousId is required".into(),
        });
    }
    let (Some(call), Some(event_type), Some(user_id), true) =
        (call, event_type, user, p.is_empty())
    else {
        return Err(ApiError::invalid(std::mem::take(p)));
    };

    // Segment's rule: `timestamp` as sent; else `originalTimestamp` corrected by `sentAt`
    // (the message's, else the batch's); else the time it arrived.
    let timestamp = match (timestamp, original) {
        (Some(t), _) => t,
        (None, Some(o)) => skew_corrected(o, sent_at.or(body.sent_at), received_at),
        (None, None) => received_at,
    };
    let (event_id, original_id) = match message_id {
        Some(id) => event_id_for(&id),
        None => (uuid::Uuid::now_v7().to_string(), None),
    };
    let mut origin = Origin::new(SourceKind::Segment);
    origin.call = Some(call.name().to_owned());
    origin.message_id = original_id;
    origin.anonymous_id = anonymous_id;
    origin.name = name;
    origin.category = category;
    origin.group_id = group_id;
    origin.previous_id = previous_id;
    origin.traits = traits;
    origin.context = context;
    origin.integrations = integrations;
    let event = QueuedEvent {
        event_id,
        account_id: account_id.to_owned(),
        event_type,
        user_id,
        session_id: None,
        timestamp,
        received_at,
        properties,
        origin: Some(Box::new(origin)),
        plan: None,
    };
    Ok((event, budget.values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn limits() -> Limits {
        Limits {
            max_message_bytes: 32 * 1024,
            max_messages: 2500,
            max_event_values: 10_000,
            max_request_values: 200_000,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn judge_all(text: &str, call: Option<Call>) -> Vec<Result<QueuedEvent, ApiError>> {
        let l = limits();
        let body = parse_body(text, call, &l).unwrap();
        super::judge_all(&body, call, "acc", now(), &l).unwrap()
    }

    #[test]
    fn a_batch_maps_every_call_onto_an_event() {
        let text = r#"{"batch": [
            {"type": "track", "event": "Order Completed", "messageId": "m1", "userId": "u1",
             "anonymousId": "a1", "properties": {"revenue": 9.5}, "context": {"ip": "1.2.3.4"},
             "integrations": {"All": true}, "timestamp": "2024-05-01T11:00:00Z"},
            {"type": "identify", "messageId": "m2", "anonymousId": "a2", "traits": {"plan": "pro"}},
            {"type": "page", "messageId": "m3", "userId": 7, "name": "Home", "category": "Docs"},
            {"type": "screen", "messageId": "m4", "userId": "u1", "name": "Main"},
            {"type": "group", "messageId": "m5", "userId": "u1", "groupId": "g1"},
            {"type": "alias", "messageId": "m6", "userId": "u1", "previousId": "a1"}
        ], "sentAt": "2024-05-01T12:00:00Z", "writeKey": "slk_x"}"#;
        let body = parse_body(text, None, &limits()).unwrap();
        assert_eq!(body.write_key.as_deref(), Some("slk_x"));
        let events: Vec<QueuedEvent> = judge_all(text, None)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let summary: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| {
                (
                    e.event_id.as_str(),
                    e.event_type.as_str(),
                    e.user_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("m1", "Order Completed", "u1"),
                ("m2", "identify", "a2"),
                ("m3", "page", "7"),
                ("m4", "screen", "u1"),
                ("m5", "group", "u1"),
                ("m6", "alias", "u1"),
            ]
        );
        let track = events[0].origin.as_deref().unwrap();
        assert_eq!(track.call.as_deref(), Some("track"));
        assert_eq!(track.anonymous_id.as_deref(), Some("a1"));
        assert_eq!(
            track.context.as_ref().unwrap().get(),
            r#"{"ip": "1.2.3.4"}"#
        );
        assert_eq!(
            track.integrations.as_ref().unwrap().get(),
            r#"{"All": true}"#
        );
        assert_eq!(
            events[0].properties.as_ref().unwrap().get(),
            r#"{"revenue": 9.5}"#
        );
        assert_eq!(events[0].timestamp, now() - chrono::Duration::hours(1));
        let identify = events[1].origin.as_deref().unwrap();
        assert_eq!(
            identify.traits.as_ref().unwrap().get(),
            r#"{"plan": "pro"}"#
        );
        assert_eq!(identify.anonymous_id.as_deref(), Some("a2"));
        let page = events[2].origin.as_deref().unwrap();
        assert_eq!(
            (page.name.as_deref(), page.category.as_deref()),
            (Some("Home"), Some("Docs"))
        );
        assert_eq!(
            events[4].origin.as_deref().unwrap().group_id.as_deref(),
            Some("g1")
        );
        assert_eq!(
            events[5].origin.as_deref().unwrap().previous_id.as_deref(),
            Some("a1")
        );
    }

    #[test]
    fn original_timestamps_are_corrected_by_sent_at_and_timestamps_are_not() {
        // The client's clock is 10 minutes behind: it sent at 11:50 by its clock, at 12:00 by ours.
        let text = r#"{"batch": [
            {"type": "track", "event": "a", "userId": "u", "originalTimestamp": "2024-05-01T11:40:00Z"},
            {"type": "track", "event": "b", "userId": "u", "timestamp": "2024-05-01T11:40:00Z"},
            {"type": "track", "event": "c", "userId": "u"},
            {"type": "track", "event": "d", "userId": "u", "originalTimestamp": "2024-05-01T11:40:00Z", "sentAt": "2024-05-01T11:45:00Z"}
        ], "sentAt": "2024-05-01T11:50:00Z"}"#;
        let times: Vec<String> = judge_all(text, None)
            .into_iter()
            .map(|e| e.unwrap().timestamp.format("%H:%M").to_string())
            .collect();
        assert_eq!(times, ["11:50", "11:40", "12:00", "11:55"]);
    }

    #[test]
    fn a_call_endpoint_takes_one_message_whose_type_is_the_endpoint() {
        let text = r#"{"event": "Signed Up", "userId": "u", "writeKey": "slk_k"}"#;
        let body = parse_body(text, Some(Call::Track), &limits()).unwrap();
        assert_eq!(body.write_key.as_deref(), Some("slk_k"));
        let e = judge_all(text, Some(Call::Track)).pop().unwrap().unwrap();
        assert_eq!(e.event_type, "Signed Up");
        let e = judge_all(r#"{"userId": "u"}"#, Some(Call::Identify))
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(e.event_type, "identify");
    }

    #[test]
    fn bad_messages_say_what_is_wrong_where() {
        let text = r#"{"batch": [
            {"type": "track", "userId": "u"},
            {"type": "track", "event": "x"},
            {"type": "teleport", "userId": "u"},
            {"type": "track", "event": "x", "userId": "u", "properties": [1]},
            {"type": "track", "event": "bad\u0001name", "userId": "u"},
            "not a message",
            {"type": "track", "event": "ok", "userId": "u"}
        ]}"#;
        let results = judge_all(text, None);
        let pointers: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(_) => "ok".into(),
                Err(ApiError::InvalidEvent { details, .. }) => details[0].path.clone(),
                Err(other) => other.to_string(),
            })
            .collect();
        assert_eq!(
            pointers,
            [
                "/batch/0/event",
                "/batch/1/userId",
                "/batch/2/type",
                "/batch/3/properties",
                "/batch/4/event",
                "/batch/5",
                "ok"
            ]
        );
    }

    #[test]
    fn an_oversize_message_is_too_large_and_odd_message_ids_are_derived() {
        let big = format!(
            r#"{{"batch": [{{"type": "track", "event": "x", "userId": "u", "properties": {{"p": "{}"}}}}]}}"#,
            "x".repeat(40_000)
        );
        let err = judge_all(&big, None).pop().unwrap().unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
        let e = judge_all(
            r#"{"batch": [{"type": "track", "event": "x", "userId": "u", "messageId": "with space"}]}"#,
            None,
        )
        .pop()
        .unwrap()
        .unwrap();
        assert!(e.event_id.starts_with("h-"));
        assert_eq!(e.origin.unwrap().message_id.as_deref(), Some("with space"));
    }

    #[test]
    fn bodies_that_are_no_batch_are_refused_whole() {
        let l = limits();
        assert_eq!(
            parse_body("{", None, &l).err().map(|e| e.code()),
            Some("malformed_json")
        );
        assert_eq!(
            parse_body("[]", None, &l).err().map(|e| e.code()),
            Some("invalid_event")
        );
        assert_eq!(
            parse_body(r#"{"batch": []}"#, None, &l)
                .err()
                .map(|e| e.code()),
            Some("invalid_event")
        );
        assert_eq!(
            parse_body(r#"{"events": []}"#, None, &l)
                .err()
                .map(|e| e.code()),
            Some("invalid_event")
        );
        let mut small = l;
        small.max_messages = 1;
        assert_eq!(
            parse_body(r#"{"batch": [{}, {}]}"#, None, &small)
                .err()
                .map(|e| e.code()),
            Some("payload_too_large")
        );
    }
}
