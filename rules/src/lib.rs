//! Rules and anomalies (docs/RULES.md): the rule model and its validation ([`model`]), which
//! events a rule counts ([`matcher`]), the window state all workers share in Redis ([`window`]),
//! rules and anomalies in MongoDB ([`store`]), the evaluation after storage ([`evaluate`]) and
//! what live clients receive ([`live`]).
pub mod channels;
pub mod evaluate;
pub mod live;
pub mod matcher;
pub mod model;
pub mod store;
pub mod window;

pub use evaluate::{Evaluator, RuleSet};
pub use model::{Condition, RulePatch, RuleSpec, Severity};
