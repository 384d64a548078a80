//! Dedup and enqueue in one atomic Redis step, per partition.
//!
//! Each event has a partition and a 12-byte dedup member (`partition::Partitions::place`). One
//! call of the enqueue script takes many events of one partition — a request's, or, through the
//! group commit, those of every request that arrived meanwhile — and in one step: looks their
//! members up in the partition's two live dedup sets (`SMISMEMBER`); if none is reserved, appends
//! the events as ONE stream entry (`XADD`: field `e` a JSON array of events, `rid` the request id
//! they share or an array of one per event, `n` their count), adds their members to the current
//! set (`SADD`) and counts them in the partition's meta hash; if some are, writes nothing, and the
//! caller calls again without them. The XADD runs before the SADD: if it fails, the script stops
//! before reserving anything, so a reserved member always means a queued event.
//! All keys of a call carry the partition's hash tag: one slot, so the same script runs on a Redis
//! Cluster.
//!
//! Dedup generations: the set of generation `g = ⌊unix time / window⌋` (the api's clock) takes the
//! new members and expires at the start of `g + 2`; a lookup checks `g` and `g − 1`. An event is
//! therefore caught as a repeat for at least the window and at most twice it (MongoDB's `_id`
//! keeps any older repeat stored once). The generation is computed by the api so that the script
//! declares every key it touches (what Redis Cluster needs to route, redirect and migrate it);
//! api instances whose clocks disagree by δ can miss a repeat that straddles a generation boundary
//! within δ of it, which then costs a second stream copy, stored once by `_id`.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::event::QueuedEvent;
use crate::names::{STREAM_COUNT_FIELD, STREAM_EVENT_FIELD, STREAM_REQUEST_ID_FIELD};
use crate::partition::{Member, Partitions, Placement};

/// KEYS[1] the partition's stream, KEYS[2] and KEYS[3] its dedup sets of the current and the
/// previous generation, KEYS[4] its meta hash: every key declared, all in the partition's slot.
/// ARGV[1] when the current set expires (Unix s), ARGV[2] n, ARGV[3..5] the entry's field names
/// (events, request ids, count), ARGV[6] the n events as one JSON array, ARGV[7] their request ids
/// (one JSON string for all, or an array), then the n members.
///
/// All or nothing: when any member is already reserved the script writes nothing and answers the
/// flags; the caller drops those events and calls again with the rest. So the events travel as
/// two long strings, not as 2n short ones (every argument becomes a Lua string, hashed on the
/// way in: per-event arguments made that hashing a fifth of Redis' time).
/// Answers `{entry id or false, {1 = new | 0 = reserved, …}}`.
#[doc(hidden)]
pub const ENQUEUE_LUA: &str = r#"
local n = tonumber(ARGV[2])
local cur, prev, meta = KEYS[2], KEYS[3], KEYS[4]
local m1, m2 = 8, 7 + n
local in_cur = redis.call('SMISMEMBER', cur, unpack(ARGV, m1, m2))
local in_prev = nil
if redis.call('EXISTS', prev) == 1 then
  in_prev = redis.call('SMISMEMBER', prev, unpack(ARGV, m1, m2))
end
local flags, dups = {}, 0
for i = 1, n do
  if in_cur[i] == 1 or (in_prev and in_prev[i] == 1) then
    flags[i] = 0
    dups = dups + 1
  else
    flags[i] = 1
  end
end
if dups > 0 then
  return {false, flags}
end
local id = redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[6], ARGV[4], ARGV[7], ARGV[5], ARGV[2])
redis.call('SADD', cur, unpack(ARGV, m1, m2))
redis.call('EXPIREAT', cur, ARGV[1])
redis.call('HINCRBY', meta, 'events', n)
redis.call('HSET', meta, 'last', id)
return {id, flags}
"#;

/// Requests waiting for one partition's committer before senders wait too.
const COMMIT_QUEUE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Appended to the stream, in the entry with this id (shared by the entry's events).
    Accepted(Arc<str>),
    Duplicate,
}

/// One event ready for the script.
#[derive(Debug)]
struct Item {
    placement: Placement,
    event: String,
    /// The request id as a JSON string literal.
    rid: Arc<str>,
}

