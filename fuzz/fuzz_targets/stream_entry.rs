//! The worker's decoding of a stream entry whatever its `e` field holds (bytes, text, another
//! type, or nothing), and BSON encoding of whatever decodes. Property: both return an error for
//! bad input, never panic.
#![no_main]
use std::collections::HashMap;

use fred::types::Value;
use libfuzzer_sys::fuzz_target;
use sluice_shared::names::STREAM_EVENT_FIELD;
use sluice_worker::store::to_document;
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
        fields.insert(STREAM_EVENT_FIELD.to_owned(), v);
    }
    let entry = Entry {
        id: "1-0".into(),
        fields,
        deliveries: 1,
    };
    let _ = entry.request_id();
    let _ = entry.raw_fields();
    if let Ok(event) = entry.decode() {
        let _ = to_document(&event);
    }
});
