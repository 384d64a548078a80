//! What flushed batches leave to do together, about once a rollup interval: their rollups, and
//! the acknowledgement of their entries, which waits for the rollups so that a worker killed in
//! between has its entries redelivered (and their buckets reconciled) rather than lost from the
//! aggregates. One bulk write then serves many batches. Pure.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::rollups::Increments;

/// The rollups and acknowledgements of the batches flushed since the last rollup write.
#[derive(Debug, Default)]
pub struct RollupBuffer {
    held: Held,
    /// When the oldest of them was held.
    since: Option<Instant>,
}

/// What the buffer hands over to be written, then acknowledged.
#[derive(Debug, Default, PartialEq)]
pub struct Held {
    pub increments: Increments,
    /// Stream ids to acknowledge once the rollups are written.
    pub acks: Vec<String>,
    /// (account, hour) buckets where an insert met an already stored event: their rollups may
    /// have missed it (a retry after a lost reply, a redelivery after a crash).
    pub suspect: BTreeSet<(String, i64)>,
}

impl RollupBuffer {
    /// Holds one stored batch: its increments, its entries to acknowledge, its suspect buckets.
    pub fn hold(
        &mut self,
        increments: Increments,
        acks: impl IntoIterator<Item = String>,
        suspect: impl IntoIterator<Item = (String, i64)>,
        now: Instant,
    ) {
        self.held.increments.merge(increments);
        self.held.acks.extend(acks);
        self.held.suspect.extend(suspect);
        self.since.get_or_insert(now);
    }

    /// Everything held, once the oldest of it has waited `due`; nothing before.
    pub fn take_due(&mut self, due: Duration, now: Instant) -> Option<Held> {
        let since = self.since?;
        (now.saturating_duration_since(since) >= due).then(|| self.take())?
    }

    /// Everything held, due or not (at exit); `None` when nothing is.
    pub fn take_all(&mut self) -> Option<Held> {
        self.since?;
        self.take()
    }

    fn take(&mut self) -> Option<Held> {
        self.since = None;
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use sluice_shared::event::QueuedEvent;

    fn increments(user: &str) -> Increments {
        Increments::of(&[QueuedEvent {
            event_id: format!("{user}-1"),
            account_id: "acc".into(),
            event_type: "click".into(),
            user_id: user.into(),
            session_id: None,
            timestamp: Utc.with_ymd_and_hms(2024, 3, 1, 10, 5, 0).unwrap(),
            received_at: Utc.with_ymd_and_hms(2024, 3, 1, 10, 5, 0).unwrap(),
            properties: None,
            origin: None,
            plan: None,
        }])
    }

    const DUE: Duration = Duration::from_millis(1_000);

    #[test]
    fn nothing_is_handed_over_before_the_oldest_batch_has_waited_the_interval() {
        let t0 = Instant::now();
        let mut b = RollupBuffer::default();
        assert_eq!(b.take_due(DUE, t0), None);
        b.hold(increments("u1"), ["1-0".to_owned()], [], t0);
        b.hold(
            increments("u2"),
            ["2-0".to_owned()],
            [("acc".to_owned(), 7)],
            t0 + DUE / 2,
        );
        assert_eq!(b.take_due(DUE, t0 + DUE / 2), None);
        let held = b.take_due(DUE, t0 + DUE).expect("due");
        assert_eq!(held.acks, ["1-0", "2-0"]);
        assert_eq!(held.suspect, BTreeSet::from([("acc".to_owned(), 7)]));
        let mut both = increments("u1");
        both.merge(increments("u2"));
        assert_eq!(held.increments, both);
        assert_eq!(b.take_due(DUE, t0 + DUE * 10), None, "handed over once");
    }

    #[test]
    fn at_exit_everything_held_is_handed_over_due_or_not() {
        let t0 = Instant::now();
        let mut b = RollupBuffer::default();
        assert_eq!(b.take_all(), None);
        b.hold(increments("u1"), ["1-0".to_owned()], [], t0);
        assert_eq!(b.take_all().expect("held").acks, ["1-0"]);
        assert_eq!(b.take_all(), None);
    }

    #[test]
    fn the_interval_runs_from_the_first_batch_after_a_hand_over() {
        let t0 = Instant::now();
        let mut b = RollupBuffer::default();
        b.hold(increments("u1"), ["1-0".to_owned()], [], t0);
        assert!(b.take_due(DUE, t0 + DUE).is_some());
        b.hold(increments("u1"), ["2-0".to_owned()], [], t0 + DUE * 2);
        assert_eq!(b.take_due(DUE, t0 + DUE * 2), None);
        assert!(b.take_due(DUE, t0 + DUE * 3).is_some());
    }
}
