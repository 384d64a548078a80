//! Where an event goes in Redis: its partition, and the compact member that stands for it in the
//! partition's dedup sets. Both come from one SHA-256 of `accountId:eventId`, so they are stable
//! across instances, versions and restarts, and a retry lands where its reservation is.
//!
//! Partition `p` owns the keys `<prefix>:{p<p>}:…` (the braces are a Redis Cluster hash tag: one
//! slot per partition, so dedup and enqueue stay one atomic script call on a cluster):
//! - `<prefix>:{p<p>}:events`       the stream, consumer group `workers`;
//! - `<prefix>:{p<p>}:dedup:<gen>`  a set of 12-byte members, one per event queued in dedup
//!   generation `gen` (Redis time ÷ the window); it expires whole two windows after its start;
//! - `<prefix>:{p<p>}:meta`         a hash: `events`, the events queued in the partition's life
//!   (the stream counts entries, each of which carries many), and `last`, the id of the newest
//!   entry — what a backlog reading needs without `XINFO STREAM`, which answers whole entries.
use sha2::{Digest, Sha256};

/// Bytes of a dedup member: 96 bits of SHA-256. Redis keeps a 12-byte member in the same 16-byte
/// allocation as an 8-byte one, and at 96 bits a false duplicate is out of reach (≈1e-13 at a
/// billion members held).
pub const MEMBER_BYTES: usize = 12;

pub type Member = [u8; MEMBER_BYTES];

/// The meta hash of the partition whose stream is `stream`.
pub fn meta_of_stream(stream: &str) -> Option<String> {
    stream
        .strip_suffix("events")
        .map(|base| format!("{base}meta"))
}

/// The partition layout: how many streams, under which prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    prefix: String,
    count: u16,
}

/// One event's place: its partition and its dedup member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub partition: u16,
    pub member: Member,
}

impl Partitions {
    pub fn new(prefix: impl Into<String>, count: u16) -> Self {
        assert!(count > 0, "at least one partition");
        Self {
            prefix: prefix.into(),
            count,
        }
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn all(&self) -> impl Iterator<Item = u16> + Clone {
        0..self.count
    }

    /// `<prefix>:{p<p>}:`: what every key of partition `p` starts with.
    pub fn base(&self, p: u16) -> String {
        format!("{}:{{p{p}}}:", self.prefix)
    }

    /// `<prefix>:{p<p>}:events`.
    pub fn stream(&self, p: u16) -> String {
        format!("{}events", self.base(p))
    }

    /// Every stream, partition 0 first.
    pub fn streams(&self) -> Vec<String> {
        self.all().map(|p| self.stream(p)).collect()
    }

    /// `<prefix>:{p<p>}:meta`.
    pub fn meta(&self, p: u16) -> String {
        format!("{}meta", self.base(p))
    }

    /// `<prefix>:{p<p>}:dedup:<generation>`: the dedup set of one generation.
    pub fn dedup(&self, p: u16, generation: u64) -> String {
        format!("{}dedup:{generation}", self.base(p))
    }

    /// The partition of a stream key of this layout.
    pub fn of_stream(&self, key: &str) -> Option<u16> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{p")?;
        let (n, tail) = rest.split_once("}:")?;
        let p: u16 = n.parse().ok()?;
        (tail == "events" && p < self.count).then_some(p)
    }

    /// The place of the event `event_id` of `account_id`.
    pub fn place(&self, account_id: &str, event_id: &str) -> Placement {
        let mut h = Sha256::new();
        h.update(account_id.as_bytes());
        h.update(b":");
        h.update(event_id.as_bytes());
        self.place_digest(h.finalize().into())
    }

    /// The place of something queued under a key of its own (a replay: `dlq-replay:<letter id>`).
    pub fn place_key(&self, key: &str) -> Placement {
        self.place_digest(Sha256::digest(key.as_bytes()).into())
    }

    fn place_digest(&self, digest: [u8; 32]) -> Placement {
        let mut member = [0u8; MEMBER_BYTES];
        member.copy_from_slice(&digest[..MEMBER_BYTES]);
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&digest[24..32]);
        let partition = (u64::from_be_bytes(tail) % u64::from(self.count)) as u16;
        Placement { partition, member }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_partition_share_its_hash_tag() {
        let p = Partitions::new("sluice", 8);
        assert_eq!(p.stream(3), "sluice:{p3}:events");
        assert_eq!(p.meta(3), "sluice:{p3}:meta");
        assert_eq!(
            meta_of_stream("sluice:{p3}:events").as_deref(),
            Some("sluice:{p3}:meta")
        );
        assert_eq!(p.base(0), "sluice:{p0}:");
        assert_eq!(p.streams().len(), 8);
        assert_eq!(p.of_stream("sluice:{p7}:events"), Some(7));
        assert_eq!(p.of_stream("sluice:{p8}:events"), None);
        assert_eq!(p.of_stream("other:{p1}:events"), None);
    }

    #[test]
    fn placement_is_stable_and_spreads() {
        let p = Partitions::new("sluice", 8);
        // Fixed forever: a change here moves every event's reservation (see docs/PERFORMANCE.md
        // on changing P).
        let a = p.place("acc", "e1");
        assert_eq!(a, p.place("acc", "e1"));
        assert_ne!(a.member, p.place("acc2", "e1").member);
        let mut per = [0u32; 8];
        for i in 0..8000 {
            per[p.place("acc", &format!("e{i}")).partition as usize] += 1;
        }
        assert!(per.iter().all(|&n| (800..1200).contains(&n)), "{per:?}");
        assert_eq!(Partitions::new("x", 1).place("a", "b").partition, 0);
    }
}
