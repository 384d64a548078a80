//! The account's dead letters, as its owner sees them: a page of them newest first (by
//! `failedAt`, then `_id`) after a cursor, never an offset, and without the operators' fields
//! (`rawEntry`, `consumer`, `streamId`). Replay itself is `sluice_store::replay_one`.
use mongodb::bson::{doc, DateTime as BsonDate, Document};
use mongodb::Database;
use serde::Serialize;
use sluice_http::ApiError;
use sluice_store::dead_letter::field;
use sluice_store::{DeadLetter, DeadLetterReason};
use utoipa::ToSchema;

/// `GET /api/v1/dlq`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetterView>,
    /// The `before` of the next page; `null` on the last one.
    pub next_before: Option<String>,
}

/// One dead letter, as its account sees it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    /// What `POST /api/v1/dlq/{id}/replay` takes.
    pub id: String,
    pub event_id: Option<String>,
    /// `invalid`, `write_rejected` or `poison`.
    #[schema(value_type = String, example = "write_rejected")]
    pub reason: DeadLetterReason,
    /// Why it was refused.
    pub error: String,
    /// Deliveries of the entry when it was dead-lettered.
    pub attempts: i64,
    /// RFC 3339.
    pub failed_at: Option<String>,
    /// RFC 3339; `null` until replayed.
    pub replayed_at: Option<String>,
    /// The original event, as far as it could be read.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(l: DeadLetter) -> Self {
        let rfc3339 = |t: BsonDate| t.try_to_rfc3339_string().ok();
        DeadLetterView {
            id: l.id,
            event_id: l.event_id,
            reason: l.reason,
            error: l.error,
            attempts: l.attempts,
            failed_at: rfc3339(l.failed_at),
            replayed_at: l.replayed_at.and_then(rfc3339),
            event: l
                .event
                .map_or(serde_json::Value::Null, |e| e.into_relaxed_extjson()),
        }
    }
}

/// The largest page, and the page when none is asked for.
pub const MAX_LIMIT: i64 = 200;
pub const DEFAULT_LIMIT: i64 = 50;

pub use sluice_http::cursor::{Cursor, CURSOR_PATTERN};

/// Which page of which letters: the query parameters, parsed and bounded. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: i64,
    pub reason: Option<DeadLetterReason>,
    pub before: Option<Cursor>,
}

impl PageRequest {
    /// `limit` 1 to 200 (default 50), `reason` one of the reasons (empty: all), `before` a
    /// cursor; a value that breaks its rule is a 400 naming the parameter.
    pub fn parse(
        limit: Option<&str>,
        reason: Option<&str>,
        before: Option<&str>,
    ) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_request(
                        "/limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        let reason = reason
            .filter(|r| !r.is_empty())
            .map(str::parse::<DeadLetterReason>)
            .transpose()
            .map_err(|e| ApiError::invalid_request("/reason", e.to_string()))?;
        let before = before.map(Cursor::parse).transpose()?;
        Ok(Self {
            limit,
            reason,
            before,
        })
    }
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: no letter fails outside them (and some
/// servers refuse such dates in a query).
const MIN_STORED_MS: i64 = -62_135_596_800_000;
const MAX_STORED_MS: i64 = 253_402_300_799_999;

/// The page of `account`'s letters `request` asks for.
#[tracing::instrument(name = "Listing an account's dead letters", skip_all)]
pub async fn page(
    db: &Database,
    account: &str,
    request: &PageRequest,
) -> anyhow::Result<DeadLetterPage> {
    let mut filter = doc! {field::ACCOUNT_ID: account};
    if let Some(r) = request.reason {
        filter.insert(field::REASON, r);
    }
    let letters = newest_first(db, filter, request.before.as_ref(), request.limit).await?;
    let next_before = letters
        .last()
        .filter(|_| letters.len() as i64 == request.limit)
        .map(|last| {
            Cursor {
                millis: last.failed_at.timestamp_millis(),
                id: last.id.clone(),
            }
            .encode()
        });
    Ok(DeadLetterPage {
        dead_letters: letters.into_iter().map(DeadLetterView::from).collect(),
        next_before,
    })
}

/// Up to `limit` letters matching `filter`, newest first, strictly after `after`. The position
/// is two range scans (the rest of its instant, then everything older), not an `$or`, which a
/// server may answer with a collection scan.
async fn newest_first(
    db: &Database,
    filter: Document,
    after: Option<&Cursor>,
    limit: i64,
) -> anyhow::Result<Vec<DeadLetter>> {
    let Some(after) = after else {
        return find(db, filter, limit).await;
    };
    if !(MIN_STORED_MS..=MAX_STORED_MS).contains(&after.millis) {
        let mut older = filter;
        let bound = if after.millis > MAX_STORED_MS {
            doc! {"$lte": BsonDate::from_millis(MAX_STORED_MS)}
        } else {
            doc! {"$lt": BsonDate::from_millis(MIN_STORED_MS)}
        };
        older.insert(field::FAILED_AT, bound);
        return find(db, older, limit).await;
    }
    let at = BsonDate::from_millis(after.millis);
    let mut same_instant = filter.clone();
    same_instant.insert(field::FAILED_AT, at);
    same_instant.insert(field::ID, doc! {"$lt": &after.id});
    let mut older = filter;
    older.insert(field::FAILED_AT, doc! {"$lt": at});
    let (mut letters, older) =
        tokio::try_join!(find(db, same_instant, limit), find(db, older, limit))?;
    letters.extend(older);
    letters.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(letters)
}

async fn find(db: &Database, filter: Document, limit: i64) -> anyhow::Result<Vec<DeadLetter>> {
    use anyhow::Context;
    let mut cursor = sluice_store::dead_letters(db)
        .find(filter)
        .sort(doc! {field::FAILED_AT: -1, field::ID: -1})
        .limit(limit)
        .await
        .context("querying dead letters")?;
    let mut letters = Vec::new();
    while cursor.advance().await.context("reading dead letters")? {
        letters.push(
            cursor
                .deserialize_current()
                .context("reading a dead letter")?,
        );
    }
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_page_request_is_bounded_and_names_the_parameter_it_refuses() {
        assert_eq!(
            PageRequest::parse(None, None, None).unwrap(),
            PageRequest {
                limit: 50,
                reason: None,
                before: None
            }
        );
        let r = PageRequest::parse(Some("200"), Some("poison"), Some("5:1-0:e1")).unwrap();
        assert_eq!(r.limit, 200);
        assert_eq!(r.reason, Some(DeadLetterReason::Poison));
        assert_eq!(
            r.before,
            Some(Cursor {
                millis: 5,
                id: "1-0:e1".into()
            })
        );
        assert_eq!(
            PageRequest::parse(None, Some(""), None).unwrap().reason,
            None
        );
        for (limit, reason, before, path) in [
            (Some("0"), None, None, "/limit"),
            (Some("201"), None, None, "/limit"),
            (Some("x"), None, None, "/limit"),
            (None, Some("whatever"), None, "/reason"),
            (None, None, Some("nonsense"), "/before"),
        ] {
            let body = PageRequest::parse(limit, reason, before)
                .unwrap_err()
                .body();
            assert_eq!(body.error.code, "invalid_request");
            assert_eq!(body.error.details.unwrap()[0].path, path);
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

    proptest! {
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
}
