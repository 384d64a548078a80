//! One event as the api takes it in: `scan` over the raw JSON, `parse_event`, `QueuedEvent::stamp`,
//! and then the trip an accepted event makes: serialized onto the stream, decoded by the worker and
//! turned into BSON. Property: no panic for any input, and an event the api accepts is one the
//! worker can decode and store (else it would be answered 202 and dead-lettered); and what the
//! common path (`accept_common`) accepts, the schema accepts with the same result.
#![no_main]
use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use sluice_shared::event::{
    accept_common, parse_event, parse_event_by_schema, EventLimits, QueuedEvent,
    MAX_PROPERTIES_DEPTH,
};
use sluice_shared::names::{STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};
use sluice_shared::scan::scan;
use sluice_store::to_document;
use sluice_worker::stream::Entry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = serde_json::from_str::<&RawValue>(text) {
        let _ = scan(raw, 1_000, MAX_PROPERTIES_DEPTH);
    }
    if let Some(fast) = accept_common(text, EventLimits::default()) {
        let slow = parse_event_by_schema(text, EventLimits::default())
            .unwrap_or_else(|e| panic!("accepted by hand, refused by the schema: {e:?}"));
        assert_eq!(fast.values, slow.values);
        assert_eq!(format!("{:?}", fast.event), format!("{:?}", slow.event));
    }
    let Ok(parsed) = parse_event(text, EventLimits::default()) else {
        return;
    };
    // A fixed receive time keeps runs reproducible; the skew correction is what is under test.
    let received_at = Utc
        .timestamp_millis_opt(1_780_000_000_000)
        .single()
        .expect("a valid instant");
    let Ok(queued) = QueuedEvent::stamp(
        parsed.event,
        "0195f0a4-8a5e-7c3b-9d1e-2f4a6b8c0d1e",
        received_at,
    ) else {
        return;
    };
    let wire = serde_json::to_string(&queued).expect("a queued event serializes");
    // As the enqueue script packs it: an array of events, an array of request ids.
    let entry = Entry {
        id: "1-0".into(),
        fields: HashMap::from([
            (
                STREAM_EVENT_FIELD.to_owned(),
                fred::types::Value::from(format!("[{wire}]")),
            ),
            (
                STREAM_REQUEST_ID_FIELD.to_owned(),
                fred::types::Value::from(r#"["r"]"#),
            ),
        ]),
        deliveries: 1,
    };
    let items = entry
        .events()
        .unwrap_or_else(|e| panic!("the worker cannot unpack an accepted event: {e}"));
    assert_eq!(items.len(), 1, "one event packed, one unpacked");
    let decoded = items[0]
        .decode()
        .unwrap_or_else(|e| panic!("the worker cannot decode an accepted event: {e}"));
    if let Err(e) = to_document(&decoded) {
        panic!("the worker cannot store an accepted event: {e}");
    }
});
