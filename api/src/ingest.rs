//! Judging what a client sends to ingest, and the answers to it: one event parsed, checked and
//! stamped; a batch judged event by event; the batch's reply and status from what was queued.
//! No I/O: the handlers in `routes::events` read the body and queue around this.
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_http::ApiError;
use sluice_shared::config::ApiSettings;
use sluice_shared::enqueue::Outcome;
use sluice_shared::error::{ErrorDetail, Violation};
use sluice_shared::event::{self, QueuedEvent};
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::schema::EventEnvelope;
use sluice_shared::error::ErrorBody;

/// What became of one event sent alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// 202: queued.
    Accepted,
    /// 200: already seen within the dedup window.
    Duplicate,
    /// 202: queued for `events_quarantine` (its tracking plan's mode for a violation).
    Quarantined,
    /// 200: its user is suppressed (a regulation): taken as a success, never queued.
    Suppressed,
}

/// The answer to one event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventReply<'a> {
    pub event_id: &'a str,
    pub status: EventStatus,
}

/// What became of one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    Accepted,
    Duplicate,
    Rejected,
    /// Queued for `events_quarantine`; counts as accepted for the batch's status.
    Quarantined,
    /// Its user is suppressed: never queued; counts as a duplicate for the batch's status.
    Suppressed,
}

/// How one event of a batch was judged: `eventId` unless rejected, `error` when rejected.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub event_id: Option<String>,
    pub status: ItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ErrorDetail>, nullable = false)]
    pub error: Option<ErrorDetail>,
}

/// The answer to a batch: the counts and each event's result, in the batch's order; `error` when
/// every event was rejected (400).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchReply {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// Present when a tracking plan quarantined some of the batch.
    #[serde(skip_serializing_if = "is_zero")]
    pub quarantined: usize,
    /// Present when some of the batch's users are suppressed.
    #[serde(skip_serializing_if = "is_zero")]
    pub suppressed: usize,
    pub results: Vec<ItemResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ErrorDetail>, nullable = false)]
    pub error: Option<ErrorDetail>,
}

/// A batch as a client sends it. Its events are judged one by one, each from its own JSON text.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody<'a> {
    /// Body ≤ 5 MiB after decompression; each event ≤ 64 KiB.
    #[serde(borrow)]
    #[schema(value_type = Vec<EventEnvelope>, min_items = 1, max_items = 1000)]
    pub events: Vec<&'a RawValue>,
}

/// A refused batch, in the one error shape: when every event was judged invalid, the
/// [`BatchReply`] with its `error`; when the body is no batch (malformed JSON, no `events`, no
/// event), the error alone.
pub struct BatchRefusal;

impl PartialSchema for BatchRefusal {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(BatchReply::name()))
            .item(Ref::from_schema_name(ErrorBody::name()))
            .into()
    }
}

impl ToSchema for BatchRefusal {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((BatchReply::name().into(), BatchReply::schema()));
        BatchReply::schemas(schemas);
        schemas.push((ErrorBody::name().into(), ErrorBody::schema()));
        ErrorBody::schemas(schemas);
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Counts events by outcome and, for refusals, reason.
pub fn count(outcome: &'static str, reason: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("sluice_events_total", "outcome" => outcome, "reason" => reason)
            .increment(n as u64);
    }
}

pub fn limits(api: &ApiSettings) -> event::EventLimits {
    event::EventLimits {
        max_values: api.max_event_values,
    }
}

/// The metrics reason of a refused event.
pub fn reason_of(err: &ApiError) -> &'static str {
    match err {
        ApiError::InvalidEvent { details, .. }
            if details.iter().any(|d| d.message.contains("unknown field")) =>
        {
            "unknown_field"
        }
        ApiError::InvalidEvent { .. } => "schema",
        other => other.code(),
    }
}

