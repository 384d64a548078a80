//! The consumer loop: read entries (its own pending ones first, then new ones), flush them as one
//! unordered insert at the batch size or the flush interval, dead-letter what can never be stored,
//! and acknowledge only after MongoDB answered for every entry and the batch's rollups are written.
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use mongodb::bson::{self, RawDocumentBuf};
use mongodb::{Collection, Database};
use sluice_http::Heart;
use sluice_shared::config::Settings;
use sluice_shared::event::QueuedEvent;
use sluice_store::{DeadLetter, FailedEntry};
use tokio::sync::watch;

use crate::batching::{read_block, should_flush};
use crate::retry::{retry_until_shutdown, Failed, RetryPolicy};
use crate::rollup_buffer::{Held, RollupBuffer};
use crate::rollups::{hour_bucket, Increments};
use crate::store::{self, WriteReport};
use crate::stream::{self, ack, Cursor, Entry, StreamReader};
use crate::triage::{settle, triage, Settled, Triage};

/// XACK attempts before the entries are left to be redelivered: an unacknowledged entry is
/// stored once by `_id`, so giving up costs a redelivery, never an event; retrying keeps it rare.
const ACK_ATTEMPTS: u32 = 6;

/// When the read loop last heard from Redis (Unix ms), for the health check.
#[derive(Clone, Default)]
pub struct ReadProgress(Arc<AtomicI64>);

impl ReadProgress {
    fn mark(&self) {
        self.0
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// How long ago the last successful read was (since start if none yet).
    pub fn age(&self) -> Duration {
        let last = self.0.load(Ordering::Relaxed);
        let now = chrono::Utc::now().timestamp_millis();
        Duration::from_millis(now.saturating_sub(last).max(0) as u64)
    }
}

/// One partition's consumer: a worker runs one per partition, each on its own stream.
pub struct Consumer {
    pub settings: Settings,
    pub consumer: String,
    /// The partition's stream.
    pub stream: String,
    pub reader: StreamReader,
    pub redis: Client,
    pub db: Database,
    pub events: Collection<RawDocumentBuf>,
    /// `events_quarantine`, for the events a tracking plan holds back.
    pub quarantine: Collection<RawDocumentBuf>,
    pub dlq: Collection<DeadLetter>,
    /// Beaten by every turn of the loop and between write retries.
    pub heart: Heart,
    pub progress: ReadProgress,
    /// Events per entry in the last read, to size the next one in events (entries carry many).
    per_entry: std::sync::atomic::AtomicUsize,
    /// Of MongoDB writes (until they are answered or shutdown comes), and of reads.
    retry: RetryPolicy,
    /// Where newly stored events go for rule evaluation and the live tail (off the write path).
    rules: Option<crate::rules::RuleHook>,
}

impl Consumer {
    pub fn new(
        settings: Settings,
        consumer: String,
        stream: String,
        blocking: Client,
        redis: Client,
        db: &Database,
        heart: Heart,
    ) -> Self {
        let reader = StreamReader::new(
            blocking,
            stream.clone(),
            settings.redis.group.clone(),
            consumer.clone(),
        );
        let progress = ReadProgress::default();
        progress.mark();
        let retry = RetryPolicy {
            base: Duration::from_millis(settings.worker.retry_base_ms),
            cap: Duration::from_millis(settings.worker.retry_cap_ms),
            max_attempts: None,
        };
        let first_read_per_entry = settings.worker.batch_size.max(1);
        Self {
            settings,
            consumer,
            stream,
            reader,
            redis,
            db: db.clone(),
            events: sluice_store::raw_events(db),
            quarantine: sluice_store::raw_quarantine(db),
            dlq: sluice_store::dead_letters(db),
            heart,
            progress,
            // Until a read has shown what entries carry, one entry per read: an entry may carry
            // a thousand events.
            per_entry: std::sync::atomic::AtomicUsize::new(first_read_per_entry),
            retry,
            rules: None,
        }
    }

    /// Hands every batch's newly stored events to `hook` once they are stored.
    pub fn with_rules(mut self, hook: crate::rules::RuleHook) -> Self {
        self.rules = Some(hook);
        self
    }

    fn beat(&self) {
        self.heart.beat();
    }

    /// Entries to ask for to get about `room` events.
    fn entries_for(&self, room: usize) -> usize {
        (room / self.per_entry.load(Ordering::Relaxed).max(1)).clamp(1, room.max(1))
    }

