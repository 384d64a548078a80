//! Sluice's MongoDB storage, the one layer both sides use: the write side (the worker, and the
//! api's dead-letter replay) and the read side (analytics). It owns the connection, the
//! collections and their indexes, the typed documents every service reads and writes
//! ([`StoredEvent`], [`DeadLetter`] with its [`DeadLetterReason`]), the dead-letter queries and the
//! replay of dead letters. How the worker writes a batch (retries, error classification) is the
//! worker's own.
pub mod connection;
pub mod dead_letter;
pub mod event;
pub mod indexes;
pub mod privacy;
pub mod reason;
pub mod replay;

pub use connection::{connect, ping};
pub use dead_letter::{
    dead_letters, letter_of_account, list_dead_letters, refail_replayed_letter, DeadLetter,
    FailedEntry, Owner, RawEntry,
};
pub use event::{
    events, quarantine, raw_events, raw_quarantine, to_document, to_quarantine_document,
    SourceInfo, StoredEvent,
};
pub use indexes::ensure_indexes;
pub use reason::{DeadLetterReason, UnknownReason};
pub use replay::{replay, replay_one, ReplayFilter, ReplayReport, Replayed};

/// MongoDB's duplicate-key error: the document is already stored.
pub const DUPLICATE_KEY: i32 = 11000;
