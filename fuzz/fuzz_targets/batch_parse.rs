//! A batch body as the api's `ingest_batch` reads it: `{"events": [...]}` borrowed into raw items
//! (the same shape as its private `BatchBody`), each item size-checked and then judged on its own
//! with `parse_event` and `QueuedEvent::stamp`. Property: no panic, memory about the body's size.
#![no_main]
use chrono::Utc;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_shared::event::{parse_event, EventLimits, QueuedEvent};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// The api's default per-event byte limit (64 KiB).
const MAX_EVENT_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<BatchBody>(data) else {
        return;
    };
    let limits = EventLimits { max_values: 1_000 };
    for raw in batch.events {
        if raw.get().len() > MAX_EVENT_BYTES {
            continue;
        }
        if let Ok(parsed) = parse_event(raw.get(), limits) {
            let _ = QueuedEvent::stamp(parsed.event, "acct", Utc::now());
        }
    }
});
