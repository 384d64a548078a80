//! The worker's unpacking of a stream entry whatever its `e` and `rid` fields hold (bytes, text,
//! another type, or nothing: a packed array of events, one event of old, garbage), and BSON
//! encoding of whatever decodes. Property: each returns an error for bad input, never panics.
#![no_main]
use std::collections::HashMap;

use fred::types::Value;
use libfuzzer_sys::fuzz_target;
use sluice_shared::names::{STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};
use sluice_store::to_document;
use sluice_worker::stream::Entry;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how Redis handed the field over; the rest is its content.
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let value = match kind % 4 {
        0 => Some(Value::Bytes(rest.to_vec().into())),
        1 => match std::str::from_utf8(rest) {
            Ok(s) => Some(Value::from(s.to_owned())),
            Err(_) => Some(Value::Bytes(rest.to_vec().into())),
        },
        2 => Some(Value::Integer(rest.len() as i64)),
        _ => None,
    };
    let mut fields = HashMap::new();
    if let Some(v) = value {
        // Bit 2 also hands the same bytes over as the request ids.
        if kind & 4 != 0 {
            fields.insert(STREAM_REQUEST_ID_FIELD.to_owned(), v.clone());
        }
        fields.insert(STREAM_EVENT_FIELD.to_owned(), v);
    }
    let entry = Entry {
        id: "1-0".into(),
        fields,
        deliveries: 1,
    };
    let _ = entry.event_count();
    let _ = entry.raw_fields();
    for item in entry.events().unwrap_or_default() {
        let _ = item.stream_id(&entry.id);
        if let Ok(event) = item.decode() {
            let _ = to_document(&event);
        }
    }
});
