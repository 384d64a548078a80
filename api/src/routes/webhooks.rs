//! `POST /api/v1/webhooks/{sourceId}`: a signed delivery from a webhook source. The signature is
//! checked on the raw bytes before anything parses them; the delivery is then one event of the
//! source's account, queued like any other (202, or 200 for a redelivery of the same message).
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use sluice_http::body::read_raw;
use sluice_http::ApiError;
use sluice_shared::error::ErrorBody;
use tracing_actix_web::RequestId;
use uuid::Uuid;

use crate::ingest::{count, EventReply};
use crate::sources::signature::{self, Scheme};
use crate::sources::webhook;
use crate::state::AppState;

#[utoipa::path(post, path = "/api/v1/webhooks/{id}", tag = "sources",
    params(
        ("id" = Uuid, Path, description = "The webhook source's id"),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks: the message id (its retries share it)"),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks: seconds since the epoch (digits), within 300 s of now"),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks: `v1,<base64 HMAC-SHA256 of {id}.{timestamp}.{body}>`, several space-separated"),
        ("Stripe-Signature" = Option<String>, Header, description = "Stripe: `t=<seconds>,v1=<hex HMAC-SHA256 of {t}.{body}>`"),
    ),
    request_body(content = Object, content_type = "application/json",
        description = "The provider's JSON object, as signed; it becomes the event's `properties` (at most 64 KiB)"),
    responses(
        (status = 202, description = "Queued", body = EventReply),
        (status = 200, description = "A redelivery of a message already queued within the dedup window", body = EventReply),
        (status = 400, description = "Signed, but not a JSON object an event can hold", body = ErrorBody),
        (status = 401, description = "Missing, malformed, stale or wrong signature", body = ErrorBody),
        (status = 404, description = "No such webhook source", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Over 64 KiB", body = ErrorBody),
        (status = 503, description = "Backlog over its limit, or Redis or PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn deliver(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let no_such = || ApiError::not_found("no such webhook source");
    let id: Uuid = path.parse().map_err(|_| no_such())?;
    let source = state
        .sources
        .get(&state.pool, id)
        .await
        .map_err(ApiError::AccountsUnavailable)?
        .ok_or_else(no_such)?;
    state.check_queue()?;
    let settings = &state.settings.sources;
    let body = read_raw(&req, payload, settings.webhook_max_body_bytes, "webhook").await?;
    let now = Utc::now();
    let scheme = source.scheme().unwrap_or(Scheme::StandardWebhooks);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let verified = signature::verify(
        scheme,
        &source.secrets_at(now),
        header,
        &body,
        now.timestamp(),
        settings.webhook_tolerance_secs,
    )
    .map_err(|refusal| {
        metrics::counter!("sluice_webhook_refusals_total", "reason" => refusal.label())
            .increment(1);
        tracing::info!(source = %id, reason = %refusal, "webhook delivery refused");
        ApiError::Unauthorized
    })?;
    let mut event = webhook::to_event(
        &source,
        &verified,
        &body,
        now,
        state.settings.api.max_event_values,
    )
    .inspect_err(|e| count("rejected", crate::ingest::reason_of(e), 1))?;
    let plan = state.plans.get(&state.pool, source.account_id).await;
    plan.judge(&mut event)
        .inspect_err(|e| count("rejected", crate::ingest::reason_of(e), 1))?;
    if state.suppressed(source.account_id).await?.covers(&event) {
        return Ok(crate::routes::events::answer_suppressed(&event));
    }
    let outcomes = crate::state::WorkerEnqueuer::of(&req, &state)
        .enqueue(std::slice::from_ref(&event), &request_id.to_string())
        .await
        .map_err(ApiError::QueueUnavailable)?;
    Ok(crate::routes::events::answer_one(&event, outcomes.first()))
}
