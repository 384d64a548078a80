//! A rule as clients write it: a name, a severity, a condition over the account's events, a
//! cooldown and the channels it notifies. [`RuleSpec::problem`] is the one validation, naming the
//! JSON pointer of what is wrong.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// The longest window or bucket: a day.
pub const MAX_WINDOW_SECS: u32 = 86_400;
/// Property conditions in one rule's `where`.
pub const MAX_WHERE: usize = 10;
/// Channels one rule may notify.
pub const MAX_CHANNELS: usize = 10;
/// The longest cooldown: a week.
pub const MAX_COOLDOWN_SECS: u32 = 7 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// How a window's count is compared with a threshold rule's `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Operator {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Operator {
    pub fn holds(self, observed: f64, value: f64) -> bool {
        match self {
            Operator::Gt => observed > value,
            Operator::Ge => observed >= value,
            Operator::Lt => observed < value,
            Operator::Le => observed <= value,
            Operator::Eq => observed == value,
            Operator::Ne => observed != value,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Eq => "==",
            Operator::Ne => "!=",
        }
    }
}

/// Which way a z-score rule looks: a spike, a drop, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
    Both,
}

/// Which events a condition counts: of one type (any when absent) whose properties hold the
/// given values (`where`: a dot path into `properties` → the value it must equal).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only events of this type (verbatim); every type when absent.
    pub event_type: Option<String>,
    /// Property path (dots into `properties`: `plan`, `cart.currency`) → the string, number,
    /// boolean or null it must equal.
    pub where_: BTreeMap<String, Value>,
}

/// `"type": "threshold"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdType {
    Threshold,
}

/// `"type": "zscore"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ZScoreType {
    Zscore,
}

/// The count of matching events in a sliding window of event time, compared with `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Threshold {
    #[serde(rename = "type")]
    pub kind: ThresholdType,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    pub event_type: Option<String>,
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub where_: BTreeMap<String, Value>,
    /// 1 to 86,400.
    #[schema(minimum = 1, maximum = 86400)]
    pub window_seconds: u32,
    pub operator: Operator,
    /// 0 to 1,000,000,000.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub value: f64,
}

/// A spike or drop of the per-bucket count against the mean and standard deviation of the
/// `baselineBuckets` buckets before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZScore {
    #[serde(rename = "type")]
    pub kind: ZScoreType,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    pub event_type: Option<String>,
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub where_: BTreeMap<String, Value>,
    /// 1 to 86,400.
    #[schema(minimum = 1, maximum = 86400)]
    pub bucket_seconds: u32,
    /// 2 to 100.
    #[schema(minimum = 2, maximum = 100)]
    pub baseline_buckets: u32,
    /// How many standard deviations away counts as an anomaly: above 0, at most 100.
    #[schema(exclusive_minimum = 0, maximum = 100)]
    pub threshold: f64,
    pub direction: Direction,
}

/// An optional field that may be absent but not `null` (the document says it is not nullable).
fn not_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// A `threshold` or a `zscore` condition, told apart by `type`. (Each variant carries its own
/// `type`, so the OpenAPI document states each shape whole, unknown fields refused.)
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Condition {
    Threshold(Threshold),
    Zscore(ZScore),
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        match v.get("type").and_then(Value::as_str) {
            Some("threshold") => serde_json::from_value(v)
                .map(Condition::Threshold)
                .map_err(D::Error::custom),
            Some("zscore") => serde_json::from_value(v)
                .map(Condition::Zscore)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "condition `type` must be \"threshold\" or \"zscore\"",
            )),
        }
    }
}

impl Condition {
    pub fn filter(&self) -> Filter {
        let (event_type, where_) = match self {
            Condition::Threshold(t) => (&t.event_type, &t.where_),
            Condition::Zscore(z) => (&z.event_type, &z.where_),
        };
        Filter {
            event_type: event_type.clone(),
            where_: where_.clone(),
        }
    }

