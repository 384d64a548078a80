//! The api service: authenticates API keys, reads and validates events, dedups and queues them on
//! the Redis stream in one atomic step, and answers per the contract.
pub mod accounts;
pub mod auth;
pub mod backlog;
pub mod body;
pub mod cli;
pub mod error;
pub mod ingest;
pub mod jwt_auth;
pub mod keys_http;
pub mod limits;
pub mod openapi;
pub mod startup;
pub mod store;
