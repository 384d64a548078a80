//! Reading stored events back: `events` (the events query API) and `events_quarantine` (the
//! quarantine review), newest first in cursor pages. Every query carries the account and is
//! served by an index of `sluice_store::ensure_indexes` (filter, then `timestamp` descending); a
//! page position is two range scans (the rest of its instant, then everything older), never an
//! `$or`, which a server may answer with a collection scan.
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Bson, DateTime as BsonDate, Document};
use mongodb::Collection;
use serde::Serialize;
use sluice_http::cursor::Cursor;
use sluice_http::ApiError;
use sluice_shared::error::Violation;
use sluice_store::event::field;
use sluice_store::{SourceInfo, StoredEvent};
use utoipa::ToSchema;

/// The filters a page is asked with, checked.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    /// `timestamp >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `timestamp < to`.
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
    pub before: Option<Cursor>,
}

/// An optional text filter of at most `max` characters (empty is no filter); `printable` refuses
/// control characters (event types hold none; a userId may).
fn text_filter(
    raw: Option<&str>,
    at: &str,
    max: usize,
    printable: bool,
) -> Result<Option<String>, ApiError> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) if s.chars().count() <= max && !(printable && s.chars().any(char::is_control)) => {
            Ok(Some(s.to_owned()))
        }
        Some(_) if printable => Err(ApiError::invalid_request(
            at,
            format!("at most {max} printable characters"),
        )),
        Some(_) => Err(ApiError::invalid_request(
            at,
            format!("at most {max} characters"),
        )),
    }
}

fn time_filter(raw: Option<&str>, at: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match raw {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| ApiError::invalid_request(at, "an RFC 3339 date-time")),
    }
}

/// The raw query parameters of a page.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawFilter<'a> {
    pub event_type: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub before: Option<&'a str>,
}

impl EventFilter {
    /// Checks every parameter (each problem a 400 with the parameter's name); `limit` 1 to
    /// `max` (default 100).
    pub fn parse(raw: RawFilter<'_>, max: i64) -> Result<Self, ApiError> {
        let limit = match raw.limit {
            None => 100.min(max),
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid_request(
                        "/limit",
                        format!("a whole number from 1 to {max}"),
                    ))
                }
            },
        };
        Ok(Self {
            event_type: text_filter(raw.event_type, "/eventType", 200, true)?,
            user_id: text_filter(raw.user_id, "/userId", 128, false)?,
            session_id: text_filter(raw.session_id, "/sessionId", 128, false)?,
            from: time_filter(raw.from, "/from")?,
            to: time_filter(raw.to, "/to")?,
            limit,
            before: raw.before.map(Cursor::parse).transpose()?,
        })
    }

    /// The MongoDB filter, without the page position. `userId` first: on a sharded cluster
    /// (shard key `userId`) a query with it goes to one shard.
    pub fn query(&self, account: &str) -> Document {
        let mut q = doc! {field::ACCOUNT_ID: account};
        if let Some(u) = &self.user_id {
            q.insert(field::USER_ID, u);
        }
        if let Some(t) = &self.event_type {
            q.insert(field::EVENT_TYPE, t);
        }
        if let Some(s) = &self.session_id {
            q.insert(field::SESSION_ID, s);
        }
        let mut range = Document::new();
        if let Some(f) = self.from {
            // `timestamp >= from`, written as `> from - 1 ms` (the same set: BSON dates hold
            // milliseconds). The MongoDB stand-in drops the events at exactly `from` when a
            // `$gte` meets a `$lt` on a descending index key; `$gt` it gets right.
            let from = f.timestamp_millis();
            range.insert("$gt", BsonDate::from_millis(from.saturating_sub(1)));
        }
        if let Some(t) = self.to {
            range.insert("$lt", BsonDate::from_millis(t.timestamp_millis()));
        }
        if !range.is_empty() {
            q.insert(field::TIMESTAMP, range);
        }
        q
    }

    /// The index a query of this shape uses (named to the server as its hint): the most
    /// selective filter's, `userId` first, each ordered as the page is.
    pub fn index(&self) -> &'static str {
        match (&self.user_id, &self.event_type, &self.session_id) {
            (Some(_), _, _) => "q_account_user_time",
            (None, Some(_), _) => "q_account_type_time",
            (None, None, Some(_)) => "q_account_session_time",
            (None, None, None) => "q_account_time",
        }
    }
}

