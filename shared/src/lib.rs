//! What two or more Sluice services need: configuration, telemetry, the event model and its schema,
//! storage names, API-key hashing, the contract's error body and the metrics exporter.
pub mod apikey;
pub mod config;
pub mod enqueue;
pub mod error;
pub mod event;
pub mod jwt;
pub mod names;
pub mod partition;
pub mod redis;
pub mod rollup;
pub mod scan;
pub mod startup;
pub mod telemetry;
pub mod telemetry_metrics;