    /// Whether it can hold while no event arrives (a count below a bound, a drop): such rules are
    /// also evaluated on closed buckets by a timer.
    pub fn holds_on_absence(&self) -> bool {
        match self {
            Condition::Threshold(t) => t.operator.holds(0.0, t.value),
            Condition::Zscore(z) => z.direction != Direction::Up,
        }
    }
}

/// A rule as created (`POST`) or replaced (`PUT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// 1 to 100 characters, not all white space.
    #[schema(example = "checkout spike", min_length = 1, max_length = 100)]
    pub name: String,
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub severity: Severity,
    pub condition: Condition,
    /// After it fires, how long the rule stays quiet (0 to 604,800; default 300).
    #[serde(default = "default_cooldown")]
    #[schema(minimum = 0, maximum = 604800)]
    pub cooldown_seconds: u32,
    /// Channels of the account it notifies (at most 10).
    #[serde(default)]
    #[schema(max_items = 10)]
    pub channels: Vec<Uuid>,
}

fn yes() -> bool {
    true
}

fn default_cooldown() -> u32 {
    300
}

/// A change to some of a rule's fields (`PATCH`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RulePatch {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub severity: Option<Severity>,
    pub condition: Option<Condition>,
    #[schema(minimum = 0, maximum = 604800)]
    pub cooldown_seconds: Option<u32>,
    #[schema(max_items = 10)]
    pub channels: Option<Vec<Uuid>>,
}

impl RulePatch {
    pub fn apply(self, to: &mut RuleSpec) {
        if let Some(v) = self.name {
            to.name = v;
        }
        if let Some(v) = self.enabled {
            to.enabled = v;
        }
        if let Some(v) = self.severity {
            to.severity = v;
        }
        if let Some(v) = self.condition {
            to.condition = v;
        }
        if let Some(v) = self.cooldown_seconds {
            to.cooldown_seconds = v;
        }
        if let Some(v) = self.channels {
            to.channels = v;
        }
    }
}

/// What is wrong with a rule, as (JSON pointer, message).
pub type Problem = (String, String);

fn problem(at: &str, message: &str) -> Option<Problem> {
    Some((at.to_owned(), message.to_owned()))
}

impl RuleSpec {
    /// The first rule it breaks, with the pointer of the field.
    pub fn problem(&self) -> Option<Problem> {
        let name = self.name.trim();
        if name.is_empty() || self.name.chars().count() > 100 {
            return problem("/name", "must be 1 to 100 characters, not all white space");
        }
        if self.cooldown_seconds > MAX_COOLDOWN_SECS {
            return problem("/cooldownSeconds", "must be 0 to 604800");
        }
        if self.channels.len() > MAX_CHANNELS {
            return problem("/channels", "at most 10 channels");
        }
        condition_problem(&self.condition)
    }
}

fn condition_problem(c: &Condition) -> Option<Problem> {
    let (event_type, where_) = match c {
        Condition::Threshold(t) => {
            if !(1..=MAX_WINDOW_SECS).contains(&t.window_seconds) {
                return problem("/condition/windowSeconds", "must be 1 to 86400");
            }
            if !(0.0..=1e9).contains(&t.value) {
                return problem("/condition/value", "must be 0 to 1000000000");
            }
            (&t.event_type, &t.where_)
        }
        Condition::Zscore(z) => {
            if !(1..=MAX_WINDOW_SECS).contains(&z.bucket_seconds) {
                return problem("/condition/bucketSeconds", "must be 1 to 86400");
            }
            if !(2..=100).contains(&z.baseline_buckets) {
                return problem("/condition/baselineBuckets", "must be 2 to 100");
            }
            if !(z.threshold > 0.0 && z.threshold <= 100.0) {
                return problem(
                    "/condition/threshold",
                    "must be above 0 and at most 100 (standard deviations)",
                );
            }
            (&z.event_type, &z.where_)
        }
    };
    if let Some(t) = event_type {
        if let Some(p) = sluice_shared::event::source_event_type_problem(t) {
            return Some(("/condition/eventType".into(), p));
        }
    }
    if where_.len() > MAX_WHERE {
        return problem("/condition/where", "at most 10 property conditions");
    }
    for (path, value) in where_ {
        let at = format!("/condition/where/{}", escape_pointer(path));
        if path.is_empty()
            || path.len() > 200
            || path.split('.').any(str::is_empty)
            || path.chars().any(char::is_control)
        {
            return Some((
                at,
                "a property path: names separated by dots, at most 200 characters".into(),
            ));
        }
        if value.is_array() || value.is_object() {
            return Some((at, "must be a string, number, boolean or null".into()));
        }
        if value.as_str().is_some_and(|s| s.len() > 1000) {
            return Some((at, "at most 1000 characters".into()));
        }
    }
    None
}

