//! A verified webhook delivery as a Sluice event: its body becomes `properties`, its id comes
//! from the `webhook-id` header or a JSON pointer into the body, its userId from a pointer. Pure.
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;
use sluice_http::ApiError;
use sluice_shared::error::Violation;
use sluice_shared::event::{Origin, QueuedEvent, SourceKind};

use super::fields::{checked_object, event_id_for, Budget};
use super::registry::SourceRecord;
use super::signature::Verified;

/// `eventIdFrom` that takes the delivery's `webhook-id` header.
pub const FROM_HEADER: &str = "header";

/// Whether `pointer` is a JSON pointer (RFC 6901): empty, or `/`-separated tokens.
pub fn is_pointer(pointer: &str) -> bool {
    pointer.len() <= 256 && (pointer.is_empty() || pointer.starts_with('/'))
}

/// A scalar at `pointer` in `body`, as text (strings as they are, numbers written out).
fn scalar_at(body: &Value, pointer: &str) -> Option<String> {
    match body.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The event a verified delivery of `source` becomes. The eventId is the sender's message id
/// (so its retries are deduplicated); when `eventIdFrom` finds nothing, the SHA-256 of the
/// body, so an identical redelivery is still stored once. Without a userId pointer, or when it
/// finds nothing, the event is about the source itself: `webhook:<sourceId>`.
pub fn to_event(
    source: &SourceRecord,
    verified: &Verified,
    body: &[u8],
    received_at: DateTime<Utc>,
    max_values: usize,
) -> Result<QueuedEvent, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not UTF-8: {e}")))?;
    let raw: Box<RawValue> = serde_json::from_str(text)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not JSON: {e}")))?;
    if !raw.get().starts_with('{') {
        return Err(ApiError::invalid(vec![Violation {
            path: String::new(),
            message: "a webhook body must be a JSON object".into(),
        }]));
    }
    let mut budget = Budget {
        values: 0,
        max_values,
    };
    checked_object(&raw, "", &mut budget).map_err(|v| ApiError::invalid(vec![v]))?;
    // Bounded by the delivery's size limit: a tree only to read two pointers.
    let tree: Value =
        serde_json::from_str(raw.get()).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let message_id = if source.event_id_from == FROM_HEADER {
        verified.message_id.clone()
    } else {
        scalar_at(&tree, &source.event_id_from)
    };
    let (event_id, original) = match message_id {
        Some(id) => event_id_for(&id),
        None => {
            use sha2::{Digest, Sha256};
            (
                format!("b-{}", hex::encode(&Sha256::digest(body)[..20])),
                None,
            )
        }
    };
    let user_id = source
        .user_id_from
        .as_deref()
        .and_then(|p| scalar_at(&tree, p))
        .filter(|u| u.chars().count() <= 128)
        .unwrap_or_else(|| format!("webhook:{}", source.id));
    let mut origin = Origin::new(SourceKind::Webhook);
    origin.source_id = Some(source.id.to_string());
    origin.message_id = original;
    Ok(QueuedEvent {
        event_id,
        account_id: source.account_id.to_string(),
        event_type: source.event_type.clone(),
        user_id,
        session_id: None,
        timestamp: received_at,
        received_at,
        properties: Some(raw),
        origin: Some(Box::new(origin)),
        plan: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn source(event_id_from: &str, user_id_from: Option<&str>) -> SourceRecord {
        SourceRecord {
            id: Uuid::nil(),
            account_id: Uuid::nil(),
            name: "stripe".into(),
            scheme: "stripe".into(),
            event_type: "stripe.event".into(),
            event_id_from: event_id_from.into(),
            user_id_from: user_id_from.map(str::to_owned),
            secret: "whsec_x".into(),
            previous_secret: None,
            previous_valid_until: None,
            created_at: Utc::now(),
            rotated_at: None,
        }
    }

    fn verified(id: Option<&str>) -> Verified {
        Verified {
            message_id: id.map(str::to_owned),
            timestamp: 0,
        }
    }

    const BODY: &[u8] =
        br#"{"id": "evt_1", "type": "invoice.paid", "data": {"object": {"customer": "cus_9"}}}"#;

    #[test]
    fn ids_come_from_the_header_or_the_body_and_the_user_from_a_pointer() {
        let now = Utc::now();
        let e = to_event(
            &source("header", None),
            &verified(Some("msg_1")),
            BODY,
            now,
            100,
        )
        .unwrap();
        assert_eq!(e.event_id, "msg_1");
        assert_eq!(e.user_id, format!("webhook:{}", Uuid::nil()));
        assert_eq!(e.event_type, "stripe.event");
        assert_eq!(
            e.properties.as_ref().unwrap().get(),
            std::str::from_utf8(BODY).unwrap()
        );
        let s = source("/id", Some("/data/object/customer"));
        let e = to_event(&s, &verified(None), BODY, now, 100).unwrap();
        assert_eq!(
            (e.event_id.as_str(), e.user_id.as_str()),
            ("evt_1", "cus_9")
        );
        // A pointer that finds nothing: the body's hash, the same for an identical redelivery.
        let s = source("/missing", Some("/missing"));
        let a = to_event(&s, &verified(None), BODY, now, 100).unwrap();
        let b = to_event(&s, &verified(None), BODY, now, 100).unwrap();
        assert!(a.event_id.starts_with("b-"));
        assert_eq!(a.event_id, b.event_id);
    }

    #[test]
    fn bodies_that_are_no_json_object_are_refused() {
        let s = source("header", None);
        let v = verified(Some("m"));
        assert_eq!(
            to_event(&s, &v, b"a=1", Utc::now(), 100)
                .unwrap_err()
                .code(),
            "malformed_json"
        );
        assert_eq!(
            to_event(&s, &v, b"[1]", Utc::now(), 100)
                .unwrap_err()
                .code(),
            "invalid_event"
        );
        assert_eq!(
            to_event(&s, &v, br#"{"a": [1, 2, 3]}"#, Utc::now(), 3)
                .unwrap_err()
                .code(),
            "invalid_event"
        );
    }
}
