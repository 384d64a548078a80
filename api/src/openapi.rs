//! The OpenAPI 3 document, generated from the handlers' annotations so it cannot drift, served at
//! `/api/openapi.json`, and a docs page at `/api/docs` that needs no network (no CDN).
use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
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
    #[schema(nullable = false)]
    pub details: Option<Vec<ViolationDoc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ViolationDoc {
    /// JSON pointer to the offending value.
    #[schema(example = "/userId")]
    pub path: String,
    pub message: String,
}

/// One event as a client sends it. Anything else is rejected. An optional field sent as `null` is
/// treated as absent (SDKs send `null` for unset fields).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventDoc {
    /// Absent (or `null`) → a UUIDv7 is assigned.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]+$")]
    pub event_id: Option<String>,
    #[schema(
        example = "purchase",
        min_length = 1,
        max_length = 100,
        pattern = "^[a-zA-Z][a-zA-Z0-9_.:-]*$"
    )]
    pub event_type: String,
    /// The end user the event is about.
    #[schema(example = "user-42", min_length = 1, max_length = 128)]
    pub user_id: String,
    #[schema(min_length = 1, max_length = 128)]
    pub session_id: Option<String>,
    /// RFC 3339 (years 0000 to 9999 once in UTC); absent → receive time.
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339 client clock at send time; corrects `timestamp` for clock skew.
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    #[schema(value_type = Option<PropertiesDoc>)]
    pub properties: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchDoc {
    /// Body ≤ 5 MiB after decompression; each event ≤ 64 KiB.
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<EventDoc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventStatusDoc {
    /// 202: queued.
    Accepted,
    /// 200: already seen within the dedup window.
    Duplicate,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventReplyDoc {
    pub event_id: String,
    pub status: EventStatusDoc,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatusDoc {
    Accepted,
    Duplicate,
    Rejected,
}

/// How one event of a batch was judged: `eventId` unless rejected, `error` when rejected.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemDoc {
    pub index: usize,
    #[schema(nullable = false)]
    pub event_id: Option<String>,
    pub status: ItemStatusDoc,
    #[schema(nullable = false)]
    pub error: Option<ErrorDetailDoc>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchReplyDoc {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub results: Vec<BatchItemDoc>,
}

/// A refused batch, in the one error shape. When the events were judged (every one was
/// invalid) it also carries the counts and each event's result; a body that is not a batch
/// (malformed JSON, no `events`, 0 events) carries `error` only.
#[derive(Serialize, ToSchema)]
pub struct BatchRefusalDoc {
    pub error: ErrorDetailDoc,
    #[schema(nullable = false)]
    pub accepted: Option<usize>,
    #[schema(nullable = false)]
    pub duplicates: Option<usize>,
    #[schema(nullable = false)]
    pub rejected: Option<usize>,
    #[schema(nullable = false)]
    pub results: Option<Vec<BatchItemDoc>>,
}

/// `properties`: any JSON object whose property names, at every depth, hold no NUL (MongoDB
/// cannot store them); nesting depth ≤ 16, at most 10,000 values, integers at most
/// 9223372036854775807 (i64).
pub struct PropertiesDoc;

const PROPERTY_NAME_PATTERN: &str = "^[^\\u0000]*$";

impl utoipa::PartialSchema for PropertiesDoc {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Any JSON object: property names (at every depth) without NUL, nesting depth ≤ 16, \
                 at most 10,000 values, integers at most 9223372036854775807",
            ))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(PROPERTY_NAME_PATTERN)),
            ))
            .additional_properties(Some(Ref::from_schema_name("PropertyValueDoc")))
            .into()
    }
}

impl ToSchema for PropertiesDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        "PropertiesDoc".into()
    }
}

/// A value inside `properties`: any JSON value, objects and arrays holding the same.
fn property_value_schema() -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(Ref::from_schema_name("PropertiesDoc"))
        .item(
            ArrayBuilder::new()
                .schema_type(Type::Array)
                .items(Ref::from_schema_name("PropertyValueDoc")),
        )
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

struct Properties;

impl Modify for Properties {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            "PropertiesDoc".into(),
            <PropertiesDoc as utoipa::PartialSchema>::schema(),
        );
        components
            .schemas
            .insert("PropertyValueDoc".into(), property_value_schema());
    }
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
        EventStatusDoc, ItemStatusDoc, BatchItemDoc, BatchReplyDoc, BatchRefusalDoc,
        crate::accounts::Credentials, crate::accounts::LoginRequest, crate::accounts::AccountView, crate::accounts::TokenView,
        crate::keys_http::NewKeyRequest, crate::keys_http::NewKeyView, crate::keys_http::KeyView,
    )),
    modifiers(&Security, &Properties)
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
