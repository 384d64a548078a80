//! Reading and acknowledging stream entries, and decoding an entry into the event it carries.
use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use sluice_shared::event::QueuedEvent;
use sluice_shared::names::{STREAM_COUNT_FIELD, STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};

/// One stream entry as read, undecoded.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub fields: HashMap<String, Value>,
    /// Times the group has delivered it, this delivery included (1 for a first read).
    pub deliveries: u64,
}

/// One event of an entry: its JSON text as queued and the request that queued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryEvent {
    /// Its place in the entry (0 for an entry of old, which held one event).
    pub index: usize,
    pub text: String,
    pub request_id: Option<String>,
    /// Whether the entry packs events (an array), so an event is named `<entry id>.<index>`.
    pub packed: bool,
}

impl EntryEvent {
    /// `<entry id>.<index>` for an event of a packed entry, the entry id for one of old.
    pub fn stream_id(&self, entry_id: &str) -> String {
        if self.packed {
            format!("{entry_id}.{}", self.index)
        } else {
            entry_id.to_owned()
        }
    }

    pub fn decode(&self) -> Result<QueuedEvent, String> {
        serde_json::from_str(&self.text).map_err(|e| format!("undecodable event: {e}"))
    }
}

impl Entry {
    /// How many events the entry carries, without decoding them (its `n` field); an entry of
    /// old, or one that does not say, counts as one.
    pub fn event_count(&self) -> usize {
        self.field(STREAM_COUNT_FIELD)
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1)
    }

    fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.get(name)?.as_bytes()
    }

    /// The events the entry carries: `e` is a JSON array of events (`rid` the array of their
    /// request ids), or, in an entry queued before partitioning, one event (`rid` one string).
    /// An entry that is neither cannot be unpacked: it is dead-lettered whole.
    pub fn events(&self) -> Result<Vec<EntryEvent>, String> {
        let raw = self
            .fields
            .get(STREAM_EVENT_FIELD)
            .ok_or_else(|| format!("entry has no `{STREAM_EVENT_FIELD}` field"))?
            .as_bytes()
            .ok_or_else(|| format!("`{STREAM_EVENT_FIELD}` is not a string"))?;
        let rid = self.field(STREAM_REQUEST_ID_FIELD);
        let packed = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        if !packed {
            let text = std::str::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
            return Ok(vec![EntryEvent {
                index: 0,
                text: text.to_owned(),
                request_id: rid.map(|r| String::from_utf8_lossy(r).into_owned()),
                packed: false,
            }]);
        }
        let events: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(raw).map_err(|e| format!("undecodable entry: {e}"))?;
        // One JSON string shared by every event, or an array with one per event.
        let (shared, rids): (Option<String>, Vec<Option<String>>) = match rid {
            Some(r) if r.first() == Some(&b'[') => {
                (None, serde_json::from_slice(r).unwrap_or_default())
            }
            Some(r) => (serde_json::from_slice(r).ok(), Vec::new()),
            None => (None, Vec::new()),
        };
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(index, e)| EntryEvent {
                index,
                text: e.get().to_owned(),
                request_id: rids
                    .get(index)
                    .cloned()
                    .flatten()
                    .or_else(|| shared.clone()),
                packed: true,
            })
            .collect())
    }

    /// The entry as it was queued, for the dead letter of an entry that cannot be unpacked.
    pub fn raw_fields(&self) -> HashMap<String, String> {
        self.fields
            .iter()
            .map(|(k, v)| {
                let text = v
                    .as_bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                (k.clone(), text)
            })
            .collect()
    }
}

/// Where the next read starts: this consumer's own pending entries after an id, or new entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Pending(String),
    New,
}

pub struct StreamReader {
    client: Client,
    stream: String,
    group: String,
    consumer: String,
}

impl StreamReader {
    pub fn new(client: Client, stream: String, group: String, consumer: String) -> Self {
        Self {
            client,
            stream,
            group,
            consumer,
        }
    }

    /// Up to `count` entries from `cursor`; blocks up to `block` only for new entries.
    pub async fn read(
        &self,
        cursor: &Cursor,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, fred::error::Error> {
        let (id, block) = match cursor {
            Cursor::Pending(after) => (after.as_str(), None),
            Cursor::New => (">", Some(block.as_millis().max(1) as u64)),
        };
        // Written once: if the connection drops with the read in flight, Redis may have handed
        // the entries over already (they are pending for us). Sent again, `>` would skip them and
        // leave them to a claim; failing, the caller re-reads its own pending entries.
        let once = fred::types::config::Options {
            max_attempts: Some(1),
            ..Default::default()
        };
        let reply: Value = self
            .client
            .with_options(&once)
            .xreadgroup(
                self.group.as_str(),
                self.consumer.as_str(),
                Some(count as u64),
                block,
                false,
                self.stream.as_str(),
                id,
            )
            .await?;
        if reply.is_null() {
            return Ok(Vec::new());
        }
        let mut streams: fred::types::streams::XReadResponse<String, String, String, Value> =
            reply.into_xread_response()?;
        Ok(streams
            .remove(&self.stream)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, fields)| Entry {
                id,
                fields,
                deliveries: 1,
            })
            .collect())
    }
}