/// A JSON pointer segment for `s` (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(condition: Value) -> Result<RuleSpec, serde_json::Error> {
        serde_json::from_value(json!({
            "name": "spike", "severity": "warning", "condition": condition
        }))
    }

    #[test]
    fn a_threshold_rule_reads_with_its_defaults() {
        let s = spec(json!({"type": "threshold", "eventType": "Order Completed",
            "where": {"plan": "pro"}, "windowSeconds": 60, "operator": ">=", "value": 5}))
        .unwrap();
        assert!(s.enabled);
        assert_eq!(s.cooldown_seconds, 300);
        assert_eq!(s.problem(), None);
        let Condition::Threshold(t) = &s.condition else {
            panic!("a threshold")
        };
        assert_eq!(t.operator, Operator::Ge);
        assert!(!s.condition.holds_on_absence());
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        assert!(spec(
            json!({"type": "threshold", "windowSeconds": 60, "operator": ">",
            "value": 5, "extra": 1})
        )
        .is_err());
        assert!(spec(json!({"type": "median"})).is_err());
        assert!(spec(
            json!({"type": "threshold", "eventType": null, "windowSeconds": 60,
            "operator": ">", "value": 5})
        )
        .is_err());
        assert!(spec(
            json!({"type": "threshold", "windowSeconds": 60, "operator": "=>",
            "value": 5})
        )
        .is_err());
    }

    #[test]
    fn problems_name_their_pointer() {
        let s = spec(
            json!({"type": "zscore", "bucketSeconds": 60, "baselineBuckets": 1,
            "threshold": 3, "direction": "up"}),
        )
        .unwrap();
        assert_eq!(
            s.problem().unwrap().0,
            "/condition/baselineBuckets".to_owned()
        );
        let s = spec(
            json!({"type": "threshold", "windowSeconds": 60, "operator": ">",
            "value": 1, "where": {"a/b": [1]}}),
        )
        .unwrap();
        assert_eq!(s.problem().unwrap().0, "/condition/where/a~1b".to_owned());
        let s = spec(
            json!({"type": "threshold", "windowSeconds": 0, "operator": ">",
            "value": 1}),
        )
        .unwrap();
        assert_eq!(
            s.problem().unwrap().0,
            "/condition/windowSeconds".to_owned()
        );
    }

    #[test]
    fn absence_conditions_are_known() {
        let lt = spec(
            json!({"type": "threshold", "windowSeconds": 60, "operator": "<",
            "value": 1}),
        )
        .unwrap();
        assert!(lt.condition.holds_on_absence());
        let eq0 = spec(
            json!({"type": "threshold", "windowSeconds": 60, "operator": "==",
            "value": 0}),
        )
        .unwrap();
        assert!(eq0.condition.holds_on_absence());
        let down = spec(
            json!({"type": "zscore", "bucketSeconds": 60, "baselineBuckets": 5,
            "threshold": 3, "direction": "down"}),
        )
        .unwrap();
        assert!(down.condition.holds_on_absence());
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let mut s = spec(
            json!({"type": "threshold", "windowSeconds": 60, "operator": ">",
            "value": 5}),
        )
        .unwrap();
        let before = s.clone();
        let patch: RulePatch = serde_json::from_value(json!({"enabled": false})).unwrap();
        patch.apply(&mut s);
        assert!(!s.enabled);
        assert_eq!(s.condition, before.condition);
        assert_eq!(s.name, before.name);
    }
}
