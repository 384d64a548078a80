//! The api's HTTP handlers, one file per resource. Each reads [`crate::state::AppState`];
//! `startup::routes` mounts them.
pub mod auth;
pub mod dlq;
pub mod docs;
pub mod events;
pub mod intake;
pub mod keys;
pub mod posthog;
pub mod quarantine;
pub mod schemas;
pub mod segment;
pub mod sources;
pub mod webhooks;
