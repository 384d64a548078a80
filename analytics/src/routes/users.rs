//! `GET /api/v1/analytics/users/{userId}/events`.
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use sluice_http::{ApiError, AuthedAccount};
use utoipa::IntoParams;

use super::answer;
use crate::cache::CacheKey;
use crate::params::{self, Cursor};
use crate::queries;
use crate::state::AppState;

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

#[utoipa::path(get, path = "/api/v1/analytics/users/{userId}/events", tag = "analytics", security(("jwt" = [])),
    params(
        ("userId" = String, Path, description = "The end user (1 to 128 characters)", min_length = 1, max_length = 128),
        PageQuery,
    ),
    responses(
        (status = 200, description = "The user's events, newest first", body = crate::views::UserEvents, headers(("x-cache" = String, description = "`hit` or `miss`: whether the answer came from the cache"))),
        (status = 400, description = "A query parameter breaks its rule", body = sluice_shared::error::ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = sluice_shared::error::ErrorBody),
        (status = 404, description = "No events of this user in your account", body = sluice_shared::error::ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = sluice_shared::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn user_events(
    account: AuthedAccount,
    path: web::Path<String>,
    q: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.into_inner();
    params::user_id(&user_id)?;
    let limit = params::limit(q.limit.as_deref(), 50, 200)?;
    let before = q.before.as_deref().map(Cursor::parse).transpose()?;
    let account_id = account.id.to_string();
    let compute =
        queries::users::user_events(&state.db, &account_id, &user_id, limit, before.as_ref());
    let key = CacheKey::UserEvents {
        account: account.id,
        user_id: user_id.clone(),
        limit,
        before: before.clone(),
    };
    let (body, source) = state.cache.get_or_compute(key, compute).await?;
    Ok(answer(body, source))
}
