//! The SDK intakes as the api reads them: the first byte picks Segment's `/v1/batch`, a call's
//! endpoint (`/v1/track`) or PostHog capture (with its decoding of gzip, `data=` forms and base64);
//! the rest is the body. Property: no panic, memory about the body's size, and every event an
//! intake accepts is one the worker can decode and store (else it would be answered 200 and
//! dead-lettered).
#![no_main]
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use sluice_api::sources::{posthog, segment};
use sluice_shared::event::QueuedEvent;
use sluice_store::to_document;

const ACCOUNT: &str = "0195f0a4-8a5e-7c3b-9d1e-2f4a6b8c0d1e";

fn storable(event: &QueuedEvent) {
    let wire = serde_json::to_string(event).expect("a queued event serializes");
    let back: QueuedEvent = serde_json::from_str(&wire)
        .unwrap_or_else(|e| panic!("the worker cannot decode an accepted event: {e}: {wire}"));
    to_document(&back)
        .unwrap_or_else(|e| panic!("an accepted event cannot be stored: {e}: {wire}"));
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let received_at = Utc
        .timestamp_millis_opt(1_780_000_000_000)
        .single()
        .expect("a valid instant");
    match which % 3 {
        0 | 1 => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            let endpoint = (which % 3 == 1).then_some(segment::Call::Track);
            let limits = segment::Limits {
                max_message_bytes: 32 * 1024,
                max_messages: 2_500,
                max_event_values: 1_000,
                max_request_values: 20_000,
            };
            let Ok(parsed) = segment::parse_body(text, endpoint, &limits) else {
                return;
            };
            if let Ok(items) = segment::judge_all(&parsed, endpoint, ACCOUNT, received_at, &limits) {
                items.iter().flatten().for_each(storable);
            }
        }
        _ => {
            let limits = posthog::Limits {
                max_body_bytes: 1 << 20,
                max_event_bytes: 64 * 1024,
                max_events: 2_500,
                max_event_values: 1_000,
                max_request_values: 20_000,
            };
            let arrival = posthog::Arrival {
                content_type: (which & 4 != 0).then_some("application/x-www-form-urlencoded"),
                content_encoding: None,
                compression: (which & 8 != 0).then_some("gzip-js"),
            };
            let Ok(decoded) = posthog::decode_body(body.to_vec(), arrival, limits.max_body_bytes)
            else {
                return;
            };
            assert!(decoded.len() <= limits.max_body_bytes, "decoded past the limit");
            let Ok(text) = std::str::from_utf8(&decoded) else {
                return;
            };
            let Ok(parsed) = posthog::parse_body(text, &limits) else {
                return;
            };
            if let Ok(items) = posthog::judge_all(&parsed, ACCOUNT, received_at, &limits) {
                items.iter().flatten().for_each(storable);
            }
        }
    }
});
