//! Bulk replays on the write side: quarantined events judged again by the current plan (those
//! that now pass go to `events` through the stream, once; the rest stay with their new
//! violations), and dead letters by reason and time range.
use mongodb::bson::{doc, to_bson};
use mongodb::Database;
use sluice_shared::enqueue::Enqueuer;
use sluice_store::event::field;
use sluice_store::StoredEvent;
use uuid::Uuid;

use crate::event_queries::EventFilter;
use crate::plans::AccountPlan;

/// Quarantined events one replay takes at most (the answer says when more are left).
pub const MAX_PER_REPLAY: i64 = 10_000;

/// What a quarantine replay did.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineReplay {
    /// Now valid: queued for `events` and gone from quarantine.
    pub replayed: u64,
    /// Still breaking their schema: left in quarantine with their new violations.
    pub still_quarantined: u64,
    /// More matched than one replay takes ([`MAX_PER_REPLAY`]): replay again for the rest.
    pub more: bool,
}

/// The dedup key of a quarantined event's replay: its own, never the client's reservation.
fn replay_key(id: &str) -> String {
    format!("quarantine-replay:{id}")
}

/// Judges the account's quarantined events matching `filter` (and `ids`, when given) by `plan`.
pub async fn replay_quarantine(
    db: &Database,
    enqueuer: &Enqueuer,
    plan: &AccountPlan,
    account: Uuid,
    filter: &EventFilter,
    ids: Option<&[String]>,
) -> anyhow::Result<QuarantineReplay> {
    use anyhow::Context;
    let account_id = account.to_string();
    let held = sluice_store::quarantine(db);
    let mut query = filter.query(&account_id);
    if let Some(ids) = ids {
        query.insert(field::EVENT_ID, doc! {"$in": ids});
    }
    let mut cursor = held
        .find(query)
        .sort(crate::event_queries::sort())
        .limit(MAX_PER_REPLAY + 1)
        .await
        .context("reading quarantined events")?;
    let mut report = QuarantineReplay::default();
    let mut taken = 0;
    while cursor
        .advance()
        .await
        .context("reading quarantined events")?
    {
        taken += 1;
        if taken > MAX_PER_REPLAY {
            report.more = true;
            break;
        }
        let stored: StoredEvent = cursor
            .deserialize_current()
            .context("reading a quarantined event")?;
        let Ok(mut event) = stored.to_queued() else {
            continue;
        };
        // The current schema: the latest version. It passes only without a violation.
        let judged = plan.judge(&mut event);
        let passes = judged.is_ok() && event.plan.as_ref().is_none_or(|v| v.violations.is_empty());
        if !passes {
            let (version, violations) = match &event.plan {
                Some(v) => (Some(i64::from(v.schema_version)), v.violations.clone()),
                None => (
                    stored.schema_version,
                    stored.schema_violations.clone().unwrap_or_default(),
                ),
            };
            held.update_one(
                doc! {field::ID: &stored.id},
                doc! {"$set": {field::SCHEMA_VERSION: version, "schemaViolations": to_bson(&violations)?}},
            )
            .await
            .context("updating a quarantined event's violations")?;
            report.still_quarantined += 1;
            continue;
        }
        let json = serde_json::to_string(&event)?;
        let rid = format!("quarantine-replay:{}", stored.id);
        enqueuer
            .enqueue_raw(&[(replay_key(&stored.id), json)], &rid)
            .await
            .context("queueing a quarantined event")?;
        // Queued (or queued by an earlier replay that died here): it leaves quarantine. MongoDB's
        // `_id` keeps it once in `events` whatever happens between.
        held.delete_one(doc! {field::ID: &stored.id})
            .await
            .context("taking a replayed event out of quarantine")?;
        report.replayed += 1;
    }
    Ok(report)
}