type Reply = Result<Vec<Outcome>, String>;

struct Job {
    items: Vec<Item>,
    reply: oneshot::Sender<Reply>,
}

/// What every call needs: shared by the enqueuer's clones and its committers.
struct Core {
    client: Client,
    script: Script,
    layout: Partitions,
    window_secs: u64,
    /// `WAIT` for this many replicas, this long, after each call.
    wait: Option<(u32, u64)>,
    /// Rebuilds the client's connections when its calls keep failing.
    healer: Healer,
}

/// Calls fail for as long as a connection is broken or a failover's new master is not known yet;
/// fred's own reconnection usually ends that, but once left a client failing every command for
/// minutes after a failover (see `redis::heal`). When an enqueuer's calls have failed for
/// `HEAL_AFTER_MS` without one success, its client is rebuilt, and again every `HEAL_AFTER_MS`
/// while they keep failing.
#[derive(Default)]
struct Healer {
    /// Unix ms of the first failure since the last success; 0 while calls succeed.
    failing_since: std::sync::atomic::AtomicU64,
    last_heal: std::sync::atomic::AtomicU64,
}

const HEAL_AFTER_MS: u64 = 3_000;

impl Healer {
    fn note(&self, ok: bool, client: &Client) {
        use std::sync::atomic::Ordering::Relaxed;
        if ok {
            if self.failing_since.load(Relaxed) != 0 {
                self.failing_since.store(0, Relaxed);
            }
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let since = match self
            .failing_since
            .compare_exchange(0, now, Relaxed, Relaxed)
        {
            Ok(_) => now,
            Err(since) => since,
        };
        let last = self.last_heal.load(Relaxed);
        if now.saturating_sub(since) >= HEAL_AFTER_MS
            && now.saturating_sub(last) >= HEAL_AFTER_MS
            && self
                .last_heal
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!(
                failing_ms = now - since,
                "enqueue calls keep failing; rebuilding the Redis connection"
            );
            let client = client.clone();
            tokio::spawn(async move { crate::redis::heal(&client).await });
        }
    }
}

#[derive(Clone)]
pub struct Enqueuer {
    core: Arc<Core>,
    /// One committer per partition when group commit is on.
    committers: Option<Arc<Vec<mpsc::Sender<Job>>>>,
    commit: Option<GroupCommit>,
}

/// Group commit: see `api.commit_max_wait_us` and `api.commit_max_events`.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    pub max_wait: Duration,
    pub max_events: usize,
    /// Calls of one partition in flight at once (the pipeline depth).
    pub max_in_flight: usize,
}

impl Enqueuer {
    /// Each `enqueue` makes its own calls (one per partition it touches).
    pub fn new(client: Client, layout: Partitions, dedup_window_secs: u64) -> Self {
        Self {
            core: Arc::new(Core {
                client,
                script: Script::from_lua(ENQUEUE_LUA),
                layout,
                window_secs: dedup_window_secs.max(1),
                wait: None,
                healer: Healer::default(),
            }),
            committers: None,
            commit: None,
        }
    }

    /// The same enqueuer over `client`, with committers of its own spawned on the current
    /// runtime: for a thread that serves requests, so that a request, its group commit and its
    /// Redis connection stay on that thread instead of crossing to others and back.
    pub fn on_this_runtime(&self, client: Client) -> Self {
        let core = &self.core;
        let mut here = Self::new(client, core.layout.clone(), core.window_secs);
        if let Some((replicas, timeout_ms)) = core.wait {
            here = here.with_wait(replicas, timeout_ms);
        }
        if let Some(commit) = self.commit {
            here = here.with_group_commit(commit);
        }
        here
    }

    /// Answers only once `replicas` replicas have each call (`WAIT`, up to `timeout_ms`); fewer is
    /// an error (the caller answers 503 and the client retries: its retry is then a duplicate if
    /// the master kept the event, or queued again if a failover lost it).
    pub fn with_wait(mut self, replicas: u32, timeout_ms: u64) -> Self {
        let core = Arc::get_mut(&mut self.core).expect("with_wait before the enqueuer is shared");
        core.wait = (replicas > 0).then_some((replicas, timeout_ms));
        self
    }