    fn learn_per_entry(&self, entries: &[Entry]) {
        if let Some(events) = entries.iter().map(Entry::event_count).reduce(|a, b| a + b) {
            self.per_entry
                .store((events / entries.len().max(1)).max(1), Ordering::Relaxed);
        }
    }

    /// Takes over entries other consumers (dead ones, mostly) have held idle too long.
    async fn claim(&self, count: usize) -> Vec<Entry> {
        let w = &self.settings.worker;
        match stream::claim(
            &self.redis,
            &self.stream,
            &self.settings.redis.group,
            &self.consumer,
            Duration::from_millis(w.claim_min_idle_ms),
            count,
        )
        .await
        {
            Ok(entries) => {
                if !entries.is_empty() {
                    tracing::info!(
                        claimed = entries.len(),
                        "claimed entries idle in other consumers"
                    );
                    metrics::counter!("sluice_worker_claimed_entries_total")
                        .increment(entries.len() as u64);
                }
                entries
            }
            Err(e) => {
                tracing::warn!(error = %e, "XAUTOCLAIM failed");
                Vec::new()
            }
        }
    }

    /// Recreates the consumer group after Redis lost it (a FLUSHALL, a restart without its AOF, a
    /// new node): reading would otherwise fail with NOGROUP forever.
    async fn recreate_group(&self) {
        let r = &self.settings.redis;
        match sluice_shared::redis::ensure_group(&self.redis, &self.stream, &r.group).await {
            Ok(()) => {
                tracing::warn!(stream = %self.stream, group = %r.group, "the consumer group was gone (Redis lost its data?); recreated it");
                metrics::counter!("sluice_worker_group_recreated_total").increment(1);
            }
            Err(e) => tracing::warn!(error = ?e, "cannot recreate the consumer group"),
        }
    }

    /// Runs until `shutdown` turns true; then flushes and acknowledges the batch in hand.
    #[tracing::instrument(name = "Consuming the event stream", skip_all, fields(consumer = %self.consumer, stream = %self.stream))]
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let batch_size = self.settings.worker.batch_size;
        let interval = self.settings.worker.flush_interval();
        let mut cursor = Cursor::Pending("0".into());
        // The id of the last entry a read of new entries handed us: if a read fails, its reply
        // may have been lost with the entries already pending for us (Redis records a delivery
        // before it answers), so the next read starts again at our own pending entries after it
        // instead of leaving them to a claim, which waits `claim_min_idle_ms`.
        let mut last_new = "0".to_owned();
        let mut batch: Vec<Entry> = Vec::new();
        // Events in `batch`: the batch size counts events, and an entry carries many.
        let mut events = 0usize;
        let mut oldest: Option<Instant> = None;
        let mut read_failures = 0u32;
        let mut rollups = RollupBuffer::default();
        let claim_every = Duration::from_millis(self.settings.worker.claim_interval_ms);
        let mut next_claim = Instant::now() + claim_every;
        loop {
            self.beat();
            if *shutdown.borrow() {
                break;
            }
            if cursor == Cursor::New && Instant::now() >= next_claim && events < batch_size {
                let wanted = self.entries_for(batch_size - events);
                let claimed = self.claim(wanted).await;
                next_claim = if claimed.len() == wanted {
                    Instant::now()
                } else {
                    Instant::now() + claim_every
                };
                if oldest.is_none() && !claimed.is_empty() {
                    oldest = Some(Instant::now());
                }
                self.learn_per_entry(&claimed);
                events += claimed.iter().map(Entry::event_count).sum::<usize>();
                batch.extend(claimed);
            }
            // A full batch is flushed before anything more is read: XREADGROUP with COUNT 0
            // means "no limit" and would hand this worker the whole backlog in one reply.
            let room = batch_size.saturating_sub(events);
            if room > 0 {
                let waited = oldest.map(|t| t.elapsed()).unwrap_or_default();
                let block = read_block(batch.len(), waited, interval);
                let count = self.entries_for(room);
                let rereading = cursor != Cursor::New;
                let mut entries = self
                    .read_entries(&mut cursor, count, block, &mut read_failures, &mut shutdown)
                    .await;
                match entries.last() {
                    Some(last) if stream::stream_id_lt(&last_new, &last.id) => {
                        last_new.clone_from(&last.id);
                    }
                    None if read_failures > 0 && !rereading => {
                        tracing::info!(after = %last_new, "re-reading our own pending entries after a failed read");
                        cursor = Cursor::Pending(last_new.clone());
                    }
                    _ => {}
                }
                if rereading && !batch.is_empty() {
                    // A claimed entry newer than `last_new` may be in hand already.
                    entries.retain(|e| batch.iter().all(|b| b.id != e.id));
                }
                if oldest.is_none() && !entries.is_empty() {
                    oldest = Some(Instant::now());
                }
                self.learn_per_entry(&entries);
                events += entries.iter().map(Entry::event_count).sum::<usize>();
                batch.extend(entries);
            }
            let waited = oldest.map(|t| t.elapsed()).unwrap_or_default();
            if batch.is_empty() {
                self.write_rollups_if_due(&mut rollups, &mut shutdown).await;
            }
            if should_flush(events, batch_size, waited, interval) {
                self.flush(std::mem::take(&mut batch), &mut rollups, &mut shutdown)
                    .await;
                events = 0;
                oldest = None;
            }
        }
        self.finish(batch, rollups).await;
    }

