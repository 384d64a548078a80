//! The page cursor of every paged endpoint: `{millis}:{id}`, the sort position of the last item
//! of the previous page. Parsing is strict and pure; a cursor no service returned is a 400.
use serde::Serialize;

use crate::error::ApiError;

/// What [`Cursor::parse`] accepts, as the OpenAPI document declares it.
pub const CURSOR_PATTERN: &str = r"^-?[0-9]{1,18}:[\s\S]{1,300}$";

/// A page cursor: the sort position (`{millis}:{id}`) of the last item of the previous page, on every paged endpoint (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Cursor {
    pub millis: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.millis, self.id)
    }

    /// The `nextBefore` of a page read with `limit`: the position of its last item when the page
    /// is full (there may be more), none otherwise.
    pub fn after_full_page<T>(
        page: &[T],
        limit: i64,
        position: impl Fn(&T) -> (i64, &str),
    ) -> Option<String> {
        let last = page.last().filter(|_| page.len() as i64 == limit)?;
        let (millis, id) = position(last);
        Some(
            Cursor {
                millis,
                id: id.to_owned(),
            }
            .encode(),
        )
    }

    /// A page size as the paged endpoints take it: 1 to 500, 50 when absent (else a 400 at
    /// `/limit`).
    pub fn page_limit(raw: Option<&str>) -> Result<i64, ApiError> {
        match raw {
            None => Ok(50),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=500).contains(n))
                .ok_or_else(|| ApiError::invalid_request("/limit", "a whole number from 1 to 500")),
        }
    }

    /// Accepts exactly [`CURSOR_PATTERN`]: `-?` and 1 to 18 digits, `:`, 1 to 300 characters.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::invalid_request("/before", "not a cursor this service returned");
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

    #[test]
    fn a_full_page_names_its_last_item_and_a_short_one_nothing() {
        let page = [(5_i64, "b".to_string()), (3, "a".to_string())];
        fn at(d: &(i64, String)) -> (i64, &str) {
            (d.0, &d.1)
        }
        assert_eq!(
            Cursor::after_full_page(&page, 2, at).as_deref(),
            Some("3:a")
        );
        assert_eq!(Cursor::after_full_page(&page, 3, at), None);
        assert_eq!(Cursor::after_full_page(&page[..0], 0, at), None);
        let next = Cursor::after_full_page(&page, 2, at).unwrap();
        assert_eq!(
            Cursor::parse(&next).unwrap(),
            Cursor {
                millis: 3,
                id: "a".into()
            }
        );
    }
}
