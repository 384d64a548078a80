//! Query and path parameters, parsed and bounded: ranges, buckets, limits, user ids, event types
//! and cursors. Pure. Each refusal is a 400 naming the parameter as a JSON pointer.
use serde::Serialize;
use sluice_http::ApiError;
use sluice_shared::rollup::{DAY_MS, HOUR_MS, MINUTE_MS};
use utoipa::ToSchema;

/// The windows the contract names, each ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
pub enum Range {
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "7d")]
    D7,
}

impl Range {
    pub const ALL: [Range; 4] = [Range::M15, Range::H1, Range::H24, Range::D7];

    /// The contract's name (`15m`, `1h`, `24h`, `7d`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::M15 => "15m",
            Range::H1 => "1h",
            Range::H24 => "24h",
            Range::D7 => "7d",
        }
    }

    pub fn ms(self) -> i64 {
        match self {
            Range::M15 => 15 * MINUTE_MS,
            Range::H1 => HOUR_MS,
            Range::H24 => DAY_MS,
            Range::D7 => 7 * DAY_MS,
        }
    }

    /// A `range` parameter; absent is `1h`.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = raw else {
            return Ok(Range::H1);
        };
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| ApiError::invalid_request("/range", "must be one of 15m, 1h, 24h, 7d"))
    }
}

/// The most points one time series holds.
pub const MAX_POINTS: i64 = 1_440;

/// Bucket widths of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
pub enum Bucket {
    #[serde(rename = "1m")]
    M1,
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "1d")]
    D1,
}

impl Bucket {
    pub const ALL: [Bucket; 5] = [Bucket::M1, Bucket::M5, Bucket::M15, Bucket::H1, Bucket::D1];

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::M1 => "1m",
            Bucket::M5 => "5m",
            Bucket::M15 => "15m",
            Bucket::H1 => "1h",
            Bucket::D1 => "1d",
        }
    }

    pub fn ms(self) -> i64 {
        match self {
            Bucket::M1 => MINUTE_MS,
            Bucket::M5 => 5 * MINUTE_MS,
            Bucket::M15 => 15 * MINUTE_MS,
            Bucket::H1 => HOUR_MS,
            Bucket::D1 => DAY_MS,
        }
    }

    /// A `bucket` parameter for `range` (absent is `1m`): at most [`MAX_POINTS`] points, and no
    /// wider than the range.
    pub fn parse(raw: Option<&str>, range: Range) -> Result<Self, ApiError> {
        let bucket = match raw {
            None => Bucket::M1,
            Some(raw) => Self::ALL
                .into_iter()
                .find(|b| b.as_str() == raw)
                .ok_or_else(|| {
                    ApiError::invalid_request("/bucket", "must be one of 1m, 5m, 15m, 1h, 1d")
                })?,
        };
        if range.ms() / bucket.ms() > MAX_POINTS {
            return Err(ApiError::invalid_request(
                "/bucket",
                format!("too fine for the range: at most {MAX_POINTS} points"),
            ));
        }
        if bucket.ms() > range.ms() {
            return Err(ApiError::invalid_request("/bucket", "wider than the range"));
        }
        Ok(bucket)
    }
}

/// A page size from 1 to `max`; absent is `default`.
pub fn limit(raw: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_request(
                "/limit",
                format!("must be a whole number from 1 to {max}"),
            )),
        },
    }
}

/// A `userId` path value: 1 to 128 characters, counted as the event schema counts them (not bytes).
pub fn user_id(raw: &str) -> Result<&str, ApiError> {
    match raw.chars().count() {
        1..=128 => Ok(raw),
        _ => Err(ApiError::invalid_request("/userId", "1 to 128 characters")),
    }
}

