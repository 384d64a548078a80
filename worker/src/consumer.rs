//! The consumer loop: read entries (its own pending ones first, then new ones), flush them as one
//! unordered insert at the batch size or the flush interval, dead-letter what can never be stored,
//! and acknowledge only after MongoDB answered.
use std::time::{Duration, Instant};

use fred::prelude::*;
use mongodb::bson::Document;
use mongodb::{Collection, Database};
use rand::Rng;
use sluice_shared::config::Settings;
use sluice_shared::health::Lifecycle;
use tokio::sync::watch;

use crate::batching::{backoff, read_block, should_flush};
use crate::store::{self, DeadLetter};
use crate::stream::{self, ack, Cursor, Entry, StreamReader};

pub struct Consumer {
    /// Rollup increments of flushed batches not yet written (see `write_rollups`).
    rollups: std::sync::Mutex<(crate::rollups::Increments, Option<Instant>)>,
    pub settings: Settings,
    pub consumer: String,
    pub reader: StreamReader,
    pub redis: Client,
    pub db: Database,
    pub events: Collection<Document>,
    pub dlq: Collection<Document>,
    pub lifecycle: Lifecycle,
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
        Self {
            rollups: Default::default(),
            settings,
            consumer,
            reader,
            redis,
            db: db.clone(),
            events: store::events(db),
            dlq: store::dead_letters(db),
            lifecycle,
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
            let waited = oldest.map(|t| t.elapsed()).unwrap_or_default();
            let block = read_block(batch.len(), waited, interval);
            match self
                .reader
                .read(&cursor, batch_size - batch.len(), block)
                .await
            {
                Ok(mut entries) => {
                    read_failures = 0;
                    if let Cursor::Pending(_) = cursor {
                        // Re-reads of our own pending entries count as deliveries: a batch that
                        // crashes the worker every time becomes poison instead of a crash loop.
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
                        cursor = match entries.last() {
                            Some(last) => Cursor::Pending(last.id.clone()),
                            None => {
                                tracing::info!("own pending entries drained; reading new ones");
                                Cursor::New
                            }
                        };
                    }
                    if oldest.is_none() && !entries.is_empty() {
                        oldest = Some(Instant::now());
                    }
                    batch.extend(entries);
                }
                Err(e) => {
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
            let waited = oldest.map(|t| t.elapsed()).unwrap_or_default();
            if batch.is_empty() {
                self.write_rollups(false).await;
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
    }

    /// Writes the batch (retrying transient failures with backoff), dead-letters what can never be
    /// stored, then acknowledges every entry. Gives up, unacknowledged, only on shutdown.
    #[tracing::instrument(level = "debug", name = "Flushing a batch", skip_all, fields(entries = entries.len()))]
    pub async fn flush(&self, entries: Vec<Entry>, shutdown: &mut watch::Receiver<bool>) {
        let started = Instant::now();
        let mut docs = Vec::with_capacity(entries.len());
        let mut doc_entries = Vec::with_capacity(entries.len());
        let mut dead = Vec::new();
        let max_deliveries = self.settings.worker.max_deliveries;
        for entry in &entries {
            if entry.deliveries > max_deliveries {
                let event = entry.decode().ok();
                tracing::warn!(stream_id = %entry.id, deliveries = entry.deliveries, event_id = ?event.as_ref().map(|e| &e.event_id), "dead-lettering a poison entry");
                dead.push(DeadLetter {
                    stream_id: entry.id.clone(),
                    account_id: event.as_ref().map(|e| e.account_id.clone()),
                    event_id: event.as_ref().map(|e| e.event_id.clone()),
                    fields: entry.raw_fields(),
                    reason: "poison",
                    error: format!(
                        "delivered {} times, more than the {max_deliveries} allowed",
                        entry.deliveries
                    ),
                    attempts: entry.deliveries as u32,
                });
                continue;
            }
            match entry
                .decode()
                .and_then(|e| store::to_document(&e).map(|d| (e, d)))
            {
                Ok((event, doc)) => {
                    docs.push(doc);
                    doc_entries.push((entry, event));
                }
                Err(error) => {
                    let event = entry.decode().ok();
                    tracing::warn!(stream_id = %entry.id, error = %error, "dead-lettering an invalid entry");
                    dead.push(DeadLetter {
                        stream_id: entry.id.clone(),
                        account_id: event.as_ref().map(|e| e.account_id.clone()),
                        event_id: event.as_ref().map(|e| e.event_id.clone()),
                        fields: entry.raw_fields(),
                        reason: "invalid",
                        error,
                        attempts: entry.deliveries as u32,
                    })
                }
            }
        }

        let mut attempt = 0u32;
        let report = loop {
            match store::write_batch(&self.events, docs.clone()).await {
                Ok(r) => break r,
                Err(e) => {
                    let delay = self.retry_delay(attempt);
                    attempt += 1;
                    metrics::counter!("sluice_worker_write_retries_total").increment(1);
                    tracing::warn!(error = %e.0, attempt, retry_in_ms = delay.as_millis() as u64, "batch write failed; retrying");
                    if *shutdown.borrow() {
                        tracing::warn!(
                            "shutting down with an unwritten batch; it stays pending for redelivery"
                        );
                        return;
                    }
                    self.lifecycle.beat();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        };
        let not_stored: std::collections::HashSet<usize> = report
            .duplicate_at
            .iter()
            .copied()
            .chain(report.rejected.iter().map(|(i, _)| *i))
            .collect();
        let inserted = doc_entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !not_stored.contains(i))
            .map(|(_, (_, event))| event);
        if let Ok(mut r) = self.rollups.lock() {
            r.0.merge(crate::rollups::Increments::of(inserted));
            r.1.get_or_insert_with(Instant::now);
        }
        for (index, error) in &report.rejected {
            if let Some((entry, event)) = doc_entries.get(*index) {
                tracing::warn!(stream_id = %entry.id, event_id = %event.event_id, error = %error, "MongoDB refused a document; dead-lettering it");
                dead.push(DeadLetter {
                    stream_id: entry.id.clone(),
                    account_id: Some(event.account_id.clone()),
                    event_id: Some(event.event_id.clone()),
                    fields: entry.raw_fields(),
                    reason: "write_rejected",
                    error: error.clone(),
                    attempts: entry.deliveries as u32,
                });
            }
        }
        if !dead.is_empty() && !self.store_dead_letters(&dead, shutdown).await {
            return;
        }
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let mut ack_attempt = 0u32;
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
            if *shutdown.borrow() {
                return;
            }
            tokio::time::sleep(self.retry_delay(ack_attempt)).await;
            ack_attempt += 1;
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
        }
        self.write_rollups(false).await;
        tracing::debug!(
            inserted = report.inserted,
            duplicates = report.duplicates,
            dead_lettered = dead.len(),
            "batch stored and acknowledged"
        );
    }

    /// Writes the rollups of the batches flushed since the last write, at most every
    /// `worker.rollup_interval_ms` (or now, with `force`): one bulk write for many batches keeps
    /// the database's time for the events themselves.
    pub async fn write_rollups(&self, force: bool) {
        let due = Duration::from_millis(self.settings.worker.rollup_interval_ms);
        let ready = match self.rollups.lock() {
            Ok(mut r) => match r.1 {
                Some(since) if force || since.elapsed() >= due => {
                    r.1 = None;
                    Some(std::mem::take(&mut r.0))
                }
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(inc) = ready {
            crate::rollups::apply(&self.db, &self.redis, &inc, self.settings.worker.top_cap).await;
        }
    }

    async fn store_dead_letters(
        &self,
        dead: &[DeadLetter],
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let docs: Vec<Document> = dead
            .iter()
            .map(|d| store::dead_letter_document(d, &self.consumer))
            .collect();
        let mut attempt = 0u32;
        loop {
            // Duplicate `_id`s mean an earlier attempt stored them: that is success.
            match store::write_batch(&self.dlq, docs.clone()).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!(error = %e.0, "dead-letter write failed; retrying");
                    if *shutdown.borrow() {
                        return false;
                    }
                    tokio::time::sleep(self.retry_delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}