/// A stored event as the query API answers it (JSON: dates in RFC 3339).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub session_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub properties: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub anonymous_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub source: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub traits: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub context: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub schema_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub schema_violations: Option<Vec<Violation>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub quarantined_at: Option<DateTime<Utc>>,
}

fn json(doc: Option<Document>) -> Option<serde_json::Value> {
    doc.map(|d| Bson::Document(d).into_relaxed_extjson())
}

fn utc(d: BsonDate) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(d.timestamp_millis()).unwrap_or_default()
}

impl From<StoredEvent> for EventView {
    fn from(e: StoredEvent) -> Self {
        let source = e
            .source
            .map(|s: SourceInfo| serde_json::to_value(s).unwrap_or(serde_json::Value::Null));
        EventView {
            event_id: e.event_id,
            event_type: e.event_type,
            user_id: e.user_id,
            session_id: e.session_id,
            timestamp: utc(e.timestamp),
            received_at: utc(e.received_at),
            properties: json(e.properties),
            anonymous_id: e.anonymous_id,
            source,
            traits: json(e.traits),
            context: json(e.context),
            schema_version: e.schema_version,
            schema_violations: e.schema_violations,
            quarantined_at: e.quarantined_at.map(utc),
        }
    }
}

/// A page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// The `before` of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_before: Option<String>,
}

/// 0001-01-01 and 9999-12-31: no event is stored outside them.
const MIN_STORED_MS: i64 = -62_135_596_800_000;
const MAX_STORED_MS: i64 = 253_402_300_799_999;

/// The page of `account`'s events in `coll` that `f` asks for.
pub async fn page(
    coll: &Collection<StoredEvent>,
    account: &str,
    f: &EventFilter,
) -> anyhow::Result<EventPage> {
    let filter = f.query(account);
    let events = match &f.before {
        None => find(coll, filter, f.index(), f.limit).await?,
        Some(c) if !(MIN_STORED_MS..=MAX_STORED_MS).contains(&c.millis) => {
            let mut older = filter;
            let bound = if c.millis > MAX_STORED_MS {
                MAX_STORED_MS + 1
            } else {
                MIN_STORED_MS
            };
            narrow_time(&mut older, "$lt", bound);
            find(coll, older, f.index(), f.limit).await?
        }
        Some(c) => {
            let mut same = filter.clone();
            if within(&same, c.millis) {
                same.insert(field::TIMESTAMP, BsonDate::from_millis(c.millis));
                same.insert(field::ID, doc! {"$lt": &c.id});
            } else {
                same.insert(field::ID, doc! {"$in": []});
            }
            let mut older = filter;
            narrow_time(&mut older, "$lt", c.millis);
            let (mut a, b) = tokio::try_join!(
                find(coll, same, f.index(), f.limit),
                find(coll, older, f.index(), f.limit)
            )?;
            a.extend(b);
            a.truncate(usize::try_from(f.limit).unwrap_or(0));
            a
        }
    };
    let next_before = events
        .last()
        .filter(|_| events.len() as i64 == f.limit)
        .map(|last| {
            Cursor {
                millis: last.timestamp.timestamp_millis(),
                id: last.id.clone(),
            }
            .encode()
        });
    Ok(EventPage {
        events: events.into_iter().map(EventView::from).collect(),
        next_before,
    })
}

/// Whether the instant `millis` lies inside the filter's own time range.
fn within(filter: &Document, millis: i64) -> bool {
    let Ok(range) = filter.get_document(field::TIMESTAMP) else {
        return true;
    };
    let ge = range
        .get_datetime("$gt")
        .map(|d| d.timestamp_millis().saturating_add(1))
        .unwrap_or(i64::MIN);
    let lt = range
        .get_datetime("$lt")
        .map(|d| d.timestamp_millis())
        .unwrap_or(i64::MAX);
    (ge..lt).contains(&millis)
}

/// Tightens the filter's `timestamp` range with `op` (`$lt`) at `millis`.
fn narrow_time(filter: &mut Document, op: &str, millis: i64) {
    let mut range = filter
        .get_document(field::TIMESTAMP)
        .cloned()
        .unwrap_or_default();
    let tighter = match range.get_datetime(op) {
        Ok(existing) => existing.timestamp_millis().min(millis),
        Err(_) => millis,
    };
    range.insert(op, BsonDate::from_millis(tighter));
    filter.insert(field::TIMESTAMP, range);
}

