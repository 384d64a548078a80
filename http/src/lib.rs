//! The one HTTP skeleton every Sluice service runs on. A service binds a [`Service`], waits for its
//! dependencies behind a stand-in ([`Service::while_starting`]), then [`Service::serve`]s its route
//! table and state; the skeleton adds the rest, the same for every service:
//! - middleware: request id and span (`tracing-actix-web`), security headers, CORS when asked,
//!   a body deadline, request metrics;
//! - the JSON not-found, 405 with `Allow` ([`at`]), JSON/query/path extractor errors in the
//!   contract's shape;
//! - `/api/health` (the service's checks), `/api/ready`, `/api/live` (heartbeats of the loops that
//!   matter), `/metrics`, and `/api/openapi.json` when the service has a document;
//! - shutdown: readiness off first, a drain gap while still serving, then a graceful stop.
//!
//! [`ApiError`] is the one table of error codes; [`AuthedAccount`] the one JWT extractor.
pub mod auth;
pub mod body;
pub mod cursor;
pub mod error;
pub mod lifecycle;
pub mod ops;
pub mod route;
pub mod server;
pub mod startup;

pub use auth::AuthedAccount;
pub use error::ApiError;
pub use lifecycle::{Heart, Lifecycle};
pub use ops::{health_response, timed_check, Check, HealthChecks};
pub use route::at;
pub use server::{health, spawn_runtime_heart, Running, ServeOptions, Service};
