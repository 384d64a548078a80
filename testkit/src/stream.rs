//! What the partitioned streams hold, for tests: every event of every entry of every partition,
//! unpacked (an entry carries the events of one enqueue call).
use fred::prelude::*;
use sluice_shared::config::RedisSettings;
use sluice_shared::names::{STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};

/// One queued event as the stream holds it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub partition: u16,
    /// The id of the entry that carries it.
    pub entry_id: String,
    pub event: serde_json::Value,
    pub request_id: Option<String>,
}

/// Every event in the streams, partition by partition, in stream order.
pub async fn queued(redis: &Client, settings: &RedisSettings) -> Vec<Queued> {
    let layout = settings.layout();
    let mut out = Vec::new();
    for p in layout.all() {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis
            .xrange(layout.stream(p), "-", "+", None)
            .await
            .expect("XRANGE");
        for (entry_id, fields) in entries {
            // A packed entry holds an array; one a test wrote by hand may hold one event of old,
            // or anything: it counts as one event, its text as it is.
            let events: Vec<serde_json::Value> = match fields.get(STREAM_EVENT_FIELD) {
                Some(e) => match serde_json::from_str(e) {
                    Ok(serde_json::Value::Array(events)) => events,
                    Ok(one) => vec![one],
                    Err(_) => vec![serde_json::Value::String(e.clone())],
                },
                None => vec![serde_json::Value::Null],
            };
            // One id for every event, or one per event.
            let rids: Vec<String> = match fields
                .get(STREAM_REQUEST_ID_FIELD)
                .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            {
                Some(serde_json::Value::String(one)) => vec![one; events.len()],
                Some(many) => serde_json::from_value(many).unwrap_or_default(),
                None => Vec::new(),
            };
            for (i, event) in events.into_iter().enumerate() {
                out.push(Queued {
                    partition: p,
                    entry_id: entry_id.clone(),
                    event,
                    request_id: rids.get(i).cloned(),
                });
            }
        }
    }
    out
}

/// Entries in the streams, over every partition.
pub async fn length(redis: &Client, settings: &RedisSettings) -> u64 {
    let mut n = 0;
    for stream in settings.layout().streams() {
        let len: u64 = redis.xlen(stream).await.expect("XLEN");
        n += len;
    }
    n
}

/// Deletes every stream (the consumer groups go with them).
pub async fn delete(redis: &Client, settings: &RedisSettings) {
    for stream in settings.layout().streams() {
        let _: i64 = redis.del(stream).await.expect("DEL");
    }
}

/// Forgets every dedup reservation, as if the window had passed: deletes the live dedup sets of
/// every partition (the current generation and the one before, `api.dedup_window_secs` long).
pub async fn forget_dedup(redis: &Client, settings: &sluice_shared::config::Settings) {
    let layout = settings.redis.layout();
    let window = settings.api.dedup_window_secs.max(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let generation = now / window;
    for p in layout.all() {
        for g in [generation, generation.saturating_sub(1)] {
            let _: i64 = redis.del(layout.dedup(p, g)).await.expect("DEL");
        }
    }
}