    /// After shutdown: the batch in hand is flushed, and everything held is written and
    /// acknowledged before exit, not with it — retrying until the shutdown deadline cuts it off
    /// (then the entries stay pending and are redelivered).
    async fn finish(&self, batch: Vec<Entry>, mut rollups: RollupBuffer) {
        let (_keep, mut never) = watch::channel(false);
        if !batch.is_empty() {
            tracing::info!(
                entries = batch.len(),
                "flushing the batch in hand before exit"
            );
            self.flush(batch, &mut rollups, &mut never).await;
        }
        if let Some(held) = rollups.take_all() {
            self.write_rollups(held, &mut never).await;
        }
    }

    /// Up to `room` entries from `cursor`; none after a failed read, which waits its backoff
    /// (cut short by shutdown).
    async fn read_entries(
        &self,
        cursor: &mut Cursor,
        room: usize,
        block: Duration,
        failures: &mut u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Vec<Entry> {
        match self.reader.read(cursor, room, block).await {
            Ok(entries) => {
                *failures = 0;
                self.progress.mark();
                self.after_read(cursor, entries).await
            }
            Err(e) => {
                if e.details().contains("NOGROUP") {
                    self.recreate_group().await;
                }
                let delay = self.retry.delay(*failures);
                *failures += 1;
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "stream read failed");
                metrics::counter!("sluice_worker_read_errors_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
                Vec::new()
            }
        }
    }

    /// Re-reads of our own pending entries count as deliveries (a batch that crashes the worker
    /// every time becomes poison instead of a crash loop); an empty re-read ends them.
    async fn after_read(&self, cursor: &mut Cursor, mut entries: Vec<Entry>) -> Vec<Entry> {
        if let Cursor::Pending(_) = cursor {
            if let Err(e) = stream::set_deliveries(
                &self.redis,
                &self.stream,
                &self.settings.redis.group,
                &self.consumer,
                &mut entries,
            )
            .await
            {
                tracing::warn!(error = %e, "cannot read delivery counts");
            }
            *cursor = match entries.last() {
                Some(last) => Cursor::Pending(last.id.clone()),
                None => {
                    tracing::info!("own pending entries drained; reading new ones");
                    Cursor::New
                }
            };
        }
        entries
    }

    /// Writes the batch, dead-letters what can never be stored, and holds the entries' rollups
    /// and acknowledgements in `rollups`. Gives up, unacknowledged, only on shutdown.
    #[tracing::instrument(name = "Storing a batch", skip_all, fields(
        entries = entries.len(),
        first_stream_id = entries.first().map(|e| e.id.as_str()),
        last_stream_id = entries.last().map(|e| e.id.as_str()),
    ))]
    pub async fn flush(
        &self,
        entries: Vec<Entry>,
        rollups: &mut RollupBuffer,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let started = Instant::now();
        let Triage {
            docs,
            sources,
            mut dead,
            held,
            held_sources,
        } = triage(&entries, self.settings.worker.max_deliveries);
        let events = docs.len() + dead.len() + held.len();
        let Some(report) = self
            .write_until_answered(&self.events, &docs, shutdown)
            .await
        else {
            return;
        };
        drop(docs);
        let settled = settle(&sources, &report);
        log_written(&settled);
        dead.extend(settled.rejected);
        if !held.is_empty() {
            // Quarantined events: stored once by `_id` like any other, counted in no aggregate.
            let Some(held_report) = self
                .write_until_answered(&self.quarantine, &held, shutdown)
                .await
            else {
                return;
            };
            let held_settled = settle(&held_sources, &held_report);
            metrics::counter!("sluice_worker_events_quarantined_total")
                .increment(held_settled.stored.len() as u64);
            dead.extend(held_settled.rejected);
        }
        log_dead_lettered(&dead);
        if !dead.is_empty() && !self.store_dead_letters(&dead, shutdown).await {
            return;
        }
        if let Some(hook) = &self.rules {
            hook.offer(settled.stored.iter().map(|s| &s.event));
        }
        let stored = settled.stored.iter().map(|s| &s.event);
        rollups.hold(
            Increments::of(stored.filter(|e| self.counted(e))),
            entries.iter().map(|e| e.id.clone()),
            settled.duplicates.iter().map(|s| hour_bucket(&s.event)),
            Instant::now(),
        );
        record_batch(started, events, &report, &dead);
        self.write_rollups_if_due(rollups, shutdown).await;
    }

    /// Whether an event counts in the aggregates: its time lies in the window they cover (see
    /// `worker.rollup_max_age_days`); older or far-future events are stored but not counted, so
    /// one tenant cannot create rollup keys without bound.
    fn counted(&self, e: &QueuedEvent) -> bool {
        let w = &self.settings.worker;
        let age = e.received_at.signed_duration_since(e.timestamp);
        let counted = age <= chrono::Duration::days(w.rollup_max_age_days as i64)
            && -age <= chrono::Duration::seconds(w.rollup_max_future_secs as i64);
        if !counted {
            metrics::counter!("sluice_worker_events_uncounted_total").increment(1);
        }
        counted
    }

    /// Writes `docs` until MongoDB has answered for each one — stored, already stored, or refused
    /// for what it is — retrying whatever it did not take for where it stands (a refused command,
    /// a shard away, a network error). `None` when shutdown comes first: nothing is acknowledged
    /// then, and the entries are redelivered.
    async fn write_until_answered<T: serde::Serialize + Send + Sync>(
        &self,
        coll: &Collection<T>,
        docs: &[T],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<WriteReport> {
        let what = format!("insert into {}", coll.name());
        let all: Vec<usize> = (0..docs.len()).collect();
        let attempt = move |(mut report, todo): (WriteReport, Vec<usize>)| async move {
            let part: Vec<&T> = todo.iter().map(|&i| &docs[i]).collect();
            let (rest, error) = match store::write_batch(coll, &part).await {
                Ok(r) => {
                    report.absorb(r, &todo);
                    let rest = std::mem::take(&mut report.retry_at);
                    if rest.is_empty() {
                        return Ok(report);
                    }
                    let error = format!("{} documents were not taken for now", rest.len());
                    (rest, error)
                }
                Err(e) => (todo, format!("{:#}", anyhow::Error::new(e))),
            };
            metrics::counter!("sluice_worker_write_retries_total", "collection" => coll.name().to_owned()).increment(1);
            Err(Failed {
                rest: (report, rest),
                error,
            })
        };
        let start = (WriteReport::default(), all);
        retry_until_shutdown(
            &what,
            &self.retry,
            &|| self.beat(),
            shutdown,
            start,
            attempt,
        )
        .await
    }

    /// Stores dead letters; true only once MongoDB has confirmed every one (stored now, or by an
    /// earlier attempt). A letter MongoDB refuses for what it holds is stored again in its
    /// smallest form (the entry's raw text); only if even that is refused is the batch left
    /// unacknowledged, to come back.
    async fn store_dead_letters(
        &self,
        dead: &[FailedEntry],
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let Some(fresh) = self.fold_failed_replays(dead, shutdown).await else {
            return false;
        };
        let now = bson::DateTime::now();
        let letters: Vec<DeadLetter> = fresh
            .iter()
            .map(|d| d.letter(&self.consumer, now))
            .collect();
        let Some(report) = self
            .write_until_answered(&self.dlq, &letters, shutdown)
            .await
        else {
            return false;
        };
        if report.rejected.is_empty() {
            return true;
        }
        let minimal: Vec<DeadLetter> = report
            .rejected
            .iter()
            .filter_map(|(i, error)| fresh.get(*i).map(|d| (*d, error)))
            .map(|(d, error)| d.minimal_letter(&self.consumer, now, error))
            .collect();
        match self
            .write_until_answered(&self.dlq, &minimal, shutdown)
            .await
        {
            Some(r) if r.rejected.is_empty() => true,
            Some(r) => {
                tracing::error!(refused = ?r.rejected, "MongoDB refuses even the minimal dead letters; leaving the batch pending");
                false
            }
            None => false,
        }
    }

    /// Folds each failed replay into the letter it replayed; returns the entries that need a
    /// letter of their own (`None` when shutdown came first).
    async fn fold_failed_replays<'d>(
        &self,
        dead: &'d [FailedEntry],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Vec<&'d FailedEntry>> {
        let mut fresh = Vec::with_capacity(dead.len());
        let (dlq, consumer) = (&self.dlq, self.consumer.as_str());
        for d in dead {
            if d.replay_of().is_none() {
                fresh.push(d);
                continue;
            }
            let folded = retry_until_shutdown(
                "update a replayed dead letter",
                &self.retry,
                &|| self.beat(),
                shutdown,
                (),
                move |()| async move {
                    sluice_store::refail_replayed_letter(dlq, d, consumer, bson::DateTime::now())
                        .await
                        .map_err(Failed::of)
                },
            )
            .await?;
            if !folded {
                fresh.push(d);
            }
        }
        Some(fresh)
    }

    async fn write_rollups_if_due(
        &self,
        rollups: &mut RollupBuffer,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let due = Duration::from_millis(self.settings.worker.rollup_interval_ms);
        if let Some(held) = rollups.take_due(due, Instant::now()) {
            self.write_rollups(held, shutdown).await;
        }
    }

    /// Writes the rollups of the batches held, marks the buckets they may have missed for the
    /// reconciler, then acknowledges their entries.
    async fn write_rollups(&self, held: Held, shutdown: &mut watch::Receiver<bool>) {
        let complete = crate::rollups::apply(
            &self.db,
            &self.redis,
            &held.increments,
            self.settings.worker.top_cap,
        )
        .await;
        let mut suspect = held.suspect;
        if !complete {
            suspect.extend(held.increments.hour_buckets());
        }
        crate::reconcile::mark(&self.db, &suspect).await;
        self.ack_all(held.acks, shutdown).await;
    }

    async fn ack_all(&self, ids: Vec<String>, shutdown: &mut watch::Receiver<bool>) {
        let policy = RetryPolicy {
            max_attempts: Some(ACK_ATTEMPTS),
            ..self.retry
        };
        let r = &self.settings.redis;
        let (redis, stream, group, ids) =
            (&self.redis, self.stream.as_str(), r.group.as_str(), &ids);
        let attempt = move |()| async move {
            ack(redis, stream, group, ids.clone())
                .await
                .map(drop)
                .map_err(Failed::of)
        };
        retry_until_shutdown("XACK", &policy, &|| self.beat(), shutdown, (), attempt).await;
    }
}