pub fn sort() -> Document {
    doc! {field::TIMESTAMP: -1, field::ID: -1}
}

async fn find(
    coll: &Collection<StoredEvent>,
    filter: Document,
    index: &str,
    limit: i64,
) -> anyhow::Result<Vec<StoredEvent>> {
    use anyhow::Context;
    let hinted = coll
        .find(filter.clone())
        .sort(sort())
        .hint(mongodb::options::Hint::Name(index.to_owned()))
        .limit(limit)
        .await;
    let mut cursor = match hinted {
        Ok(cursor) => cursor,
        // The writer creates the indexes at its start: until a worker of this release has run
        // (a rolling upgrade), the server picks a plan itself.
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 2) => {
            tracing::warn!(
                index,
                "the query's index is missing; querying without the hint"
            );
            coll.find(filter)
                .sort(sort())
                .limit(limit)
                .await
                .context("querying events")?
        }
        Err(e) => return Err(anyhow::Error::new(e).context("querying events")),
    };
    let mut out = Vec::new();
    while cursor.advance().await.context("reading events")? {
        out.push(cursor.deserialize_current().context("reading an event")?);
    }
    Ok(out)
}

/// One of the account's events by its eventId (`_id` is `{accountId}:{eventId}`).
pub async fn one(
    coll: &Collection<StoredEvent>,
    account: &str,
    event_id: &str,
) -> anyhow::Result<Option<EventView>> {
    use anyhow::Context;
    let id = sluice_shared::names::event_document_id(account, event_id);
    Ok(coll
        .find_one(doc! {field::ID: id, field::ACCOUNT_ID: account})
        .await
        .context("reading an event")?
        .map(EventView::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_one_indexed_query_with_the_user_first() {
        let f = EventFilter::parse(
            RawFilter {
                event_type: Some("purchase"),
                user_id: Some("u1"),
                from: Some("2026-01-01T00:00:00Z"),
                to: Some("2026-02-01T00:00:00Z"),
                limit: Some("10"),
                ..Default::default()
            },
            1000,
        )
        .unwrap();
        let q = f.query("acc");
        let keys: Vec<&str> = q.keys().map(String::as_str).collect();
        assert_eq!(keys, ["accountId", "userId", "eventType", "timestamp"]);
        assert_eq!(f.index(), "q_account_user_time");
        assert!(within(
            &q,
            DateTime::parse_from_rfc3339("2026-01-15T00:00:00Z")
                .unwrap()
                .timestamp_millis()
        ));
        assert!(!within(
            &q,
            DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z")
                .unwrap()
                .timestamp_millis()
        ));
    }

    #[test]
    fn bad_parameters_are_400_naming_the_parameter() {
        for (raw, at) in [
            (
                RawFilter {
                    limit: Some("0"),
                    ..Default::default()
                },
                "/limit",
            ),
            (
                RawFilter {
                    limit: Some("1001"),
                    ..Default::default()
                },
                "/limit",
            ),
            (
                RawFilter {
                    from: Some("yesterday"),
                    ..Default::default()
                },
                "/from",
            ),
            (
                RawFilter {
                    user_id: Some(&"u".repeat(129)),
                    ..Default::default()
                },
                "/userId",
            ),
            (
                RawFilter {
                    before: Some("nope"),
                    ..Default::default()
                },
                "/before",
            ),
        ] {
            let err = EventFilter::parse(raw, 1000).unwrap_err();
            assert_eq!(err.body().error.details.unwrap()[0].path, at);
        }
    }

    #[test]
    fn a_page_position_narrows_the_time_range_it_already_has() {
        let mut q = doc! {"timestamp": {"$lt": BsonDate::from_millis(100)}};
        narrow_time(&mut q, "$lt", 50);
        assert_eq!(q, doc! {"timestamp": {"$lt": BsonDate::from_millis(50)}});
        narrow_time(&mut q, "$lt", 70);
        assert_eq!(q, doc! {"timestamp": {"$lt": BsonDate::from_millis(50)}});
    }
}
