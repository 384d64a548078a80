//! The consumer loop: read entries (its own pending ones first, then new ones), flush them as one
//! unordered insert at the batch size or the flush interval, dead-letter what can never be stored,
//! and acknowledge only after MongoDB answered for every entry and the batch's rollups are written.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use mongodb::bson::{Document, RawDocumentBuf};
use mongodb::{Collection, Database};
use rand::Rng;
use sluice_shared::config::Settings;
use sluice_shared::event::QueuedEvent;
use sluice_shared::health::Lifecycle;
use tokio::sync::watch;

use crate::batching::{backoff, read_block, should_flush};
use crate::rollups::Increments;
use crate::store::{self, DeadLetter, WriteReport};
use crate::stream::{self, ack, Cursor, Entry, StreamReader};

/// What flushed batches left to do together, about once a second: their rollups, and the
/// acknowledgement of their entries, which waits for the rollups so that a worker killed in
/// between has its entries redelivered (and their buckets reconciled) rather than lost from the
/// aggregates.
#[derive(Default)]
struct Held {
    increments: Increments,
    since: Option<Instant>,
    acks: Vec<String>,
    /// (account, hour) buckets where an insert met an already stored event: their rollups may
    /// have missed it (a retry after a lost reply, a redelivery after a crash).
    suspect: BTreeSet<(String, i64)>,
}

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

pub struct Consumer {
    held: std::sync::Mutex<Held>,
    pub settings: Settings,
    pub consumer: String,
    pub reader: StreamReader,
    pub redis: Client,
    pub db: Database,
    pub events: Collection<RawDocumentBuf>,
    pub dlq: Collection<Document>,
    pub lifecycle: Lifecycle,
    pub progress: ReadProgress,
}

/// A batch sorted before it is written.
#[derive(Default)]
struct Triage<'a> {
    /// Encoded documents and, beside them, the entry and event each came from.
    docs: Vec<RawDocumentBuf>,
    sources: Vec<(&'a Entry, QueuedEvent)>,
    dead: Vec<DeadLetter>,
}

impl Consumer {
    pub fn new(
        settings: Settings,
        consumer: String,
        blocking: Client,
        redis: Client,
        db: &Database,
        lifecycle: Lifecycle,
    ) -> Self {
        let reader = StreamReader::new(
            blocking,
            settings.redis.stream_key.clone(),
            settings.redis.group.clone(),
            consumer.clone(),
        );
        let progress = ReadProgress::default();
        progress.mark();
        Self {
            held: Default::default(),
            settings,
            consumer,
            reader,
            redis,
            db: db.clone(),
            events: store::raw_events(db),
            dlq: store::dead_letters(db),
            lifecycle,
            progress,
        }
    }

    fn retry_delay(&self, attempt: u32) -> Duration {
        let w = &self.settings.worker;
        backoff(
            attempt,
            Duration::from_millis(w.retry_base_ms),
            Duration::from_millis(w.retry_cap_ms),
            rand::rng().random::<f64>(),
        )
    }

