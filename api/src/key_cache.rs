//! The Redis key cache's record of one API key, which every api instance reads and writes: the
//! key's owner and until when it is fresh, or `Absent` (revoked or unknown: refused, and no fill
//! may cover a revocation's tombstone).
//!
//! An owner is stored as compact JSON,
//! `{"keyId":"…","accountId":"…","quota":{"perSec":5,"burst":10},"freshUntil":1700000000}`;
//! `Absent` is the single byte `-`, which no JSON record can be, and which instances of the last
//! release also read as a tombstone (their fill script refuses to cover it). Their owner records,
//! `keyId:accountId[:perSec:burst][@freshUntil]`, are still read for one release, so keys they
//! cached keep working while both versions run.
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::KeyOwner;

/// How `Absent` is stored.
pub const ABSENT: &str = "-";

/// A key's own ingest quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub per_sec: u32,
    pub burst: u32,
}

/// The owner of a live key, as cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedOwner {
    pub key_id: Uuid,
    pub account_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Unix seconds until which the owner is fresh; after that it is served only while
    /// PostgreSQL cannot answer. Absent from the oldest records, which count as fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_until: Option<i64>,
}

impl CachedOwner {
    pub fn new(owner: KeyOwner, fresh_until: i64) -> Self {
        Self {
            key_id: owner.key_id,
            account_id: owner.account_id,
            quota: owner.quota.map(|(per_sec, burst)| Quota { per_sec, burst }),
            fresh_until: Some(fresh_until),
        }
    }

    pub fn owner(&self) -> KeyOwner {
        KeyOwner {
            key_id: self.key_id,
            account_id: self.account_id,
            quota: self.quota.map(|q| (q.per_sec, q.burst)),
        }
    }

    /// Whether the owner is past its fresh time at `now` (unix seconds).
    pub fn is_stale(&self, now: i64) -> bool {
        self.fresh_until.is_some_and(|until| until <= now)
    }
}

/// One key's entry in the Redis cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCacheRecord {
    /// No live key: revoked (a tombstone) or unknown.
    Absent,
    Owner(CachedOwner),
}

impl KeyCacheRecord {
    pub fn encode(&self) -> String {
        match self {
            KeyCacheRecord::Absent => ABSENT.to_owned(),
            // A struct of ids and integers always serializes; were it ever to fail, the empty
            // record reads back as no record at all (PostgreSQL is asked), never as another key.
            KeyCacheRecord::Owner(owner) => serde_json::to_string(owner).unwrap_or_default(),
        }
    }

    /// The record `text` holds, in this format or the last release's; `None` for anything else
    /// (treated as no record: PostgreSQL is asked).
    pub fn decode(text: &str) -> Option<Self> {
        if text == ABSENT {
            return Some(KeyCacheRecord::Absent);
        }
        let owner = if text.starts_with('{') {
            serde_json::from_str(text).ok()?
        } else {
            decode_legacy(text)?
        };
        Some(KeyCacheRecord::Owner(owner))
    }
}

