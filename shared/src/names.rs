//! Storage names from the contract: Redis keys and channels, MongoDB database and collections.

/// What every Sluice key in Redis starts with (`redis.key_prefix`).
pub const KEY_PREFIX: &str = "sluice";
pub const CONSUMER_GROUP: &str = "workers";
/// Field of a stream entry that holds its queued events: a JSON array of events (an entry
/// queued before partitioning held one event object).
pub const STREAM_EVENT_FIELD: &str = "e";
/// Field of a stream entry that holds the id of the HTTP request that queued its events: one
/// JSON string when they share one, else a JSON array with one per event (an entry of old held
/// the bare id).
pub const STREAM_REQUEST_ID_FIELD: &str = "rid";
/// Field of a stream entry that holds how many events it carries.
pub const STREAM_COUNT_FIELD: &str = "n";
/// Pub/sub channel on which a revoked key's hash is announced to every api instance.
pub const KEY_REVOCATIONS_CHANNEL: &str = "sluice:keys:revoked";

pub const MONGO_DATABASE: &str = "sluice";
pub const EVENTS_COLLECTION: &str = "events";
pub const DLQ_COLLECTION: &str = "events_dlq";
/// Events a tracking plan in `quarantine` mode held back (with their violations).
pub const QUARANTINE_COLLECTION: &str = "events_quarantine";
/// Pub/sub channel on which a tracking-plan change (an account id) is announced to every api
/// instance.
pub const PLAN_CHANGES_CHANNEL: &str = "sluice:plans:changed";
/// Pub/sub channel on which a change of an account's suppressed users (an account id) is
/// announced to every api instance.
pub const SUPPRESSION_CHANGES_CHANNEL: &str = "sluice:suppressions:changed";
/// Regulations (suppress / delete requests by userId), kept for audit.
pub const REGULATIONS_COLLECTION: &str = "regulations";
/// The identities (userIds and linked anonymousIds) whose events are refused, per account.
pub const SUPPRESSIONS_COLLECTION: &str = "suppressions";
/// Per-account retention settings (the defaults apply to accounts without one).
pub const RETENTION_COLLECTION: &str = "retention";

/// `apikey:{sha256}`: the Redis cache of an API key's owner (or of its absence).
pub fn api_key_cache_key(key_hash: &str) -> String {
    format!("apikey:{key_hash}")
}

/// `{accountId}:{eventId}`: the MongoDB `_id` of a stored event, the final dedup guard.
pub fn event_document_id(account_id: &str, event_id: &str) -> String {
    format!("{account_id}:{event_id}")
}

/// `<prefix>:{a<accountId>}:suppressed`: the Redis set of an account's suppressed identities
/// (userIds and linked anonymousIds), read by every api instance on ingest.
pub fn suppressed_key(prefix: &str, account_id: &str) -> String {
    format!("{prefix}:{{a{account_id}}}:suppressed")
}