    /// Takes over entries other consumers (dead ones, mostly) have held idle too long.
    async fn claim(&self, count: usize) -> Vec<Entry> {
        let w = &self.settings.worker;
        match stream::claim(
            &self.redis,
            &self.settings.redis.stream_key,
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
        match sluice_shared::redis::ensure_group(&self.redis, &r.stream_key, &r.group).await {
            Ok(()) => {
                tracing::warn!(stream = %r.stream_key, group = %r.group, "the consumer group was gone (Redis lost its data?); recreated it");
                metrics::counter!("sluice_worker_group_recreated_total").increment(1);
            }
            Err(e) => tracing::warn!(error = ?e, "cannot recreate the consumer group"),
        }
    }

    /// Runs until `shutdown` turns true; then flushes and acknowledges the batch in hand.
    #[tracing::instrument(name = "Consuming the event stream", skip_all, fields(consumer = %self.consumer))]
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let batch_size = self.settings.worker.batch_size;
        let interval = self.settings.worker.flush_interval();
        let mut cursor = Cursor::Pending("0".into());
        let mut batch: Vec<Entry> = Vec::with_capacity(batch_size);
        let mut oldest: Option<Instant> = None;
        let mut read_failures = 0u32;
        let claim_every = Duration::from_millis(self.settings.worker.claim_interval_ms);
        let mut next_claim = Instant::now() + claim_every;
        loop {
            self.lifecycle.beat();
            if *shutdown.borrow() {
                break;
            }
            if cursor == Cursor::New && Instant::now() >= next_claim && batch.len() < batch_size {
                let wanted = batch_size - batch.len();
                let claimed = self.claim(wanted).await;
                next_claim = if claimed.len() == wanted {
                    Instant::now()
                } else {
                    Instant::now() + claim_every
                };
                if oldest.is_none() && !claimed.is_empty() {
                    oldest = Some(Instant::now());
                }
                batch.extend(claimed);
            }
            // A full batch is flushed before anything more is read: XREADGROUP with COUNT 0
            // means "no limit" and would hand this worker the whole backlog in one reply.
            let room = batch_size.saturating_sub(batch.len());
            if room > 0 {
                let waited = oldest.map(|t| t.elapsed()).unwrap_or_default();
                let block = read_block(batch.len(), waited, interval);
                match self.reader.read(&cursor, room, block).await {
                    Ok(entries) => {
                        read_failures = 0;
                        self.progress.mark();
                        let entries = self.after_read(&mut cursor, entries).await;
                        if oldest.is_none() && !entries.is_empty() {
                            oldest = Some(Instant::now());
                        }
                        batch.extend(entries);
                    }
                    Err(e) => {
                        if e.details().contains("NOGROUP") {
                            self.recreate_group().await;
                        }
                        let delay = self.retry_delay(read_failures);
                        read_failures += 1;
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "stream read failed");
                        metrics::counter!("sluice_worker_read_errors_total").increment(1);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
            }
            let waited = oldest.map(|t| t.elapsed()).unwrap_or_default();
            if batch.is_empty() {
                self.write_held(false).await;
            }
            if should_flush(batch.len(), batch_size, waited, interval) {
                self.flush(std::mem::take(&mut batch), &mut shutdown).await;
                oldest = None;
            }
        }
        if !batch.is_empty() {
            tracing::info!(
                entries = batch.len(),
                "flushing the batch in hand before exit"
            );
            let (_tx, mut never) = watch::channel(false);
            self.flush(batch, &mut never).await;
        }
        // Rollups and acknowledgements held for coalescing go out before exit, not with it.
        self.write_held(true).await;
    }

    /// Re-reads of our own pending entries count as deliveries (a batch that crashes the worker
    /// every time becomes poison instead of a crash loop); an empty re-read ends them.
    async fn after_read(&self, cursor: &mut Cursor, mut entries: Vec<Entry>) -> Vec<Entry> {
        if let Cursor::Pending(_) = cursor {
            if let Err(e) = stream::set_deliveries(
                &self.redis,
                &self.settings.redis.stream_key,
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

    /// Sorts a batch into documents to write and dead letters (poison, undecodable, unstorable).
    fn triage<'a>(&self, entries: &'a [Entry]) -> Triage<'a> {
        let max_deliveries = self.settings.worker.max_deliveries;
        let mut t = Triage::default();
        for entry in entries {
            if entry.deliveries > max_deliveries {
                tracing::warn!(stream_id = %entry.id, deliveries = entry.deliveries, "dead-lettering a poison entry");
                t.dead.push(DeadLetter::of(
                    entry,
                    "poison",
                    format!(
                        "delivered {} times, more than the {max_deliveries} allowed",
                        entry.deliveries
                    ),
                ));
                continue;
            }
            match entry
                .decode()
                .and_then(|e| store::to_document(&e).map(|d| (e, d)))
            {
                Ok((event, doc)) => {
                    t.docs.push(doc);
                    t.sources.push((entry, event));
                }
                Err(error) => {
                    tracing::warn!(stream_id = %entry.id, error = %error, "dead-lettering an invalid entry");
                    t.dead.push(DeadLetter::of(entry, "invalid", error));
                }
            }
        }
        t
    }

    /// Writes `docs` until MongoDB has answered for each one — stored, already stored, or refused
    /// for what it is — retrying with backoff whatever it did not take for where it stands (a
    /// refused command, a shard away, a network error), beating between attempts. `None` when
    /// shutdown comes first: nothing is acknowledged then, and the entries are redelivered.
    async fn write_until_answered<T: serde::Serialize + Send + Sync>(
        &self,
        coll: &Collection<T>,
        docs: &[T],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<WriteReport> {
        let mut report = WriteReport::default();
        let mut todo: Vec<usize> = (0..docs.len()).collect();
        let mut attempt = 0u32;
        while !todo.is_empty() {
            let part: Vec<&T> = todo.iter().map(|&i| &docs[i]).collect();
            let failure = match store::write_batch(coll, &part).await {
                Ok(r) => {
                    report.absorb(r, &todo);
                    todo = std::mem::take(&mut report.retry_at);
                    if todo.is_empty() {
                        break;
                    }
                    format!("{} documents were not taken for now", todo.len())
                }
                Err(e) => format!("{:#}", anyhow::Error::new(e)),
            };
            let delay = self.retry_delay(attempt);
            attempt += 1;
            metrics::counter!("sluice_worker_write_retries_total", "collection" => coll.name().to_owned()).increment(1);
            tracing::warn!(error = %failure, collection = coll.name(), attempt, retry_in_ms = delay.as_millis() as u64, "MongoDB did not take the write; retrying");
            if *shutdown.borrow() {
                tracing::warn!(
                    "shutting down with an unwritten batch; it stays pending for redelivery"
                );
                return None;
            }
            self.lifecycle.beat();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        }
        Some(report)
    }

    /// Writes the batch, dead-letters what can never be stored, and hands the entries to the held
    /// acknowledgements. Gives up, unacknowledged, only on shutdown.
    #[tracing::instrument(level = "debug", name = "Flushing a batch", skip_all, fields(entries = entries.len()))]
    pub async fn flush(&self, entries: Vec<Entry>, shutdown: &mut watch::Receiver<bool>) {
        let started = Instant::now();
        let Triage {
            docs,
            sources,
            mut dead,
        } = self.triage(&entries);
        let Some(report) = self
            .write_until_answered(&self.events, &docs, shutdown)
            .await
        else {
            return;
        };
        drop(docs);
        let not_stored: std::collections::HashSet<usize> = report
            .duplicate_at
            .iter()
            .copied()
            .chain(report.rejected.iter().map(|(i, _)| *i))
            .collect();
        let inserted = sources
            .iter()
            .enumerate()
            .filter(|(i, _)| !not_stored.contains(i))
            .map(|(_, (_, event))| event);
        let increments = Increments::of(inserted.filter(|e| self.counted(e)));
        let suspect: Vec<(String, i64)> = report
            .duplicate_at
            .iter()
            .filter_map(|&i| sources.get(i))
            .map(|(_, e)| crate::rollups::hour_bucket(e))
            .collect();
        for (index, error) in &report.rejected {
            if let Some((entry, event)) = sources.get(*index) {
                tracing::warn!(stream_id = %entry.id, event_id = %event.event_id, error = %error, "MongoDB refused a document; dead-lettering it");
                dead.push(DeadLetter::of(entry, "write_rejected", error.clone()));
            }
        }
        if !dead.is_empty() && !self.store_dead_letters(&dead, shutdown).await {
            return;
        }
        if let Ok(mut held) = self.held.lock() {
            held.increments.merge(increments);
            held.since.get_or_insert_with(Instant::now);
            held.acks.extend(entries.iter().map(|e| e.id.clone()));
            held.suspect.extend(suspect);
        }
        metrics::counter!("sluice_worker_batches_total").increment(1);
        metrics::histogram!("sluice_worker_batch_size_events").record(entries.len() as f64);
        metrics::histogram!("sluice_worker_flush_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("sluice_worker_events_total", "outcome" => "persisted")
            .increment(report.inserted as u64);
        metrics::counter!("sluice_worker_events_total", "outcome" => "duplicate")
            .increment(report.duplicates as u64);
        for d in &dead {
            metrics::counter!("sluice_worker_events_total", "outcome" => "dead_lettered", "reason" => d.reason).increment(1);
            if d.account_id.is_none() {
                metrics::counter!("sluice_worker_dead_letters_unattributed_total", "reason" => d.reason).increment(1);
            }
        }
        self.write_held(false).await;
        tracing::debug!(
            inserted = report.inserted,
            duplicates = report.duplicates,
            dead_lettered = dead.len(),
            "batch stored"
        );
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

    /// Writes the rollups of the batches flushed since the last write, then acknowledges their
    /// entries: at most every `worker.rollup_interval_ms` (or now, with `force`), so one bulk
    /// write serves many batches.
    pub async fn write_held(&self, force: bool) {
        let due = Duration::from_millis(self.settings.worker.rollup_interval_ms);
        let ready = match self.held.lock() {
            Ok(mut h) => match h.since {
                Some(since) if force || since.elapsed() >= due => Some(std::mem::take(&mut *h)),
                _ => None,
            },
            Err(_) => None,
        };
        let Some(held) = ready else {
            return;
        };
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
        self.ack_all(held.acks).await;
    }

    async fn ack_all(&self, ids: Vec<String>) {
        let mut attempt = 0u32;
        while let Err(e) = ack(
            &self.redis,
            &self.settings.redis.stream_key,
            &self.settings.redis.group,
            ids.clone(),
        )
        .await
        {
            // Unacked entries are redelivered and stored once by `_id`; retrying keeps that rare.
            tracing::warn!(error = %e, "XACK failed; retrying");
            if attempt >= 5 {
                tracing::warn!(
                    entries = ids.len(),
                    "giving up on XACK; the entries will be redelivered"
                );
                return;
            }
            tokio::time::sleep(self.retry_delay(attempt)).await;
            attempt += 1;
        }
    }

    /// Stores dead letters; true only once MongoDB has confirmed every one (stored now, or by an
    /// earlier attempt). A letter MongoDB refuses for what it holds is stored again in its
    /// smallest form (the entry's raw text); only if even that is refused is the batch left
    /// unacknowledged, to come back.
    async fn store_dead_letters(
        &self,
        dead: &[DeadLetter],
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut fresh = Vec::with_capacity(dead.len());
        for d in dead {
            if d.replay_of.is_none() {
                fresh.push(d);
                continue;
            }
            let mut attempt = 0u32;
            loop {
                match store::refail_replayed_letter(&self.dlq, d, &self.consumer).await {
                    Ok(true) => break,
                    Ok(false) => {
                        fresh.push(d);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot update a replayed dead letter; retrying");
                        if *shutdown.borrow() {
                            return false;
                        }
                        tokio::time::sleep(self.retry_delay(attempt)).await;
                        attempt += 1;
                    }
                }
            }
        }
        let dead = fresh;
        let docs: Vec<Document> = dead
            .iter()
            .map(|d| store::dead_letter_document(d, &self.consumer))
            .collect();
        let Some(report) = self.write_until_answered(&self.dlq, &docs, shutdown).await else {
            return false;
        };
        if report.rejected.is_empty() {
            return true;
        }
        let minimal: Vec<Document> = report
            .rejected
            .iter()
            .filter_map(|(i, error)| dead.get(*i).map(|d| (*d, error)))
            .map(|(d, error)| store::minimal_dead_letter_document(d, &self.consumer, error))
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
}
