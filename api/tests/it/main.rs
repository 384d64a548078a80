//! The api against real Redis, PostgreSQL and MongoDB: accounts, keys, tokens, limits, tenant
//! isolation, key revocation (HTTP and admin CLI), dead letters and their replay, liveness and
//! shutdown, and Redis outages on a Redis server of the test's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod dlq;
mod hardening_auth;
mod key_cache;
mod lifecycle;
mod memory;
mod outages;
mod owasp;
mod revocation;

use sluice_shared::config::Settings;
use tokio::sync::oneshot;
use uuid::Uuid;

pub use sluice_testkit::TEST_JWT_SECRET;

/// The kit's settings (a stream, database and consumer of the test's own), with one actix worker.
pub fn test_settings() -> Settings {
    let mut s = sluice_testkit::test_settings();
    s.api.workers = 1;
    s
}

/// Starts the api on the kit; the returned sender stops it when dropped.
pub async fn spawn_api(settings: &Settings) -> (String, oneshot::Sender<()>) {
    let pool = sluice_api::store::pool(&settings.postgres).unwrap();
    sluice_api::store::migrate(&pool).await.unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let port = sluice_testkit::api()(
        settings.clone(),
        Box::pin(async {
            let _ = rx.await;
        }),
    )
    .await
    .expect("api builds");
    (format!("http://127.0.0.1:{port}"), tx)
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

/// A new account and one API key of it, made through PostgreSQL directly.
pub async fn account_with_key(settings: &Settings) -> (Uuid, String) {
    let pool = sluice_api::store::pool(&settings.postgres).unwrap();
    let email = format!("{}@t.sluice", Uuid::new_v4().simple());
    let account = sluice_api::store::create_account(&pool, &email, None)
        .await
        .unwrap();
    let (_, key) = sluice_api::store::create_key(&pool, account, "test")
        .await
        .unwrap();
    (account, key)
}

/// `GET {url}{path}`: its status and JSON body.
pub async fn get_json(url: &str, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .expect("the api answers");
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

/// Polls `GET {url}{path}` until it answers `status`, for at most `within`; the last answer.
pub async fn wait_for_status(
    url: &str,
    path: &str,
    status: u16,
    within: std::time::Duration,
) -> (u16, serde_json::Value) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (s, body) = get_json(url, path).await;
        if s == status || std::time::Instant::now() > deadline {
            return (s, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Whether `/api/live`'s body shows the loop `name` as stalled.
pub fn stalled(live: &serde_json::Value, name: &str) -> Option<bool> {
    live["loops"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
        .and_then(|l| l["stalled"].as_bool())
}
