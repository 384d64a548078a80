//! The analytics service: per-account aggregates read from rollups (never by scanning raw events),
//! a user's recent events by the shard key, the account's dead letters and their replay, and the
//! pipeline's state, all behind a TTL cache.
pub mod cache;
pub mod error;
pub mod openapi;
pub mod params;
pub mod queries;
pub mod routes;
pub mod startup;
pub mod views;
