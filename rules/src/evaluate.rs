//! Rule evaluation, in the worker, after a batch is stored: each enabled rule of an event's
//! account counts the newly stored events it matches into its shared window and is judged in the
//! same Lua call; the one call that sees the condition start to hold (outside its cooldown) raises
//! the anomaly — whatever the number of workers. Conditions that can hold on absence are judged on
//! closed buckets by a timer as well.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use fred::prelude::*;
use fred::types::scripts::Script;
use mongodb::bson;
use mongodb::Database;
use sluice_shared::event::QueuedEvent;

use crate::live::{self, AnomalyView, LiveMessage};
use crate::matcher::Props;
use crate::model::{Condition, Filter, RuleSpec};
use crate::store::{self, AnomalyDoc, RuleDoc};
use crate::window::{self, Judge, RuleKeys, EVALUATE_LUA};

/// Event ids an anomaly keeps as its sample.
const SAMPLE: usize = 10;

/// A rule as the evaluator holds it.
pub struct LoadedRule {
    pub id: String,
    pub account_id: String,
    pub version: i64,
    pub spec: RuleSpec,
    pub filter: Filter,
    pub keys: RuleKeys,
    pub bucket_secs: i64,
    /// Buckets it reads (the window; or the baseline).
    pub span: i64,
    /// The first bucket that began after this version was saved: absence is judged only on
    /// buckets the rule fully saw.
    pub since_bucket: i64,
    pub ttl_secs: u64,
}

impl LoadedRule {
    pub fn load(prefix: &str, doc: &RuleDoc) -> anyhow::Result<Self> {
        let spec = doc.spec()?;
        let (g, n) = window::geometry(&spec.condition);
        let saved = doc.updated_at.timestamp_millis().div_euclid(1000);
        Ok(Self {
            keys: RuleKeys::new(prefix, &doc.account_id, &doc.id, doc.version),
            filter: spec.condition.filter(),
            bucket_secs: i64::from(g),
            span: i64::from(n),
            since_bucket: saved.div_euclid(i64::from(g)) + 1,
            ttl_secs: window::ttl_secs(&spec.condition),
            id: doc.id.clone(),
            account_id: doc.account_id.clone(),
            version: doc.version,
            spec,
        })
    }

    fn bucket_of(&self, t: DateTime<Utc>) -> i64 {
        t.timestamp().div_euclid(self.bucket_secs)
    }
}

/// The enabled rules, by account.
#[derive(Default)]
pub struct RuleSet {
    by_account: HashMap<String, Vec<Arc<LoadedRule>>>,
    /// Rules whose condition can hold on absence (the timer judges them).
    absence: Vec<Arc<LoadedRule>>,
    pub count: usize,
}

impl RuleSet {
    pub fn of_account(&self, account: &str) -> &[Arc<LoadedRule>] {
        self.by_account.get(account).map_or(&[], Vec::as_slice)
    }
}

/// What one call of the script answered.
struct Verdict {
    fired: bool,
    observed: f64,
    reference: f64,
    spread: f64,
}

pub struct Evaluator {
    redis: Client,
    db: Database,
    prefix: String,
    script: Script,
    rules: RwLock<Arc<RuleSet>>,
    notifier: Option<Arc<crate::channels::Notifier>>,
}

impl Evaluator {
    pub fn new(redis: Client, db: Database, prefix: String) -> Self {
        Self {
            redis,
            db,
            prefix,
            script: Script::from_lua(EVALUATE_LUA),
            rules: RwLock::new(Arc::new(RuleSet::default())),
            notifier: None,
        }
    }

