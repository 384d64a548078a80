//! Which events a rule counts: its type (verbatim) and the property values its `where` names.
use serde_json::Value;
use sluice_shared::event::QueuedEvent;

use crate::model::Filter;

/// An event's properties, parsed once however many rules look at them.
pub struct Props(Option<Value>);

impl Props {
    pub fn of(event: &QueuedEvent) -> Self {
        Props(
            event
                .properties
                .as_ref()
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
        )
    }

    /// The value at a dot path (`cart.currency`), if there is one.
    pub fn at(&self, path: &str) -> Option<&Value> {
        let mut v = self.0.as_ref()?;
        for name in path.split('.') {
            v = v.as_object()?.get(name)?;
        }
        Some(v)
    }
}

impl Filter {
    pub fn needs_properties(&self) -> bool {
        !self.where_.is_empty()
    }

    /// Whether `event` (with `props`, parsed when [`Filter::needs_properties`]) is counted.
    pub fn matches(&self, event: &QueuedEvent, props: Option<&Props>) -> bool {
        if self
            .event_type
            .as_ref()
            .is_some_and(|t| *t != event.event_type)
        {
            return false;
        }
        self.where_.iter().all(|(path, want)| {
            props
                .and_then(|p| p.at(path))
                .is_some_and(|got| same(got, want))
        })
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn event(event_type: &str, props: Value) -> QueuedEvent {
        QueuedEvent {
            event_id: "e1".into(),
            account_id: "a".into(),
            event_type: event_type.into(),
            user_id: "u".into(),
            session_id: None,
            timestamp: Utc::now(),
            received_at: Utc::now(),
            properties: Some(serde_json::value::to_raw_value(&props).unwrap()),
            origin: None,
            plan: None,
        }
    }

    #[test]
    fn type_and_property_paths_decide() {
        let f = Filter {
            event_type: Some("Order Completed".into()),
            where_: BTreeMap::from([
                ("plan".to_owned(), json!("pro")),
                ("cart.total".to_owned(), json!(10)),
            ]),
        };
        let yes = event(
            "Order Completed",
            json!({"plan": "pro", "cart": {"total": 10.0}}),
        );
        let p = Props::of(&yes);
        assert!(f.matches(&yes, Some(&p)));
        let other_plan = event(
            "Order Completed",
            json!({"plan": "free", "cart": {"total": 10}}),
        );
        assert!(!f.matches(&other_plan, Some(&Props::of(&other_plan))));
        let other_type = event("Signed Up", json!({"plan": "pro", "cart": {"total": 10}}));
        assert!(!f.matches(&other_type, Some(&Props::of(&other_type))));
        let missing = event("Order Completed", json!({"plan": "pro"}));
        assert!(!f.matches(&missing, Some(&Props::of(&missing))));
    }

    #[test]
    fn no_filter_counts_everything() {
        let f = Filter::default();
        assert!(f.matches(&event("x", json!({})), None));
    }
}
