//! OpenAPI schemas of what has no Rust type to derive them from: the event envelope (read by
//! `sluice_shared::event::parse_event`, a scanner, not serde) and its free-form `properties`. Each
//! is written once, here; the error shape derives its schema on `sluice_shared::error::ErrorBody`.

use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// One event as a client sends it (the rules `parse_event` applies). Anything else is rejected.
/// An optional field sent as `null` is treated as absent (SDKs send `null` for unset fields).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventEnvelope {
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
    #[schema(value_type = Option<EventProperties>)]
    pub properties: Option<serde_json::Value>,
}

/// `properties`: any JSON object whose property names, at every depth, hold no NUL (MongoDB
/// cannot store them); nesting depth ≤ 16, at most 10,000 values, integers at most
/// 9223372036854775807 (i64).
pub struct EventProperties;

const PROPERTY_VALUE: &str = "PropertyValue";

impl PartialSchema for EventProperties {
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
                    .pattern(Some("^[^\\u0000]*$")),
            ))
            .additional_properties(Some(Ref::from_schema_name(PROPERTY_VALUE)))
            .into()
    }
}

impl ToSchema for EventProperties {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((PROPERTY_VALUE.into(), property_value()));
    }
}

/// A value inside `properties`: any JSON value, objects and arrays holding the same.
fn property_value() -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(Ref::from_schema_name(EventProperties::name()))
        .item(
            ArrayBuilder::new()
                .schema_type(Type::Array)
                .items(Ref::from_schema_name(PROPERTY_VALUE)),
        )
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}
