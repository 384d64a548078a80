//! The api's Redis cache record of a key's owner (`keyId:accountId[:perSec:burst][@until]`):
//! whatever another writer or a corrupted cache left there, reading it must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_api::auth::parse_cached;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_cached(text);
    }
});