/// Parses, checks and stamps one event; also says how many JSON values its properties hold.
pub fn judge_text(
    text: &str,
    limits: event::EventLimits,
    account_id: &str,
) -> Result<(QueuedEvent, usize), ApiError> {
    let parsed = event::parse_event(text, limits).map_err(|r| match r {
        event::Rejection::Malformed(m) => ApiError::MalformedJson(m),
        event::Rejection::Invalid(details) => ApiError::invalid(details),
    })?;
    let queued = QueuedEvent::stamp(parsed.event, account_id, Utc::now())
        .map_err(|v| ApiError::invalid(vec![v]))?;
    Ok((queued, parsed.values))
}

/// Judges one item of a batch on its own.
fn judge(
    raw: &RawValue,
    max_event_bytes: usize,
    limits: event::EventLimits,
    account_id: &str,
) -> Result<(QueuedEvent, usize), ApiError> {
    if raw.get().len() > max_event_bytes {
        return Err(ApiError::PayloadTooLarge {
            what: "event",
            limit: max_event_bytes,
        });
    }
    judge_text(raw.get(), limits, account_id)
}

/// A batch body, and the checks on the batch as a whole that come before its quota is spent:
/// malformed or not a batch (400), too many events (413).
pub fn parse_batch<'a>(body: &'a [u8], api: &ApiSettings) -> Result<BatchBody<'a>, ApiError> {
    let batch: BatchBody = serde_json::from_slice(body).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ApiError::invalid(vec![Violation {
                path: String::new(),
                message: format!("a batch is {{\"events\": [ ... ]}}: {e}"),
            }])
        } else {
            ApiError::MalformedJson(e.to_string())
        }
    })?;
    if batch.events.len() > api.max_batch_events {
        return Err(ApiError::TooManyEvents(api.max_batch_events));
    }
    Ok(batch)
}

/// A batch judged event by event: the valid events to queue, and the results of the rest.
#[derive(Debug)]
pub struct JudgedBatch {
    /// The valid events, in batch order.
    pub events: Vec<QueuedEvent>,
    /// Each valid event's index in the batch: nothing is copied to queue them.
    positions: Vec<usize>,
    /// One slot per event of the batch, filled for the rejected ones.
    results: Vec<Option<ItemResult>>,
}

/// Judges each event on its own; refuses the whole batch (413) only when its events hold more
/// JSON values together than one request may.
pub fn judge_batch(
    raws: &[&RawValue],
    api: &ApiSettings,
    account_id: &str,
) -> Result<JudgedBatch, ApiError> {
    if raws.is_empty() {
        return Err(ApiError::invalid(vec![Violation {
            path: "/events".into(),
            message: format!("must hold 1 to {} events", api.max_batch_events),
        }]));
    }
    let limits = limits(api);
    let mut judged = JudgedBatch {
        events: Vec::with_capacity(raws.len()),
        positions: Vec::with_capacity(raws.len()),
        results: Vec::with_capacity(raws.len()),
    };
    let mut values = 0usize;
    for (index, raw) in raws.iter().enumerate() {
        match judge(raw, api.max_event_bytes, limits, account_id) {
            Ok((e, n)) => {
                values += n;
                if values > api.max_request_values {
                    return Err(ApiError::TooManyValues(api.max_request_values));
                }
                judged.events.push(e);
                judged.positions.push(index);
                judged.results.push(None);
            }
            Err(err) => {
                count("rejected", reason_of(&err), 1);
                judged.results.push(Some(ItemResult {
                    index,
                    event_id: None,
                    status: ItemStatus::Rejected,
                    error: Some(err.body().error),
                }));
            }
        }
    }
    Ok(judged)
}

