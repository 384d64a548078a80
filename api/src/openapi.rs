//! The OpenAPI 3 document, generated from the handlers' annotations so it cannot drift, served at
//! `/api/openapi.json`, and a docs page at `/api/docs` that needs no network (no CDN).
use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `{"error": {"code", "message", "details"?}}`, the one error shape.
#[derive(Serialize, ToSchema)]
pub struct ErrorBodyDoc {
    pub error: ErrorDetailDoc,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetailDoc {
    #[schema(example = "invalid_event")]
    pub code: String,
    pub message: String,
    pub details: Option<Vec<ViolationDoc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ViolationDoc {
    /// JSON pointer to the offending value.
    #[schema(example = "/userId")]
    pub path: String,
    pub message: String,
}

/// One event as a client sends it. Anything else is rejected.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDoc {
    /// 1..128 of `[A-Za-z0-9_.:-]`; absent → a UUIDv7 is assigned.
    pub event_id: Option<String>,
    /// 1..100, `^[a-zA-Z][a-zA-Z0-9_.:-]*$`.
    #[schema(example = "purchase")]
    pub event_type: String,
    /// 1..128: the end user the event is about.
    #[schema(example = "user-42")]
    pub user_id: String,
    pub session_id: Option<String>,
    /// RFC 3339; absent → receive time.
    pub timestamp: Option<String>,
    /// RFC 3339 client clock at send time; corrects `timestamp` for clock skew.
    pub sent_at: Option<String>,
    /// Any JSON object, nesting depth ≤ 16.
    #[schema(value_type = Object)]
    pub properties: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchDoc {
    /// 1..1000 events; body ≤ 5 MiB after decompression.
    pub events: Vec<EventDoc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventReplyDoc {
    pub event_id: String,
    /// `accepted` (202) or `duplicate` (200).
    pub status: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemDoc {
    pub index: usize,
    pub event_id: Option<String>,
    /// `accepted`, `duplicate` or `rejected`.
    pub status: String,
    pub error: Option<ErrorDetailDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchReplyDoc {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub results: Vec<BatchItemDoc>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice api", description = "Event ingestion: authenticated, validated, deduplicated, queued."),
    paths(
        crate::ingest::ingest_one,
        crate::ingest::ingest_batch,
        crate::accounts::register,
        crate::accounts::login,
        crate::accounts::me,
        crate::keys_http::create,
        crate::keys_http::list,
        crate::keys_http::revoke,
        crate::startup::health,
        crate::startup::ready,
        crate::startup::live,
        crate::startup::metrics,
    ),
    components(schemas(
        ErrorBodyDoc, ErrorDetailDoc, ViolationDoc, EventDoc, BatchDoc, EventReplyDoc,
        BatchItemDoc, BatchReplyDoc,
        crate::accounts::Credentials, crate::accounts::AccountView, crate::accounts::TokenView,
        crate::keys_http::NewKeyRequest, crate::keys_http::NewKeyView, crate::keys_http::KeyView,
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

const DOCS_HTML: &str = include_str!("docs/index.html");
const DOCS_JS: &str = include_str!("docs/docs.js");

pub async fn docs_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .body(DOCS_HTML)
}

pub async fn docs_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(DOCS_JS)
}
