//! End-to-end tests: the real api and worker, in process on port 0, against the Redis, PostgreSQL
//! and MongoDB servers `make test` starts. Each test has its own stream, database and account.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod ingest;
