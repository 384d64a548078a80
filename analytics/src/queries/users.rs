//! `GET /api/v1/analytics/users/{userId}/events`: a targeted query (account + shard key), newest
//! first, in cursor pages.
use mongodb::bson::{doc, Bson};
use mongodb::Database;
use serde_json::Value;
use sluice_http::ApiError;
use sluice_shared::names::event_document_id;
use sluice_store::event::field;
use sluice_store::StoredEvent;

use super::pages::{newest_first, next_cursor};
use super::{iso, Result};
use crate::params::Cursor;
use crate::views::{UserEvent, UserEvents};

/// Up to `limit` of the user's events older than `before`; 404 when the user has none at all.
pub async fn user_events(
    db: &Database,
    account: &str,
    user_id: &str,
    limit: i64,
    before: Option<&Cursor>,
) -> Result<UserEvents> {
    let filter = doc! {field::ACCOUNT_ID: account, field::USER_ID: user_id};
    // `_id` is `{account}:{eventId}`; the cursor carries the eventId.
    let after = before.map(|c| (c.millis, event_document_id(account, &c.id)));
    let events = sluice_store::events(db);
    let docs = newest_first(&events, filter, field::TIMESTAMP, after, limit).await?;
    if docs.is_empty() && before.is_none() {
        return Err(ApiError::not_found(
            "no events of this user in your account",
        ));
    }
    let next_before = next_cursor(&docs, limit, |e: &StoredEvent| Cursor {
        millis: e.timestamp.timestamp_millis(),
        id: e.event_id.clone(),
    });
    Ok(UserEvents {
        events: docs.into_iter().map(view).collect(),
        next_before,
    })
}

/// A stored event as the endpoint shows it; pure.
fn view(e: StoredEvent) -> UserEvent {
    UserEvent {
        event_id: e.event_id,
        event_type: e.event_type,
        user_id: e.user_id,
        session_id: e.session_id,
        timestamp: iso(e.timestamp),
        received_at: iso(e.received_at),
        properties: e
            .properties
            .map(|p| Bson::Document(p).into_relaxed_extjson())
            .unwrap_or(Value::Null),
    }
}
