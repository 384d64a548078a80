//! The shapes the analytics endpoints answer with: the queries build them, the cache keeps them
//! encoded, and the OpenAPI document is derived from them.
use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::params::{Bucket, Range};

/// `GET /api/v1/analytics/summary`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub range: Range,
    pub total_events: i64,
    /// HyperLogLog estimate (standard error 0.81%).
    pub unique_users: u64,
    /// Heaviest first.
    pub events_by_type: Vec<TypeCount>,
    /// Heaviest first; the window's edges are rounded out to whole hours.
    pub top_users: Vec<UserCount>,
    pub events_per_second: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeCount {
    pub event_type: String,
    pub count: i64,
    /// Of `totalEvents`, 0 to 1.
    pub share: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCount {
    pub user_id: String,
    pub count: i64,
}

/// `GET /api/v1/analytics/timeseries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    pub bucket: Bucket,
    /// Zero-filled, oldest first; the last one is the bucket holding now (still filling).
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    /// The bucket's start (RFC 3339).
    pub ts: String,
    pub count: i64,
}

/// `GET /api/v1/analytics/users/{userId}/events`: a page of a user's events, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserEvents {
    pub events: Vec<UserEvent>,
    /// The `before` of the next page; `null` on the last one.
    pub next_before: Option<String>,
}

/// An event as stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserEvent {
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    pub session_id: Option<String>,
    /// RFC 3339.
    pub timestamp: Option<String>,
    /// RFC 3339.
    pub received_at: Option<String>,
    /// The event's properties as sent (`null` when it had none).
    #[schema(value_type = Option<Object>)]
    pub properties: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PipelineState {
    Ok,
    /// Redis unreachable, or entries waiting with no worker reading them.
    Degraded,
    /// The backlog is past half of the limit at which ingest answers 503.
    Backlogged,
}

/// `GET /api/v1/analytics/pipeline`: the caller's own figures and a coarse state of the shared
/// pipeline.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    pub state: PipelineState,
    pub ingest: Ingest,
    pub dead_letters: DeadLetterCounts,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ingest {
    pub last5m: i64,
    pub last1h: i64,
    /// Over the last 5 minutes.
    pub events_per_second: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterCounts {
    pub total: i64,
    pub replayed: u64,
    /// Per reason (`invalid`, `write_rejected`, `poison` always present).
    pub by_reason: BTreeMap<String, i64>,
}
