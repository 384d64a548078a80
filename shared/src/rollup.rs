//! Rollup names and time buckets shared by the worker (which writes rollups as it stores events)
//! and analytics (which reads them): UTC minutes, hours and days of the event's own `timestamp`.
use std::ops::Range;

pub const MINUTE_COLLECTION: &str = "rollups_minute";
pub const HOUR_COLLECTION: &str = "rollups_hour";
/// Hour buckets whose rollups may have missed events, for the worker's reconciler.
pub const SUSPECT_COLLECTION: &str = "rollups_suspect";
/// Sketches (HyperLogLogs, top users) live a day longer than the longest range asked for.
pub const SKETCH_TTL_SECS: i64 = 8 * 24 * 3600;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

pub fn floor_to(ts_ms: i64, unit_ms: i64) -> i64 {
    ts_ms.div_euclid(unit_ms) * unit_ms
}

/// `{accountId}:{bucketMillis}`: one rollup document, holding `total` and a `types` sub-document
/// with a count per eventType (one document per bucket, not per type, so a range reads few).
pub fn rollup_id(account_id: &str, bucket_ms: i64) -> String {
    format!("{account_id}:{bucket_ms}")
}

/// An eventType as a field name under `types`, encoded reversibly: `.` would be a path separator
/// and a leading `$` an operator to MongoDB, so `%` becomes `%25`, `.` `%2E` and `$` `%24`
/// (names from the sources are verbatim text: `Order Completed`, `$pageview`). Names of Sluice's
/// own API hold none of `%$`, so what was written before this encoding reads back the same.
pub fn type_field(event_type: &str) -> String {
    let mut out = String::with_capacity(event_type.len());
    for c in event_type.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '$' => out.push_str("%24"),
            c => out.push(c),
        }
    }
    out
}

