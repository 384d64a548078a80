//! The services' body reader (`sluice_http::body`): a gzip body inflated under the byte limit that also caps the
//! decompressed size. Property: no panic, an accepted body is never over the limit, and memory
//! stays about `limit` whatever the body or its trailer claims.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_http::body::{inflate, InflateError};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the limit (up to 8 MiB, past the 5 MiB batch limit); the rest is
    // the body as it came off the wire.
    let Some((head, raw)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = usize::from(u16::from_le_bytes(*head)) * 128;
    match inflate(raw, limit) {
        Ok(out) => assert!(
            out.len() <= limit,
            "{} bytes under a {limit} limit",
            out.len()
        ),
        Err(InflateError::TooLarge | InflateError::Corrupt(_)) => {}
    }
});
