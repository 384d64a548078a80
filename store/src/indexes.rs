//! The indexes of `events`, `events_dlq` and `events_quarantine`, created at start-up by the
//! writer.
use anyhow::Context;
use mongodb::bson::doc;
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};

use crate::dead_letter::{self, dead_letters};
use crate::event::{events, field};

/// Creates the indexes the analytics queries use, and the hashed shard-key index where the server
/// supports it (a single node of the stand-in refuses hashed indexes; a sharded cluster has it).
pub async fn ensure_indexes(db: &Database) -> anyhow::Result<()> {
    let events = events(db);
    for (name, keys) in [
        (
            "account_time_type",
            doc! {field::ACCOUNT_ID: 1, field::TIMESTAMP: -1, field::EVENT_TYPE: 1},
        ),
        (
            "account_user_time",
            doc! {field::ACCOUNT_ID: 1, field::USER_ID: 1, field::TIMESTAMP: -1},
        ),
        // The events query API: one index per filter it serves, each giving its order (newest
        // first, `_id` breaking ties) so a page reads `limit` entries, not the account's range.
        (
            "q_account_time",
            doc! {field::ACCOUNT_ID: 1, field::TIMESTAMP: -1, field::ID: -1},
        ),
        (
            "q_account_user_time",
            doc! {field::ACCOUNT_ID: 1, field::USER_ID: 1, field::TIMESTAMP: -1, field::ID: -1},
        ),
        (
            "q_account_type_time",
            doc! {field::ACCOUNT_ID: 1, field::EVENT_TYPE: 1, field::TIMESTAMP: -1, field::ID: -1},
        ),
        (
            "q_account_session_time",
            doc! {field::ACCOUNT_ID: 1, field::SESSION_ID: 1, field::TIMESTAMP: -1, field::ID: -1},
        ),
    ] {
        events
            .create_index(
                IndexModel::builder()
                    .keys(keys)
                    .options(IndexOptions::builder().name(name.to_owned()).build())
                    .build(),
            )
            .await
            .with_context(|| format!("creating index {name}"))?;
    }
    match events
        .create_index(
            IndexModel::builder()
                .keys(doc! {field::USER_ID: "hashed"})
                .build(),
        )
        .await
    {
        Ok(_) => tracing::info!("hashed userId index present"),
        Err(e) => {
            tracing::info!(error = %e, "the server refuses a hashed userId index; going on without it (sharding needs a real cluster)")
        }
    }
    dead_letters(db)
        .create_index(
            IndexModel::builder()
                .keys(doc! {dead_letter::field::ACCOUNT_ID: 1, dead_letter::field::FAILED_AT: -1})
                .options(
                    IndexOptions::builder()
                        .name("account_failed".to_owned())
                        .build(),
                )
                .build(),
        )
        .await
        .context("creating the dead-letter index")?;
    let held = crate::event::quarantine(db);
    for (name, keys) in [
        (
            "q_account_time",
            doc! {field::ACCOUNT_ID: 1, field::TIMESTAMP: -1, field::ID: -1},
        ),
        (
            "q_account_user_time",
            doc! {field::ACCOUNT_ID: 1, field::USER_ID: 1, field::TIMESTAMP: -1, field::ID: -1},
        ),
        (
            "q_account_type_time",
            doc! {field::ACCOUNT_ID: 1, field::EVENT_TYPE: 1, field::TIMESTAMP: -1, field::ID: -1},
        ),
        (
            "q_account_session_time",
            doc! {field::ACCOUNT_ID: 1, field::SESSION_ID: 1, field::TIMESTAMP: -1, field::ID: -1},
        ),
    ] {
        held.create_index(
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build(),
        )
        .await
        .with_context(|| format!("creating quarantine index {name}"))?;
    }
    Ok(())
}
