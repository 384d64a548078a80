use std::time::{Duration, Instant};

use sluice_api::store;

use crate::{post_event, spawn_api, test_settings};

#[tokio::test]
async fn a_key_revoked_through_the_admin_cli_is_refused_within_a_second() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let pool = store::pool(&settings.postgres).unwrap();
    let account = store::create_account(&pool, &format!("{}@t.sluice", uuid::Uuid::new_v4()), None)
        .await
        .unwrap();
    let (record, key) = store::create_key(&pool, account, "ci").await.unwrap();
    // Used once, so it sits in the api's in-process cache and in Redis.
    assert_eq!(post_event(&url, &key, "r1").await.0, 202);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-api"))
        .args(["keys", "revoke", "--id", &record.id.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = Instant::now();

    let (status, body, _) = post_event(&url, &key, "r2").await;
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    let keys = store::list_keys(&pool, account).await.unwrap();
    assert!(keys[0].revoked_at.is_some());
    // Revoking again completes a revocation that was cut short (tombstone and broadcast again)...
    // ...with a tombstone as long-lived as the api's setting says.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-api"))
        .args(["keys", "revoke", "--id", &record.id.to_string()])
        .env("SLUICE_API__KEY_TOMBSTONE_TTL_SECS", "7200")
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let redis = sluice_shared::redis::connect(&settings.redis)
        .await
        .unwrap();
    let ttl: i64 = fred::prelude::KeysInterface::ttl(
        &redis,
        sluice_shared::names::api_key_cache_key(&sluice_shared::apikey::hash(&key)),
    )
    .await
    .unwrap();
    assert!(ttl > 3_600, "tombstone TTL {ttl} s");
    // ...while a key that never existed is an error the CLI reports.
    let none = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-api"))
        .args(["keys", "revoke", "--id", &uuid::Uuid::now_v7().to_string()])
        .output()
        .unwrap();
    assert!(!none.status.success());
}

#[tokio::test]
async fn the_admin_cli_creates_keys_that_work() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let email = format!("{}@t.sluice", uuid::Uuid::new_v4());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-api"))
        .args(["accounts", "create", "--email", &email])
        .output()
        .unwrap();
    assert!(out.status.success());
    let account = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-api"))
        .args(["keys", "create", "--account", &account, "--name", "cli"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("slk_"));
    assert_eq!(post_event(&url, &key, "c1").await.0, 202);

    // Only the hash is stored.
    let pool = store::pool(&settings.postgres).unwrap();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE account_id = $1::uuid")
            .bind(&account)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored, vec![sluice_shared::apikey::hash(&key)]);
}
