//! PostHog capture: a body in any of the shapes PostHog's SDKs send (JSON, gzip by header, by
//! query or by magic bytes, `data=` forms holding base64 or JSON), read into its events, and each
//! event mapped onto a Sluice event. Pure: no I/O. The mapping is written down in docs/SOURCES.md.
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sluice_http::body::{inflate, InflateError};
use sluice_http::ApiError;
use sluice_shared::error::Violation;
use sluice_shared::event::{self, Origin, QueuedEvent, SourceKind};

use super::fields::{
    checked_object, event_id_for, skew_corrected, take, within_request_budget, Budget, Fields,
};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What one PostHog request may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of the body once decompressed and decoded.
    pub max_body_bytes: usize,
    /// Bytes of one event's JSON.
    pub max_event_bytes: usize,
    pub max_events: usize,
    pub max_event_values: usize,
    pub max_request_values: usize,
}

/// How a body arrived: what the headers and the query say of it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Arrival<'a> {
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    /// `?compression=` (`gzip-js`, `gzip`, `base64`, `lz64`).
    pub compression: Option<&'a str>,
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge {
        what: "body",
        limit,
    }
}

fn inflated(raw: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    inflate(raw, limit).map_err(|e| match e {
        InflateError::TooLarge => too_large(limit),
        InflateError::Corrupt(m) => ApiError::MalformedJson(format!("invalid gzip body: {m}")),
    })
}

/// The JSON text of a body, whatever of PostHog's encodings it came in; within `limit` bytes
/// at every step.
pub fn decode_body(raw: Vec<u8>, arrival: Arrival<'_>, limit: usize) -> Result<Vec<u8>, ApiError> {
    let compression = arrival.compression.unwrap_or("").to_ascii_lowercase();
    if compression == "lz64" {
        return Err(ApiError::UnsupportedMediaType(
            "lz64 compression is not supported; PostHog's SDKs also send gzip-js or base64".into(),
        ));
    }
    let encoding = arrival
        .content_encoding
        .map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") | Some("gzip") | Some("x-gzip") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding `{other}` is not supported; use gzip or none"
            )))
        }
    }
    let body = if raw.starts_with(&GZIP_MAGIC) {
        inflated(&raw, limit)?
    } else if encoding.as_deref().is_some_and(|e| e.contains("gzip")) {
        return Err(ApiError::MalformedJson(
            "invalid gzip body: no gzip header".into(),
        ));
    } else {
        raw
    };
    let form = arrival
        .content_type
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
        || body.starts_with(b"data=")
        || body.starts_with(b"compression=");
    if !form {
        return Ok(body);
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::MalformedJson(format!("unreadable form body: {e}")))?;
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("compression").is_some_and(|c| c.eq_ignore_ascii_case("lz64")) {
        return Err(ApiError::UnsupportedMediaType(
            "lz64 compression is not supported; PostHog's SDKs also send gzip-js or base64".into(),
        ));
    }
    let data = field("data")
        .ok_or_else(|| ApiError::MalformedJson("a form body carries its events in `data`".into()))?
        .trim();
    if data.starts_with('{') || data.starts_with('[') {
        return Ok(data.as_bytes().to_vec());
    }
    let decoded = decode_base64(data)?;
    if decoded.len() > limit {
        return Err(too_large(limit));
    }
    if decoded.starts_with(&GZIP_MAGIC) {
        return inflated(&decoded, limit);
    }
    Ok(decoded)
}

fn decode_base64(data: &str) -> Result<Vec<u8>, ApiError> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    // A `+` sent unescaped in a form reads back as a space; base64 has no spaces.
    let restored = data.replace(' ', "+");
    let trimmed = restored.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|e| ApiError::MalformedJson(format!("`data` is neither JSON nor base64: {e}")))
}

/// A request as read: the key (in the body: `api_key` or `token`, at the top, on the first
/// event or in its properties), the batch's `sent_at`, and each event still raw.
pub struct Body<'a> {
    pub api_key: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub events: Vec<(String, &'a RawValue)>,
}

