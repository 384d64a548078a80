//! Suites that need the whole stack (api, worker and analytics together): they live here, downstream
//! of every service, so no service's own tests import a crate downstream of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod analytics_hardening;
mod dead_letters;
mod export;
mod flow;
mod headers;
mod plans;
mod privacy;
mod rules;
mod sources;
mod startup;

use std::sync::Arc;

use sluice_analytics::cache::ManualClock;
use sluice_testkit::{spawner, Spawner};

pub fn worker() -> Spawner {
    spawner(|s, stop| async move {
        let app = sluice_worker::startup::Application::build(s).await?;
        let port = app.port();
        tokio::spawn(app.run_until(stop));
        Ok(port)
    })
}

pub fn analytics() -> Spawner {
    spawner(|s, stop| async move {
        let app = sluice_analytics::startup::Application::build(s).await?;
        let port = app.port();
        tokio::spawn(app.run_until(stop));
        Ok(port)
    })
}

/// Analytics whose caches judge freshness by `clock`, which the test moves.
pub fn analytics_with_clock(clock: Arc<ManualClock>) -> Spawner {
    spawner(move |s, stop| async move {
        let app = sluice_analytics::startup::Application::build_with_clock(s, clock).await?;
        let port = app.port();
        tokio::spawn(app.run_until(stop));
        Ok(port)
    })
}
