//! The analytics OpenAPI document, derived from the handlers' annotations and the reply types of
//! [`crate::views`] (so it cannot drift), with the skeleton's operations endpoints merged in;
//! served by the skeleton at `/api/openapi.json`.
use sluice_http::auth::JwtScheme;
use utoipa::OpenApi;

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice analytics", description = "Per-account aggregates, a user's events and the pipeline's state; every figure covers the token's account only. Read only: dead letters and their replay are the api's."),
    paths(
        routes::summary::summary,
        routes::timeseries::timeseries,
        routes::users::user_events,
        routes::pipeline::pipeline,
    ),
    components(schemas(sluice_shared::error::ErrorBody)),
    modifiers(&JwtScheme)
)]
struct AnalyticsDoc;

/// The whole document: analytics' endpoints and the operations endpoints every service serves.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = AnalyticsDoc::openapi();
    doc.merge(sluice_http::ops::OpsDoc::openapi());
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_rule_documented_is_the_one_the_parser_applies() {
        let doc = serde_json::to_value(document()).unwrap();
        let params = doc["paths"]["/api/v1/analytics/users/{userId}/events"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let before = params.iter().find(|p| p["name"] == "before").unwrap();
        assert_eq!(before["schema"]["pattern"], crate::params::CURSOR_PATTERN);
    }

    #[test]
    fn every_reply_type_is_in_the_document() {
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "Summary",
            "Timeseries",
            "UserEvents",
            "Pipeline",
            "ErrorBody",
            "HealthView",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
    }
}