/// A command routed to the node of `key`'s slot (fred's `FirstKey` does not see a key in the
/// plain values a custom command carries, and would send it to any node).
fn custom(name: &'static str, key: &str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::from(key), false)
}

/// `[id, [field, value, ...]]` as Redis returns a stream entry.
fn parse_entry(v: Value) -> Option<Entry> {
    let Value::Array(mut parts) = v else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id = parts.pop()?.as_string()?;
    let mut map = HashMap::new();
    if let Value::Array(flat) = fields {
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Some(k) = k.as_string() {
                map.insert(k, v);
            }
        }
    }
    Some(Entry {
        id,
        fields: map,
        deliveries: 1,
    })
}

/// Claims up to `count` entries idle for `min_idle` in any consumer's hands (XAUTOCLAIM), with
/// their delivery counts. Entries deleted from the stream while pending are dropped by Redis.
pub async fn claim(
    client: &Client,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    count: usize,
) -> Result<Vec<Entry>, fred::error::Error> {
    let reply: Value = client
        .custom(
            custom("XAUTOCLAIM", stream),
            vec![
                Value::from(stream),
                Value::from(group),
                Value::from(consumer),
                Value::from(min_idle.as_millis() as i64),
                Value::from("0-0"),
                Value::from("COUNT"),
                Value::from(count as i64),
            ],
        )
        .await?;
    let Value::Array(mut parts) = reply else {
        return Ok(Vec::new());
    };
    if parts.len() < 2 {
        return Ok(Vec::new());
    }
    let Value::Array(raw) = parts.swap_remove(1) else {
        return Ok(Vec::new());
    };
    let mut entries: Vec<Entry> = raw.into_iter().filter_map(parse_entry).collect();
    set_deliveries(client, stream, group, consumer, &mut entries).await?;
    Ok(entries)
}

/// Fills in each entry's delivery count from XPENDING (entries of `consumer` only).
pub async fn set_deliveries(
    client: &Client,
    stream: &str,
    group: &str,
    consumer: &str,
    entries: &mut [Entry],
) -> Result<(), fred::error::Error> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let reply: Value = client
        .custom(
            custom("XPENDING", stream),
            vec![
                Value::from(stream),
                Value::from(group),
                Value::from(first.id.as_str()),
                Value::from(last.id.as_str()),
                Value::from(entries.len() as i64),
                Value::from(consumer),
            ],
        )
        .await?;
    let mut counts = HashMap::new();
    if let Value::Array(rows) = reply {
        for row in rows {
            if let Value::Array(cols) = row {
                if let (Some(id), Some(n)) = (
                    cols.first().and_then(|v| v.as_string()),
                    cols.get(3).and_then(|v| v.as_u64()),
                ) {
                    counts.insert(id, n);
                }
            }
        }
    }
    for e in entries.iter_mut() {
        if let Some(n) = counts.get(&e.id) {
            e.deliveries = *n;
        }
    }
    Ok(())
}

/// The group's pending summary and position, for trimming and gauges.
#[derive(Debug, Default, PartialEq)]
pub struct GroupState {
    pub pending: u64,
    pub oldest_pending: Option<String>,
    pub last_delivered: Option<String>,
}

pub async fn group_state(
    client: &Client,
    stream: &str,
    group: &str,
) -> Result<GroupState, fred::error::Error> {
    let groups: Vec<HashMap<String, Value>> = client.xinfo_groups(stream).await?;
    let mut state = GroupState::default();
    if let Some(g) = groups
        .iter()
        .find(|g| g.get("name").and_then(|v| v.as_string()).as_deref() == Some(group))
    {
        state.last_delivered = g
            .get("last-delivered-id")
            .and_then(|v| v.as_string())
            .filter(|id| !id.is_empty());
    }
    let summary: Value = client
        .custom(
            custom("XPENDING", stream),
            vec![Value::from(stream), Value::from(group)],
        )
        .await?;
    if let Value::Array(parts) = summary {
        state.pending = parts.first().and_then(|v| v.as_u64()).unwrap_or(0);
        // Nil (nothing pending) must not read as an empty id.
        state.oldest_pending = parts
            .get(1)
            .filter(|v| !v.is_null())
            .and_then(|v| v.as_string())
            .filter(|id| !id.is_empty());
    }
    Ok(state)
}

/// The lowest id the stream must keep: nothing pending or undelivered lies below it.
pub fn trim_floor(state: &GroupState) -> Option<String> {
    let last = state.last_delivered.as_deref().filter(|id| *id != "0-0")?;
    Some(match state.oldest_pending.as_deref() {
        Some(oldest) if stream_id_lt(oldest, last) => oldest.to_owned(),
        _ => last.to_owned(),
    })
}

fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Whether stream id `a` comes before `b`.
pub(crate) fn stream_id_lt(a: &str, b: &str) -> bool {
    parse_id(a) < parse_id(b)
}

