//! Rules after storage: the consumer hands the events it has just stored (those of accounts with
//! rules or a live tail) to one evaluation task through a bounded queue and goes on; the task
//! counts them into the shared windows, raises anomalies and publishes the live tail. Nothing
//! here is in the write's path: a slow or failing Redis delays anomalies, never an event.
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use sluice_http::Heart;
use sluice_rules::channels::{DeliveryPolicy, Notifier};
use sluice_rules::evaluate::publish_tail;
use sluice_rules::{live, Evaluator};
use sluice_shared::config::{RedisSettings, RulesSettings, Settings};
use sluice_shared::event::QueuedEvent;
use tokio::sync::{mpsc, watch};

/// Accounts whose stored events the evaluation task wants: those with rules, those tailed.
#[derive(Default)]
struct Interest {
    tailed: RwLock<Arc<HashSet<String>>>,
}

/// The consumer's side: offers stored events to the evaluation task.
#[derive(Clone)]
pub struct RuleHook {
    evaluator: Arc<Evaluator>,
    interest: Arc<Interest>,
    tx: mpsc::Sender<Vec<QueuedEvent>>,
}

impl RuleHook {
    fn tailed(&self) -> Arc<HashSet<String>> {
        self.interest
            .tailed
            .read()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Queues the events of interest among `stored` (newly stored: a redelivered duplicate is
    /// not among them). A full queue drops them, counted: evaluation never holds the consumer.
    pub fn offer<'a>(&self, stored: impl Iterator<Item = &'a QueuedEvent>) {
        let rules = self.evaluator.rules();
        let tailed = self.tailed();
        if rules.count == 0 && tailed.is_empty() {
            return;
        }
        let wanted: Vec<QueuedEvent> = stored
            .filter(|e| {
                !rules.of_account(&e.account_id).is_empty() || tailed.contains(&e.account_id)
            })
            .cloned()
            .collect();
        if wanted.is_empty() {
            return;
        }
        let n = wanted.len() as u64;
        if self.tx.try_send(wanted).is_err() {
            metrics::counter!("sluice_worker_rule_events_dropped_total").increment(n);
            tracing::warn!(
                events = n,
                "the rule evaluation queue is full; these events are not counted by rules"
            );
        }
    }
}

/// What the rules side of a worker runs: the evaluation task, the reload listener and the timer.
pub struct RuleLoops {
    pub hook: RuleHook,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Loads the rules and starts their loops (the evaluation task, the reload listener, the timer
/// whose `heart` beats each tick). Without a subscriber (Redis refused one) rules still reload
/// every `rules.reload_secs`.
pub async fn start(
    redis: Client,
    db: &mongodb::Database,
    settings: &Settings,
    heart: Heart,
    shutdown: watch::Receiver<bool>,
) -> RuleLoops {
    let r = &settings.rules;
    let prefix = settings.redis.key_prefix.clone();
    let mut evaluator = Evaluator::new(redis.clone(), db.clone(), prefix.clone());
    match Notifier::new(db.clone(), delivery_policy(r)) {
        Ok(n) => evaluator = evaluator.with_notifier(Arc::new(n)),
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: anomalies are not delivered to channels")
        }
    }
    let evaluator = Arc::new(evaluator);
    if let Err(e) = evaluator.reload().await {
        tracing::warn!(error = %e, "cannot read the rules yet; the timer retries");
    }
    let (tx, rx) = mpsc::channel(r.queue_batches.max(1));
    let interest = Arc::new(Interest::default());
    let hook = RuleHook {
        evaluator: evaluator.clone(),
        interest: interest.clone(),
        tx,
    };
    let mut tasks = vec![
        tokio::spawn(evaluate_loop(
            evaluator.clone(),
            redis.clone(),
            rx,
            interest.clone(),
        )),
        tokio::spawn(tick(
            evaluator.clone(),
            redis,
            interest,
            Duration::from_millis(r.tick_ms.max(100)),
            Duration::from_secs(r.reload_secs.max(1)),
            heart,
            shutdown.clone(),
        )),
    ];
    match subscribe(&settings.redis, &prefix).await {
        Ok(subscriber) => tasks.push(tokio::spawn(listen(subscriber, evaluator, shutdown))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to rule changes; reloading every rules.reload_secs only")
        }
    }
    RuleLoops { hook, tasks }
}

fn delivery_policy(r: &RulesSettings) -> DeliveryPolicy {
    DeliveryPolicy {
        max_attempts: r.delivery_max_attempts.max(1),
        base: Duration::from_millis(r.delivery_backoff_ms),
        cap: Duration::from_millis(r.delivery_backoff_cap_ms),
        max_retry_after: Duration::from_secs(r.delivery_max_retry_after_secs),
        timeout: Duration::from_millis(r.delivery_timeout_ms.max(100)),
        queue: 1_000,
    }
}

async fn subscribe(settings: &RedisSettings, prefix: &str) -> anyhow::Result<SubscriberClient> {
    let subscriber = sluice_shared::redis::connect_subscriber(settings).await?;
    subscriber.subscribe(live::rules_channel(prefix)).await?;
    Ok(subscriber)
}

async fn evaluate_loop(
    evaluator: Arc<Evaluator>,
    redis: Client,
    mut rx: mpsc::Receiver<Vec<QueuedEvent>>,
    interest: Arc<Interest>,
) {
    while let Some(events) = rx.recv().await {
        let refs: Vec<&QueuedEvent> = events.iter().collect();
        let tailed = interest
            .tailed
            .read()
            .map(|t| t.clone())
            .unwrap_or_default();
        let (raised, ()) = tokio::join!(
            evaluator.on_stored(&refs),
            publish_tail(&redis, evaluator.prefix(), &tailed, &refs)
        );
        if !raised.is_empty() {
            tracing::debug!(anomalies = raised.len(), "rules fired");
        }
    }
}

/// Reloads the rules whenever a change is announced.
async fn listen(
    subscriber: SubscriberClient,
    evaluator: Arc<Evaluator>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _resubscribe = subscriber.manage_subscriptions();
    let mut rx = subscriber.message_rx();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(_) => {
                    // Announcements that arrived meanwhile are covered by this one reload.
                    while rx.try_recv().is_ok() {}
                    match evaluator.reload().await {
                        Ok(n) => tracing::info!(rules = n, "rules reloaded on announcement"),
                        Err(e) => tracing::warn!(error = %e, "cannot reload the rules; the timer retries"),
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let _ = evaluator.reload().await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Every `every`: judges the rules that can hold on absence, and reads which accounts are
/// tailed; every `reload`: reads the rules again (a missed announcement heals).
async fn tick(
    evaluator: Arc<Evaluator>,
    redis: Client,
    interest: Arc<Interest>,
    every: Duration,
    reload: Duration,
    heart: Heart,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_reload = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        heart.beat();
        if last_reload.elapsed() >= reload {
            last_reload = tokio::time::Instant::now();
            if let Err(e) = evaluator.reload().await {
                tracing::warn!(error = %e, "cannot reload the rules");
            }
        }
        evaluator.on_tick(chrono::Utc::now()).await;
        match live::tailed(&redis, evaluator.prefix()).await {
            Ok(t) => {
                if let Ok(mut w) = interest.tailed.write() {
                    *w = Arc::new(t);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the tailed accounts"),
        }
    }
}
