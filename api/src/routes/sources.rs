//! `POST/GET /api/v1/sources`, `DELETE /api/v1/sources/{id}`, `POST /api/v1/sources/{id}/rotate`:
//! an account's webhook sources. The secret appears only in the answers that create or rotate
//! it. Another account's source is 404, never 403.
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_http::body::read_raw;
use sluice_http::{ApiError, AuthedAccount};
use sluice_shared::error::ErrorBody;
use sluice_shared::event::source_event_type_problem;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::sources::registry::{self, NewSource, SourceRecord};
use crate::sources::signature::{new_secret, secret_problem, Scheme};
use crate::sources::webhook::{is_pointer, FROM_HEADER};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSourceRequest {
    /// A label: 1 to 100 characters, not all white space.
    #[schema(
        example = "stripe production",
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
    pub scheme: Scheme,
    /// The eventType of every event this source delivers (printable, up to 200 characters).
    #[schema(
        example = "stripe.event",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub event_type: String,
    /// `header` (the delivery's `webhook-id`: Standard Webhooks only, 400 with stripe) or a JSON
    /// pointer into the body (`/id`). Default: `header` for standard-webhooks, `/id` for stripe.
    #[schema(example = "header", max_length = 256, pattern = r"^(header|/.*)$")]
    pub event_id_from: Option<String>,
    /// A JSON pointer to the userId in the body (`/data/object/customer`); without it, or when it
    /// finds nothing, events are about `webhook:<sourceId>`.
    #[schema(
        example = "/data/object/customer",
        max_length = 256,
        pattern = r"^/.*$"
    )]
    pub user_id_from: Option<String>,
    /// The sender's own signing secret, when it issues one; required for stripe (Stripe signs only
    /// with the secret it issues); else Sluice makes one. For standard-webhooks it is `whsec_` and the base64 of 24 to 64 bytes; for stripe 8 to 256
    /// printable characters. (With `eventIdFrom`, rules between two fields that OpenAPI cannot
    /// state: a body that breaks them is 400 with the pointer.)
    #[schema(min_length = 8, max_length = 256)]
    pub secret: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// The sender's new secret, when it issues one (required for stripe); else Sluice makes one.
    #[schema(min_length = 8, max_length = 256)]
    pub secret: Option<String>,
}

/// A webhook source as listed: never its secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    pub id: Uuid,
    pub name: String,
    pub scheme: Scheme,
    pub event_type: String,
    pub event_id_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_id_from: Option<String>,
    /// Where the sender delivers: `POST` here, signed.
    #[schema(example = "/api/v1/webhooks/0190a3b2-0000-7000-8000-000000000001")]
    pub ingest_path: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rotated_at: Option<DateTime<Utc>>,
    /// After a rotation: until when the previous secret still verifies.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
}

/// A source with its secret: the answer to a create or a rotation, the only time it is shown.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceWithSecret {
    #[serde(flatten)]
    pub source: SourceView,
    /// The signing secret (`whsec_…`): shown this once.
    pub secret: String,
}

impl From<&SourceRecord> for SourceView {
    fn from(r: &SourceRecord) -> Self {
        SourceView {
            id: r.id,
            name: r.name.clone(),
            scheme: r.scheme().unwrap_or(Scheme::StandardWebhooks),
            event_type: r.event_type.clone(),
            event_id_from: r.event_id_from.clone(),
            user_id_from: r.user_id_from.clone(),
            ingest_path: format!("/api/v1/webhooks/{}", r.id),
            created_at: r.created_at,
            rotated_at: r.rotated_at,
            previous_secret_valid_until: r.previous_valid_until.filter(|until| *until > Utc::now()),
        }
    }
}

fn with_secret(record: &SourceRecord) -> SourceWithSecret {
    SourceWithSecret {
        source: SourceView::from(record),
        secret: record.secret.clone(),
    }
}

/// The secret to use: the sender's, checked for `scheme`, or a new one. Stripe signs only with
/// the secret it issues, so a stripe source must be given it.
fn chosen_secret(scheme: Scheme, given: Option<&str>) -> Result<String, ApiError> {
    match given {
        None if scheme == Scheme::Stripe => Err(ApiError::invalid_request(
            "/secret",
            "Stripe issues the signing secret (the endpoint's whsec_… in Stripe's dashboard): give it here",
        )),
        None => Ok(new_secret()),
        Some(s) => match secret_problem(scheme, s) {
            None => Ok(s.to_owned()),
            Some(problem) => Err(ApiError::invalid_request("/secret", problem)),
        },
    }
}