impl JudgedBatch {
    /// Events judged elsewhere (a source's messages), each an event or why it is none.
    pub fn from_items(items: Vec<Result<QueuedEvent, ApiError>>) -> Self {
        let mut judged = JudgedBatch {
            events: Vec::with_capacity(items.len()),
            positions: Vec::with_capacity(items.len()),
            results: Vec::with_capacity(items.len()),
        };
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Ok(e) => {
                    judged.events.push(e);
                    judged.positions.push(index);
                    judged.results.push(None);
                }
                Err(err) => {
                    count("rejected", reason_of(&err), 1);
                    judged.results.push(Some(ItemResult {
                        index,
                        event_id: None,
                        status: ItemStatus::Rejected,
                        error: Some(err.body().error),
                    }));
                }
            }
        }
        judged
    }

    /// Judges every valid event by the account's tracking plan: those it refuses become
    /// `rejected` results.
    pub fn apply_plan(&mut self, plan: &crate::plans::AccountPlan) {
        if plan.is_empty() {
            // No schema anywhere; a named version is still an error.
            if !self.events.iter().any(|e| e.plan.is_some()) {
                return;
            }
        }
        let events = std::mem::take(&mut self.events);
        let positions = std::mem::take(&mut self.positions);
        for (mut e, index) in events.into_iter().zip(positions) {
            match plan.judge(&mut e) {
                Ok(()) => {
                    self.events.push(e);
                    self.positions.push(index);
                }
                Err(err) => {
                    count("rejected", reason_of(&err), 1);
                    self.results[index] = Some(ItemResult {
                        index,
                        event_id: None,
                        status: ItemStatus::Rejected,
                        error: Some(err.body().error),
                    });
                }
            }
        }
    }

    /// Takes the events of suppressed users out of the batch: each is answered `suppressed` and
    /// never queued.
    pub fn suppress(&mut self, suppressed: &crate::suppression::Suppressed) {
        if suppressed.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.events);
        let positions = std::mem::take(&mut self.positions);
        for (e, index) in events.into_iter().zip(positions) {
            if suppressed.covers(&e) {
                self.results[index] = Some(ItemResult {
                    index,
                    event_id: Some(e.event_id),
                    status: ItemStatus::Suppressed,
                    error: None,
                });
            } else {
                self.events.push(e);
                self.positions.push(index);
            }
        }
    }

    /// The reply once the valid events were queued with `outcomes` (one per event, in order).
    pub fn reply(self, outcomes: Vec<Outcome>) -> (BatchStatus, BatchReply) {
        let JudgedBatch {
            events,
            positions,
            mut results,
        } = self;
        let (mut accepted, mut duplicates, mut quarantined) = (0, 0, 0);
        for ((index, e), outcome) in positions.into_iter().zip(events).zip(outcomes) {
            let status = match outcome {
                Outcome::Accepted(_) if crate::plans::quarantined(&e) => {
                    quarantined += 1;
                    ItemStatus::Quarantined
                }
                Outcome::Accepted(_) => {
                    accepted += 1;
                    ItemStatus::Accepted
                }
                Outcome::Duplicate => {
                    duplicates += 1;
                    ItemStatus::Duplicate
                }
            };
            results[index] = Some(ItemResult {
                index,
                event_id: Some(e.event_id),
                status,
                error: None,
            });
        }
        count("accepted", "", accepted);
        count("duplicate", "", duplicates);
        count("quarantined", "", quarantined);
        let results: Vec<ItemResult> = results.into_iter().flatten().collect();
        let suppressed = results
            .iter()
            .filter(|r| r.status == ItemStatus::Suppressed)
            .count();
        crate::suppression::count(suppressed);
        let rejected = results.len() - accepted - duplicates - quarantined - suppressed;
        let status = batch_status(accepted + quarantined, duplicates + suppressed, rejected);
        let error = (status == BatchStatus::AllRejected).then(|| ErrorDetail {
            code: "invalid_event".into(),
            message: "every event in the batch was rejected".into(),
            details: None,
        });
        let reply = BatchReply {
            accepted,
            duplicates,
            rejected,
            quarantined,
            suppressed,
            results,
            error,
        };
        (status, reply)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum BatchStatus {
    /// 202: at least one event was queued.
    Queued,
    /// 200: nothing new was queued, and not every event was invalid.
    NothingNew,
    /// 400: every event was invalid.
    AllRejected,
}

pub fn batch_status(accepted: usize, duplicates: usize, rejected: usize) -> BatchStatus {
    if accepted > 0 {
        BatchStatus::Queued
    } else if duplicates == 0 && rejected > 0 {
        BatchStatus::AllRejected
    } else {
        BatchStatus::NothingNew
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_status_follows_the_contract() {
        assert_eq!(batch_status(1, 5, 5), BatchStatus::Queued);
        assert_eq!(batch_status(0, 3, 0), BatchStatus::NothingNew);
        assert_eq!(batch_status(0, 0, 3), BatchStatus::AllRejected);
        assert_eq!(batch_status(0, 1, 2), BatchStatus::NothingNew);
    }

    #[test]
    fn an_oversize_item_is_rejected_as_too_large() {
        let big = format!(
            r#"{{"eventType":"a","userId":"u","properties":{{"p":"{}"}}}}"#,
            "x".repeat(100)
        );
        let raw = RawValue::from_string(big).unwrap();
        let limits = event::EventLimits::default();
        let err = judge(&raw, 64, limits, "acc").unwrap_err();
        assert_eq!(err.code(), "payload_too_large");
        assert!(judge(&raw, 1024, limits, "acc").is_ok());
    }

    #[test]
    fn a_batch_with_one_invalid_event_queues_the_others_in_order() {
        let api = ApiSettings::default();
        let body = br#"{"events": [{"eventType":"a","userId":"u","eventId":"e0"}, {"userId":"u"}, {"eventType":"b","userId":"u","eventId":"e2"}]}"#;
        let batch = parse_batch(body, &api).unwrap();
        let judged = judge_batch(&batch.events, &api, "acc").unwrap();
        assert_eq!(judged.events.len(), 2);
        let (status, reply) =
            judged.reply(vec![Outcome::Accepted("1-0".into()), Outcome::Duplicate]);
        assert_eq!(status, BatchStatus::Queued);
        assert_eq!(
            (reply.accepted, reply.duplicates, reply.rejected),
            (1, 1, 1)
        );
        let statuses: Vec<_> = reply.results.iter().map(|r| (r.index, r.status)).collect();
        assert_eq!(
            statuses,
            [
                (0, ItemStatus::Accepted),
                (1, ItemStatus::Rejected),
                (2, ItemStatus::Duplicate)
            ]
        );
        assert_eq!(reply.results[2].event_id.as_deref(), Some("e2"));
        assert_eq!(
            reply.results[1].error.as_ref().map(|e| e.code.as_str()),
            Some("invalid_event")
        );
        assert!(reply.error.is_none());
    }

    #[test]
    fn a_batch_of_only_invalid_events_carries_the_error() {
        let api = ApiSettings::default();
        let batch = parse_batch(br#"{"events": [{"userId":"u"}]}"#, &api).unwrap();
        let (status, reply) = judge_batch(&batch.events, &api, "acc")
            .unwrap()
            .reply(vec![]);
        assert_eq!(status, BatchStatus::AllRejected);
        assert_eq!(
            reply.error.map(|e| e.code),
            Some("invalid_event".to_owned())
        );
    }

    #[test]
    fn bodies_that_are_no_batch_are_refused_whole() {
        let mut api = ApiSettings::default();
        assert_eq!(
            parse_batch(b"{", &api).err().map(|e| e.code()),
            Some("malformed_json")
        );
        assert_eq!(
            parse_batch(br#"{"evts": []}"#, &api)
                .err()
                .map(|e| e.code()),
            Some("invalid_event")
        );
        let empty = parse_batch(br#"{"events": []}"#, &api).unwrap();
        assert_eq!(
            judge_batch(&empty.events, &api, "acc")
                .err()
                .map(|e| e.code()),
            Some("invalid_event")
        );
        api.max_batch_events = 1;
        assert_eq!(
            parse_batch(br#"{"events": [{}, {}]}"#, &api)
                .err()
                .map(|e| e.code()),
            Some("payload_too_large")
        );
    }
}
