//! Building and running the worker: connections, indexes, the consumer loop, and the small HTTP
//! server for health and metrics.
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use mongodb::Database;
use sluice_http::{timed_check, Check, Running, ServeOptions, Service};
use sluice_shared::config::Settings;
use sluice_shared::telemetry_metrics::prometheus;
use tokio::sync::watch;

use crate::consumer::Consumer;

pub struct Application {
    /// The skeleton's server: health, readiness, liveness and metrics (the worker serves no API).
    http: Running,
    /// One per partition, each on its own stream with its own blocking connection.
    consumers: Vec<Consumer>,
    consumer_name: String,
    redis: Client,
    db: Database,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        prometheus();
        let w = &settings.worker;
        let service = Service::bind("worker", &w.host, w.port)?;
        // Redis and MongoDB may not be up yet (Redis may be loading its AOF): wait for them, and
        // answer /api/ready 503 meanwhile, rather than exit.
        let layout = settings.redis.layout();
        let (redis, blocking) = service
            .while_starting(async {
                let redis = sluice_shared::redis::connect_when_ready(&settings.redis).await?;
                // A blocking XREADGROUP holds its connection: one client per partition.
                let mut blocking = Vec::with_capacity(usize::from(layout.count()));
                for _ in layout.all() {
                    blocking.push(
                        sluice_shared::redis::connect_blocking_when_ready(&settings.redis).await?,
                    );
                }
                Ok((redis, blocking))
            })
            .await?;
        sluice_shared::redis::ensure_groups(&redis, &settings.redis).await?;
        let db = service
            .while_starting(async {
                let db = sluice_store::connect(&settings.mongo, crate::APP_NAME).await?;
                sluice_http::startup::retry_until_ok("mongodb", || async {
                    sluice_store::ensure_indexes(&db).await?;
                    sluice_rules::store::ensure_indexes(&db).await?;
                    sluice_store::privacy::ensure_indexes(&db).await?;
                    crate::rollups::ensure_indexes(&db).await
                })
                .await;
                Ok(db)
            })
            .await?;

