//! `GET /api/v1/analytics/summary`: the window's totals per type from the rollups, its unique and
//! heaviest users from the sketches.
use std::collections::BTreeMap;

use fred::prelude::Client;
use mongodb::Database;

use super::{rollups, sketches, Result};
use crate::params::Range;
use crate::views::{Summary, TypeCount, UserCount};

/// The account's figures over `range`, ending at `now_ms`.
pub async fn summary(
    db: &Database,
    redis: &Client,
    account: &str,
    range: Range,
    now_ms: i64,
    top_n: usize,
) -> Result<Summary> {
    let start = now_ms - range.ms();
    let end = now_ms + 1;
    let (rows, unique, top) = tokio::try_join!(
        rollups::window(db, account, start, end, None),
        sketches::unique_users(redis, account, start, end),
        sketches::top_users(redis, account, start, end, top_n),
    )?;
    Ok(summarize(range, &rows, unique, top))
}

/// The answer from the window's rows and sketches; pure.
fn summarize(
    range: Range,
    rows: &[rollups::Row],
    unique_users: u64,
    top: Vec<(String, i64)>,
) -> Summary {
    let mut by_type: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, t, n) in rows {
        *by_type.entry(t).or_default() += n;
    }
    let total: i64 = by_type.values().sum();
    let mut types: Vec<(&str, i64)> = by_type.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let share = |count: i64| {
        if total > 0 {
            count as f64 / total as f64
        } else {
            0.0
        }
    };
    Summary {
        range,
        total_events: total,
        unique_users,
        events_by_type: types
            .into_iter()
            .map(|(event_type, count)| TypeCount {
                event_type: event_type.to_owned(),
                count,
                share: share(count),
            })
            .collect(),
        top_users: top
            .into_iter()
            .map(|(user_id, count)| UserCount { user_id, count })
            .collect(),
        events_per_second: total as f64 / (range.ms() as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_summed_heaviest_first_with_their_shares() {
        let rows = vec![
            (0, "click".to_owned(), 2),
            (60_000, "view".to_owned(), 5),
            (60_000, "click".to_owned(), 1),
            (0, "buy".to_owned(), 3),
        ];
        let s = summarize(Range::M15, &rows, 4, vec![("u".into(), 6)]);
        assert_eq!(s.total_events, 11);
        let types: Vec<(&str, i64)> = s
            .events_by_type
            .iter()
            .map(|t| (t.event_type.as_str(), t.count))
            .collect();
        // Ties by name.
        assert_eq!(types, [("view", 5), ("buy", 3), ("click", 3)]);
        let shares: f64 = s.events_by_type.iter().map(|t| t.share).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        assert!((s.events_per_second - 11.0 / 900.0).abs() < 1e-12);
        assert_eq!(s.top_users[0].user_id, "u");
    }

    #[test]
    fn an_empty_window_is_all_zeros() {
        let s = summarize(Range::D7, &[], 0, Vec::new());
        assert_eq!((s.total_events, s.events_per_second), (0, 0.0));
        assert!(s.events_by_type.is_empty() && s.top_users.is_empty());
    }
}
