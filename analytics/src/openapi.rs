//! The analytics OpenAPI 3 document, generated from the handlers' annotations and the reply types
//! in [`crate::views`], served at `/api/openapi.json`.
use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `{"error": {"code", "message", "details"?}}`, the one error shape.
#[derive(Serialize, ToSchema)]
pub struct ErrorBodyDoc {
    pub error: ErrorDetailDoc,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetailDoc {
    #[schema(example = "invalid_request")]
    pub code: String,
    pub message: String,
    #[schema(nullable = false)]
    pub details: Option<Vec<ViolationDoc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ViolationDoc {
    /// JSON pointer to the offending value (`/range` for a query parameter).
    #[schema(example = "/range")]
    pub path: String,
    pub message: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
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
    info(title = "Sluice analytics", description = "Per-account aggregates, a user's events, dead letters and the pipeline's state; every figure covers the token's account only."),
    paths(
        crate::routes::summary,
        crate::routes::timeseries,
        crate::routes::user_events,
        crate::routes::pipeline,
        crate::routes::dead_letters,
        crate::routes::replay,
        crate::startup::health,
        crate::startup::ready,
        crate::startup::live,
        crate::startup::metrics,
    ),
    components(schemas(ErrorBodyDoc, ErrorDetailDoc, ViolationDoc)),
    modifiers(&Security)
)]
pub struct AnalyticsDoc;

pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(AnalyticsDoc::openapi())
}
