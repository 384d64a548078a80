//! `GET /api/v1/users/{userId}/export` (a person's copy of their data: GDPR art. 15/20) and
//! `GET /api/v1/export/events?from=&to=&eventType=` (an account's events; not under
//! `/api/v1/events/`, where the next segment is an eventId): NDJSON, oldest first, streamed,
//! gzip when the client accepts it.
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use sluice_http::{ApiError, AuthedAccount};
use sluice_shared::error::ErrorBody;

use crate::event_queries::{EventFilter, RawFilter};
use crate::export::{self, Selection};
use crate::state::AppState;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ExportQuery {
    /// As stored: printable, up to 200 characters.
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    event_type: Option<String>,
    /// `timestamp >= from` (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    from: Option<String>,
    /// `timestamp < to` (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    to: Option<String>,
}

fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

async fn stream(
    req: &HttpRequest,
    state: &AppState,
    account: &str,
    selection: Selection<'_>,
    filename: &str,
) -> Result<HttpResponse, ApiError> {
    let cursor = export::open(&sluice_store::events(&state.mongo), account, &selection)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    let gzip = accepts_gzip(req);
    let mut reply = HttpResponse::Ok();
    reply
        .content_type("application/x-ndjson")
        .insert_header((header::VARY, "Accept-Encoding"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ));
    if gzip {
        reply.insert_header((header::CONTENT_ENCODING, "gzip"));
    }
    Ok(reply.streaming(export::ndjson(cursor, gzip)))
}

#[utoipa::path(get, path = "/api/v1/users/{userId}/export", tag = "events", security(("jwt" = [])),
    params(("userId" = String, Path, description = "The user whose stored events are exported")),
    responses(
        (status = 200, description = "Every stored event of the user, oldest first, one JSON object per line (as `GET /api/v1/events` shows them); gzip with `Accept-Encoding: gzip`; empty when there are none", body = crate::event_queries::EventView, content_type = "application/x-ndjson"),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn user(
    account: AuthedAccount,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = path.into_inner();
    stream(
        &req,
        &state,
        &account.id.to_string(),
        Selection::User(&user),
        "user-events.ndjson",
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/export/events", tag = "events", security(("jwt" = [])),
    params(ExportQuery),
    responses(
        (status = 200, description = "The account's stored events in the range, oldest first, one JSON object per line; gzip with `Accept-Encoding: gzip`", body = crate::event_queries::EventView, content_type = "application/x-ndjson"),
        (status = 400, description = "A query parameter breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn events(
    account: AuthedAccount,
    q: web::Query<ExportQuery>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let f = EventFilter::parse(
        RawFilter {
            event_type: q.event_type.as_deref(),
            from: q.from.as_deref(),
            to: q.to.as_deref(),
            ..RawFilter::default()
        },
        1,
    )?;
    let selection = Selection::Events {
        event_type: f.event_type.as_deref(),
        from: f.from,
        to: f.to,
    };
    stream(
        &req,
        &state,
        &account.id.to_string(),
        selection,
        "events.ndjson",
    )
    .await
}
