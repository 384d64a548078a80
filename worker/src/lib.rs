//! The worker: reads the event stream in the `workers` consumer group, writes batches to MongoDB
//! as unordered bulk inserts, and acknowledges entries only after the write returned.
pub mod batching;
pub mod consumer;
pub mod maintenance;
pub mod reconcile;
pub mod replay;
pub mod rollups;
pub mod startup;
pub mod store;
pub mod stream;
