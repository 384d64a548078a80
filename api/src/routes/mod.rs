//! The api's HTTP handlers, one file per resource. Each reads [`crate::state::AppState`];
//! `startup::routes` mounts them.
pub mod anomalies;
pub mod auth;
pub mod channels;
pub mod dlq;
pub mod docs;
pub mod events;
pub mod export;
pub mod intake;
pub mod keys;
pub mod live;
pub mod posthog;
pub mod quarantine;
pub mod rules;
pub mod schemas;
pub mod segment;
pub mod sources;
pub mod webhooks;
