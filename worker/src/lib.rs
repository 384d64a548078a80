//! The worker: reads the event stream in the `workers` consumer group, writes batches to MongoDB
//! as unordered bulk inserts, and acknowledges entries only after the write returned.
pub mod batching;
pub mod consumer;
pub mod maintenance;
pub mod privacy;
pub mod reconcile;
pub mod retry;
pub mod rollup_buffer;
pub mod rollups;
pub mod rules;
pub mod startup;
pub mod store;
pub mod stream;
pub mod triage;

/// The worker's name: its MongoDB client's app name and its log lines' `name`.
pub const APP_NAME: &str = "sluice-worker";