    /// Coalesces concurrent enqueues into one call per partition: a committer task per partition
    /// takes what is waiting, waits up to `max_wait` for more while an earlier call is in flight,
    /// and sends at most about `max_events` per call. Spawns the committers on the current runtime.
    pub fn with_group_commit(mut self, commit: GroupCommit) -> Self {
        let senders = self
            .core
            .layout
            .all()
            .map(|p| {
                let (tx, rx) = mpsc::channel(COMMIT_QUEUE);
                tokio::spawn(commit_loop(self.core.clone(), p, rx, commit));
                tx
            })
            .collect();
        self.committers = Some(Arc::new(senders));
        self.commit = Some(commit);
        self
    }

    pub fn layout(&self) -> &Partitions {
        &self.core.layout
    }

    pub async fn load(&self) -> anyhow::Result<()> {
        self.core.script.load(&self.core.client).await?;
        Ok(())
    }

    /// One outcome per event, in order.
    #[tracing::instrument(level = "debug", name = "Queueing events", skip_all, fields(events = events.len()))]
    pub async fn enqueue(
        &self,
        events: &[QueuedEvent],
        request_id: &str,
    ) -> anyhow::Result<Vec<Outcome>> {
        let rid: Arc<str> = serde_json::to_string(request_id)?.into();
        let layout = &self.core.layout;
        let items = events
            .iter()
            .map(|e| {
                Ok(Item {
                    placement: layout.place(&e.account_id, &e.event_id),
                    event: serde_json::to_string(e)?,
                    rid: rid.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.enqueue_items(items).await
    }

    /// Queues stream events as they are (`(key, event JSON)`), each reserved under its own key
    /// rather than its event's: what replays use, with a key of the dead letter, so a replay never
    /// meets the reservation of the very event that failed.
    pub async fn enqueue_raw(
        &self,
        items: &[(String, String)],
        request_id: &str,
    ) -> anyhow::Result<Vec<Outcome>> {
        let rid: Arc<str> = serde_json::to_string(request_id)?.into();
        let items = items
            .iter()
            .map(|(key, json)| Item {
                placement: self.core.layout.place_key(key),
                event: json.clone(),
                rid: rid.clone(),
            })
            .collect();
        self.enqueue_items(items).await
    }

    async fn enqueue_items(&self, items: Vec<Item>) -> anyhow::Result<Vec<Outcome>> {
        let n = items.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        // Split by partition, remembering each item's index.
        let mut parts: Vec<(u16, Vec<usize>, Vec<Item>)> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let p = item.placement.partition;
            match parts.iter_mut().find(|(q, _, _)| *q == p) {
                Some((_, idx, its)) => {
                    idx.push(i);
                    its.push(item);
                }
                None => parts.push((p, vec![i], vec![item])),
            }
        }
        let calls = parts.into_iter().map(|(p, idx, its)| async move {
            let outcomes = self.submit(p, its).await?;
            Ok::<_, anyhow::Error>((idx, outcomes))
        });
        let mut out = vec![Outcome::Duplicate; n];
        for result in futures::future::join_all(calls).await {
            let (idx, outcomes) = result?;
            anyhow::ensure!(
                idx.len() == outcomes.len(),
                "enqueue answered {} outcomes for {} events",
                outcomes.len(),
                idx.len()
            );
            for (i, o) in idx.into_iter().zip(outcomes) {
                out[i] = o;
            }
        }
        Ok(out)
    }

    async fn submit(&self, partition: u16, items: Vec<Item>) -> anyhow::Result<Vec<Outcome>> {
        let Some(committers) = &self.committers else {
            return self.core.call(partition, items).await;
        };
        let (reply, answer) = oneshot::channel();
        committers[partition as usize]
            .send(Job { items, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the group committer of partition {partition} stopped"))?;
        answer
            .await
            .context("the group committer dropped the request")?
            .map_err(anyhow::Error::msg)
    }
}

impl Core {
    /// The events of `items`, all of partition `partition`, queued as one entry: those whose
    /// member is reserved already (or that repeat a member earlier in `items`) are duplicates,
    /// and the rest go in one script call — again without those the script finds reserved, until
    /// a call queues them all or none is left (a race with another call is the only way round
    /// twice).
    async fn call(&self, partition: u16, items: Vec<Item>) -> anyhow::Result<Vec<Outcome>> {
        let result = self.call_rounds(partition, items).await;
        self.healer.note(result.is_ok(), &self.client);
        result
    }

    async fn call_rounds(&self, partition: u16, items: Vec<Item>) -> anyhow::Result<Vec<Outcome>> {
        /// Rounds before giving up: each round removes at least one event.
        const MAX_ROUNDS: usize = 8;
        let mut seen: HashSet<Member> = HashSet::with_capacity(items.len());
        let mut todo: Vec<usize> = (0..items.len())
            .filter(|&i| seen.insert(items[i].placement.member))
            .collect();
        let mut out = vec![Outcome::Duplicate; items.len()];
        for _ in 0..MAX_ROUNDS {
            if todo.is_empty() {
                break;
            }
            let (id, flags) = self.call_once(partition, &items, &todo).await?;
            match id {
                Some(id) => {
                    let id: Arc<str> = id.into();
                    for &i in &todo {
                        out[i] = Outcome::Accepted(id.clone());
                    }
                    todo.clear();
                }
                None => {
                    todo = todo
                        .into_iter()
                        .zip(flags)
                        .filter_map(|(i, new)| new.then_some(i))
                        .collect();
                }
            }
        }
        anyhow::ensure!(
            todo.is_empty(),
            "enqueue raced other calls {MAX_ROUNDS} times"
        );
        // Also after a call that queued nothing: a client retrying after a short WAIT must not be
        // told "duplicate" before the replicas have what this connection wrote.
        if let Some((replicas, timeout_ms)) = self.wait {
            self.wait_for_replicas(&self.layout.stream(partition), replicas, timeout_ms)
                .await?;
        }
        Ok(out)
    }

    /// One script call for `items[todo]`: the entry id if it queued them all, and per event
    /// whether it is new.
    async fn call_once(
        &self,
        partition: u16,
        items: &[Item],
        todo: &[usize],
    ) -> anyhow::Result<(Option<String>, Vec<bool>)> {
        let n = todo.len();
        let window = self.window_secs;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let generation = now / window;
        let expires = ((generation + 2) * window) as i64;
        let args = || {
            let events = json_array(todo.iter().map(|&i| items[i].event.as_str()));
            let first_rid = &items[todo[0]].rid;
            let rids = if todo.iter().all(|&i| items[i].rid == *first_rid) {
                first_rid.to_string()
            } else {
                json_array(todo.iter().map(|&i| &*items[i].rid))
            };
            let mut args: Vec<Value> = Vec::with_capacity(7 + n);
            args.push(Value::from(expires));
            args.push(Value::from(n as i64));
            args.push(Value::from(STREAM_EVENT_FIELD));
            args.push(Value::from(STREAM_REQUEST_ID_FIELD));
            args.push(Value::from(STREAM_COUNT_FIELD));
            args.push(Value::from(events));
            args.push(Value::from(rids));
            for &i in todo {
                args.push(Value::Bytes(Bytes::copy_from_slice(
                    &items[i].placement.member,
                )));
            }
            args
        };
        let keys = || {
            vec![
                self.layout.stream(partition),
                self.layout.dedup(partition, generation),
                self.layout.dedup(partition, generation.saturating_sub(1)),
                self.layout.meta(partition),
            ]
        };
        // `evalsha_with_reload` would copy every argument for its retry; the arguments are
        // built again instead, in the rare case Redis lost the script (a restart, a failover).
        let reply: Value = match self.script.evalsha(&self.client, keys(), args()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.script.load(&self.client).await?;
                self.script.evalsha(&self.client, keys(), args()).await?
            }
            reply => reply?,
        };
        parse_reply(reply, n)
    }

    /// `WAIT` on the connection that took the write: the node of the stream's slot.
    async fn wait_for_replicas(
        &self,
        stream: &str,
        replicas: u32,
        timeout_ms: u64,
    ) -> anyhow::Result<()> {
        let slot = fred::util::redis_keyslot(stream.as_bytes());
        let acked: i64 = self
            .client
            .custom(
                CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), false),
                vec![Value::from(replicas as i64), Value::from(timeout_ms as i64)],
            )
            .await?;
        anyhow::ensure!(
            acked >= i64::from(replicas),
            "only {acked} of {replicas} replicas confirmed the enqueue within {timeout_ms} ms"
        );
        Ok(())
    }
}

/// `[a,b,…]` of JSON texts already written.
fn json_array<'a>(parts: impl Iterator<Item = &'a str> + Clone) -> String {
    let bytes: usize = parts.clone().map(|p| p.len() + 1).sum();
    let mut out = String::with_capacity(bytes + 2);
    out.push('[');
    for (k, part) in parts.enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(part);
    }
    out.push(']');
    out
}

