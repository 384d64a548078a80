//! Dedup and enqueue in one atomic Redis step: a Lua script, loaded once and called by SHA, that
//! for each event either appends it to the stream and reserves its dedup key, or finds the key
//! already reserved and does neither. A whole batch is one script call.
use fred::prelude::*;
use fred::types::scripts::Script;

use crate::event::QueuedEvent;
use crate::names::{dedup_key, STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};

/// KEYS[1] the stream, KEYS[1+i] the dedup key of event i.
/// ARGV[1] dedup window in seconds, ARGV[2] request id, ARGV[2+i] event i as JSON.
/// XADD runs before SET: if XADD fails the script stops before reserving the key, so a reserved
/// key always means a queued event (the reverse failure at worst lets a retry queue it again,
/// and MongoDB's `_id` stores it once).
const ENQUEUE_LUA: &str = r#"
local out = {}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[#out + 1] = 0
  else
    local id = redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[i + 3], ARGV[4], ARGV[2])
    redis.call('SET', KEYS[i], id, 'EX', ARGV[1])
    out[#out + 1] = id
  end
end
return out
"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Appended to the stream under this entry id.
    Accepted(String),
    Duplicate,
}

#[derive(Clone)]
pub struct Enqueuer {
    client: Client,
    script: Script,
    stream: String,
    dedup_window_secs: u64,
}

impl Enqueuer {
    pub fn new(client: Client, stream: String, dedup_window_secs: u64) -> Self {
        Self {
            client,
            script: Script::from_lua(ENQUEUE_LUA),
            stream,
            dedup_window_secs,
        }
    }

    pub async fn load(&self) -> anyhow::Result<()> {
        self.script.load(&self.client).await?;
        Ok(())
    }

    /// One outcome per event, in order.
    #[tracing::instrument(level = "debug", name = "Queueing events", skip_all, fields(events = events.len()))]
    pub async fn enqueue(
        &self,
        events: &[QueuedEvent],
        request_id: &str,
    ) -> anyhow::Result<Vec<Outcome>> {
        let items = events
            .iter()
            .map(|e| {
                Ok((
                    dedup_key(&e.account_id, &e.event_id),
                    serde_json::to_string(e)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.enqueue_raw(&items, request_id).await
    }

    /// Queues stream entries as they are (`(dedup key, event JSON)`), each guarded by its own key:
    /// what replays use, with a key of the dead letter rather than of the event.
    pub async fn enqueue_raw(
        &self,
        items: &[(String, String)],
        request_id: &str,
    ) -> anyhow::Result<Vec<Outcome>> {
        let events = items;
        let mut keys = Vec::with_capacity(items.len() + 1);
        keys.push(self.stream.clone());
        let mut args: Vec<String> = Vec::with_capacity(items.len() + 4);
        args.push(self.dedup_window_secs.to_string());
        args.push(request_id.to_owned());
        args.push(STREAM_EVENT_FIELD.to_owned());
        args.push(STREAM_REQUEST_ID_FIELD.to_owned());
        for (key, json) in items {
            keys.push(key.clone());
            args.push(json.clone());
        }
        let reply: Vec<Value> = self
            .script
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        anyhow::ensure!(
            reply.len() == events.len(),
            "enqueue script answered {} outcomes for {} events",
            reply.len(),
            events.len()
        );
        Ok(reply.into_iter().map(outcome).collect())
    }
}

fn outcome(v: Value) -> Outcome {
    match v.as_string() {
        Some(id) if id != "0" => Outcome::Accepted(id),
        _ => Outcome::Duplicate,
    }
}
