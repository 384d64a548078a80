//! `POST /api/v1/events` and `POST /api/v1/events/batch`: authenticate the key (before the body
//! is read), check the queue and the key's quota, read the body, judge, queue, answer.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use sluice_http::body::read_json_body;
use sluice_http::ApiError;
use sluice_shared::enqueue::Outcome;
use sluice_shared::event::QueuedEvent;
use tracing_actix_web::RequestId;

use crate::ingest::{
    self, count, reason_of, BatchBody, BatchRefusal, BatchReply, BatchStatus, EventReply,
    EventStatus,
};
use crate::schema::EventEnvelope;
use crate::state::{AppState, WorkerEnqueuer};
use sluice_shared::error::ErrorBody;

#[utoipa::path(post, path = "/api/v1/events", tag = "ingest", security(("apiKey" = [])),
    request_body(content = EventEnvelope, content_type = "application/json",
        description = "One event; `Content-Encoding: gzip` is accepted (limits apply to the decompressed size)"),
    responses(
        (status = 202, description = "Queued (`accepted`), or queued for quarantine by the account's tracking plan (`quarantined`)", body = EventReply),
        (status = 200, description = "Already seen within the dedup window (`duplicate`), or of a suppressed user (`suppressed`, never queued)", body = EventReply),
        (status = 400, description = "Malformed JSON (`malformed_json`) or a schema violation (`invalid_event`, with a JSON pointer per violation)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked key", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Over 64 KiB, or more JSON values than one event may hold", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`, or an encoding other than gzip", body = ErrorBody),
        (status = 429, description = "Over the key's quota", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Backlog over its limit (`overloaded`), or Redis unreachable (`unavailable`)", body = ErrorBody,
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
    state.check_queue()?;
    let api = &state.settings.api;
    let body = read_json_body(&req, payload, api.max_event_bytes, "event").await?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not UTF-8: {e}")))
        .inspect_err(|_| count("rejected", "malformed_json", 1))?;
    let (mut queued, _) =
        ingest::judge_text(text, ingest::limits(api), &owner.account_id.to_string())
            .inspect_err(|err| count("rejected", reason_of(err), 1))?;
    let plan = state.plans.get(&state.pool, owner.account_id).await;
    plan.judge(&mut queued)
        .inspect_err(|err| count("rejected", reason_of(err), 1))?;
    if state.suppressed(owner.account_id).await?.covers(&queued) {
        return Ok(answer_suppressed(&queued));
    }
    let outcomes = WorkerEnqueuer::of(&req, &state)
        .enqueue(std::slice::from_ref(&queued), &request_id.to_string())
        .await
        .map_err(ApiError::QueueUnavailable)?;
    Ok(answer_one(&queued, outcomes.first()))
}

/// The answer to one event of a suppressed user: 200 `suppressed` (an SDK does not send it again),
/// never queued.
pub fn answer_suppressed(event: &QueuedEvent) -> HttpResponse {
    crate::suppression::count(1);
    HttpResponse::Ok().json(EventReply {
        event_id: &event.event_id,
        status: EventStatus::Suppressed,
    })
}

/// The answer to one event once it went through the enqueue: 202 `accepted` (or `quarantined` by
/// the tracking plan), 200 `duplicate`; counted by outcome. The webhook intake answers the same.
pub fn answer_one(event: &QueuedEvent, outcome: Option<&Outcome>) -> HttpResponse {
    let event_id = event.event_id.as_str();
    let (status, reply) = match outcome {
        Some(Outcome::Accepted(_)) if crate::plans::quarantined(event) => {
            (StatusCode::ACCEPTED, EventStatus::Quarantined)
        }
        Some(Outcome::Accepted(_)) => (StatusCode::ACCEPTED, EventStatus::Accepted),
        _ => (StatusCode::OK, EventStatus::Duplicate),
    };
    let outcome = match reply {
        EventStatus::Accepted => "accepted",
        EventStatus::Duplicate => "duplicate",
        EventStatus::Quarantined => "quarantined",
        EventStatus::Suppressed => "suppressed",
    };
    count(outcome, "", 1);
    HttpResponse::build(status).json(EventReply {
        event_id,
        status: reply,
    })
}

#[utoipa::path(post, path = "/api/v1/events/batch", tag = "ingest", security(("apiKey" = [])),
    request_body(content = BatchBody, content_type = "application/json",
        description = "1..1000 events, each judged on its own; `Content-Encoding: gzip` is accepted"),
    responses(
        (status = 202, description = "At least one event queued", body = BatchReply),
        (status = 200, description = "Nothing new queued, not every event invalid", body = BatchReply),
        (status = 400, description = "Every event invalid (the counts and results are included), or not a batch", body = BatchRefusal),
        (status = 401, description = "Missing, unknown or revoked key", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Over 1000 events, over 5 MiB, or more JSON values than one request may hold", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`, or an encoding other than gzip", body = ErrorBody),
        (status = 429, description = "Over the key's quota", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Backlog over its limit, or Redis unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn ingest_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let owner = state.auth.authenticate(&req).await?;
    state.check_queue()?;
    let api = &state.settings.api;
    let body = read_json_body(&req, payload, api.max_batch_bytes, "batch").await?;
    let batch = ingest::parse_batch(&body, api)?;
    state.quotas.check(&owner, batch.events.len() as u32)?;
    let mut judged = ingest::judge_batch(&batch.events, api, &owner.account_id.to_string())?;
    drop(batch);
    let plan = state.plans.get(&state.pool, owner.account_id).await;
    judged.apply_plan(&plan);
    judged.suppress(&*state.suppressed(owner.account_id).await?);
    drop(body);

    let outcomes = if judged.events.is_empty() {
        Vec::new()
    } else {
        WorkerEnqueuer::of(&req, &state)
            .enqueue(&judged.events, &request_id.to_string())
            .await
            .map_err(ApiError::QueueUnavailable)?
    };
    let (status, reply) = judged.reply(outcomes);
    Ok(match status {
        BatchStatus::Queued => HttpResponse::Accepted().json(reply),
        BatchStatus::NothingNew => HttpResponse::Ok().json(reply),
        BatchStatus::AllRejected => HttpResponse::BadRequest().json(reply),
    })
}

/// `GET /api/v1/events`: the query parameters (each optional; the account is the token's).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct EventsQuery {
    /// As stored: printable, up to 200 characters.
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    event_type: Option<String>,
    /// With it, a single-shard query on a sharded cluster (the shard key is `userId`).
    #[param(max_length = 128)]
    user_id: Option<String>,
    #[param(max_length = 128)]
    session_id: Option<String>,
    /// `timestamp >= from` (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    from: Option<String>,
    /// `timestamp < to` (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    to: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `nextBefore` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$", max_length = 320)]
    before: Option<String>,
}

impl EventsQuery {
    pub fn filter(&self, max: i64) -> Result<crate::event_queries::EventFilter, ApiError> {
        crate::event_queries::EventFilter::parse(
            crate::event_queries::RawFilter {
                event_type: self.event_type.as_deref(),
                user_id: self.user_id.as_deref(),
                session_id: self.session_id.as_deref(),
                from: self.from.as_deref(),
                to: self.to.as_deref(),
                limit: self.limit.as_deref(),
                before: self.before.as_deref(),
            },
            max,
        )
    }
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("jwt" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "The account's stored events, newest first (by `timestamp`), served by an index per filter", body = crate::event_queries::EventPage),
        (status = 400, description = "A query parameter breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: sluice_http::AuthedAccount,
    q: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = q.filter(1000)?;
    let page = crate::event_queries::page(
        &sluice_store::events(&state.mongo),
        &account.id.to_string(),
        &filter,
    )
    .await
    .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(get, path = "/api/v1/events/{eventId}", tag = "events", security(("jwt" = [])),
    params(("eventId" = String, Path, description = "The event's id (an event with the id `batch` is found by the listing only: that path is the batch intake)")),
    responses(
        (status = 200, description = "The stored event", body = crate::event_queries::EventView),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such event in this account (another account's is 404 too)", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn get_one(
    account: sluice_http::AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // (An event whose id is `batch` is found by the listing only: that path is the batch intake.)
    let event_id = path.into_inner();
    let event_id = event_id.as_str();
    let found = crate::event_queries::one(
        &sluice_store::events(&state.mongo),
        &account.id.to_string(),
        event_id,
    )
    .await
    .map_err(ApiError::StoreUnavailable)?
    .ok_or_else(|| ApiError::not_found("no such event"))?;
    Ok(HttpResponse::Ok().json(found))
}
