//! The Redis key cache across versions: a record an older api instance wrote still serves.
use fred::prelude::*;
use sluice_shared::names::api_key_cache_key;

use crate::{account_with_key, post_event, spawn_api, test_settings};

#[tokio::test]
async fn a_key_cached_by_an_older_instance_is_served_from_its_record() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let (account, key) = account_with_key(&settings).await;
    let pool = sluice_api::store::pool(&settings.postgres).unwrap();
    let record = sluice_api::store::list_keys(&pool, account).await.unwrap();
    // As the last release wrote an owner, `keyId:accountId:perSec:burst@freshUntil`, with a quota
    // PostgreSQL does not have: only a read of this record can hold the key to one event.
    let fresh_until = chrono::Utc::now().timestamp() + 600;
    let legacy = format!("{}:{account}:1:1@{fresh_until}", record[0].id);
    let redis = sluice_shared::redis::connect(&settings.redis)
        .await
        .unwrap();
    let _: () = redis
        .set(
            api_key_cache_key(&sluice_shared::apikey::hash(&key)),
            legacy,
            Some(Expiration::EX(600)),
            None,
            false,
        )
        .await
        .unwrap();

    assert_eq!(post_event(&url, &key, "old-1").await.0, 202);
    let (status, body, retry_after) = post_event(&url, &key, "old-2").await;
    assert_eq!(status, 429, "the cached quota holds: {body}");
    assert!(retry_after);
}
