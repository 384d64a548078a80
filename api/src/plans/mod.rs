//! Tracking plans: versioned JSON Schemas (draft 2020-12) of an event type's `properties`, and the
//! mode each type is held to — `enforce` (an event that breaks its schema is refused),
//! `quarantine` (taken in, stored in `events_quarantine`), `allow` (stored in `events` with its
//! violations). What is pure lives here: compiling a schema safely and judging an event with the
//! account's plan. [`registry`] is PostgreSQL, [`cache`] what each api instance holds.
pub mod cache;
pub mod registry;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_http::ApiError;
use sluice_shared::error::Violation;
use sluice_shared::event::{PlanVerdict, QueuedEvent};
use utoipa::ToSchema;

/// How strictly an event type is held to its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refused (400, or its batch item `rejected`), every violation with its pointer.
    Enforce,
    /// Taken in (202) and stored in `events_quarantine` with its violations, not in `events`.
    Quarantine,
    /// Stored in `events` with `schemaViolations` attached.
    #[default]
    Allow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Quarantine => "quarantine",
            Mode::Allow => "allow",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "quarantine" => Some(Mode::Quarantine),
            "allow" => Some(Mode::Allow),
            _ => None,
        }
    }
}

/// Violations reported per event at most (a schema can produce one per value).
const MAX_VIOLATIONS: usize = 50;

/// A compiled schema: `pattern`s run on the linear-time `regex` engine (no backtracking, so no
/// pattern a tenant writes can stall ingest), with a bounded program size; formats are checked.
pub struct Compiled {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compiled")
    }
}

/// Compiles `schema` (the `properties` schema of a type), or says where it is wrong, as a JSON
/// pointer into the request body (`/schema/...`).
pub fn compile(schema: &Value) -> Result<Compiled, Violation> {
    if !schema.is_object() {
        return Err(Violation {
            path: "/schema".into(),
            message: "a tracking plan's schema is a JSON Schema object".into(),
        });
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .with_pattern_options(
            jsonschema::PatternOptions::regex()
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20),
        )
        .build(schema)
        .map(|validator| Compiled { validator })
        .map_err(|e| Violation {
            path: format!("/schema{}", e.instance_path().as_str()),
            message: format!("the schema does not compile: {e}"),
        })
}

impl Compiled {
    /// Every way `properties` breaks the schema (at most [`MAX_VIOLATIONS`]), as pointers into the
    /// event (`/properties/...`).
    pub fn violations(&self, properties: &Value) -> Vec<Violation> {
        // Most events are valid: the boolean check stops at the first failure and builds no
        // error, which is several times cheaper than collecting them.
        if self.validator.is_valid(properties) {
            return Vec::new();
        }
        self.validator
            .iter_errors(properties)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                path: format!("/properties{}", e.instance_path().as_str()),
                message: e.to_string(),
            })
            .collect()
    }
}

/// One event type's part of a plan.
#[derive(Debug, Default)]
pub struct TypePlan {
    /// Its own mode, if set.
    pub mode: Option<Mode>,
    pub latest: Option<u32>,
    pub versions: HashMap<u32, Arc<Compiled>>,
}

/// An account's whole plan, as one api instance holds it.
#[derive(Debug, Default)]
pub struct AccountPlan {
    /// The account's default mode for types without their own.
    pub default_mode: Mode,
    pub types: HashMap<String, TypePlan>,
}

impl AccountPlan {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Judges one event: untouched when no schema covers its type; else its verdict attached,
    /// or (mode `enforce`, or a version that does not exist) refused with every violation. The
    /// version an event names (`schemaVersion`) arrives as the verdict `QueuedEvent::stamp` left.
    pub fn judge(&self, event: &mut QueuedEvent) -> Result<(), ApiError> {
        let named = event.plan.take().map(|p| p.schema_version);
        self.judge_as(event, named)
    }

    fn judge_as(&self, event: &mut QueuedEvent, named: Option<u32>) -> Result<(), ApiError> {
        let Some(plan) = self.types.get(&event.event_type) else {
            return match named {
                Some(_) => Err(no_such_version(&event.event_type, named)),
                None => Ok(()),
            };
        };
        let Some(version) = named.or(plan.latest) else {
            return Ok(());
        };
        let Some(schema) = plan.versions.get(&version) else {
            return Err(no_such_version(&event.event_type, Some(version)));
        };
        let properties: Value = match &event.properties {
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|e| ApiError::MalformedJson(e.to_string()))?,
            None => Value::Object(Default::default()),
        };
        let violations = schema.violations(&properties);
        let mode = plan.mode.unwrap_or(self.default_mode);
        if !violations.is_empty() && mode == Mode::Enforce {
            return Err(ApiError::invalid(violations));
        }
        let quarantine = !violations.is_empty() && mode == Mode::Quarantine;
        event.plan = Some(Box::new(PlanVerdict {
            schema_version: version,
            violations,
            quarantine,
        }));
        Ok(())
    }
}

fn no_such_version(event_type: &str, version: Option<u32>) -> ApiError {
    ApiError::invalid(vec![Violation {
        path: "/schemaVersion".into(),
        message: match version {
            Some(v) => format!("the tracking plan has no version {v} of `{event_type}`"),
            None => format!("the tracking plan has no schema of `{event_type}`"),
        },
    }])
}