#[utoipa::path(post, path = "/api/v1/sources", tag = "sources", security(("jwt" = [])),
    request_body(content = NewSourceRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The new source, with its secret shown once", body = SourceWithSecret),
        (status = 400, description = "Malformed JSON, or a field that breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 409, description = "The account holds as many sources as it may", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn create(
    account: AuthedAccount,
    body: web::Json<NewSourceRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if !crate::routes::keys::valid_name(&b.name) {
        return Err(ApiError::invalid_request(
            "/name",
            "must be 1 to 100 characters, not all white space",
        ));
    }
    if let Some(problem) = source_event_type_problem(&b.event_type) {
        return Err(ApiError::invalid_request("/eventType", problem));
    }
    let event_id_from = match (b.event_id_from.as_deref(), b.scheme) {
        (None, Scheme::StandardWebhooks) => FROM_HEADER.to_owned(),
        (None, Scheme::Stripe) => "/id".to_owned(),
        (Some(FROM_HEADER), Scheme::Stripe) => {
            return Err(ApiError::invalid_request(
                "/eventIdFrom",
                "Stripe deliveries carry no message id header: use a JSON pointer such as /id",
            ))
        }
        (Some(from), _) if from == FROM_HEADER || (is_pointer(from) && !from.is_empty()) => {
            from.to_owned()
        }
        (Some(_), _) => {
            return Err(ApiError::invalid_request(
                "/eventIdFrom",
                "must be `header` or a JSON pointer such as /id (at most 256 characters)",
            ))
        }
    };
    if let Some(p) = b.user_id_from.as_deref() {
        if !is_pointer(p) || p.is_empty() {
            return Err(ApiError::invalid_request(
                "/userIdFrom",
                "must be a JSON pointer such as /data/object/customer (at most 256 characters)",
            ));
        }
    }
    let secret = chosen_secret(b.scheme, b.secret.as_deref())?;
    let new = NewSource {
        name: b.name.trim(),
        scheme: b.scheme,
        event_type: &b.event_type,
        event_id_from: &event_id_from,
        user_id_from: b.user_id_from.as_deref(),
        secret: &secret,
    };
    let max = state.settings.sources.max_per_account;
    let created = registry::create(&state.pool, account.id, &new, max)
        .await
        .map_err(ApiError::AccountsUnavailable)?
        .ok_or_else(|| ApiError::TooManySources(max))?;
    Ok(HttpResponse::Created().json(with_secret(&created)))
}

#[utoipa::path(get, path = "/api/v1/sources", tag = "sources", security(("jwt" = [])),
    responses(
        (status = 200, description = "The account's webhook sources, without their secrets", body = [SourceView]),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sources = registry::list(&state.pool, account.id)
        .await
        .map_err(ApiError::AccountsUnavailable)?;
    let view: Vec<SourceView> = sources.iter().map(SourceView::from).collect();
    Ok(HttpResponse::Ok().json(view))
}

fn source_id(path: &str) -> Result<Uuid, ApiError> {
    path.parse()
        .map_err(|_| ApiError::not_found("no such webhook source"))
}

#[utoipa::path(delete, path = "/api/v1/sources/{id}", tag = "sources", security(("jwt" = [])),
    params(("id" = Uuid, Path, description = "The source's id")),
    responses(
        (status = 204, description = "Deleted: its deliveries are refused (404) by this instance at once, by every instance within `sources.source_cache_ttl_ms`"),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such source in this account", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn delete(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = source_id(&path)?;
    let deleted = registry::delete(&state.pool, account.id, id)
        .await
        .map_err(ApiError::AccountsUnavailable)?;
    state.sources.evict(id).await;
    if !deleted {
        return Err(ApiError::not_found("no such webhook source"));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/v1/sources/{id}/rotate", tag = "sources", security(("jwt" = [])),
    params(("id" = Uuid, Path, description = "The source's id")),
    request_body(content = Option<RotateRequest>, content_type = "application/json",
        description = "Optional: the sender's new secret"),
    responses(
        (status = 200, description = "The new secret, shown once; the previous one verifies until `previousSecretValidUntil` (24 h by default)", body = SourceWithSecret),
        (status = 400, description = "Malformed JSON, or a secret that does not suit the scheme", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such source in this account", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "A body not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn rotate(
    account: AuthedAccount,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = source_id(&path)?;
    // The body is optional: none at all means "make me a secret".
    let raw = read_raw(&req, payload, 16 * 1024, "body").await?;
    let body: Option<RotateRequest> = if raw.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("application/json") {
            return Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json".into(),
            ));
        }
        // `null` is no body too.
        serde_json::from_slice::<Option<RotateRequest>>(&raw).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::invalid_request("", e.to_string()),
            _ => ApiError::MalformedJson(e.to_string()),
        })?
    };
    let found = registry::list(&state.pool, account.id)
        .await
        .map_err(ApiError::AccountsUnavailable)?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::not_found("no such webhook source"))?;
    let scheme = found.scheme().unwrap_or(Scheme::StandardWebhooks);
    let given = body.as_ref().and_then(|b| b.secret.as_deref());
    let secret = chosen_secret(scheme, given)?;
    let grace = Duration::from_secs(state.settings.sources.rotation_grace_secs.max(0) as u64);
    let rotated = registry::rotate(&state.pool, account.id, id, &secret, grace)
        .await
        .map_err(ApiError::AccountsUnavailable)?
        .ok_or_else(|| ApiError::not_found("no such webhook source"))?;
    state.sources.evict(id).await;
    Ok(HttpResponse::Ok().json(with_secret(&rotated)))
}
