//! The rows of docs/SECURITY.md (OWASP API Security Top 10, 2023) that no other test proved:
//! function-level authorisation (a key is no account token and a token is no key), property-level
//! exposure (no hash, password or key outside the one answer that creates it) and mass assignment.
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{spawn_api, test_settings};

const PASSWORD: &str = "an owasp test password";

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

fn fields(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap();
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// Registers and logs in a fresh account: (accountId, token, every body the calls answered).
async fn account(url: &str, http: &reqwest::Client) -> (String, String, Vec<String>) {
    let email = format!("owasp.{}@example.com", uuid::Uuid::new_v4().simple());
    let creds = json!({"email": email, "password": PASSWORD});
    let (s, reg) = call(
        http.post(format!("{url}/api/v1/auth/register"))
            .json(&creds),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let (s, login) = call(http.post(format!("{url}/api/v1/auth/login")).json(&creds)).await;
    assert_eq!(s, StatusCode::OK, "{login}");
    let l: Value = serde_json::from_str(&login).unwrap();
    let r: Value = serde_json::from_str(&reg).unwrap();
    (
        r["accountId"].as_str().unwrap().to_owned(),
        l["token"].as_str().unwrap().to_owned(),
        vec![reg, login],
    )
}

#[tokio::test]
async fn no_answer_carries_a_password_a_hash_or_a_key_outside_its_creation() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let http = reqwest::Client::new();
    let (_, token, mut bodies) = account(&url, &http).await;
    assert_eq!(fields(&bodies[0]), ["accountId", "email"]);
    assert_eq!(fields(&bodies[1]), ["expiresAt", "token"]);

    let (s, created) = call(
        http.post(format!("{url}/api/v1/keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "k"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        fields(&created),
        ["createdAt", "id", "key", "name", "prefix"]
    );
    let key = serde_json::from_str::<Value>(&created).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let (_, me) = call(
        http.get(format!("{url}/api/v1/auth/me"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(fields(&me), ["accountId", "email"]);
    let (_, list) = call(http.get(format!("{url}/api/v1/keys")).bearer_auth(&token)).await;
    let items: Value = serde_json::from_str(&list).unwrap();
    for item in items.as_array().unwrap() {
        let mut keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "createdAt",
                "id",
                "lastUsedAt",
                "name",
                "prefix",
                "revokedAt"
            ]
        );
    }
    // A failed login and a duplicate register say nothing about the stored account either.
    let creds = json!({"email": "nobody@example.com", "password": "wrong password!"});
    let (s, failed) = call(http.post(format!("{url}/api/v1/auth/login")).json(&creds)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    bodies.extend([me, list.clone(), failed]);

    let key_hash = sluice_shared::apikey::hash(&key);
    for body in &bodies {
        assert!(!body.contains(&key), "the key outside its creation: {body}");
        assert!(!body.contains(&key_hash), "the key's hash: {body}");
        assert!(!body.contains("$argon2"), "a password hash: {body}");
        assert!(!body.contains(PASSWORD), "the password: {body}");
        assert!(!body.to_ascii_lowercase().contains("hash"), "{body}");
    }
}

#[tokio::test]
async fn an_api_key_is_no_account_token_and_an_account_token_is_no_api_key() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let http = reqwest::Client::new();
    let (_, token, _) = account(&url, &http).await;
    let (_, created) = call(
        http.post(format!("{url}/api/v1/keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "k"})),
    )
    .await;
    let created: Value = serde_json::from_str(&created).unwrap();
    let (key, id) = (
        created["key"].as_str().unwrap(),
        created["id"].as_str().unwrap(),
    );

    // The account's functions refuse an ingest key, however it is sent.
    let account_calls = [
        http.get(format!("{url}/api/v1/auth/me")),
        http.get(format!("{url}/api/v1/keys")),
        http.post(format!("{url}/api/v1/keys"))
            .json(&json!({"name": "by a key"})),
        http.delete(format!("{url}/api/v1/keys/{id}")),
    ];
    for req in account_calls {
        for req in [
            req.try_clone().unwrap().bearer_auth(key),
            req.header("x-api-key", key),
        ] {
            let (s, body) = call(req).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(
                serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
                "unauthorized"
            );
        }
    }
    // Ingest refuses an account token.
    let event = json!({"eventType": "click", "userId": "u"});
    let (s, body) = call(
        http.post(format!("{url}/api/v1/events"))
            .bearer_auth(&token)
            .json(&event),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    // The key still works where it belongs, and was not revoked by the refused DELETE.
    let (s, _) = call(
        http.post(format!("{url}/api/v1/events"))
            .header("x-api-key", key)
            .json(&event),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_client_cannot_assign_itself_an_account_or_anothers_key() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let http = reqwest::Client::new();
    let (bob, bob_token, _) = account(&url, &http).await;

    // Register with an account id of the client's choosing: refused, or ignored.
    let email = format!("owasp.{}@example.com", uuid::Uuid::new_v4().simple());
    let (s, body) = call(
        http.post(format!("{url}/api/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD, "accountId": bob})),
    )
    .await;
    if s == StatusCode::CREATED {
        assert_ne!(
            serde_json::from_str::<Value>(&body).unwrap()["accountId"],
            bob.as_str()
        );
    } else {
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    }

    // Alice creates a key naming Bob's account: it is not Bob's.
    let (_, alice_token, _) = account(&url, &http).await;
    let (s, body) = call(
        http.post(format!("{url}/api/v1/keys"))
            .bearer_auth(&alice_token)
            .json(&json!({"name": "for bob", "accountId": bob})),
    )
    .await;
    assert!(
        s == StatusCode::CREATED || s == StatusCode::BAD_REQUEST,
        "{s} {body}"
    );
    let (_, bobs) = call(
        http.get(format!("{url}/api/v1/keys"))
            .bearer_auth(&bob_token),
    )
    .await;
    assert_eq!(serde_json::from_str::<Value>(&bobs).unwrap(), json!([]));
}
