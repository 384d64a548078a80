//! `GET /api/v1/analytics/timeseries`.
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use sluice_http::{ApiError, AuthedAccount};
use utoipa::IntoParams;

use super::{answer, now_ms};
use crate::cache::CacheKey;
use crate::params::{self, Bucket, Range};
use crate::queries;
use crate::state::AppState;

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
    /// Only this event type (as stored: Sluice's identifiers, or a source's verbatim name);
    /// empty is no filter.
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    event_type: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/analytics/timeseries", tag = "analytics", security(("jwt" = [])),
    params(TimeseriesQuery),
    responses(
        (status = 200, description = "Counts per bucket, by the events' own timestamps", body = crate::views::Timeseries, headers(("x-cache" = String, description = "`hit` or `miss`: whether the answer came from the cache"))),
        (status = 400, description = "A query parameter breaks its rule, or the bucket does not fit the range", body = sluice_shared::error::ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = sluice_shared::error::ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = sluice_shared::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn timeseries(
    account: AuthedAccount,
    q: web::Query<TimeseriesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let range = Range::parse(q.range.as_deref())?;
    let bucket = Bucket::parse(q.bucket.as_deref(), range)?;
    let event_type = params::event_type(q.event_type.as_deref())?;
    let key = CacheKey::Timeseries {
        account: account.id,
        range,
        bucket,
        event_type: event_type.map(str::to_owned),
    };
    let account = account.id.to_string();
    let compute =
        queries::timeseries::timeseries(&state.db, &account, range, bucket, event_type, now_ms());
    let (body, source) = state.cache.get_or_compute(key, compute).await?;
    Ok(answer(body, source))
}
