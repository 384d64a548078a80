//! Analytics alone, against the real Redis, PostgreSQL (for accounts) and MongoDB: parameters,
//! auth, the cache and its clock, the route table and its document, and that it reads only. No
//! worker runs here: the suites that need stored events (in through the api, stored by a worker,
//! read back here) are in `testkit/tests/it`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache;
mod owasp;
mod params;
mod read_only;
mod routes;

use std::sync::{Arc, OnceLock};

use actix_web::web;
use sluice_analytics::cache::ManualClock;
use sluice_analytics::startup::Application;
use sluice_analytics::state::AppState;
use sluice_shared::config::Settings;
use sluice_testkit::{spawn_stack, spawner, test_settings, Options, Stack};

/// Analytics on port 0 with a clock the test moves, and its state.
pub struct Analytics {
    pub stack: Stack,
    pub clock: Arc<ManualClock>,
    pub state: web::Data<AppState>,
}

pub async fn spawn_analytics() -> Analytics {
    spawn_analytics_with(test_settings()).await
}

pub async fn spawn_analytics_with(settings: Settings) -> Analytics {
    let clock = Arc::new(ManualClock::default());
    let state = Arc::new(OnceLock::new());
    let analytics = {
        let (clock, state) = (clock.clone(), state.clone());
        spawner(move |s, stop| async move {
            let app = Application::build_with_clock(s, clock).await?;
            let _ = state.set(app.state());
            let port = app.port();
            tokio::spawn(app.run_until(stop));
            Ok(port)
        })
    };
    let stack = spawn_stack(
        Options::api()
            .without_api()
            .settings(settings)
            .analytics(analytics),
    )
    .await;
    let state = state.get().expect("analytics started").clone();
    Analytics {
        stack,
        clock,
        state,
    }
}
