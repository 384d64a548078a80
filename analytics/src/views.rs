//! The shapes the analytics endpoints answer with: the queries build them, the OpenAPI document
//! is derived from them.
use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    #[schema(example = "1h")]
    pub range: String,
    pub total_events: i64,
    /// HyperLogLog estimate (standard error 0.81%).
    pub unique_users: u64,
    /// Heaviest first.
    pub events_by_type: Vec<TypeCount>,
    /// Heaviest first; the window's edges are rounded out to whole hours.
    pub top_users: Vec<UserCount>,
    pub events_per_second: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeCount {
    pub event_type: String,
    pub count: i64,
    /// Of `totalEvents`, 0 to 1.
    pub share: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCount {
    pub user_id: String,
    pub count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Timeseries {
    #[schema(example = "1m")]
    pub bucket: String,
    /// Zero-filled, oldest first; the last one is the bucket holding now (still filling).
    pub points: Vec<Point>,
}

#[derive(Serialize, ToSchema)]
pub struct Point {
    /// The bucket's start (RFC 3339).
    pub ts: String,
    pub count: i64,
}

/// A page of a user's events, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserEvents {
    pub events: Vec<StoredEvent>,
    /// The `before` of the next page; `null` on the last one.
    pub next_before: Option<String>,
}

/// An event as stored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    /// RFC 3339.
    pub timestamp: Option<String>,
    /// RFC 3339.
    pub received_at: Option<String>,
    /// The event's properties as sent (`null` when it had none).
    #[schema(value_type = Option<Object>)]
    pub properties: serde_json::Value,
}

/// A page of the account's dead letters, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetters {
    pub dead_letters: Vec<DeadLetter>,
    /// The `before` of the next page; `null` on the last one.
    pub next_before: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// What `POST /api/v1/dlq/{id}/replay` takes.
    pub id: Option<String>,
    pub event_id: Option<String>,
    /// `invalid`, `write_rejected` or `poison`.
    pub reason: Option<String>,
    /// Why it was refused.
    #[schema(value_type = Object)]
    pub error: serde_json::Value,
    #[schema(value_type = Object)]
    pub attempts: serde_json::Value,
    /// RFC 3339.
    pub failed_at: Option<String>,
    /// RFC 3339; `null` until replayed.
    pub replayed_at: Option<String>,
    /// The original event, as far as it could be read.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum PipelineState {
    Ok,
    /// Redis unreachable, or entries waiting with no worker reading them.
    Degraded,
    /// The backlog is past half of the limit at which ingest answers 503.
    Backlogged,
}

/// The caller's own figures and a coarse state of the shared pipeline.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    pub state: PipelineState,
    pub ingest: Ingest,
    pub dead_letters: DeadLetterCounts,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ingest {
    pub last5m: i64,
    pub last1h: i64,
    /// Over the last 5 minutes.
    pub events_per_second: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterCounts {
    pub total: i64,
    pub replayed: u64,
    /// Per reason (`invalid`, `write_rejected`, `poison` always present).
    pub by_reason: BTreeMap<String, i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplayStatus {
    Queued,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    pub id: String,
    pub status: ReplayStatus,
}