fn invalid(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(vec![Violation {
        path: path.into(),
        message: message.into(),
    }])
}

/// The key of a body, wherever PostHog's SDKs put it (`api_key` or `token` at the top, on the
/// first event, or in its `properties.token`), read before the rest is judged, so a body without
/// a key is 401 whatever else is wrong with it.
pub fn api_key(text: &str) -> Option<String> {
    let root: &RawValue = serde_json::from_str(text).ok()?;
    let key_of = |f: &Fields| -> Option<String> {
        let key = |name| f.text(name).ok().flatten();
        key("api_key").or_else(|| key("token")).or_else(|| {
            let props = f.raw("properties")?;
            Fields::of(props, "").ok()?.text("token").ok().flatten()
        })
    };
    let first_of = |list: &RawValue| -> Option<String> {
        let events: Vec<&RawValue> = serde_json::from_str(list.get()).ok()?;
        key_of(&Fields::of(events.first()?, "").ok()?)
    };
    if root.get().starts_with('[') {
        return first_of(root);
    }
    let top = Fields::of(root, "").ok()?;
    let key = |name| top.text(name).ok().flatten();
    key("api_key")
        .or_else(|| key("token"))
        .or_else(|| top.raw("batch").and_then(first_of))
        .or_else(|| key_of(&top))
}

/// Reads the JSON text of a body: `{"api_key", "batch": [...]}`, one event, or an array of
/// events (posthog-js).
pub fn parse_body<'a>(text: &'a str, limits: &Limits) -> Result<Body<'a>, ApiError> {
    let root: &RawValue =
        serde_json::from_str(text).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let (top, events): (Option<Fields>, Vec<(String, &RawValue)>) = if root.get().starts_with('[') {
        let list: Vec<&RawValue> =
            serde_json::from_str(root.get()).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        let events = list
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("/{i}"), e))
            .collect();
        (None, events)
    } else if root.get().starts_with('{') {
        let top = Fields::of(root, "").map_err(|v| ApiError::invalid(vec![v]))?;
        let events = match top.raw("batch") {
            Some(batch) => {
                let list: Vec<&RawValue> = serde_json::from_str(batch.get())
                    .map_err(|_| invalid("/batch", "must be an array of events"))?;
                list.into_iter()
                    .enumerate()
                    .map(|(i, e)| (format!("/batch/{i}"), e))
                    .collect()
            }
            None => vec![(String::new(), root)],
        };
        (Some(top), events)
    } else {
        return Err(invalid(
            "",
            "the body must be an event, a batch or an array of events",
        ));
    };
    if events.is_empty() {
        return Err(invalid(
            "/batch",
            format!("must hold 1 to {} events", limits.max_events),
        ));
    }
    if events.len() > limits.max_events {
        return Err(ApiError::TooManyEvents(limits.max_events));
    }
    let key_of = |f: &Fields| -> Option<String> {
        let key = |name| f.text(name).ok().flatten();
        key("api_key").or_else(|| key("token"))
    };
    let mut api_key = top.as_ref().and_then(key_of);
    let mut sent_at = None;
    if let Some(top) = &top {
        sent_at = top
            .time("sent_at")
            .map_err(|v| ApiError::invalid(vec![v]))?;
    }
    if api_key.is_none() {
        // posthog-js puts the project token on each event, in its properties.
        if let Some(first) = events
            .first()
            .and_then(|(at, e)| Fields::of(e, at.clone()).ok())
        {
            api_key = key_of(&first).or_else(|| {
                let props = first.raw("properties")?;
                Fields::of(props, "").ok()?.text("token").ok().flatten()
            });
        }
    }
    Ok(Body {
        api_key,
        sent_at,
        events,
    })
}

