//! `GET /api/v1/dlq` and `POST /api/v1/dlq/{id}/replay`: the account's dead letters, and their
//! replay into the stream (the write side's, so analytics only reads). MongoDB down answers 503
//! here and nowhere else: ingest does not need it.
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use sluice_http::{ApiError, AuthedAccount};
use sluice_store::Replayed;
use utoipa::{IntoParams, ToSchema};

use crate::dead_letters::{self, DeadLetterPage, PageRequest};
use crate::state::AppState;
use sluice_shared::error::ErrorBody;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Page size (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The `nextBefore` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$", max_length = 320)]
    before: Option<String>,
    /// Only this reason (`invalid`, `write_rejected` or `poison`); empty is no filter.
    #[param(pattern = "^(invalid|write_rejected|poison)?$")]
    reason: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/dlq", tag = "dead letters", security(("jwt" = [])),
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "The account's dead letters, newest first", body = DeadLetterPage),
        (status = 400, description = "A query parameter breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: AuthedAccount,
    q: web::Query<DeadLetterQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let request = PageRequest::parse(q.limit.as_deref(), q.reason.as_deref(), q.before.as_deref())?;
    let page = dead_letters::page(&state.mongo, &account.id.to_string(), &request)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplayStatus {
    /// Put back on the stream.
    Queued,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayReply {
    pub id: String,
    pub status: ReplayStatus,
}

/// Puts one of the account's dead letters back on the stream, once: a second replay is 409
/// `already_replayed` (see `sluice_store::replay_one`). Another account's id is 404.
#[utoipa::path(post, path = "/api/v1/dlq/{id}/replay", tag = "dead letters", security(("jwt" = [])),
    params(("id" = String, Path, description = "The dead letter's `id`")),
    responses(
        (status = 202, description = "Put back on the stream", body = ReplayReply),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such dead letter in your account", body = ErrorBody),
        (status = 409, description = "Replayed already (`already_replayed`), or it holds no event (`unreplayable`)", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn replay(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let letter = sluice_store::letter_of_account(&state.mongo, &account.id.to_string(), &id)
        .await
        .map_err(ApiError::StoreUnavailable)?
        .ok_or_else(|| ApiError::not_found("no such dead letter in your account"))?;
    let dlq = sluice_store::dead_letters(&state.mongo);
    match sluice_store::replay_one(&dlq, &state.enqueuer, &letter)
        .await
        .map_err(unavailable)?
    {
        Replayed::Queued => Ok(HttpResponse::Accepted().json(ReplayReply {
            id,
            status: ReplayStatus::Queued,
        })),
        Replayed::AlreadyReplayed => Err(ApiError::AlreadyReplayed(
            "this dead letter was replayed already; a letter is replayed once".into(),
        )),
        Replayed::Unreplayable => Err(ApiError::Unreplayable(
            "this dead letter holds no event to replay".into(),
        )),
    }
}

/// A replay fails on MongoDB (the letter) or on Redis (the stream): the answer names which.
fn unavailable(e: anyhow::Error) -> ApiError {
    if e.chain().any(|c| c.is::<mongodb::error::Error>()) {
        ApiError::StoreUnavailable(e)
    } else {
        ApiError::QueueUnavailable(e)
    }
}

/// `POST /api/v1/dlq/replay`: which dead letters to put back (every one not replayed yet, by
/// default).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayRequest {
    /// `invalid`, `write_rejected` or `poison`.
    #[schema(pattern = "^(invalid|write_rejected|poison)$")]
    pub reason: Option<String>,
    /// Letters that failed at or after this.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Letters that failed before this.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkReplayReply {
    /// Put back on the stream (each once in its life).
    pub replayed: u64,
    /// Letters that hold no event to put back.
    pub unreplayable: u64,
}

#[utoipa::path(post, path = "/api/v1/dlq/replay", tag = "dead letters", security(("jwt" = [])),
    request_body(content = BulkReplayRequest, content_type = "application/json",
        description = "Which dead letters of the account to replay; an empty object takes every one not replayed yet"),
    responses(
        (status = 200, description = "Replayed: each letter at most once; MongoDB's `_id` stores each event once", body = BulkReplayReply),
        (status = 400, description = "Malformed JSON, or a field that breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "MongoDB or Redis unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn replay_many(
    account: AuthedAccount,
    body: web::Json<BulkReplayRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let reason = body
        .reason
        .as_deref()
        .map(str::parse::<sluice_store::DeadLetterReason>)
        .transpose()
        .map_err(|e| ApiError::invalid_request("/reason", e.to_string()))?;
    let filter = sluice_store::ReplayFilter {
        reason,
        account: Some(account.id.to_string()),
        since: body.from,
        until: body.to,
    };
    let report = sluice_store::replay(&state.mongo, &state.enqueuer, &filter)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Ok().json(BulkReplayReply {
        replayed: report.replayed,
        unreplayable: report.unreplayable,
    }))
}
