//! Cursor pages, newest first: never an offset.
use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime as BsonDate, Document};
use mongodb::Collection;
use serde::de::DeserializeOwned;

use super::{store_failed, Result};
use crate::params::Cursor;

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z.
const MIN_STORED_MS: i64 = -62_135_596_800_000;
const MAX_STORED_MS: i64 = 253_402_300_799_999;

/// Up to `limit` documents matching `filter`, newest first by `time_field` then `_id`, strictly
/// after the position `after` (`(millis, _id)` of the previous page's last document). The
/// position is two range scans (the rest of its instant, then everything older), not an `$or`,
/// which a server may answer with a collection scan.
pub async fn newest_first<T>(
    coll: &Collection<T>,
    filter: Document,
    time_field: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<T>>
where
    T: DeserializeOwned + Unpin + Send + Sync,
{
    let Some((millis, id)) = after else {
        return page(coll, filter, time_field, limit).await;
    };
    // No event is stored outside years 0001..=9999 (and some servers refuse such dates in a
    // query): a position beyond them is "everything older than the edge".
    if !(MIN_STORED_MS..=MAX_STORED_MS).contains(&millis) {
        let mut older = filter;
        let bound = if millis > MAX_STORED_MS {
            doc! {"$lte": BsonDate::from_millis(MAX_STORED_MS)}
        } else {
            doc! {"$lt": BsonDate::from_millis(MIN_STORED_MS)}
        };
        older.insert(time_field, bound);
        return page(coll, older, time_field, limit).await;
    }
    let at = BsonDate::from_millis(millis);
    let mut same_instant = filter.clone();
    same_instant.insert(time_field, at);
    same_instant.insert("_id", doc! {"$lt": id});
    let mut older = filter;
    older.insert(time_field, doc! {"$lt": at});
    let (mut docs, older) = tokio::try_join!(
        page(coll, same_instant, time_field, limit),
        page(coll, older, time_field, limit),
    )?;
    docs.extend(older);
    docs.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(docs)
}

async fn page<T>(
    coll: &Collection<T>,
    filter: Document,
    time_field: &str,
    limit: i64,
) -> Result<Vec<T>>
where
    T: DeserializeOwned + Unpin + Send + Sync,
{
    coll.find(filter)
        .sort(doc! {time_field: -1, "_id": -1})
        .limit(limit)
        .await
        .map_err(store_failed("querying a page"))?
        .try_collect()
        .await
        .map_err(store_failed("reading a page"))
}

/// The cursor of the page after `docs`, when the page was full: the last one's position.
pub fn next_cursor<T>(docs: &[T], limit: i64, position: impl Fn(&T) -> Cursor) -> Option<String> {
    let last = docs.last().filter(|_| docs.len() as i64 == limit)?;
    Some(position(last).encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_page_has_a_next_cursor() {
        let position = |n: &i64| Cursor {
            millis: *n,
            id: format!("e{n}"),
        };
        assert_eq!(next_cursor(&[3, 2], 2, position), Some("2:e2".to_owned()));
        assert_eq!(next_cursor(&[3], 2, position), None);
        assert_eq!(next_cursor::<i64>(&[], 2, position), None);
    }
}
