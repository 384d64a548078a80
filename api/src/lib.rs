//! The api service: authenticates API keys, reads and validates events, dedups and queues them on
//! the Redis stream in one atomic step, and answers per the contract; accounts and their keys.
//! `startup` serves `routes` (the handlers, one file per resource) over `state` on the
//! `sluice-http` skeleton; the other modules are the logic and the I/O the handlers call, and
//! `cli` the admin commands.
pub mod accounts;
pub mod auth;
pub mod backlog;
pub mod cli;
pub mod dead_letters;
pub mod event_queries;
pub mod export;
pub mod ingest;
pub mod key_cache;
pub mod limits;
pub mod live_hub;
pub mod openapi;
pub mod plans;
pub mod replays;
pub mod revocation;
pub mod routes;
pub mod schema;
pub mod sources;
pub mod startup;
pub mod state;
pub mod store;
pub mod suppression;