pub fn type_from_field(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at..at + 3);
        let decoded = match code {
            Some("%25") => Some('%'),
            Some("%2E") => Some('.'),
            Some("%24") => Some('$'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// HyperLogLog of the userIds of an account in one minute or hour. The account's hash tag
/// `{a<accountId>}` puts all its sketches in one slot: a PFCOUNT or ZUNION over many of them is one
/// command on a Redis Cluster too.
pub fn hll_key(account_id: &str, unit: char, bucket_ms: i64) -> String {
    format!("hll:{{a{account_id}}}:{unit}:{bucket_ms}")
}

/// Sorted set of per-user event counts of an account in one hour or day (capped: see `top_cap`),
/// tagged like [`hll_key`].
pub fn top_key(account_id: &str, unit: char, bucket_ms: i64) -> String {
    format!("top:{{a{account_id}}}:{unit}:{bucket_ms}")
}

/// A time window `[start, end)` in milliseconds split into whole units of `coarse_ms` inside it
/// and the `fine_ms` pieces at its edges, so a long range reads few coarse buckets and stays exact
/// to the fine unit.
#[derive(Debug, PartialEq, Eq)]
pub struct Cover {
    /// Whole coarse buckets, as a range of bucket starts (step `coarse_ms`).
    pub coarse: Range<i64>,
    /// Fine buckets before and after the coarse part, as ranges of bucket starts (step `fine_ms`).
    pub fine: Vec<Range<i64>>,
}

pub fn cover(start_ms: i64, end_ms: i64, fine_ms: i64, coarse_ms: i64) -> Cover {
    let start = floor_to(start_ms, fine_ms);
    let end = floor_to(end_ms - 1, fine_ms) + fine_ms;
    let first_coarse = floor_to(start + coarse_ms - 1, coarse_ms);
    let last_coarse = floor_to(end, coarse_ms);
    if first_coarse >= last_coarse {
        return Cover {
            coarse: 0..0,
            fine: std::iter::once(start..end).collect(),
        };
    }
    let mut fine = Vec::new();
    if start < first_coarse {
        fine.push(start..first_coarse);
    }
    if last_coarse < end {
        fine.push(last_coarse..end);
    }
    Cover {
        coarse: first_coarse..last_coarse,
        fine,
    }
}

impl Cover {
    /// Reads the last, still filling coarse bucket whole instead of minute by minute: up to `now`
    /// it holds the same events (only events stamped in the future, later in that bucket, differ).
    pub fn with_open_tail(mut self, coarse_ms: i64) -> Self {
        if self.coarse.is_empty() {
            return self;
        }
        if let Some(last) = self.fine.last() {
            if last.start == self.coarse.end && last.end - last.start < coarse_ms {
                self.coarse.end += coarse_ms;
                self.fine.pop();
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_short_window_is_all_fine() {
        let c = cover(10 * MINUTE_MS, 25 * MINUTE_MS, MINUTE_MS, HOUR_MS);
        assert_eq!(c.coarse, 0..0);
        assert_eq!(c.fine.len(), 1);
        assert_eq!(c.fine[0], 10 * MINUTE_MS..25 * MINUTE_MS);
    }

    #[test]
    fn a_long_window_is_whole_hours_and_edge_minutes() {
        let start = 2 * HOUR_MS + 30 * MINUTE_MS;
        let end = 30 * HOUR_MS + 15 * MINUTE_MS;
        let c = cover(start, end, MINUTE_MS, HOUR_MS);
        assert_eq!(c.coarse, 3 * HOUR_MS..30 * HOUR_MS);
        assert_eq!(c.fine, vec![start..3 * HOUR_MS, 30 * HOUR_MS..end]);
    }

    #[test]
    fn event_types_with_dots_survive_as_field_names() {
        assert_eq!(type_field("checkout.completed"), "checkout%2Ecompleted");
        assert_eq!(type_from_field(&type_field("a.b:c-d_e")), "a.b:c-d_e");
        assert_eq!(type_field("$pageview"), "%24pageview");
        assert_eq!(type_field("50% off.now"), "50%25 off%2Enow");
        for name in [
            "$pageview",
            "Order Completed",
            "50% off.now",
            "%2E",
            "a%",
            "$.%$",
        ] {
            assert_eq!(type_from_field(&type_field(name)), name);
            assert!(!type_field(name).contains(['.', '$']));
        }
    }

    #[test]
    fn the_open_tail_is_read_as_its_whole_bucket() {
        let start = 2 * HOUR_MS + 30 * MINUTE_MS;
        let end = 30 * HOUR_MS + 15 * MINUTE_MS;
        let c = cover(start, end, MINUTE_MS, HOUR_MS).with_open_tail(HOUR_MS);
        assert_eq!(c.coarse, 3 * HOUR_MS..31 * HOUR_MS);
        assert_eq!(c.fine, vec![start..3 * HOUR_MS]);
        // Short windows stay minute-exact.
        let short = cover(10 * MINUTE_MS, 25 * MINUTE_MS, MINUTE_MS, HOUR_MS);
        assert_eq!(short.with_open_tail(HOUR_MS).fine.len(), 1);
    }

    #[test]
    fn buckets_floor_in_utc_also_before_1970() {
        assert_eq!(floor_to(-1, MINUTE_MS), -MINUTE_MS);
        assert_eq!(floor_to(59_999, MINUTE_MS), 0);
    }

    proptest! {
        #[test]
        fn a_cover_tiles_the_minutes_of_the_window_exactly_once(
            start in 0i64..(10 * DAY_MS), len in 1i64..(8 * DAY_MS)
        ) {
            let end = start + len;
            let c = cover(start, end, MINUTE_MS, HOUR_MS);
            let mut minutes: i64 = (c.coarse.end - c.coarse.start) / MINUTE_MS;
            for r in &c.fine {
                prop_assert!(r.start % MINUTE_MS == 0 && r.end % MINUTE_MS == 0);
                prop_assert!(r.end <= c.coarse.start || r.start >= c.coarse.end || c.coarse.is_empty());
                minutes += (r.end - r.start) / MINUTE_MS;
            }
            let expected = (floor_to(end - 1, MINUTE_MS) + MINUTE_MS - floor_to(start, MINUTE_MS)) / MINUTE_MS;
            prop_assert_eq!(minutes, expected);
        }
    }
}
