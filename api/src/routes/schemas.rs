//! Tracking plans: `POST/GET /api/v1/schemas`, `GET /api/v1/schemas/{eventType}[/{version}]`,
//! `PUT /api/v1/schemas/{eventType}/mode`, `GET/PUT /api/v1/account/schema-mode`. A published
//! version never changes; every change is announced so each api instance judges by it within a
//! second.
use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_http::body::read_json_body;
use sluice_http::{ApiError, AuthedAccount};
use sluice_shared::error::ErrorBody;
use sluice_shared::event::source_event_type_problem;
use utoipa::ToSchema;

use crate::plans::registry::{self, Published, SchemaRow};
use crate::plans::{cache, compile, Mode};
use crate::state::AppState;

/// `POST /api/v1/schemas`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSchemaRequest {
    /// The event type it describes (as events carry it: an identifier, or a source's verbatim name).
    #[schema(
        example = "purchase",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub event_type: String,
    /// A JSON Schema (draft 2020-12) of the events' `properties`, at most 64 KiB. Patterns use
    /// the linear-time `regex` syntax (no look-around or back-references); formats are checked;
    /// `$ref`s resolve within the schema only.
    #[schema(value_type = Object)]
    pub schema: Box<RawValue>,
    #[schema(
        max_length = 1000,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaView {
    pub event_type: String,
    pub version: i32,
    #[schema(value_type = Object)]
    pub schema: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    pub version: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An event type's plan: its mode (its own, else the account's) and its versions, oldest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeView {
    pub event_type: String,
    pub mode: Mode,
    /// Whether `mode` is the type's own (else the account's default).
    pub own_mode: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub latest_version: Option<i32>,
    pub versions: Vec<VersionView>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    pub mode: Mode,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeModeView {
    pub event_type: String,
    pub mode: Mode,
}

fn view(row: SchemaRow) -> Result<SchemaView, ApiError> {
    Ok(SchemaView {
        schema: RawValue::from_string(row.schema).map_err(|e| {
            ApiError::Unexpected(anyhow::anyhow!("a stored schema is not JSON: {e}"))
        })?,
        event_type: row.event_type,
        version: row.version,
        description: row.description,
        created_at: row.created_at,
    })
}

fn event_type_rule(event_type: &str, at: &str) -> Result<(), ApiError> {
    match source_event_type_problem(event_type) {
        None => Ok(()),
        Some(problem) => Err(ApiError::invalid_request(at, problem)),
    }
}

/// Announces a change of `account`'s plan; a failure is logged (the plan's refresh heals it).
async fn announce(state: &AppState, account: uuid::Uuid) {
    if let Err(e) = cache::announce(&state.redis, &state.plans, account).await {
        tracing::warn!(error = ?e, "cannot announce a tracking-plan change; instances pick it up at their next refresh");
    }
}

#[utoipa::path(post, path = "/api/v1/schemas", tag = "tracking plans", security(("jwt" = [])),
    request_body(content = NewSchemaRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The new version (1 for a type's first); published versions never change", body = SchemaView),
        (status = 400, description = "Malformed JSON, a field that breaks its rule, or a schema that does not compile (with its pointer)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 409, description = "The account holds as many schema versions as it may", body = ErrorBody),
        (status = 413, description = "A schema over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn publish(
    account: AuthedAccount,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limits = &state.settings.schemas;
    let body = read_json_body(&req, payload, limits.max_schema_bytes + 4096, "schema").await?;
    let new: NewSchemaRequest = serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid_request("", e.to_string()),
        _ => ApiError::MalformedJson(e.to_string()),
    })?;
    event_type_rule(&new.event_type, "/eventType")?;
    let printable = |c: char| !c.is_control() || matches!(c, '\n' | '\t' | '\r');
    if new
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1000 || !d.chars().all(printable))
    {
        return Err(ApiError::invalid_request(
            "/description",
            "at most 1000 characters, no control characters but tab and line breaks",
        ));
    }
    if new.schema.get().len() > limits.max_schema_bytes {
        return Err(ApiError::PayloadTooLarge {
            what: "schema",
            limit: limits.max_schema_bytes,
        });
    }
    let tree: serde_json::Value = serde_json::from_str(new.schema.get())
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    compile(&tree).map_err(|v| ApiError::invalid_request(&v.path, v.message))?;
    let published = registry::publish(
        &state.pool,
        account.id,
        &new.event_type,
        new.schema.get(),
        new.description.as_deref(),
        limits.max_per_account,
    )
    .await
    .map_err(ApiError::AccountsUnavailable)?;
    let row = match published {
        Published::Version(row) => row,
        Published::LimitReached => return Err(ApiError::TooManySchemas(limits.max_per_account)),
    };
    announce(&state, account.id).await;
    Ok(HttpResponse::Created().json(view(row)?))
}

/// Every type of the account with a schema or a mode of its own.
async fn types(state: &AppState, account: uuid::Uuid) -> Result<Vec<TypeView>, ApiError> {
    let (rows, modes, default) = tokio::try_join!(
        registry::all(&state.pool, account),
        registry::modes(&state.pool, account),
        registry::default_mode(&state.pool, account),
    )
    .map_err(ApiError::AccountsUnavailable)?;
    let modes: BTreeMap<String, Mode> = modes.into_iter().collect();
    let mut by_type: BTreeMap<String, Vec<VersionView>> = BTreeMap::new();
    for row in rows {
        by_type
            .entry(row.event_type)
            .or_default()
            .push(VersionView {
                version: row.version,
                description: row.description,
                created_at: row.created_at,
            });
    }
    for t in modes.keys() {
        by_type.entry(t.clone()).or_default();
    }
    Ok(by_type
        .into_iter()
        .map(|(event_type, versions)| {
            let own = modes.get(&event_type).copied();
            TypeView {
                mode: own.unwrap_or(default),
                own_mode: own.is_some(),
                latest_version: versions.last().map(|v| v.version),
                versions,
                event_type,
            }
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/schemas", tag = "tracking plans", security(("jwt" = [])),
    responses(
        (status = 200, description = "Every event type with a schema or a mode of its own", body = [TypeView]),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(types(&state, account.id).await?))
}

#[utoipa::path(get, path = "/api/v1/schemas/{eventType}", tag = "tracking plans", security(("jwt" = [])),
    params(("eventType" = String, Path, description = "The event type")),
    responses(
        (status = 200, description = "The type's mode and versions", body = TypeView),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No schema or mode for this type in this account", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn versions(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let wanted = path.into_inner();
    let found = types(&state, account.id)
        .await?
        .into_iter()
        .find(|t| t.event_type == wanted)
        .ok_or_else(|| ApiError::not_found("no schema for this event type"))?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(get, path = "/api/v1/schemas/{eventType}/{version}", tag = "tracking plans", security(("jwt" = [])),
    params(("eventType" = String, Path, description = "The event type"),
        ("version" = i32, Path, description = "The version, from 1", minimum = 1)),
    responses(
        (status = 200, description = "The version as published", body = SchemaView),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such version in this account", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn version(
    account: AuthedAccount,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (event_type, version) = path.into_inner();
    let no_such = || ApiError::not_found("no such schema version");
    let version: i32 = version.parse().map_err(|_| no_such())?;
    let row = registry::all(&state.pool, account.id)
        .await
        .map_err(ApiError::AccountsUnavailable)?
        .into_iter()
        .find(|r| r.event_type == event_type && r.version == version)
        .ok_or_else(no_such)?;
    Ok(HttpResponse::Ok().json(view(row)?))
}

#[utoipa::path(put, path = "/api/v1/schemas/{eventType}/mode", tag = "tracking plans", security(("jwt" = [])),
    params(("eventType" = String, Path, description = "The event type (a schema need not exist yet)")),
    request_body(content = ModeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Set; every api instance applies it within a second", body = TypeModeView),
        (status = 400, description = "Malformed JSON, or not a mode", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn set_mode(
    account: AuthedAccount,
    path: web::Path<String>,
    body: web::Json<ModeBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let event_type = path.into_inner();
    event_type_rule(&event_type, "eventType")?;
    registry::set_mode(&state.pool, account.id, &event_type, body.mode)
        .await
        .map_err(ApiError::AccountsUnavailable)?;
    announce(&state, account.id).await;
    Ok(HttpResponse::Ok().json(TypeModeView {
        event_type,
        mode: body.mode,
    }))
}

#[utoipa::path(get, path = "/api/v1/account/schema-mode", tag = "tracking plans", security(("jwt" = [])),
    responses(
        (status = 200, description = "The account's default mode (for types without their own; `allow` unless set)", body = ModeBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn account_mode(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let mode = registry::default_mode(&state.pool, account.id)
        .await
        .map_err(ApiError::AccountsUnavailable)?;
    Ok(HttpResponse::Ok().json(ModeBody { mode }))
}

#[utoipa::path(put, path = "/api/v1/account/schema-mode", tag = "tracking plans", security(("jwt" = [])),
    request_body(content = ModeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Set; every api instance applies it within a second", body = ModeBody),
        (status = 400, description = "Malformed JSON, or not a mode", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn set_account_mode(
    account: AuthedAccount,
    body: web::Json<ModeBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    registry::set_default_mode(&state.pool, account.id, body.mode)
        .await
        .map_err(ApiError::AccountsUnavailable)?;
    announce(&state, account.id).await;
    Ok(HttpResponse::Ok().json(ModeBody { mode: body.mode }))
}
