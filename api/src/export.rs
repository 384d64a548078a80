//! Export: an account's stored events as NDJSON (one event per line, as the query API shows
//! them), streamed from a MongoDB cursor in chunks of about 64 KiB, gzip-compressed on the way
//! when the client accepts it. Memory stays bounded by a cursor batch and a chunk, whatever the
//! number of events.
use std::io::Write;

use actix_web::web::Bytes;
use flate2::write::GzEncoder;
use futures::{Stream, StreamExt};
use mongodb::bson::{doc, Document};
use mongodb::{Collection, Cursor};
use sluice_store::StoredEvent;

use crate::event_queries::EventView;

/// Bytes gathered before a chunk goes out.
const CHUNK: usize = 64 * 1024;
/// Documents per cursor batch.
const BATCH: u32 = 1_000;

/// What to export.
pub enum Selection<'a> {
    /// Every event of one user (`userId`), oldest first.
    User(&'a str),
    /// The account's events in `[from, to)`, of one type when given, oldest first.
    Events {
        event_type: Option<&'a str>,
        from: Option<chrono::DateTime<chrono::Utc>>,
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
}

fn millis(t: chrono::DateTime<chrono::Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(t.timestamp_millis())
}

/// The filter and the index that serves it.
fn query(account: &str, selection: &Selection<'_>) -> (Document, &'static str) {
    let mut filter = doc! {"accountId": account};
    match selection {
        Selection::User(user) => {
            filter.insert("userId", *user);
            (filter, "q_account_user_time")
        }
        Selection::Events {
            event_type,
            from,
            to,
        } => {
            if let Some(t) = event_type {
                filter.insert("eventType", *t);
            }
            let mut time = Document::new();
            if let Some(from) = from {
                // `$gt` a millisecond before rather than `$gte` (see event_queries).
                time.insert("$gt", millis(*from - chrono::Duration::milliseconds(1)));
            }
            if let Some(to) = to {
                time.insert("$lt", millis(*to));
            }
            if !time.is_empty() {
                filter.insert("timestamp", time);
            }
            let index = if event_type.is_some() {
                "q_account_type_time"
            } else {
                "q_account_time"
            };
            (filter, index)
        }
    }
}

/// Opens the cursor: oldest first, through the index of the selection (or without a hint when
/// the server does not have it).
pub async fn open(
    events: &Collection<StoredEvent>,
    account: &str,
    selection: &Selection<'_>,
) -> anyhow::Result<Cursor<StoredEvent>> {
    let (filter, index) = query(account, selection);
    let sort = doc! {"timestamp": 1, "_id": 1};
    let hinted = events
        .find(filter.clone())
        .sort(sort.clone())
        .batch_size(BATCH)
        .hint(mongodb::options::Hint::Name(index.to_owned()))
        .await;
    match hinted {
        Ok(cursor) => Ok(cursor),
        Err(_) => Ok(events.find(filter).sort(sort).batch_size(BATCH).await?),
    }
}

/// Where the lines go: straight into the chunk, or through gzip.
enum Sink {
    Plain(Vec<u8>),
    Gzip(GzEncoder<Vec<u8>>),
}

impl Sink {
    fn pending(&self) -> usize {
        match self {
            Sink::Plain(v) => v.len(),
            Sink::Gzip(g) => g.get_ref().len(),
        }
    }

    fn line(&mut self, event: StoredEvent) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&EventView::from(event))?;
        line.push(b'\n');
        match self {
            Sink::Plain(v) => v.extend_from_slice(&line),
            Sink::Gzip(g) => g.write_all(&line)?,
        }
        Ok(())
    }

    fn take(&mut self) -> Bytes {
        match self {
            Sink::Plain(v) => Bytes::from(std::mem::take(v)),
            Sink::Gzip(g) => Bytes::from(std::mem::take(g.get_mut())),
        }
    }

    fn finish(self) -> std::io::Result<Bytes> {
        match self {
            Sink::Plain(v) => Ok(Bytes::from(v)),
            Sink::Gzip(g) => Ok(Bytes::from(g.finish()?)),
        }
    }
}

/// The NDJSON body over `cursor`. A cursor error ends the body early (the client sees a
/// truncated stream, and with gzip a stream without its trailer) and is logged.
pub fn ndjson(
    cursor: Cursor<StoredEvent>,
    gzip: bool,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let sink = if gzip {
        Sink::Gzip(GzEncoder::new(Vec::new(), flate2::Compression::fast()))
    } else {
        Sink::Plain(Vec::new())
    };
    futures::stream::try_unfold(
        (cursor, Some(sink), 0u64),
        |(mut cursor, sink, mut exported)| async move {
            let Some(mut sink) = sink else {
                return Ok(None);
            };
            while sink.pending() < CHUNK {
                match cursor.next().await {
                    Some(Ok(event)) => {
                        sink.line(event)?;
                        exported += 1;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, exported, "an export ended early: MongoDB failed mid-stream");
                        metrics::counter!("sluice_api_exported_events_total").increment(exported);
                        return Err(std::io::Error::other(e));
                    }
                    None => {
                        metrics::counter!("sluice_api_exported_events_total").increment(exported);
                        let last = sink.finish()?;
                        return Ok(Some((last, (cursor, None, exported))));
                    }
                }
            }
            let chunk = sink.take();
            Ok(Some((chunk, (cursor, Some(sink), exported))))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_selection_goes_through_its_index() {
        let (f, index) = query("a", &Selection::User("u1"));
        assert_eq!(index, "q_account_user_time");
        assert_eq!(f.get_str("userId").unwrap(), "u1");
        let (f, index) = query(
            "a",
            &Selection::Events {
                event_type: Some("checkout"),
                from: None,
                to: Some(chrono::Utc::now()),
            },
        );
        assert_eq!(index, "q_account_type_time");
        assert!(f.get_document("timestamp").unwrap().contains_key("$lt"));
        let (_, index) = query(
            "a",
            &Selection::Events {
                event_type: None,
                from: None,
                to: None,
            },
        );
        assert_eq!(index, "q_account_time");
    }
}