/// `keyId:accountId[:perSec:burst][@freshUntil]`, as the last release wrote an owner.
fn decode_legacy(text: &str) -> Option<CachedOwner> {
    let (owner, fresh_until) = match text.split_once('@') {
        Some((owner, until)) => (owner, Some(until.parse().ok()?)),
        None => (text, None),
    };
    let mut parts = owner.split(':');
    let key_id = parts.next()?.parse().ok()?;
    let account_id = parts.next()?.parse().ok()?;
    let quota = match (parts.next(), parts.next()) {
        (Some(per_sec), Some(burst)) => Some(Quota {
            per_sec: per_sec.parse().ok()?,
            burst: burst.parse().ok()?,
        }),
        _ => None,
    };
    Some(CachedOwner {
        key_id,
        account_id,
        quota,
        fresh_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owner(quota: Option<Quota>, fresh_until: Option<i64>) -> CachedOwner {
        CachedOwner {
            key_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            quota,
            fresh_until,
        }
    }

    /// How the last release wrote an owner.
    fn legacy(o: &CachedOwner) -> String {
        let mut text = format!("{}:{}", o.key_id, o.account_id);
        if let Some(q) = o.quota {
            text.push_str(&format!(":{}:{}", q.per_sec, q.burst));
        }
        if let Some(until) = o.fresh_until {
            text.push_str(&format!("@{until}"));
        }
        text
    }

    #[test]
    fn an_owner_is_compact_json_and_reads_back() {
        let o = owner(
            Some(Quota {
                per_sec: 5,
                burst: 10,
            }),
            Some(1_700_000_000),
        );
        let text = KeyCacheRecord::Owner(o).encode();
        assert_eq!(
            text,
            format!(
                r#"{{"keyId":"{}","accountId":"{}","quota":{{"perSec":5,"burst":10}},"freshUntil":1700000000}}"#,
                o.key_id, o.account_id
            )
        );
        assert_eq!(
            KeyCacheRecord::decode(&text),
            Some(KeyCacheRecord::Owner(o))
        );
        let plain = owner(None, Some(1));
        assert!(!KeyCacheRecord::Owner(plain).encode().contains("quota"));
    }

    #[test]
    fn the_tombstone_is_the_one_byte_the_last_release_reads_as_one() {
        assert_eq!(KeyCacheRecord::Absent.encode(), "-");
        assert_eq!(KeyCacheRecord::decode("-"), Some(KeyCacheRecord::Absent));
    }

    #[test]
    fn records_of_the_last_release_still_read() {
        for o in [
            owner(None, None),
            owner(None, Some(1_700_000_000)),
            owner(
                Some(Quota {
                    per_sec: 5,
                    burst: 10,
                }),
                Some(1_700_000_000),
            ),
        ] {
            assert_eq!(
                KeyCacheRecord::decode(&legacy(&o)),
                Some(KeyCacheRecord::Owner(o)),
                "{}",
                legacy(&o)
            );
        }
        // Without a fresh time an old record counts as fresh, as the last release read it.
        assert!(!owner(None, None).is_stale(i64::MAX));
    }

    #[test]
    fn anything_else_is_no_record() {
        for bad in [
            "",
            "garbage",
            "x@1",
            "--",
            "{}",
            r#"{"keyId":"nope"}"#,
            "00000000-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-000000000000:00000000-0000-0000-0000-000000000000@soon",
        ] {
            assert_eq!(KeyCacheRecord::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn freshness_ends_at_its_time() {
        let o = owner(None, Some(100));
        assert!(!o.is_stale(99));
        assert!(o.is_stale(100));
    }

    fn any_owner() -> impl Strategy<Value = CachedOwner> {
        (
            any::<u128>(),
            any::<u128>(),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(k, a, q, f)| CachedOwner {
                key_id: Uuid::from_u128(k),
                account_id: Uuid::from_u128(a),
                quota: q.map(|(per_sec, burst)| Quota { per_sec, burst }),
                fresh_until: f,
            })
    }

    proptest! {
        #[test]
        fn every_owner_round_trips(o in any_owner()) {
            let record = KeyCacheRecord::Owner(o);
            prop_assert_eq!(KeyCacheRecord::decode(&record.encode()), Some(record));
            prop_assert_eq!(KeyCacheRecord::decode(&legacy(&o)), Some(record));
            prop_assert_eq!(KeyCacheRecord::Owner(CachedOwner::new(o.owner(), 7)).decode_owner(), Some(o.owner()));
        }

        #[test]
        fn any_text_decodes_to_something_that_round_trips_or_to_nothing(text in ".{0,200}") {
            if let Some(record) = KeyCacheRecord::decode(&text) {
                prop_assert_eq!(KeyCacheRecord::decode(&record.encode()), Some(record));
            }
        }
    }

    impl KeyCacheRecord {
        fn decode_owner(&self) -> Option<KeyOwner> {
            match KeyCacheRecord::decode(&self.encode())? {
                KeyCacheRecord::Owner(o) => Some(o.owner()),
                KeyCacheRecord::Absent => None,
            }
        }
    }
}
