//! End-to-end and fault tests: the real api and worker (in process on port 0, or as processes), against the Redis, PostgreSQL
//! and MongoDB servers `make test` starts. Each test has its own stream, database and account.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod hardening;
mod helpers;
mod ingest;
mod memory;
mod reliability;
mod request_trace;
