//! Storage names from the contract: Redis keys and channels, MongoDB database and collections.

pub const STREAM_KEY: &str = "events:stream";
pub const CONSUMER_GROUP: &str = "workers";
/// Field of a stream entry that holds the queued event as JSON.
pub const STREAM_EVENT_FIELD: &str = "e";
/// Field of a stream entry that holds the id of the HTTP request that queued it.
pub const STREAM_REQUEST_ID_FIELD: &str = "rid";
/// Pub/sub channel on which a revoked key's hash is announced to every api instance.
pub const KEY_REVOCATIONS_CHANNEL: &str = "sluice:keys:revoked";

pub const MONGO_DATABASE: &str = "sluice";
pub const EVENTS_COLLECTION: &str = "events";
pub const DLQ_COLLECTION: &str = "events_dlq";

/// `dedup:{accountId}:{eventId}`: reserved for the dedup window when an event is queued.
pub fn dedup_key(account_id: &str, event_id: &str) -> String {
    format!("dedup:{account_id}:{event_id}")
}

/// `apikey:{sha256}`: the Redis cache of an API key's owner (or of its absence).
pub fn api_key_cache_key(key_hash: &str) -> String {
    format!("apikey:{key_hash}")
}

/// `{accountId}:{eventId}`: the MongoDB `_id` of a stored event, the final dedup guard.
pub fn event_document_id(account_id: &str, event_id: &str) -> String {
    format!("{account_id}:{event_id}")
}
