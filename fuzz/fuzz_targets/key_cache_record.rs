//! The api's Redis cache record of a key (`KeyCacheRecord`: compact JSON, the `-` tombstone, or
//! the last release's `keyId:accountId[:perSec:burst][@until]`): whatever another writer or a
//! corrupted cache left there, reading it must not panic, and what it reads writes back as itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_api::key_cache::KeyCacheRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(record) = KeyCacheRecord::decode(text) {
            assert_eq!(KeyCacheRecord::decode(&record.encode()), Some(record));
        }
    }
});
