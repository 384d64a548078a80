//! The api's OpenAPI document, generated from the handlers' annotations and the types they read
//! and answer (so it cannot drift), with the skeleton's operations endpoints merged in; served by
//! the skeleton at `/api/openapi.json`.
use sluice_http::auth::JwtScheme;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

/// The ingest key; the account JWT's scheme is the skeleton's ([`sluice_http::auth::JwtScheme`]).
struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        // Segment's SDKs: the API key as the HTTP Basic user name, an empty password (or
        // `writeKey` in the body, which OpenAPI cannot name as a scheme).
        components.add_security_scheme(
            "segmentWriteKey",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice api", description = "Event ingestion: authenticated, validated, deduplicated, queued."),
    paths(
        routes::events::ingest_one,
        routes::events::ingest_batch,
        routes::events::list,
        routes::events::get_one,
        routes::export::user,
        routes::export::events,
        routes::quarantine::list,
        routes::quarantine::replay,
        routes::dlq::replay_many,
        routes::auth::register,
        routes::auth::login,
        routes::auth::me,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::dlq::list,
        routes::dlq::replay,
        routes::schemas::publish,
        routes::schemas::list,
        routes::schemas::versions,
        routes::schemas::version,
        routes::schemas::set_mode,
        routes::schemas::account_mode,
        routes::schemas::set_account_mode,
        routes::sources::create,
        routes::sources::list,
        routes::sources::delete,
        routes::sources::rotate,
        routes::webhooks::deliver,
        routes::segment::batch,
        routes::segment::track,
        routes::segment::identify,
        routes::segment::page,
        routes::segment::screen,
        routes::segment::group,
        routes::segment::alias,
        routes::posthog::capture,
        routes::posthog::decide,
        routes::rules::create,
        routes::rules::list,
        routes::rules::get_one,
        routes::rules::replace,
        routes::rules::patch,
        routes::rules::delete,
        routes::anomalies::list,
        routes::anomalies::get_one,
        routes::anomalies::delete,
        routes::channels::create,
        routes::channels::list,
        routes::channels::delete,
        routes::live::ticket,
        routes::live::connect,
        routes::privacy::get_retention,
        routes::privacy::put_retention,
        routes::privacy::create_regulation,
        routes::privacy::list_regulations,
        routes::privacy::get_regulation,
        routes::privacy::list_suppressions,
    ),
    modifiers(&ApiKeyScheme, &JwtScheme)
)]
struct ApiDoc;

/// The whole document: the api's endpoints and the operations endpoints every service serves.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(sluice_http::ops::OpsDoc::openapi());
    alias(&mut doc, "/batch", &routes::posthog::ALIASES);
    for path in [
        "/v1/batch",
        "/v1/track",
        "/v1/identify",
        "/v1/page",
        "/v1/screen",
        "/v1/group",
        "/v1/alias",
    ] {
        alias(&mut doc, path, &[&format!("{path}/")]);
    }
    alias(&mut doc, "/decide", &routes::posthog::DECIDE_PATHS[1..]);
    // `/decide` answers GET as it answers POST.
    if let Some(item) = doc.paths.paths.get("/decide").cloned() {
        for path in routes::posthog::DECIDE_PATHS {
            if let Some(target) = doc.paths.paths.get_mut(path) {
                target.get = item.post.clone().map(|mut op| {
                    op.operation_id = op.operation_id.map(|id| format!("{id}_get"));
                    op
                });
            }
        }
    }
    doc
}

/// The same operation documented at each of `aliases` (PostHog's SDKs call one endpoint by
/// several paths), each with an operation id of its own.
fn alias(doc: &mut utoipa::openapi::OpenApi, path: &str, aliases: &[&str]) {
    let Some(item) = doc.paths.paths.get(path).cloned() else {
        return;
    };
    for alias in aliases {
        let suffix: String = alias
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut copy = item.clone();
        if let Some(op) = copy.post.as_mut() {
            op.operation_id = op.operation_id.take().map(|id| format!("{id}{suffix}"));
        }
        doc.paths.paths.insert((*alias).to_owned(), copy);
    }
}
