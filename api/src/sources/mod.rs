//! Sources: the intakes for senders that do not speak Sluice's own API — the Segment /
//! RudderStack HTTP API, PostHog capture, signed webhooks. Each maps what it is sent onto
//! Sluice events ([`segment`], [`posthog`], [`webhook`]: pure), which then take the one path
//! every event takes: the same key auth, quota, backlog guard, dedup and enqueue, stream, worker
//! and MongoDB. docs/SOURCES.md has the mappings.
pub mod fields;
pub mod posthog;
pub mod registry;
pub mod segment;
pub mod signature;
pub mod webhook;