/// `{id | nil, {flag…}}` → the entry id and, per event sent, whether it was queued.
fn parse_reply(reply: Value, sent: usize) -> anyhow::Result<(Option<String>, Vec<bool>)> {
    let Value::Array(mut parts) = reply else {
        anyhow::bail!("the enqueue script answered {reply:?}");
    };
    anyhow::ensure!(parts.len() == 2, "the enqueue script answered {parts:?}");
    let flags = match parts.pop() {
        Some(Value::Array(flags)) => flags
            .into_iter()
            .map(|f| f.as_i64() == Some(1))
            .collect::<Vec<_>>(),
        other => anyhow::bail!("the enqueue script answered flags {other:?}"),
    };
    anyhow::ensure!(
        flags.len() == sent,
        "the enqueue script answered {} outcomes for {sent} events",
        flags.len()
    );
    let id = parts
        .pop()
        .filter(|v| !v.is_null())
        .and_then(|v| v.as_string());
    anyhow::ensure!(
        id.is_none() || !flags.contains(&false),
        "the enqueue script queued events beside reserved ones"
    );
    Ok((id, flags))
}

/// One partition's group commit: gathers waiting requests into calls.
async fn commit_loop(
    core: Arc<Core>,
    partition: u16,
    mut rx: mpsc::Receiver<Job>,
    commit: GroupCommit,
) {
    let max_in_flight = commit.max_in_flight.max(1);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    while let Some(first) = rx.recv().await {
        let mut events = first.items.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + commit.max_wait;
        loop {
            while events < commit.max_events {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.items.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            // An idle partition sends at once; a busy one waits a little for company.
            if events >= commit.max_events || slots.available_permits() == max_in_flight {
                break;
            }
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => {
                        events += job.items.len();
                        jobs.push(job);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let core = core.clone();
        tokio::spawn(async move {
            let _slot = slot;
            metrics::histogram!("sluice_api_commit_events").record(events as f64);
            let mut sizes = Vec::with_capacity(jobs.len());
            let mut items = Vec::with_capacity(events);
            let mut replies = Vec::with_capacity(jobs.len());
            for job in jobs {
                sizes.push(job.items.len());
                items.extend(job.items);
                replies.push(job.reply);
            }
            match core.call(partition, items).await {
                Ok(outcomes) => {
                    let mut outcomes = outcomes.into_iter();
                    for (size, reply) in sizes.into_iter().zip(replies) {
                        let _ = reply.send(Ok(outcomes.by_ref().take(size).collect()));
                    }
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    for reply in replies {
                        let _ = reply.send(Err(message.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_into_an_id_and_flags() {
        let reply = Value::Array(vec![
            Value::from("1-0"),
            Value::Array(vec![Value::from(1), Value::from(1)]),
        ]);
        assert_eq!(
            parse_reply(reply, 2).unwrap(),
            (Some("1-0".to_owned()), vec![true, true])
        );
        let none = Value::Array(vec![Value::Null, Value::Array(vec![Value::from(0)])]);
        assert_eq!(parse_reply(none, 1).unwrap(), (None, vec![false]));
        let short = Value::Array(vec![Value::Null, Value::Array(vec![])]);
        assert!(parse_reply(short, 1).is_err());
        let bad = Value::Array(vec![
            Value::from("1-0"),
            Value::Array(vec![Value::from(1), Value::from(0)]),
        ]);
        assert!(parse_reply(bad, 2).is_err(), "all or nothing");
    }
}