/// Every event of `body` as a Sluice event, or its problems; the request as a whole is refused
/// (413) only when its events hold more JSON values together than one request may.
pub fn judge_all(
    body: &Body<'_>,
    account_id: &str,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<Vec<Result<QueuedEvent, ApiError>>, ApiError> {
    let judged = body
        .events
        .iter()
        .map(|(at, raw)| judge(at, raw, body.sent_at, account_id, received_at, limits));
    within_request_budget(judged, limits.max_request_values)
}

/// `properties` with PostHog's top-level `$set` / `$set_once` moved into it (as PostHog's own
/// ingestion does), unless it already has its own.
fn with_person_updates(
    properties: Option<&RawValue>,
    moved: &[(&str, &RawValue)],
) -> Option<Box<RawValue>> {
    let present = properties.and_then(|p| Fields::of(p, "").ok());
    let missing: Vec<String> = moved
        .iter()
        .filter(|(name, _)| present.as_ref().is_none_or(|p| p.raw(name).is_none()))
        .map(|(name, raw)| format!("\"{name}\":{}", raw.get()))
        .collect();
    if missing.is_empty() {
        return properties.map(ToOwned::to_owned);
    }
    let joined = missing.join(",");
    let text = match properties.map(|p| p.get()) {
        None => format!("{{{joined}}}"),
        Some(p) => {
            let rest = p[1..].trim_start();
            if rest.starts_with('}') {
                format!("{{{joined}}}")
            } else {
                format!("{{{joined},{rest}")
            }
        }
    };
    RawValue::from_string(text).ok()
}

fn judge(
    at: &str,
    raw: &RawValue,
    batch_sent_at: Option<DateTime<Utc>>,
    account_id: &str,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Result<(QueuedEvent, usize), ApiError> {
    if raw.get().len() > limits.max_event_bytes {
        return Err(ApiError::PayloadTooLarge {
            what: "event",
            limit: limits.max_event_bytes,
        });
    }
    let e = Fields::of(raw, at).map_err(|v| ApiError::invalid(vec![v]))?;
    let mut p = Vec::new();
    let name = take(e.text("event"), &mut p);
    let uuid = take(e.id("uuid", 1024), &mut p);
    let distinct = take(e.id("distinct_id", 128), &mut p);
    let timestamp = take(e.time("timestamp"), &mut p);
    let sent_at = take(e.time("sent_at"), &mut p);
    let offset = take(e.millis("offset"), &mut p);
    let props_raw = e.raw("properties");
    let props = props_raw.and_then(|r| Fields::of(r, e.pointer("properties")).ok());
    let from_props =
        |name: &str, max: usize| props.as_ref().and_then(|p| p.id(name, max).ok().flatten());
    let distinct = distinct.or_else(|| from_props("distinct_id", 128));
    let anonymous_id = from_props("$anon_distinct_id", 128);
    let moved: Vec<(&str, &RawValue)> = ["$set", "$set_once"]
        .into_iter()
        .filter_map(|n| {
            e.raw(n)
                .filter(|r| r.get().starts_with('{'))
                .map(|r| (n, r))
        })
        .collect();
    if props_raw.is_some_and(|r| !r.get().starts_with('{')) {
        p.push(Violation {
            path: e.pointer("properties"),
            message: "must be a JSON object".into(),
        });
    }
    let properties = with_person_updates(props_raw.filter(|r| r.get().starts_with('{')), &moved);
    let mut budget = Budget {
        values: 0,
        max_values: limits.max_event_values,
    };
    if let Some(props) = &properties {
        if let Err(v) = checked_object(props, &e.pointer("properties"), &mut budget) {
            p.push(v);
        }
    }
    let event_type = match name {
        Some(n) => match event::source_event_type_problem(&n) {
            None => Some(n),
            Some(problem) => {
                p.push(Violation {
                    path: e.pointer("event"),
                    message: problem,
                });
                None
            }
        },
        None if e.raw("event").is_none() => {
            p.push(Violation {
                path: e.pointer("event"),
                message: "`event` is required".into(),
            });
            None
        }
        None => None,
    };
    if distinct.is_none() && e.raw("distinct_id").is_none() {
        p.push(Violation {
            path: e.pointer("distinct_id"),
            message: "`distinct_id` is required (on the event or in its properties)".into(),
        });
    }
    let (Some(event_type), Some(user_id), true) = (event_type, distinct, p.is_empty()) else {
        return Err(ApiError::invalid(p));
    };
    // PostHog's rule: `timestamp` corrected by `sent_at` (the event's, else the batch's); an
    // `offset` (milliseconds before sending) without a timestamp; else the time it arrived.
    let timestamp = match (timestamp, offset) {
        (Some(t), _) => skew_corrected(t, sent_at.or(batch_sent_at), received_at),
        (None, Some(ms)) => received_at
            .checked_sub_signed(chrono::Duration::milliseconds(ms))
            .filter(|t| event::storable(*t))
            .unwrap_or(received_at),
        (None, None) => received_at,
    };
    let (event_id, original_id) = match uuid {
        Some(id) => event_id_for(&id),
        None => (uuid::Uuid::now_v7().to_string(), None),
    };
    let mut origin = Origin::new(SourceKind::Posthog);
    origin.message_id = original_id;
    origin.anonymous_id = anonymous_id;
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
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn limits() -> Limits {
        Limits {
            max_body_bytes: 5 << 20,
            max_event_bytes: 64 << 10,
            max_events: 2500,
            max_event_values: 10_000,
            max_request_values: 200_000,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn events(text: &str) -> Vec<Result<QueuedEvent, ApiError>> {
        let body = parse_body(text, &limits()).unwrap();
        judge_all(&body, "acc", now(), &limits()).unwrap()
    }

    const BATCH: &str = r#"{"api_key": "slk_k", "sent_at": "2024-05-01T11:50:00Z", "batch": [
        {"event": "$pageview", "distinct_id": "u1", "uuid": "0190a3b2-0000-7000-8000-000000000001",
         "properties": {"$current_url": "https://x.test/a"}, "timestamp": "2024-05-01T11:49:00Z"},
        {"event": "$identify", "distinct_id": "u1", "$set": {"email": "a@x.test"},
         "properties": {"$anon_distinct_id": "anon-9"}}
    ]}"#;

    #[test]
    fn a_batch_maps_onto_events_with_the_skew_corrected() {
        let body = parse_body(BATCH, &limits()).unwrap();
        assert_eq!(body.api_key.as_deref(), Some("slk_k"));
        let got: Vec<QueuedEvent> = events(BATCH).into_iter().map(Result::unwrap).collect();
        assert_eq!(got[0].event_type, "$pageview");
        assert_eq!(got[0].user_id, "u1");
        assert_eq!(got[0].event_id, "0190a3b2-0000-7000-8000-000000000001");
        // Sent at 11:50 by the client's clock, received at 12:00: ten minutes later.
        assert_eq!(got[0].timestamp.format("%H:%M").to_string(), "11:59");
        assert_eq!(got[1].event_type, "$identify");
        let props: serde_json::Value =
            serde_json::from_str(got[1].properties.as_ref().unwrap().get()).unwrap();
        assert_eq!(props["$set"]["email"], "a@x.test");
        assert_eq!(props["$anon_distinct_id"], "anon-9");
        assert_eq!(
            got[1].origin.as_ref().unwrap().anonymous_id.as_deref(),
            Some("anon-9")
        );
        assert_eq!(got[1].timestamp, now());
    }

    #[test]
    fn every_encoding_the_sdks_use_decodes_to_the_same_json() {
        let json = BATCH.as_bytes().to_vec();
        let plain = decode_body(json.clone(), Arrival::default(), 1 << 20).unwrap();
        assert_eq!(plain, json);
        // gzip by header, or by magic bytes alone (posthog-js sends text/plain).
        let by_header = Arrival {
            content_encoding: Some("gzip"),
            ..Default::default()
        };
        assert_eq!(decode_body(gz(&json), by_header, 1 << 20).unwrap(), json);
        let text_plain = Arrival {
            content_type: Some("text/plain"),
            compression: Some("gzip-js"),
            ..Default::default()
        };
        assert_eq!(decode_body(gz(&json), text_plain, 1 << 20).unwrap(), json);
        // data= forms: base64 (with or without padding), or JSON.
        let b64 = base64::engine::general_purpose::STANDARD.encode(&json);
        let form = serde_urlencoded::to_string([("data", b64.as_str()), ("compression", "base64")])
            .unwrap();
        let as_form = Arrival {
            content_type: Some("application/x-www-form-urlencoded"),
            ..Default::default()
        };
        assert_eq!(
            decode_body(form.into_bytes(), as_form, 1 << 20).unwrap(),
            json
        );
        let unpadded = format!("data={}", b64.trim_end_matches('='));
        assert_eq!(
            decode_body(unpadded.into_bytes(), Arrival::default(), 1 << 20).unwrap(),
            json
        );
        let json_form = serde_urlencoded::to_string([("data", BATCH)]).unwrap();
        assert_eq!(
            decode_body(json_form.into_bytes(), as_form, 1 << 20).unwrap(),
            json
        );
    }

    #[test]
    fn bombs_and_unknown_encodings_are_refused() {
        let bomb = gz(&vec![b' '; 8 << 20]);
        let err = decode_body(bomb.clone(), Arrival::default(), 1 << 20).unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bomb);
        let err = decode_body(
            format!("data={b64}").into_bytes(),
            Arrival::default(),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
        let lz = Arrival {
            compression: Some("lz64"),
            ..Default::default()
        };
        assert_eq!(
            decode_body(b"x".to_vec(), lz, 100).unwrap_err().code(),
            "unsupported_media_type"
        );
        let br = Arrival {
            content_encoding: Some("br"),
            ..Default::default()
        };
        assert_eq!(
            decode_body(b"{}".to_vec(), br, 100).unwrap_err().code(),
            "unsupported_media_type"
        );
        assert_eq!(
            decode_body(b"data=%%%".to_vec(), Arrival::default(), 100)
                .unwrap_err()
                .code(),
            "malformed_json"
        );
    }

    #[test]
    fn the_key_is_found_wherever_an_sdk_puts_it() {
        let single = r#"{"token": "slk_t", "event": "e", "distinct_id": "u"}"#;
        assert_eq!(
            parse_body(single, &limits()).unwrap().api_key.as_deref(),
            Some("slk_t")
        );
        let js = r#"[{"event": "e", "properties": {"token": "slk_js", "distinct_id": "u"}}]"#;
        let body = parse_body(js, &limits()).unwrap();
        assert_eq!(body.api_key.as_deref(), Some("slk_js"));
        let e = judge_all(&body, "acc", now(), &limits())
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(e.user_id, "u");
        assert!(parse_body(r#"{"batch": []}"#, &limits()).is_err());
        for (text, key) in [
            (single, Some("slk_t")),
            (js, Some("slk_js")),
            (BATCH, Some("slk_k")),
            (
                r#"{"batch": [{"api_key": "slk_e", "event": "e"}]}"#,
                Some("slk_e"),
            ),
            (r#"{"batch": []}"#, None),
            ("not json", None),
        ] {
            assert_eq!(api_key(text).as_deref(), key, "{text}");
        }
    }

    #[test]
    fn bad_events_say_what_is_wrong_where() {
        let text = r#"{"batch": [
            {"distinct_id": "u"},
            {"event": "e"},
            {"event": "e", "distinct_id": "u", "properties": [1]},
            {"event": "e", "distinct_id": {"no": 1}},
            {"event": "e", "distinct_id": "u", "timestamp": "soon"},
            {"event": "ok", "distinct_id": "u", "offset": 60000}
        ]}"#;
        let results = events(text);
        let pointers: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(e) => format!("ok {}", e.timestamp.format("%H:%M")),
                Err(ApiError::InvalidEvent { details, .. }) => details[0].path.clone(),
                Err(other) => other.to_string(),
            })
            .collect();
        assert_eq!(
            pointers,
            [
                "/batch/0/event",
                "/batch/1/distinct_id",
                "/batch/2/properties",
                "/batch/3/distinct_id",
                "/batch/4/timestamp",
                "ok 11:59"
            ]
        );
    }
}
