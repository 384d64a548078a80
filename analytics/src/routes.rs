//! The analytics endpoints. Every figure covers the caller's account only: the account comes from
//! the JWT and is part of every query and every cache key.
use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

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

#[derive(Deserialize)]
pub struct SummaryQuery {
    range: Option<String>,
}

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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeseriesQuery {
    range: Option<String>,
    bucket: Option<String>,
    event_type: Option<String>,
}

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

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    before: Option<String>,
    reason: Option<String>,
}

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

pub async fn dead_letters(
    account: Account,
    q: web::Query<PageQuery>,
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
    Ok(HttpResponse::Accepted().json(json!({"id": id, "status": "queued"})))
}
