//! Building and running the worker: connections, indexes, the consumer loop, and the small HTTP
//! server for health and metrics.
use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use fred::prelude::*;
use mongodb::Database;
use sluice_shared::config::Settings;
use sluice_shared::health::{health_response, timed_check, Lifecycle};
use sluice_shared::telemetry_metrics::{metrics_endpoint, prometheus};
use tokio::sync::watch;

use crate::consumer::Consumer;
use crate::store;

struct HealthState {
    redis: Client,
    db: Database,
    lifecycle: Lifecycle,
    progress: crate::consumer::ReadProgress,
    read_stale_after: Duration,
}

/// Every route of the worker.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/health", web::get().to(health))
        .route("/api/ready", web::get().to(ready))
        .route("/api/live", web::get().to(live))
        .route("/metrics", web::get().to(metrics_endpoint));
}

pub struct Application {
    port: u16,
    server: Server,
    consumer: Consumer,
    lifecycle: Lifecycle,
    redis: Client,
    db: Database,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        prometheus();
        let listener = TcpListener::bind((settings.worker.host.as_str(), settings.worker.port))
            .with_context(|| {
                format!(
                    "cannot bind worker.host/worker.port {}:{}",
                    settings.worker.host, settings.worker.port
                )
            })?;
        let port = listener.local_addr()?.port();
        // Redis and MongoDB may not be up yet (Redis may be loading its AOF): wait for them, and
        // answer /api/ready 503 meanwhile, rather than exit.
        let (redis, blocking) = sluice_shared::health::while_starting(&listener, async {
            let redis = sluice_shared::redis::connect_when_ready(&settings.redis).await?;
            let blocking =
                sluice_shared::redis::connect_blocking_when_ready(&settings.redis).await?;
            Ok((redis, blocking))
        })
        .await?;
        sluice_shared::redis::ensure_group(
            &redis,
            &settings.redis.stream_key,
            &settings.redis.group,
        )
        .await?;
        let db = sluice_shared::health::while_starting(&listener, async {
            let db = store::connect(&settings.mongo).await?;
            sluice_shared::health::retry_until_ok("mongodb", || async {
                store::ensure_indexes(&db).await?;
                crate::rollups::ensure_indexes(&db).await
            })
            .await;
            Ok(db)
        })
        .await?;

        // A loop that has not beaten for a minute is stuck: its reads block 500 ms at most, and a
        // write retry beats between attempts.
        let lifecycle = Lifecycle::new(Duration::from_secs(60));
        let consumer_name = settings.worker.consumer();
        tracing::info!(consumer = %consumer_name, stream = %settings.redis.stream_key, "worker starting");
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
        let consumer = Consumer::new(
            settings.clone(),
            consumer_name,
            blocking,
            redis.clone(),
            &db,
            lifecycle.clone(),
        );
        let state = web::Data::new(HealthState {
            redis: redis.clone(),
            db: db.clone(),
            lifecycle: lifecycle.clone(),
            progress: consumer.progress.clone(),
            read_stale_after: Duration::from_millis(settings.worker.read_stale_after_ms),
        });
        let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
            .workers(1)
            .disable_signals()
            .listen(listener)?
            .run();
        Ok(Self {
            port,
            server,
            consumer,
            lifecycle,
            redis,
            db,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn consumer_name(&self) -> &str {
        &self.consumer.consumer
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(sluice_shared::health::shutdown_signal())
            .await
    }

    /// Consumes until `shutdown` completes; then readiness goes 503, reading stops, the batch in
    /// hand is flushed and acknowledged, and the process exits within the deadline.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (tx, rx) = watch::channel(false);
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        self.lifecycle.set_ready(true);
        let maintenance = crate::maintenance::spawn(
            self.redis.clone(),
            self.settings.clone(),
            self.consumer.consumer.clone(),
            rx.clone(),
        );
        let reconciler =
            crate::reconcile::spawn(self.db.clone(), self.settings.clone(), rx.clone());
        let deadline = Duration::from_millis(self.settings.worker.shutdown_deadline_ms);
        let mut consumer = tokio::spawn(self.consumer.run(rx));
        tokio::select! {
            _ = shutdown => {
                tracing::info!("shutting down: readiness off, flushing the batch in hand");
                self.lifecycle.set_ready(false);
                let _ = tx.send(true);
                if tokio::time::timeout(deadline, &mut consumer).await.is_err() {
                    tracing::warn!("the batch in hand did not flush before the deadline; it stays pending");
                    consumer.abort();
                }
            }
            r = &mut consumer => {
                r.context("the consumer loop panicked")?;
            }
        }
        maintenance.abort();
        reconciler.abort();
        handle.stop(true).await;
        let _ = server.await;
        Ok(())
    }
}

async fn health(state: web::Data<HealthState>) -> HttpResponse {
    let (redis, mongo) = tokio::join!(
        timed_check(
            "redis",
            Duration::from_secs(2),
            sluice_shared::redis::ping(&state.redis)
        ),
        timed_check("mongodb", Duration::from_secs(4), store::ping(&state.db)),
    );
    // Redis answering a PING is not the pipeline flowing: the read loop must be hearing from it.
    let age = state.progress.age();
    let reading = sluice_shared::health::Check::from_result(
        "stream_read",
        if age <= state.read_stale_after {
            Ok(())
        } else {
            Err(format!(
                "the read loop has not read from the stream for {} s",
                age.as_secs()
            ))
        },
    );
    health_response(vec![redis, mongo, reading])
}

async fn ready(state: web::Data<HealthState>) -> HttpResponse {
    state.lifecycle.ready_response()
}

async fn live(state: web::Data<HealthState>) -> HttpResponse {
    state.lifecycle.live_response()
}
