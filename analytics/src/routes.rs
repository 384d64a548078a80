//! The analytics endpoints. Every figure covers the caller's account only: the account comes from
//! the JWT and is part of every query and every cache key.
use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::cache::Source;
use crate::error::AnalyticsError;
use crate::params::{self, Cursor};
use crate::queries;
use crate::startup::AppState;

/// The account of the request's JWT.
pub struct Account(pub String);

impl FromRequest for Account {
    type Error = AnalyticsError;
    type Future = Ready<Result<Self, AnalyticsError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let account = req
            .app_data::<web::Data<AppState>>()
            .and_then(|s| sluice_shared::jwt::bearer_account(req, &s.jwt))
            .map(|id| Account(id.to_string()));
        ready(account.ok_or(AnalyticsError::Unauthorized))
    }
}

fn answer(value: std::sync::Arc<serde_json::Value>, source: Source) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(source.header())
        .json(&*value)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The ranges the contract names.
#[derive(Deserialize, ToSchema)]
pub enum Range {
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "7d")]
    D7,
}

/// Bucket widths; at most 1440 points per range, and no wider than the range.
#[derive(Deserialize, ToSchema)]
pub enum Bucket {
    #[serde(rename = "1m")]
    M1,
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "1d")]
    D1,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// The window ending now (default `1h`).
    #[param(value_type = Option<Range>, inline)]
    range: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/analytics/summary", tag = "analytics", security(("jwt" = [])),
    params(SummaryQuery),
    responses(
        (status = 200, description = "The account's figures over the range", body = crate::views::Summary, headers(("x-cache" = String, description = "`hit` or `miss`: whether the answer came from the cache"))),
        (status = 400, description = "A query parameter breaks its rule", body = crate::openapi::ErrorBodyDoc),
        (status = 401, description = "Missing, invalid or expired token", body = crate::openapi::ErrorBodyDoc),
        (status = 503, description = "MongoDB or Redis unreachable", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn summary(
    account: Account,
    q: web::Query<SummaryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnalyticsError> {
    let range = q.range.as_deref().unwrap_or("1h");
    let range_ms = params::range_ms(range)?;
    let key = format!("{}|summary|{range}", account.0);
    let (v, s) = state
        .cache
        .get_or_compute(
            key,
            queries::summary(
                &state.db,
                &state.redis,
                &account.0,
                range,
                range_ms,
                now_ms(),
                state.settings.analytics.top_users,
            ),
        )
        .await?;
    Ok(answer(v, s))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TimeseriesQuery {
    /// The window ending now (default `1h`).
    #[param(value_type = Option<Range>, inline)]
    range: Option<String>,
    /// Bucket width (default `1m`): at most 1440 points, and no wider than the range
    /// (`1m` with `7d`, or `1d` with less than `24h`, is 400).
    #[param(value_type = Option<Bucket>, inline)]
    bucket: Option<String>,
    /// Only this event type; empty is no filter.
    #[param(max_length = 100, pattern = "^([a-zA-Z][a-zA-Z0-9_.:-]*)?$")]
    event_type: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/analytics/timeseries", tag = "analytics", security(("jwt" = [])),
    params(TimeseriesQuery),
    responses(
        (status = 200, description = "Counts per bucket, by the events' own timestamps", body = crate::views::Timeseries, headers(("x-cache" = String, description = "`hit` or `miss`: whether the answer came from the cache"))),
        (status = 400, description = "A query parameter breaks its rule, or the bucket does not fit the range", body = crate::openapi::ErrorBodyDoc),
        (status = 401, description = "Missing, invalid or expired token", body = crate::openapi::ErrorBodyDoc),
        (status = 503, description = "MongoDB or Redis unreachable", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn timeseries(
    account: Account,
    q: web::Query<TimeseriesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnalyticsError> {
    let range = q.range.as_deref().unwrap_or("1h");
    let range_ms = params::range_ms(range)?;
    let bucket = q.bucket.as_deref().unwrap_or("1m");
    let bucket_ms = params::bucket_ms(bucket, range_ms)?;
    let event_type = params::event_type(q.event_type.as_deref())?;
    let key = format!(
        "{}|timeseries|{range}|{bucket}|{}",
        account.0,
        event_type.unwrap_or("")
    );
    let (v, s) = state
        .cache
        .get_or_compute(
            key,
            queries::timeseries(
                &state.db,
                &account.0,
                range_ms,
                bucket,
                bucket_ms,
                event_type,
                now_ms(),
            ),
        )
        .await?;
    Ok(answer(v, s))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The `nextBefore` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$", max_length = 320)]
    before: Option<String>,
}

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

#[utoipa::path(get, path = "/api/v1/analytics/users/{userId}/events", tag = "analytics", security(("jwt" = [])),
    params(
        ("userId" = String, Path, description = "The end user (1 to 128 characters)", min_length = 1, max_length = 128),
        PageQuery,
    ),
    responses(
        (status = 200, description = "The user's events, newest first", body = crate::views::UserEvents, headers(("x-cache" = String, description = "`hit` or `miss`: whether the answer came from the cache"))),
        (status = 400, description = "A query parameter breaks its rule", body = crate::openapi::ErrorBodyDoc),
        (status = 401, description = "Missing, invalid or expired token", body = crate::openapi::ErrorBodyDoc),
        (status = 404, description = "No events of this user in your account", body = crate::openapi::ErrorBodyDoc),
        (status = 503, description = "MongoDB or Redis unreachable", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn user_events(
    account: Account,
    path: web::Path<String>,
    q: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnalyticsError> {
    let user_id = path.into_inner();
    params::user_id(&user_id)?;
    let limit = params::limit(q.limit.as_deref(), 50, 200)?;
    let before = q.before.as_deref().map(Cursor::parse).transpose()?;
    let key = format!(
        "{}|user|{user_id}|{limit}|{}",
        account.0,
        q.before.as_deref().unwrap_or("")
    );
    let (v, s) = state
        .cache
        .get_or_compute(
            key,
            queries::user_events(&state.db, &account.0, &user_id, limit, before.as_ref()),
        )
        .await?;
    Ok(answer(v, s))
}

#[utoipa::path(get, path = "/api/v1/analytics/pipeline", tag = "analytics", security(("jwt" = [])),
    responses(
        (status = 200, description = "The account's recent ingest and dead letters, and the pipeline's coarse state", body = crate::views::Pipeline, headers(("x-cache" = String, description = "`hit` or `miss`: whether the answer came from the cache"))),
        (status = 401, description = "Missing, invalid or expired token", body = crate::openapi::ErrorBodyDoc),
        (status = 503, description = "MongoDB or Redis unreachable", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn pipeline(
    account: Account,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnalyticsError> {
    let key = format!("{}|pipeline", account.0);
    let r = &state.settings.redis;
    let (v, s) = state
        .live_cache
        .get_or_compute(
            key,
            queries::pipeline(
                &state.db,
                &state.redis,
                &r.stream_key,
                &r.group,
                state.settings.api.max_backlog,
                &account.0,
                now_ms(),
            ),
        )
        .await?;
    Ok(answer(v, s))
}

const REASONS: [&str; 3] = ["invalid", "write_rejected", "poison"];

#[utoipa::path(get, path = "/api/v1/dlq", tag = "dead letters", security(("jwt" = [])),
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "The account's dead letters, newest first", body = crate::views::DeadLetters, headers(("x-cache" = String, description = "`hit` or `miss`: whether the answer came from the cache"))),
        (status = 400, description = "A query parameter breaks its rule", body = crate::openapi::ErrorBodyDoc),
        (status = 401, description = "Missing, invalid or expired token", body = crate::openapi::ErrorBodyDoc),
        (status = 503, description = "MongoDB or Redis unreachable", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn dead_letters(
    account: Account,
    q: web::Query<DeadLetterQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnalyticsError> {
    let limit = params::limit(q.limit.as_deref(), 50, 200)?;
    let reason = q.reason.as_deref().filter(|r| !r.is_empty());
    if let Some(r) = reason {
        if !REASONS.contains(&r) {
            return Err(AnalyticsError::invalid(
                "/reason",
                "must be one of invalid, write_rejected, poison",
            ));
        }
    }
    let before = q.before.as_deref().map(Cursor::parse).transpose()?;
    let key = format!(
        "{}|dlq|{}|{limit}|{}",
        account.0,
        reason.unwrap_or(""),
        q.before.as_deref().unwrap_or("")
    );
    let (v, s) = state
        .live_cache
        .get_or_compute(
            key,
            queries::dead_letters(&state.db, &account.0, reason, limit, before.as_ref()),
        )
        .await?;
    Ok(answer(v, s))
}

/// Puts one of the account's dead letters back on the stream, once: a second replay is 409
/// `already_replayed` (see `sluice_worker::replay`). Another account's id is 404.
#[utoipa::path(post, path = "/api/v1/dlq/{id}/replay", tag = "dead letters", security(("jwt" = [])),
    params(("id" = String, Path, description = "The dead letter's `id`")),
    responses(
        (status = 202, description = "Put back on the stream", body = crate::views::Replayed),
        (status = 401, description = "Missing, invalid or expired token", body = crate::openapi::ErrorBodyDoc),
        (status = 404, description = "No such dead letter in your account", body = crate::openapi::ErrorBodyDoc),
        (status = 409, description = "Replayed already (`already_replayed`), or it holds no event (`unreplayable`)", body = crate::openapi::ErrorBodyDoc),
        (status = 503, description = "MongoDB or Redis unreachable", body = crate::openapi::ErrorBodyDoc,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn replay(
    account: Account,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnalyticsError> {
    use sluice_worker::replay::{replay_one, Replayed};
    let id = path.into_inner();
    let dlq = sluice_worker::store::dead_letters(&state.db);
    let letter = dlq
        .find_one(mongodb::bson::doc! {"_id": &id, "accountId": &account.0})
        .await
        .map_err(AnalyticsError::unavailable)?
        .ok_or_else(|| AnalyticsError::NotFound("no such dead letter in your account".into()))?;
    match replay_one(&dlq, &state.enqueuer, &letter)
        .await
        .map_err(AnalyticsError::unavailable)?
    {
        Replayed::Queued => {}
        Replayed::AlreadyReplayed => {
            return Err(AnalyticsError::Conflict {
                code: "already_replayed",
                message: "this dead letter was replayed already; a letter is replayed once".into(),
            })
        }
        Replayed::Unreplayable => {
            return Err(AnalyticsError::Conflict {
                code: "unreplayable",
                message: "this dead letter holds no event to replay".into(),
            })
        }
    };
    // The account's dead-letter listings now describe the past.
    state
        .live_cache
        .invalidate_prefix(&format!("{}|dlq|", account.0));
    Ok(HttpResponse::Accepted().json(crate::views::Replayed {
        id,
        status: crate::views::ReplayStatus::Queued,
    }))
}
