//! Query parameters, parsed and bounded: ranges, buckets, limits and cursors. Pure.
use crate::error::AnalyticsError;
use sluice_shared::rollup::{DAY_MS, HOUR_MS, MINUTE_MS};

/// The ranges the contract names, in milliseconds.
pub fn range_ms(range: &str) -> Result<i64, AnalyticsError> {
    match range {
        "15m" => Ok(15 * MINUTE_MS),
        "1h" => Ok(HOUR_MS),
        "24h" => Ok(DAY_MS),
        "7d" => Ok(7 * DAY_MS),
        _ => Err(AnalyticsError::invalid(
            "/range",
            "must be one of 15m, 1h, 24h, 7d",
        )),
    }
}

pub const MAX_POINTS: i64 = 1_440;

pub fn bucket_ms(bucket: &str, range_ms: i64) -> Result<i64, AnalyticsError> {
    let ms = match bucket {
        "1m" => MINUTE_MS,
        "5m" => 5 * MINUTE_MS,
        "15m" => 15 * MINUTE_MS,
        "1h" => HOUR_MS,
        "1d" => DAY_MS,
        _ => {
            return Err(AnalyticsError::invalid(
                "/bucket",
                "must be one of 1m, 5m, 15m, 1h, 1d",
            ))
        }
    };
    if range_ms / ms > MAX_POINTS {
        return Err(AnalyticsError::invalid(
            "/bucket",
            format!("too fine for the range: at most {MAX_POINTS} points"),
        ));
    }
    if ms > range_ms {
        return Err(AnalyticsError::invalid("/bucket", "wider than the range"));
    }
    Ok(ms)
}

pub fn limit(raw: Option<&str>, default: i64, max: i64) -> Result<i64, AnalyticsError> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(AnalyticsError::invalid(
                "/limit",
                format!("must be a whole number from 1 to {max}"),
            )),
        },
    }
}

/// A `userId` path value: 1 to 128 characters, counted as the event schema counts them (not bytes).
pub fn user_id(raw: &str) -> Result<&str, AnalyticsError> {
    match raw.chars().count() {
        1..=128 => Ok(raw),
        _ => Err(AnalyticsError::invalid("/userId", "1 to 128 characters")),
    }
}

/// An `eventType` filter, judged by the event schema itself (1..100 characters matching
/// `^[a-zA-Z][a-zA-Z0-9_.:-]*$`), so no value the api would refuse reaches a query. Empty is no
/// filter.
pub fn event_type(raw: Option<&str>) -> Result<Option<&str>, AnalyticsError> {
    let Some(t) = raw.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let probe = serde_json::json!({"eventType": t, "userId": "u"});
    match sluice_shared::event::validate(&probe) {
        Ok(_) => Ok(Some(t)),
        Err(violations) => {
            let message = violations
                .into_iter()
                .find(|v| v.path == "/eventType")
                .map(|v| v.message)
                .unwrap_or_else(|| "not a valid event type".into());
            Err(AnalyticsError::invalid("/eventType", message))
        }
    }
}

/// What [`Cursor::parse`] accepts, as the OpenAPI document declares it.
pub const CURSOR_PATTERN: &str = r"^-?[0-9]{1,18}:[\s\S]{1,300}$";

/// A page cursor: the sort position (`{millis}:{id}`) of the last item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub millis: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.millis, self.id)
    }

    /// Accepts exactly [`CURSOR_PATTERN`]: `-?` and 1 to 18 digits, `:`, 1 to 300 characters.
    pub fn parse(raw: &str) -> Result<Self, AnalyticsError> {
        let bad = || AnalyticsError::invalid("/before", "not a cursor this service returned");
        let (millis, id) = raw.split_once(':').ok_or_else(bad)?;
        let digits = millis.strip_prefix('-').unwrap_or(millis);
        if !(1..=18).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !(1..=300).contains(&id.chars().count()) {
            return Err(bad());
        }
        Ok(Cursor {
            millis: millis.parse().map_err(|_| bad())?,
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_and_buckets() {
        assert_eq!(range_ms("1h").unwrap(), HOUR_MS);
        assert!(range_ms("2h").is_err());
        assert_eq!(bucket_ms("1m", HOUR_MS).unwrap(), MINUTE_MS);
        assert!(
            bucket_ms("1m", 7 * DAY_MS).is_err(),
            "10080 points is too many"
        );
        assert!(bucket_ms("1d", HOUR_MS).is_err());
        assert!(bucket_ms("2m", HOUR_MS).is_err());
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
    fn event_types_follow_the_event_schema() {
        assert_eq!(event_type(None).unwrap(), None);
        assert_eq!(event_type(Some("")).unwrap(), None);
        assert_eq!(event_type(Some("page.view")).unwrap(), Some("page.view"));
        for bad in ["$where", "a\0b", "1abc", "a b", "café", &"a".repeat(101)] {
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
