//! Reads behind the endpoints, one module per answer. Aggregates come from the rollups the worker
//! writes (MongoDB, `rollups`) and from the sketches beside them (Redis, `sketches`); raw events
//! are read only by account and userId (the shard key), newest first, with a cursor (`pages`).
//! Nothing here writes to any store.
mod pages;
pub mod pipeline;
mod rollups;
mod sketches;
pub mod summary;
pub mod timeseries;
pub mod users;

use mongodb::bson::DateTime as BsonDate;
use sluice_http::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// A MongoDB failure while `doing`: 503 for the client, the cause chain for the log.
fn store_failed(doing: &'static str) -> impl FnOnce(mongodb::error::Error) -> ApiError {
    move |e| ApiError::StoreUnavailable(anyhow::Error::new(e).context(doing))
}

/// A Redis failure while `doing`: 503 for the client, the cause chain for the log.
fn redis_failed(doing: &'static str) -> impl FnOnce(fred::error::Error) -> ApiError {
    move |e| ApiError::QueueUnavailable(anyhow::Error::new(e).context(doing))
}

/// A stored date as RFC 3339 (`None` for one outside the years 0000 to 9999).
fn iso(t: BsonDate) -> Option<String> {
    t.try_to_rfc3339_string().ok()
}