/// An `eventType` filter: any name an event can carry — Sluice's own identifiers and the
/// sources' verbatim names (`Order Completed`, `$pageview`: printable text up to 200 characters).
/// Empty is no filter.
pub fn event_type(raw: Option<&str>) -> Result<Option<&str>, ApiError> {
    let Some(t) = raw.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    match sluice_shared::event::source_event_type_problem(t) {
        None => Ok(Some(t)),
        Some(problem) => Err(ApiError::invalid_request("/eventType", problem)),
    }
}

// The one cursor of every paged endpoint (a user's events here, dead letters in the api).
pub use sluice_http::cursor::{Cursor, CURSOR_PATTERN};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pointer(e: &ApiError) -> String {
        e.body().error.details.unwrap_or_default()[0].path.clone()
    }

    #[test]
    fn ranges_and_buckets() {
        assert_eq!(Range::parse(Some("1h")).unwrap().ms(), HOUR_MS);
        assert_eq!(Range::parse(None).unwrap(), Range::H1);
        assert_eq!(pointer(&Range::parse(Some("2h")).unwrap_err()), "/range");
        assert_eq!(
            Bucket::parse(Some("1m"), Range::H1).unwrap().ms(),
            MINUTE_MS
        );
        assert_eq!(Bucket::parse(None, Range::H1).unwrap(), Bucket::M1);
        assert!(
            Bucket::parse(Some("1m"), Range::D7).is_err(),
            "10080 points is too many"
        );
        assert!(Bucket::parse(Some("1d"), Range::H1).is_err());
        assert!(Bucket::parse(Some("1d"), Range::H24).is_ok());
        assert_eq!(
            pointer(&Bucket::parse(Some("2m"), Range::H1).unwrap_err()),
            "/bucket"
        );
    }

    #[test]
    fn ranges_and_buckets_are_named_as_serde_writes_them() {
        for r in Range::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(Range::parse(Some(r.as_str())).unwrap(), r);
        }
        for b in Bucket::ALL {
            assert_eq!(serde_json::to_value(b).unwrap(), b.as_str());
        }
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None, 50, 200).unwrap(), 50);
        assert_eq!(limit(Some("200"), 50, 200).unwrap(), 200);
        for bad in ["0", "201", "-1", "x", ""] {
            assert!(limit(Some(bad), 50, 200).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids_count_characters_not_bytes() {
        assert!(user_id(&"é".repeat(128)).is_ok());
        assert!(user_id(&"é".repeat(129)).is_err());
        assert!(user_id("").is_err());
    }

    #[test]
    fn event_types_are_any_name_an_event_can_carry() {
        assert_eq!(event_type(None).unwrap(), None);
        assert_eq!(event_type(Some("")).unwrap(), None);
        for good in [
            "page.view",
            "Order Completed",
            "$pageview",
            "café",
            &"é".repeat(200),
        ] {
            assert_eq!(event_type(Some(good)).unwrap(), Some(good));
        }
        for bad in ["a\0b", "tab\there", "\u{85}", &"a".repeat(201)] {
            let err = event_type(Some(bad)).unwrap_err();
            assert!(err.to_string().starts_with("/eventType"), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn any_event_type_filter_is_a_filter_or_a_400(raw in "\\PC{0,120}") {
            let _ = event_type(Some(&raw));
        }

        #[test]
        fn cursors_round_trip(millis in -999_999_999_999_999_999i64..=999_999_999_999_999_999, id in "[A-Za-z0-9_.:-]{1,128}") {
            let c = Cursor { millis, id };
            prop_assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        }

        #[test]
        fn any_text_is_a_cursor_or_a_400(raw in ".{0,64}") {
            let _ = Cursor::parse(&raw);
        }
    }

    #[test]
    fn cursors_hold_at_most_18_digits_and_no_sign_but_minus() {
        assert!(Cursor::parse("-999999999999999999:a").is_ok());
        for bad in ["+5:a", "1000000000000000000:a", ":a", "5:", "-:a", "5"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
        assert!(Cursor::parse(&format!("5:{}", "é".repeat(300))).is_ok());
    }
}
