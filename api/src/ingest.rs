//! `POST /api/v1/events` and `POST /api/v1/events/batch`.
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_shared::error::{ErrorDetail, Violation};
use sluice_shared::event::{self, QueuedEvent};
use tracing_actix_web::RequestId;

use crate::error::ApiError;
use crate::startup::AppState;
use sluice_shared::enqueue::Outcome;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventReply<'a> {
    event_id: &'a str,
    status: &'static str,
}

fn count(outcome: &'static str, reason: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("sluice_events_total", "outcome" => outcome, "reason" => reason)
            .increment(n as u64);
    }
}

/// Refuses early, before the body is read, when the queue cannot take more.
fn check_queue(state: &AppState) -> Result<(), ApiError> {
    if !state.backlog.redis_reachable() {
        return Err(ApiError::Unavailable(anyhow::anyhow!(
            "Redis did not answer the last backlog poll"
        )));
    }
    let api = &state.settings.api;
    if state.backlog.entries() > api.max_backlog || state.backlog.bytes() > api.max_backlog_bytes {
        return Err(ApiError::Overloaded);
    }
    Ok(())
}

fn rejection_reason(details: &[Violation]) -> &'static str {
    if details.iter().any(|d| d.message.contains("unknown field")) {
        "unknown_field"
    } else {
        "schema"
    }
}