/// Deletes every entry below `floor` (XTRIM MINID): all acknowledged.
pub async fn trim_below(
    client: &Client,
    stream: &str,
    floor: &str,
) -> Result<u64, fred::error::Error> {
    client
        .custom(
            custom("XTRIM", stream),
            vec![
                Value::from(stream),
                Value::from("MINID"),
                Value::from(floor),
            ],
        )
        .await
}

/// Removes consumers other than `me` that hold nothing and have been idle past `stale_after`.
pub async fn remove_stale_consumers(
    client: &Client,
    stream: &str,
    group: &str,
    me: &str,
    stale_after: Duration,
) -> Result<Vec<String>, fred::error::Error> {
    let consumers: Vec<HashMap<String, Value>> = client.xinfo_consumers(stream, group).await?;
    let mut removed = Vec::new();
    for c in consumers {
        let name = c
            .get("name")
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        let pending = c.get("pending").and_then(|v| v.as_u64()).unwrap_or(1);
        let idle = c.get("idle").and_then(|v| v.as_u64()).unwrap_or(0);
        if name != me && pending == 0 && idle >= stale_after.as_millis() as u64 {
            let _: Value = client
                .xgroup_delconsumer(stream, group, name.as_str())
                .await?;
            removed.push(name);
        }
    }
    Ok(removed)
}

pub async fn ack(
    client: &Client,
    stream: &str,
    group: &str,
    ids: Vec<String>,
) -> Result<u64, fred::error::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    client.xack(stream, group, ids).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(last: Option<&str>, oldest: Option<&str>) -> GroupState {
        GroupState {
            pending: oldest.map_or(0, |_| 1),
            oldest_pending: oldest.map(str::to_owned),
            last_delivered: last.map(str::to_owned),
        }
    }

    #[test]
    fn the_trim_floor_never_passes_a_pending_or_undelivered_entry() {
        assert_eq!(trim_floor(&state(None, None)), None);
        assert_eq!(trim_floor(&state(Some("0-0"), None)), None);
        assert_eq!(
            trim_floor(&state(Some("5-0"), None)).as_deref(),
            Some("5-0")
        );
        assert_eq!(
            trim_floor(&state(Some("5-0"), Some("3-7"))).as_deref(),
            Some("3-7")
        );
        // Ids compare numerically, not as text.
        assert_eq!(
            trim_floor(&state(Some("10-0"), Some("9-5"))).as_deref(),
            Some("9-5")
        );
        assert_eq!(
            trim_floor(&state(Some("9-5"), Some("10-0"))).as_deref(),
            Some("9-5")
        );
    }

    #[test]
    fn entries_parse_from_their_wire_shape() {
        let v = Value::Array(vec![
            Value::from("1-1"),
            Value::Array(vec![
                Value::from("e"),
                Value::from("{}"),
                Value::from("rid"),
            ]),
        ]);
        let e = parse_entry(v).unwrap();
        assert_eq!(e.id, "1-1");
        assert_eq!(e.fields.len(), 1);
        assert!(parse_entry(Value::Null).is_none());
    }

    fn entry(e: &str, rid: &str) -> Entry {
        Entry {
            id: "5-0".into(),
            fields: [
                (STREAM_EVENT_FIELD.to_owned(), Value::from(e)),
                (STREAM_REQUEST_ID_FIELD.to_owned(), Value::from(rid)),
            ]
            .into(),
            deliveries: 1,
        }
    }

    #[test]
    fn a_packed_entry_unpacks_into_its_events_with_their_request_ids() {
        let e = entry(r#"[{"eventId":"a"}, {"eventId":"b"}]"#, r#"["r1","r2"]"#);
        let events = e.events().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].text, r#"{"eventId":"b"}"#);
        assert_eq!(events[1].request_id.as_deref(), Some("r2"));
        assert_eq!(events[1].stream_id("5-0"), "5-0.1");
        // An entry of old: one event, one request id.
        let old = entry(r#"{"eventId":"a"}"#, "r1").events().unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].request_id.as_deref(), Some("r1"));
        assert_eq!(old[0].stream_id("5-0"), "5-0");
        assert!(entry("[not json", "r").events().is_err());
        // Request ids that do not parse lose the ids, not the events.
        assert_eq!(
            entry(r#"[{"eventId":"a"}]"#, "garbled")
                .events()
                .unwrap()
                .len(),
            1
        );
        // One request id for every event of the entry.
        let two = r#"[{"eventId":"a"}, {"eventId":"b"}]"#;
        let shared = entry(two, r#""r9""#).events().unwrap();
        assert_eq!(shared[1].request_id.as_deref(), Some("r9"));
        let mut counted = entry(two, r#""r9""#);
        assert_eq!(counted.event_count(), 1, "no count field: one");
        counted
            .fields
            .insert(STREAM_COUNT_FIELD.to_owned(), Value::from("2"));
        assert_eq!(counted.event_count(), 2);
    }
}
