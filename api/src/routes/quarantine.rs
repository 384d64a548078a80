//! `GET /api/v1/quarantine`: the account's events a tracking plan in `quarantine` mode held
//! back, newest first, with their violations.
use actix_web::{web, HttpResponse};
use sluice_http::{ApiError, AuthedAccount};
use sluice_shared::error::ErrorBody;

use crate::routes::events::EventsQuery;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/quarantine", tag = "tracking plans", security(("jwt" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "Quarantined events, newest first (by `timestamp`), each with `schemaVersion`, `schemaViolations` and `quarantinedAt`", body = crate::event_queries::EventPage),
        (status = 400, description = "A query parameter breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: AuthedAccount,
    q: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = q.filter(1000)?;
    let page = crate::event_queries::page(
        &sluice_store::quarantine(&state.mongo),
        &account.id.to_string(),
        &filter,
    )
    .await
    .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Ok().json(page))
}

/// `POST /api/v1/quarantine/replay`: which quarantined events to judge again (all by default).
#[derive(serde::Deserialize, utoipa::ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantineReplayRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub event_type: Option<String>,
    /// `timestamp >= from`.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// `timestamp < to`.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these eventIds.
    #[schema(max_items = 1000)]
    pub ids: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/api/v1/quarantine/replay", tag = "tracking plans", security(("jwt" = [])),
    request_body(content = QuarantineReplayRequest, content_type = "application/json",
        description = "Which quarantined events to judge again by the current (latest) schema; an empty object takes them all"),
    responses(
        (status = 200, description = "Those that now pass were queued for `events` (once) and left quarantine; the rest stay with their new violations", body = crate::replays::QuarantineReplay),
        (status = 400, description = "Malformed JSON, or a field that breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "MongoDB, Redis or PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn replay(
    account: AuthedAccount,
    body: web::Json<QuarantineReplayRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if b.ids.as_ref().is_some_and(|ids| ids.len() > 1000) {
        return Err(ApiError::invalid_request("/ids", "at most 1000 eventIds"));
    }
    if let Some(t) = &b.event_type {
        if let Some(problem) = sluice_shared::event::source_event_type_problem(t) {
            return Err(ApiError::invalid_request("/eventType", problem));
        }
    }
    let filter = crate::event_queries::EventFilter {
        event_type: b.event_type,
        from: b.from,
        to: b.to,
        limit: crate::replays::MAX_PER_REPLAY,
        ..Default::default()
    };
    // Judged by the plan as it is now in PostgreSQL, not by what this instance holds.
    let plan = crate::plans::cache::load(&state.pool, account.id)
        .await
        .map_err(ApiError::AccountsUnavailable)?;
    let report = crate::replays::replay_quarantine(
        &state.mongo,
        &state.enqueuer,
        &plan,
        account.id,
        &filter,
        b.ids.as_deref(),
    )
    .await
    .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Ok().json(report))
}