        // Each consumer beats a heart of its own: a loop that has not beaten for a minute is stuck
        // (its reads block 500 ms at most, and a write retry beats between attempts).
        let lifecycle = service.lifecycle().clone();
        let consumer_name = settings.worker.consumer();
        tracing::info!(consumer = %consumer_name, partitions = layout.count(), "worker starting");
        let w = &settings.worker;
        if w.claim_min_idle_ms <= w.flush_interval_ms + w.rollup_interval_ms {
            // An entry waits up to a flush interval in its batch and a rollup interval for its
            // acknowledgement: claimed sooner, it is taken from a live worker and its delivery
            // count pushed toward poison.
            tracing::warn!(
                claim_min_idle_ms = w.claim_min_idle_ms,
                "worker.claim_min_idle_ms should exceed worker.flush_interval_ms + worker.rollup_interval_ms"
            );
        }
        let consumers: Vec<Consumer> = layout
            .all()
            .zip(blocking)
            .map(|(p, blocking)| {
                // Hearts are named once per partition for the life of the process.
                let name: &'static str = Box::leak(format!("consumer p{p}").into_boxed_str());
                Consumer::new(
                    settings.clone(),
                    consumer_name.clone(),
                    layout.stream(p),
                    blocking,
                    redis.clone(),
                    &db,
                    lifecycle.heart(name, Duration::from_secs(60)),
                )
            })
            .collect();
        let mut options = ServeOptions::new(health_checks(
            redis.clone(),
            db.clone(),
            consumers.iter().map(|c| c.progress.clone()).collect(),
            Duration::from_millis(settings.worker.read_stale_after_ms),
        ));
        options.workers = 1;
        // Nothing routes traffic to a worker: no drain gap.
        options.drain_gap = Duration::ZERO;
        let http = service.serve(options, |_| {})?;
        // Ready once the consumer runs (`run_until`), not before.
        http.lifecycle().set_ready(false);
        Ok(Self {
            http,
            consumers,
            consumer_name,
            redis,
            db,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.http.port()
    }

    pub fn consumer_name(&self) -> &str {
        &self.consumer_name
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(sluice_http::startup::shutdown_signal())
            .await
    }

    /// Consumes until `shutdown` completes; then readiness goes 503, reading stops, the batch in
    /// hand is flushed and acknowledged, and the process exits within the deadline.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Application {
            http,
            consumers,
            consumer_name,
            redis,
            db,
            settings,
        } = self;
        let lifecycle = http.lifecycle().clone();
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(http.run_until(async {
            let _ = http_stopped.await;
        }));
        lifecycle.set_ready(true);
        let (tx, rx) = watch::channel(false);
        let maintenance = crate::maintenance::spawn(
            redis.clone(),
            settings.clone(),
            consumer_name.clone(),
            rx.clone(),
        );
        let reconciler = crate::reconcile::spawn(db.clone(), settings.clone(), rx.clone());
        let privacy = crate::privacy::spawn(
            redis.clone(),
            db.clone(),
            settings.clone(),
            consumer_name.clone(),
            rx.clone(),
        );
        let deadline = Duration::from_millis(settings.worker.shutdown_deadline_ms);
        let rules = crate::rules::start(
            redis.clone(),
            &db,
            &settings,
            lifecycle.heart(
                "rules_timer",
                Duration::from_millis(settings.rules.tick_ms.max(100) * 10)
                    .max(Duration::from_secs(10)),
            ),
            rx.clone(),
        )
        .await;
        let mut loops: tokio::task::JoinSet<()> = consumers
            .into_iter()
            .map(|c| c.with_rules(rules.hook.clone()).run(rx.clone()))
            .collect();
        tokio::select! {
            _ = shutdown => {
                tracing::info!("shutting down: readiness off, flushing the batches in hand");
                lifecycle.set_ready(false);
                let _ = tx.send(true);
                let drained = tokio::time::timeout(deadline, async {
                    while let Some(r) = loops.join_next().await {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "a consumer loop panicked");
                        }
                    }
                });
                if drained.await.is_err() {
                    tracing::warn!("the batches in hand did not flush before the deadline; they stay pending");
                    loops.abort_all();
                }
            }
            Some(r) = loops.join_next() => {
                r.context("a consumer loop panicked")?;
                anyhow::bail!("a consumer loop stopped before shutdown");
            }
        }
        maintenance.abort();
        reconciler.abort();
        for task in privacy {
            task.abort();
        }
        for task in rules.tasks {
            task.abort();
        }
        let _ = stop_http.send(());
        http.await.context("the health server panicked")??;
        Ok(())
    }
}

/// `/api/health`: Redis and MongoDB answer, and the read loop is hearing from the stream (Redis
/// answering a PING is not the pipeline flowing).
fn health_checks(
    redis: Client,
    db: Database,
    progress: Vec<crate::consumer::ReadProgress>,
    read_stale_after: Duration,
) -> sluice_http::HealthChecks {
    sluice_http::health(move || {
        let age = progress.iter().map(|p| p.age()).max().unwrap_or_default();
        let (redis, db) = (redis.clone(), db.clone());
        async move {
            let (redis, mongo) = tokio::join!(
                timed_check(
                    "redis",
                    Duration::from_secs(2),
                    sluice_shared::redis::ping(&redis)
                ),
                timed_check("mongodb", Duration::from_secs(4), sluice_store::ping(&db)),
            );
            let reading = Check::from_result(
                "stream_read",
                if age <= read_stale_after {
                    Ok(())
                } else {
                    Err(format!(
                        "the read loop has not read from the stream for {} s",
                        age.as_secs()
                    ))
                },
            );
            vec![redis, mongo, reading]
        }
    })
}
