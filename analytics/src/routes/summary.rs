//! `GET /api/v1/analytics/summary`.
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use sluice_http::{ApiError, AuthedAccount};
use utoipa::IntoParams;

use super::{answer, now_ms};
use crate::cache::CacheKey;
use crate::params::Range;
use crate::queries;
use crate::state::AppState;

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
        (status = 400, description = "A query parameter breaks its rule", body = sluice_shared::error::ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = sluice_shared::error::ErrorBody),
        (status = 503, description = "MongoDB or Redis unreachable", body = sluice_shared::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn summary(
    account: AuthedAccount,
    q: web::Query<SummaryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let range = Range::parse(q.range.as_deref())?;
    let key = CacheKey::Summary {
        account: account.id,
        range,
    };
    let account = account.id.to_string();
    let top_n = state.settings.analytics.top_users;
    let compute =
        queries::summary::summary(&state.db, &state.redis, &account, range, now_ms(), top_n);
    let (body, source) = state.cache.get_or_compute(key, compute).await?;
    Ok(answer(body, source))
}