    /// Delivers raised anomalies to their rules' channels.
    pub fn with_notifier(mut self, notifier: Arc<crate::channels::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reads every enabled rule again; a rule that no longer reads is left out and logged.
    pub async fn reload(&self) -> anyhow::Result<usize> {
        let docs = store::enabled_rules(&self.db).await?;
        let mut set = RuleSet::default();
        for doc in &docs {
            match LoadedRule::load(&self.prefix, doc) {
                Ok(rule) => {
                    let rule = Arc::new(rule);
                    if rule.spec.condition.holds_on_absence() {
                        set.absence.push(rule.clone());
                    }
                    set.by_account
                        .entry(rule.account_id.clone())
                        .or_default()
                        .push(rule);
                    set.count += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, rule = %doc.id, "a rule does not read; skipped")
                }
            }
        }
        let count = set.count;
        match self.rules.write() {
            Ok(mut r) => *r = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        metrics::gauge!("sluice_worker_rules").set(count as f64);
        Ok(count)
    }

    /// Counts `stored` (events this worker has just stored for the first time) into every rule
    /// they match and judges those rules. Returns the anomalies raised.
    pub async fn on_stored(&self, stored: &[&QueuedEvent]) -> Vec<AnomalyDoc> {
        let set = self.rules();
        if set.count == 0 {
            return Vec::new();
        }
        let mut by_account: HashMap<&str, Vec<&QueuedEvent>> = HashMap::new();
        for e in stored {
            if !set.of_account(&e.account_id).is_empty() {
                by_account.entry(&e.account_id).or_default().push(e);
            }
        }
        let mut calls = Vec::new();
        for (account, events) in by_account {
            let rules = set.of_account(account);
            let props: Option<Vec<Props>> = rules
                .iter()
                .any(|r| r.filter.needs_properties())
                .then(|| events.iter().map(|e| Props::of(e)).collect());
            for rule in rules {
                let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
                let mut sample = Vec::new();
                for (i, e) in events.iter().enumerate() {
                    let p = props.as_ref().map(|p| &p[i]);
                    if rule.filter.matches(e, p) {
                        *counts.entry(rule.bucket_of(e.timestamp)).or_default() += 1;
                        if sample.len() < SAMPLE {
                            sample.push(e.event_id.clone());
                        }
                    }
                }
                let Some(&at) = counts.keys().next_back() else {
                    continue;
                };
                calls.push(self.judge(
                    rule.clone(),
                    window::on_arrival(&rule.spec.condition),
                    at,
                    counts,
                    sample,
                ));
            }
        }
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Judges the rules that can hold on absence on their last closed bucket.
    pub async fn on_tick(&self, now: DateTime<Utc>) -> Vec<AnomalyDoc> {
        let set = self.rules();
        let calls = set.absence.iter().filter_map(|rule| {
            let judge = window::on_timer(&rule.spec.condition)?;
            let closed = rule.bucket_of(now) - 1;
            Some(self.judge(rule.clone(), judge, closed, BTreeMap::new(), Vec::new()))
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One Lua call: adds `counts`, judges bucket `at`, and raises the anomaly when it fired.
    async fn judge(
        &self,
        rule: Arc<LoadedRule>,
        judge: Judge,
        at: i64,
        counts: BTreeMap<i64, i64>,
        sample: Vec<String>,
    ) -> Option<AnomalyDoc> {
        let (code, how, value) = judge.code();
        // Absence and z-scores are judged only over buckets the rule saw whole (an empty history
        // before it is no baseline); a count that must rise is judged from the first event.
        let since = match &rule.spec.condition {
            Condition::Zscore(_) => rule.since_bucket,
            c if c.holds_on_absence() => rule.since_bucket,
            _ => 0,
        };
        let mut args: Vec<Value> = vec![
            code.into(),
            how.into(),
            value.to_string().into(),
            rule.bucket_secs.into(),
            at.into(),
            rule.span.into(),
            since.into(),
            i64::from(rule.spec.cooldown_seconds).into(),
            (rule.ttl_secs as i64).into(),
        ];
        for (bucket, n) in &counts {
            args.push((*bucket).into());
            args.push((*n).into());
        }
        let keys = vec![
            rule.keys.counts.clone(),
            if matches!(judge, Judge::ZScore { up: false, .. }) {
                rule.keys.on_down.clone()
            } else {
                rule.keys.on_up.clone()
            },
            rule.keys.cooldown.clone(),
        ];
        let reply: Result<Vec<String>, _> = self
            .script
            .evalsha_with_reload(&self.redis, keys, args)
            .await;
        let verdict = match reply.map(|r| parse(&r)) {
            Ok(Some(v)) => v,
            Ok(None) => {
                tracing::warn!(rule = %rule.id, "the rule script answered something else");
                return None;
            }
            Err(e) => {
                metrics::counter!("sluice_worker_rule_errors_total").increment(1);
                tracing::warn!(error = %e, rule = %rule.id, "cannot evaluate a rule; its events still count once Redis answers");
                return None;
            }
        };
        if !verdict.fired {
            return None;
        }
        let anomaly = anomaly_of(&rule, judge, at, &verdict, sample);
        if let Err(e) = self.raise(&anomaly).await {
            tracing::error!(error = %e, rule = %rule.id, "an anomaly fired but could not be stored");
            return None;
        }
        if let Some(notifier) = &self.notifier {
            notifier.notify(&anomaly, &rule.spec.channels).await;
        }
        Some(anomaly)
    }

    /// Stores the anomaly and pushes it to live clients.
    async fn raise(&self, anomaly: &AnomalyDoc) -> anyhow::Result<()> {
        store::insert_anomaly(&self.db, anomaly).await?;
        metrics::counter!("sluice_worker_anomalies_total", "severity" => anomaly.severity.as_str())
            .increment(1);
        tracing::info!(rule = %anomaly.rule_id, account = %anomaly.account_id, message = %anomaly.message, "anomaly raised");
        let message = LiveMessage::Anomaly {
            account_id: anomaly.account_id.clone(),
            anomaly: Box::new(AnomalyView::from(anomaly)),
        };
        if let Err(e) = live::publish(&self.redis, &self.prefix, &message).await {
            tracing::warn!(error = %e, "cannot push an anomaly to live clients");
        }
        Ok(())
    }
}

fn parse(reply: &[String]) -> Option<Verdict> {
    let [fired, observed, reference, spread] = reply else {
        return None;
    };
    Some(Verdict {
        fired: fired == "1",
        observed: observed.parse().ok()?,
        reference: reference.parse().ok()?,
        spread: spread.parse().ok()?,
    })
}

fn anomaly_of(
    rule: &LoadedRule,
    judge: Judge,
    at: i64,
    v: &Verdict,
    sample_event_ids: Vec<String>,
) -> AnomalyDoc {
    let g = rule.bucket_secs;
    let secs = |b: i64| bson::DateTime::from_millis(b.saturating_mul(g).saturating_mul(1000));
    let name = &rule.spec.name;
    let (kind, from, threshold, mean, stddev, zscore, message) = match (&rule.spec.condition, judge)
    {
        (Condition::Threshold(t), _) => (
            "threshold",
            at - rule.span + 1,
            t.value,
            None,
            None,
            None,
            format!(
                "{name}: {} matching events in {} s ({} {})",
                v.observed,
                t.window_seconds,
                t.operator.as_str(),
                t.value
            ),
        ),
        (Condition::Zscore(z), j) => {
            let score = (v.observed - v.reference) / v.spread.max(f64::MIN_POSITIVE);
            let way = if matches!(j, Judge::ZScore { up: false, .. }) {
                "drop"
            } else {
                "spike"
            };
            (
                "zscore",
                at,
                z.threshold,
                Some(v.reference),
                Some(v.spread),
                Some(score),
                format!(
                    "{name}: a {way} of {} events in {} s against a mean of {:.1} (z = {score:.2})",
                    v.observed, z.bucket_seconds, v.reference
                ),
            )
        }
    };
    AnomalyDoc {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: rule.account_id.clone(),
        rule_id: rule.id.clone(),
        rule_name: name.clone(),
        rule_version: rule.version,
        severity: rule.spec.severity,
        kind: kind.to_owned(),
        message,
        observed: v.observed,
        threshold,
        mean,
        stddev,
        zscore,
        window_from: secs(from),
        window_to: secs(at + 1),
        sample_event_ids,
        detected_at: bson::DateTime::now(),
        deliveries: Vec::new(),
    }
}

/// Publishes the stored events of tailed accounts (at most [`live::MAX_PUBLISHED_PER_BATCH`]
/// each, the rest counted as skipped).
pub async fn publish_tail(
    redis: &Client,
    prefix: &str,
    tailed: &std::collections::HashSet<String>,
    stored: &[&QueuedEvent],
) {
    if tailed.is_empty() {
        return;
    }
    let mut by_account: HashMap<&str, (Vec<live::TailEvent>, u64)> = HashMap::new();
    for e in stored {
        if tailed.contains(&e.account_id) {
            let (events, skipped) = by_account.entry(&e.account_id).or_default();
            if events.len() < live::MAX_PUBLISHED_PER_BATCH {
                events.push(live::TailEvent::from(*e));
            } else {
                *skipped += 1;
            }
        }
    }
    for (account, (events, skipped)) in by_account {
        let message = LiveMessage::Events {
            account_id: account.to_owned(),
            events,
            skipped,
        };
        if let Err(e) = live::publish(redis, prefix, &message).await {
            tracing::warn!(error = %e, "cannot publish the live tail");
            return;
        }
    }
}