/// One line per event the write answered for, with the ids that follow it from the api (the
/// request id it was queued under, its eventId) and in the stream.
fn log_written(settled: &Settled<'_, '_>) {
    for s in &settled.stored {
        tracing::debug!(event_id = %s.event.event_id, request_id = s.item.request_id.as_deref(),
            stream_id = %s.item.stream_id(&s.entry.id), "event stored");
    }
    for s in &settled.duplicates {
        tracing::debug!(event_id = %s.event.event_id, request_id = s.item.request_id.as_deref(),
            stream_id = %s.item.stream_id(&s.entry.id), "event already stored");
    }
}

fn log_dead_lettered(dead: &[FailedEntry]) {
    for d in dead {
        tracing::warn!(event_id = d.event_id.as_deref(), request_id = d.request_id.as_deref(),
            stream_id = %d.stream_id, reason = %d.reason, error = %d.error, "dead-lettering an entry");
    }
}

fn record_batch(started: Instant, events: usize, report: &WriteReport, dead: &[FailedEntry]) {
    metrics::counter!("sluice_worker_batches_total").increment(1);
    metrics::histogram!("sluice_worker_batch_size_events").record(events as f64);
    metrics::histogram!("sluice_worker_flush_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("sluice_worker_events_total", "outcome" => "persisted")
        .increment(report.inserted as u64);
    metrics::counter!("sluice_worker_events_total", "outcome" => "duplicate")
        .increment(report.duplicates as u64);
    for d in dead {
        let reason = d.reason.as_str();
        metrics::counter!("sluice_worker_events_total", "outcome" => "dead_lettered", "reason" => reason).increment(1);
        if d.account_id.is_none() {
            metrics::counter!("sluice_worker_dead_letters_unattributed_total", "reason" => reason)
                .increment(1);
        }
    }
    tracing::debug!(
        inserted = report.inserted,
        duplicates = report.duplicates,
        dead_lettered = dead.len(),
        "batch stored"
    );
}
