//! Reading and acknowledging stream entries, and decoding an entry into the event it carries.
use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use sluice_shared::event::QueuedEvent;
use sluice_shared::names::{STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};

/// One stream entry as read, undecoded.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub fields: HashMap<String, Value>,
}

impl Entry {
    pub fn request_id(&self) -> Option<String> {
        self.fields.get(STREAM_REQUEST_ID_FIELD)?.as_string()
    }

    /// The queued event, or why the entry cannot be one.
    pub fn decode(&self) -> Result<QueuedEvent, String> {
        let raw = self
            .fields
            .get(STREAM_EVENT_FIELD)
            .ok_or_else(|| format!("entry has no `{STREAM_EVENT_FIELD}` field"))?;
        let bytes = raw
            .as_bytes()
            .ok_or_else(|| format!("`{STREAM_EVENT_FIELD}` is not a string"))?;
        serde_json::from_slice(bytes).map_err(|e| format!("undecodable event: {e}"))
    }

    /// The entry as it was queued, for a dead letter.
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
        let reply: Value = self
            .client
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
            .map(|(id, fields)| Entry { id, fields })
            .collect())
    }
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
