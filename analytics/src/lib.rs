//! The analytics service, Sluice's read side: per-account aggregates read from rollups (never by
//! scanning raw events), a user's recent events by the shard key, and the pipeline's state, all
//! behind a TTL cache. It writes to no store.
//!
//! `startup` builds the `state` and lists the `routes`; each route's handler reads the state and
//! answers a type of `views`, computed by `queries` behind the `cache`.
pub mod cache;
pub mod openapi;
pub mod params;
pub mod queries;
pub mod routes;
pub mod startup;
pub mod state;
pub mod views;
