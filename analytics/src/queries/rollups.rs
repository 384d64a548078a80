//! The per-account rollups the worker writes (`rollups_minute`, `rollups_hour`): one document per
//! account and bucket, with a count per eventType under `types`.
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime as BsonDate, Document};
use mongodb::Database;
use sluice_shared::rollup::{
    cover, type_field, type_from_field, HOUR_COLLECTION, HOUR_MS, MINUTE_COLLECTION, MINUTE_MS,
};

use super::{store_failed, Result};

/// One rollup count: `(bucket start, eventType, count)`.
pub type Row = (i64, String, i64);

/// Which rollups a read uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Minute,
    Hour,
}

impl Grain {
    fn collection(self) -> &'static str {
        match self {
            Grain::Minute => MINUTE_COLLECTION,
            Grain::Hour => HOUR_COLLECTION,
        }
    }

    /// The field holding the bucket's start.
    fn field(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
        }
    }
}

/// Every row of `grain` for `account` in `ranges`: one index range scan per time range (no `$or`,
/// which a server may answer with a collection scan).
pub async fn rows(
    db: &Database,
    grain: Grain,
    account: &str,
    ranges: &[std::ops::Range<i64>],
    event_type: Option<&str>,
) -> Result<Vec<Row>> {
    let scans = ranges
        .iter()
        .filter(|r| r.start < r.end)
        .map(|r| range_rows(db, grain, account, r.clone(), event_type));
    let parts = futures::future::try_join_all(scans).await?;
    Ok(parts.into_iter().flatten().collect())
}

async fn range_rows(
    db: &Database,
    grain: Grain,
    account: &str,
    range: std::ops::Range<i64>,
    event_type: Option<&str>,
) -> Result<Vec<Row>> {
    let field = grain.field();
    let filter = doc! {
        "accountId": account,
        field: {"$gte": BsonDate::from_millis(range.start), "$lt": BsonDate::from_millis(range.end)},
    };
    let projection = match event_type {
        Some(t) => doc! {field: 1, format!("types.{}", type_field(t)): 1},
        None => doc! {field: 1, "types": 1},
    };
    let docs: Vec<Document> = db
        .collection::<Document>(grain.collection())
        .find(filter)
        .projection(projection)
        .await
        .map_err(store_failed("querying rollups"))?
        .try_collect()
        .await
        .map_err(store_failed("reading rollups"))?;
    Ok(docs.iter().flat_map(|d| document_rows(d, field)).collect())
}

/// The rows of one rollup document; pure.
fn document_rows(d: &Document, field: &str) -> Vec<Row> {
    let (Ok(ts), Ok(types)) = (d.get_datetime(field), d.get_document("types")) else {
        return Vec::new();
    };
    types
        .iter()
        .filter_map(|(name, n)| count(n).map(|n| (ts.timestamp_millis(), type_from_field(name), n)))
        .collect()
}

/// A count as MongoDB may hold it.
pub fn count(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

/// Every rollup row of `[start, end)`: whole hours from the hour rollups, the edges from minutes.
pub async fn window(
    db: &Database,
    account: &str,
    start: i64,
    end: i64,
    event_type: Option<&str>,
) -> Result<Vec<Row>> {
    let c = cover(start, end, MINUTE_MS, HOUR_MS).with_open_tail(HOUR_MS);
    let (mut rows, minutes) = tokio::try_join!(
        rows(
            db,
            Grain::Hour,
            account,
            std::slice::from_ref(&c.coarse),
            event_type
        ),
        rows(db, Grain::Minute, account, &c.fine, event_type),
    )?;
    rows.extend(minutes);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollup_document_gives_a_row_per_type_with_its_name_decoded() {
        let d = doc! {
            "minute": BsonDate::from_millis(60_000),
            "types": {"page%2Eview": 3_i32, "click": 2_i64, "odd": 1.0, "bad": "x"},
        };
        let mut rows = document_rows(&d, "minute");
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (60_000, "click".to_owned(), 2),
                (60_000, "odd".to_owned(), 1),
                (60_000, "page.view".to_owned(), 3),
            ]
        );
        assert!(document_rows(&doc! {"types": {}}, "minute").is_empty());
    }
}