/// Whether an event goes to quarantine.
pub fn quarantined(event: &QueuedEvent) -> bool {
    event.plan.as_ref().is_some_and(|p| p.quarantine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use sluice_shared::event::QueuedEvent;

    fn event(event_type: &str, properties: &str) -> QueuedEvent {
        QueuedEvent {
            event_id: "e".into(),
            account_id: "a".into(),
            event_type: event_type.into(),
            user_id: "u".into(),
            session_id: None,
            timestamp: Utc::now(),
            received_at: Utc::now(),
            properties: Some(serde_json::value::RawValue::from_string(properties.into()).unwrap()),
            origin: None,
            plan: None,
        }
    }

    fn plan(mode: Option<Mode>) -> AccountPlan {
        let v1 = compile(&json!({"type": "object", "required": ["amount"],
            "properties": {"amount": {"type": "number", "minimum": 0}}}))
        .unwrap();
        let v2 = compile(
            &json!({"type": "object", "required": ["amount", "currency"],
            "properties": {"currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}}),
        )
        .unwrap();
        let mut types = HashMap::new();
        types.insert(
            "purchase".to_owned(),
            TypePlan {
                mode,
                latest: Some(2),
                versions: HashMap::from([(1, Arc::new(v1)), (2, Arc::new(v2))]),
            },
        );
        AccountPlan {
            default_mode: Mode::Allow,
            types,
        }
    }

    #[test]
    fn each_mode_does_what_it_says() {
        let bad = r#"{"amount": -1}"#;
        let err = plan(Some(Mode::Enforce))
            .judge_as(&mut event("purchase", bad), None)
            .unwrap_err();
        let ApiError::InvalidEvent { details, .. } = err else {
            panic!("invalid")
        };
        // The latest version (2) applies: it asks for a currency, which is missing.
        let paths: Vec<&str> = details.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["/properties"]);
        assert!(details[0].message.contains("currency"), "{details:?}");
        let err = plan(Some(Mode::Enforce))
            .judge_as(&mut event("purchase", bad), Some(1))
            .unwrap_err();
        assert_eq!(
            err.body().error.details.unwrap()[0].path,
            "/properties/amount"
        );

        let mut e = event("purchase", bad);
        plan(Some(Mode::Quarantine)).judge_as(&mut e, None).unwrap();
        let verdict = e.plan.unwrap();
        assert!(
            verdict.quarantine && verdict.schema_version == 2 && !verdict.violations.is_empty()
        );

        let mut e = event("purchase", bad);
        plan(None).judge_as(&mut e, None).unwrap();
        let verdict = e.plan.unwrap();
        assert!(!verdict.quarantine && !verdict.violations.is_empty());

        let mut good = event("purchase", r#"{"amount": 5, "currency": "EUR"}"#);
        plan(Some(Mode::Enforce)).judge_as(&mut good, None).unwrap();
        assert_eq!(good.plan.unwrap().violations, vec![]);
    }

    #[test]
    fn an_event_may_name_its_version_else_the_latest_applies() {
        let only_amount = r#"{"amount": 5}"#;
        let p = plan(Some(Mode::Enforce));
        assert!(p
            .judge_as(&mut event("purchase", only_amount), None)
            .is_err());
        let mut e = event("purchase", only_amount);
        p.judge_as(&mut e, Some(1)).unwrap();
        assert_eq!(e.plan.unwrap().schema_version, 1);
        let err = p
            .judge_as(&mut event("purchase", only_amount), Some(7))
            .unwrap_err();
        assert_eq!(err.body().error.details.unwrap()[0].path, "/schemaVersion");
        // Types without a schema pass untouched, unless the event names a version.
        let mut other = event("click", "{}");
        p.judge_as(&mut other, None).unwrap();
        assert!(other.plan.is_none());
        assert!(p.judge_as(&mut event("click", "{}"), Some(1)).is_err());
    }

    #[test]
    fn schemas_that_do_not_compile_say_where() {
        let err =
            compile(&json!({"type": "object", "properties": {"a": {"type": "nope"}}})).unwrap_err();
        assert!(err.path.starts_with("/schema"), "{err:?}");
        assert!(compile(&json!([1])).is_err());
        assert!(compile(&json!({"$ref": "https://example.com/remote.json"})).is_err());
    }

    #[test]
    fn hostile_schemas_are_bounded() {
        // A pattern that backtracks exponentially on a backtracking engine runs in linear time.
        let evil = compile(&json!({"properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}))
            .unwrap();
        let s = format!("{}!", "a".repeat(10_000));
        let started = std::time::Instant::now();
        assert_eq!(evil.violations(&json!({"s": s})).len(), 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Look-around needs backtracking: refused, not compiled.
        assert!(compile(&json!({"pattern": "(?=a)a"})).is_err());
        // A self-referencing schema compiles and validates bounded data.
        let looped = compile(&json!({"$defs": {"n": {"type": "object",
            "additionalProperties": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}))
        .unwrap();
        let mut deep = json!({});
        for _ in 0..16 {
            deep = json!({ "k": deep });
        }
        assert!(looped.violations(&deep).is_empty());
    }
}
