//! The api against real Redis and PostgreSQL: accounts, keys, tokens, limits, tenant isolation,
//! key revocation (HTTP and admin CLI), and Redis outages on a Redis server of the test's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod hardening_auth;
mod outages;
mod owasp;
mod revocation;

use sluice_api::startup::Application;
use sluice_shared::config::Settings;
use tokio::sync::oneshot;
use uuid::Uuid;

pub fn test_settings() -> Settings {
    sluice_shared::telemetry::init_test_subscriber();
    let mut s = Settings::load().expect("settings load");
    let id = Uuid::new_v4().simple().to_string();
    s.redis.stream_key = format!("test:{id}:events:stream");
    s.api.port = 0;
    s.api.workers = 1;
    s.api.backlog_poll_ms = 50;
    s.postgres.max_connections = 4;
    s.auth.jwt_secret = Some(secrecy::SecretString::from(TEST_JWT_SECRET));
    s
}

pub const TEST_JWT_SECRET: &str = "test-secret-for-sluice-integration-tests-0123456789";

/// Starts the api; the returned sender stops it when dropped.
pub async fn spawn_api(settings: &Settings) -> (String, oneshot::Sender<()>) {
    let pool = sluice_api::store::pool(&settings.postgres).unwrap();
    sluice_api::store::migrate(&pool).await.unwrap();
    let app = Application::build(settings.clone())
        .await
        .expect("api builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    (url, tx)
}

pub async fn post_event(url: &str, key: &str, event_id: &str) -> (u16, serde_json::Value, bool) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/events"))
        .header("x-api-key", key)
        .json(&serde_json::json!({"eventId": event_id, "eventType": "click", "userId": "u"}))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .expect("the api answers");
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    (status, r.json().await.unwrap_or_default(), retry_after)
}
