//! `GET /api/v1/anomalies` (newest first, cursor `nextBefore`), `GET /api/v1/anomalies/{id}`
//! (with its delivery attempts) and `DELETE /api/v1/anomalies/{id}`: what the account's rules
//! raised. Another account's anomaly is 404.
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_http::cursor::Cursor;
use sluice_http::{ApiError, AuthedAccount};
use sluice_rules::live::AnomalyView;
use sluice_rules::store::{self, AnomalyQuery};
use sluice_rules::Severity;
use sluice_shared::error::ErrorBody;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AnomaliesQuery {
    /// Raised at or after (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    severity: Option<Severity>,
    #[param(value_type = Option<uuid::Uuid>)]
    rule_id: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// The `nextBefore` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$", max_length = 320)]
    before: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnomalyPage {
    pub anomalies: Vec<AnomalyView>,
    /// The cursor of the next (older) page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = r"^-?[0-9]{1,18}:[\s\S]{1,300}$")]
    pub next_before: Option<String>,
}

impl AnomaliesQuery {
    fn parse(&self) -> Result<AnomalyQuery, ApiError> {
        let limit = Cursor::page_limit(self.limit.as_deref())?;
        let since = self
            .since
            .as_deref()
            .map(|s| {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| ApiError::invalid_request("/since", "an RFC 3339 date-time"))
            })
            .transpose()?;
        let rule_id = self
            .rule_id
            .as_deref()
            .map(|r| {
                r.parse::<uuid::Uuid>()
                    .map(|u| u.to_string())
                    .map_err(|_| ApiError::invalid_request("/ruleId", "a rule id (UUID)"))
            })
            .transpose()?;
        let before = self
            .before
            .as_deref()
            .map(Cursor::parse)
            .transpose()?
            .map(|c| {
                DateTime::from_timestamp_millis(c.millis)
                    .map(|t| (t, c.id))
                    .ok_or_else(|| {
                        ApiError::invalid_request("/before", "not a cursor this service returned")
                    })
            })
            .transpose()?;
        Ok(AnomalyQuery {
            since,
            severity: self.severity,
            rule_id,
            before,
            limit,
        })
    }
}

#[utoipa::path(get, path = "/api/v1/anomalies", tag = "rules", security(("jwt" = [])),
    params(AnomaliesQuery),
    responses(
        (status = 200, description = "The account's anomalies, newest first", body = AnomalyPage),
        (status = 400, description = "A query parameter breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: AuthedAccount,
    q: web::Query<AnomaliesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = q.parse()?;
    let docs = store::list_anomalies(&state.mongo, &account.id.to_string(), &query)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    let next_before = Cursor::after_full_page(&docs, query.limit, |d| {
        (d.detected_at.timestamp_millis(), &d.id)
    });
    Ok(HttpResponse::Ok().json(AnomalyPage {
        anomalies: docs.iter().map(AnomalyView::from).collect(),
        next_before,
    }))
}

#[utoipa::path(get, path = "/api/v1/anomalies/{id}", tag = "rules", security(("jwt" = [])),
    params(("id" = String, Path, description = "The anomaly's id")),
    responses(
        (status = 200, description = "The anomaly, with its delivery attempts", body = AnomalyView),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such anomaly in this account", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn get_one(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let found = store::anomaly_of_account(&state.mongo, &account.id.to_string(), &path)
        .await
        .map_err(ApiError::StoreUnavailable)?
        .ok_or_else(|| ApiError::not_found("no such anomaly"))?;
    Ok(HttpResponse::Ok().json(AnomalyView::from(&found)))
}

#[utoipa::path(delete, path = "/api/v1/anomalies/{id}", tag = "rules", security(("jwt" = [])),
    params(("id" = String, Path, description = "The anomaly's id")),
    responses(
        (status = 204, description = "Deleted (a delivery still in progress may record one more attempt on nothing)"),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such anomaly in this account", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn delete(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let deleted = store::delete_anomaly(&state.mongo, &account.id.to_string(), &path)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if !deleted {
        return Err(ApiError::not_found("no such anomaly"));
    }
    Ok(HttpResponse::NoContent().finish())
}
