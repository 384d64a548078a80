//! `GET /api/v1/analytics/pipeline`.
use actix_web::{web, HttpResponse};
use sluice_http::{ApiError, AuthedAccount};

use super::{answer, now_ms};
use crate::cache::CacheKey;
use crate::queries::pipeline::{self as query, Stream};
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/analytics/pipeline", tag = "analytics", security(("jwt" = [])),
    responses(
        (status = 200, description = "The account's recent ingest and dead letters, and the pipeline's coarse state", body = crate::views::Pipeline, headers(("x-cache" = String, description = "`hit` or `miss`: whether the answer came from the cache"))),
        (status = 401, description = "Missing, invalid or expired token", body = sluice_shared::error::ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = sluice_shared::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn pipeline(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = CacheKey::Pipeline {
        account: account.id,
    };
    let account = account.id.to_string();
    let r = &state.settings.redis;
    let stream = Stream {
        redis: r,
        max_backlog: state.settings.api.max_backlog,
    };
    let compute = query::pipeline(&state.db, &state.redis, &stream, &account, now_ms());
    let (body, source) = state.live_cache.get_or_compute(key, compute).await?;
    Ok(answer(body, source))
}