#[utoipa::path(post, path = "/api/v1/events", tag = "ingest", security(("apiKey" = [])),
    request_body(content = crate::openapi::EventDoc, content_type = "application/json",
        description = "One event; `Content-Encoding: gzip` is accepted (limits apply to the decompressed size)"),
    responses(
        (status = 202, description = "Queued", body = crate::openapi::EventReplyDoc),
        (status = 200, description = "Already seen within the dedup window", body = crate::openapi::EventReplyDoc),
        (status = 400, description = "Malformed JSON (`malformed_json`) or a schema violation (`invalid_event`, with a JSON pointer per violation)", body = crate::openapi::ErrorBodyDoc),
        (status = 401, description = "Missing, unknown or revoked key", body = crate::openapi::ErrorBodyDoc),
        (status = 408, description = "The body did not arrive in time", body = crate::openapi::ErrorBodyDoc),
        (status = 413, description = "Over 64 KiB, or more JSON values than one event may hold", body = crate::openapi::ErrorBodyDoc),
        (status = 415, description = "Not sent as `application/json`, or an encoding other than gzip", body = crate::openapi::ErrorBodyDoc),
        (status = 429, description = "Over the key's quota", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Backlog over its limit (`overloaded`), or Redis unreachable (`unavailable`)", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn ingest_one(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let owner = state.auth.authenticate(&req).await?;
    state.quotas.check(&owner, 1)?;
    check_queue(&state)?;
    let api = &state.settings.api;
    let body = crate::body::read_json_body(&req, payload, api.max_event_bytes, "event").await?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not UTF-8: {e}")))
        .inspect_err(|_| count("rejected", "malformed_json", 1))?;
    let queued = judge_text(text, limits(api), &owner.account_id.to_string())
        .map(|(event, _)| event)
        .inspect_err(|err| count("rejected", reason_of(err), 1))?;
    let outcomes = state
        .enqueuer
        .enqueue(std::slice::from_ref(&queued), &request_id.to_string())
        .await
        .map_err(ApiError::Unavailable)?;
    let event_id = queued.event_id.as_str();
    Ok(match outcomes.first() {
        Some(Outcome::Accepted(_)) => {
            count("accepted", "", 1);
            HttpResponse::Accepted().json(EventReply {
                event_id,
                status: "accepted",
            })
        }
        _ => {
            count("duplicate", "", 1);
            HttpResponse::Ok().json(EventReply {
                event_id,
                status: "duplicate",
            })
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct ItemResult {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

#[derive(Serialize)]
struct BatchReply {
    accepted: usize,
    duplicates: usize,
    rejected: usize,
    results: Vec<ItemResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

fn limits(api: &sluice_shared::config::ApiSettings) -> event::EventLimits {
    event::EventLimits {
        max_values: api.max_event_values,
    }
}

/// The metrics reason of a refused event.
fn reason_of(err: &ApiError) -> &'static str {
    match err {
        ApiError::InvalidEvent { details, .. } => rejection_reason(details),
        other => other.code(),
    }
}

/// Parses, checks and stamps one event; also says how many JSON values its properties hold.
fn judge_text(
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

#[utoipa::path(post, path = "/api/v1/events/batch", tag = "ingest", security(("apiKey" = [])),
    request_body(content = crate::openapi::BatchDoc, content_type = "application/json",
        description = "1..1000 events, each judged on its own; `Content-Encoding: gzip` is accepted"),
    responses(
        (status = 202, description = "At least one event queued", body = crate::openapi::BatchReplyDoc),
        (status = 200, description = "Nothing new queued, not every event invalid", body = crate::openapi::BatchReplyDoc),
        (status = 400, description = "Every event invalid (the counts and results are included), or not a batch", body = crate::openapi::BatchRefusalDoc),
        (status = 401, description = "Missing, unknown or revoked key", body = crate::openapi::ErrorBodyDoc),
        (status = 408, description = "The body did not arrive in time", body = crate::openapi::ErrorBodyDoc),
        (status = 413, description = "Over 1000 events, over 5 MiB, or more JSON values than one request may hold", body = crate::openapi::ErrorBodyDoc),
        (status = 415, description = "Not sent as `application/json`, or an encoding other than gzip", body = crate::openapi::ErrorBodyDoc),
        (status = 429, description = "Over the key's quota", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Backlog over its limit, or Redis unreachable", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn ingest_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let owner = state.auth.authenticate(&req).await?;
    check_queue(&state)?;
    let api = &state.settings.api;
    let body = crate::body::read_json_body(&req, payload, api.max_batch_bytes, "batch").await?;
    let batch: BatchBody = serde_json::from_slice(&body).map_err(|e| {
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
    state.quotas.check(&owner, batch.events.len() as u32)?;
    if batch.events.is_empty() {
        return Err(ApiError::invalid(vec![Violation {
            path: "/events".into(),
            message: format!("must hold 1 to {} events", api.max_batch_events),
        }]));
    }

    let account_id = owner.account_id.to_string();
    let limits = limits(api);
    let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(batch.events.len());
    // Valid events and, beside them, their index in the batch: nothing is copied to queue them.
    let mut events: Vec<QueuedEvent> = Vec::with_capacity(batch.events.len());
    let mut positions: Vec<usize> = Vec::with_capacity(batch.events.len());
    let mut values = 0usize;
    for (index, raw) in batch.events.iter().enumerate() {
        match judge(raw, api.max_event_bytes, limits, &account_id) {
            Ok((e, n)) => {
                values += n;
                if values > api.max_request_values {
                    return Err(ApiError::TooManyValues(api.max_request_values));
                }
                events.push(e);
                positions.push(index);
                results.push(None);
            }
            Err(err) => {
                count("rejected", reason_of(&err), 1);
                results.push(Some(ItemResult {
                    index,
                    event_id: None,
                    status: "rejected",
                    error: Some(err.body().error),
                }));
            }
        }
    }
    drop(batch);
    drop(body);

    let outcomes = if events.is_empty() {
        Vec::new()
    } else {
        state
            .enqueuer
            .enqueue(&events, &request_id.to_string())
            .await
            .map_err(ApiError::Unavailable)?
    };
    let (mut accepted, mut duplicates) = (0, 0);
    for ((index, e), outcome) in positions.into_iter().zip(events).zip(outcomes) {
        let status = match outcome {
            Outcome::Accepted(_) => {
                accepted += 1;
                "accepted"
            }
            Outcome::Duplicate => {
                duplicates += 1;
                "duplicate"
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
    let results: Vec<ItemResult> = results.into_iter().flatten().collect();
    let rejected = results.len() - accepted - duplicates;
    let reply = |error| BatchReply {
        accepted,
        duplicates,
        rejected,
        results,
        error,
    };
    Ok(match batch_status(accepted, duplicates, rejected) {
        BatchStatus::Queued => HttpResponse::Accepted().json(reply(None)),
        BatchStatus::NothingNew => HttpResponse::Ok().json(reply(None)),
        BatchStatus::AllRejected => HttpResponse::BadRequest().json(reply(Some(ErrorDetail {
            code: "invalid_event".into(),
            message: "every event in the batch was rejected".into(),
            details: None,
        }))),
    })
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
}
