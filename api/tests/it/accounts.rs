use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_shared::config::Settings;

use crate::{post_event, spawn_api, test_settings, TEST_JWT_SECRET};

/// A thin client of one api instance.
struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    async fn register(&self, email: &str, password: &str) -> (StatusCode, Value) {
        let (s, _, b) = self
            .send(
                self.http
                    .post(format!("{}/api/v1/auth/register", self.url))
                    .json(&json!({"email": email, "password": password})),
            )
            .await;
        (s, b)
    }

    async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.send(
            self.http
                .post(format!("{}/api/v1/auth/login", self.url))
                .json(&json!({"email": email, "password": password})),
        )
        .await
    }

    async fn token_for(&self, email: &str, password: &str) -> String {
        // A 503 says "retry later" (a PostgreSQL connection or a password-hashing slot busy while
        // the whole suite runs on two cores): retried as a client would, a few times.
        let mut status = self.register(email, password).await.0;
        for _ in 0..3 {
            if status != StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            status = self.register(email, password).await.0;
        }
        assert_eq!(status, StatusCode::CREATED);
        let (s, _, b) = self.login(email, password).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["token"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, _, b) = self
            .send(
                self.http
                    .get(format!("{}{path}", self.url))
                    .bearer_auth(token),
            )
            .await;
        (s, b)
    }

    async fn create_key(&self, token: &str, name: &str) -> (StatusCode, Value) {
        let (s, _, b) = self
            .send(
                self.http
                    .post(format!("{}/api/v1/keys", self.url))
                    .bearer_auth(token)
                    .json(&json!({ "name": name })),
            )
            .await;
        (s, b)
    }

    async fn delete_key(&self, token: &str, id: &str) -> StatusCode {
        self.http
            .delete(format!("{}/api/v1/keys/{id}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn email() -> String {
    format!("User.{}@Example.com", uuid::Uuid::new_v4().simple())
}

const PASSWORD: &str = "a long enough password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_key_ingest_list_revoke_on_two_instances() {
    let settings = test_settings();
    let (a_url, _a) = spawn_api(&settings).await;
    let (b_url, _b) = spawn_api(&settings).await;
    let (a, b) = (Api::new(&a_url), Api::new(&b_url));

    let email = email();
    let (status, account) = a.register(&email, PASSWORD).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        account["email"],
        email.to_lowercase(),
        "emails are normalised"
    );
    let (status, _, login) = a.login(&email.to_uppercase(), PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let token = login["token"].as_str().unwrap();
    assert!(login["expiresAt"].as_str().is_some());
    let (status, me) = b.get("/api/v1/auth/me", token).await;
    assert_eq!(status, StatusCode::OK, "a token works on every instance");
    assert_eq!(me["accountId"], account["accountId"]);

    let (status, created) = a.create_key(token, "prod").await;
    assert_eq!(status, StatusCode::CREATED);
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    // Used on both instances, so both cache it.
    assert_eq!(post_event(&a_url, &key, "e1").await.0, 202);
    assert_eq!(post_event(&b_url, &key, "e2").await.0, 202);

    let (status, keys) = a.get("/api/v1/keys", token).await;
    assert_eq!(status, StatusCode::OK);
    let listed = &keys.as_array().unwrap()[0];
    assert_eq!(listed["id"], created["id"]);
    assert_eq!(listed["prefix"], created["prefix"]);
    assert!(listed.get("key").is_none(), "no secret in listings");
    assert!(!keys.to_string().contains(&key));
    assert!(listed["revokedAt"].is_null());

    assert_eq!(
        a.delete_key(token, created["id"].as_str().unwrap()).await,
        StatusCode::NO_CONTENT
    );
    let revoked_at = Instant::now();
    let mut refused_by = [false, false];
    while refused_by != [true, true] && revoked_at.elapsed() < Duration::from_secs(1) {
        for (i, url) in [&a_url, &b_url].iter().enumerate() {
            if !refused_by[i] {
                refused_by[i] = post_event(url, &key, "after").await.0 == 401;
            }
        }
    }
    assert_eq!(
        refused_by,
        [true, true],
        "both instances refuse within a second"
    );
    let (_, keys) = b.get("/api/v1/keys", token).await;
    assert!(!keys[0]["revokedAt"].is_null());
}

fn forge(claims: Value, alg: jsonwebtoken::Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, x| (acc << 8) | *x as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_are_401() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let api = Api::new(&url);
    let token = api.token_for(&email(), PASSWORD).await;
    let (_, me) = api.get("/api/v1/auth/me", &token).await;
    let sub = me["accountId"].as_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "email": "x@y.z", "iat": now, "exp": now + 3600});
    let parts: Vec<&str> = token.split('.').collect();

    let attacks = [
        ("alg none", format!("{}.{}.", base64url(br#"{"alg":"none","typ":"JWT"}"#), base64url(claims.to_string().as_bytes()))),
        ("HS512 with the right secret", forge(claims.clone(), jsonwebtoken::Algorithm::HS512, TEST_JWT_SECRET)),
        ("HS256 with another secret", forge(claims.clone(), jsonwebtoken::Algorithm::HS256, "another-secret-another-secret-another")),
        ("tampered payload", format!("{}.{}.{}", parts[0], base64url(json!({"sub": uuid::Uuid::now_v7().to_string(), "email": "x", "iat": now, "exp": now + 3600}).to_string().as_bytes()), parts[2])),
        ("expired", forge(json!({"sub": sub, "email": "x", "iat": now - 90_000, "exp": now - 3_600}), jsonwebtoken::Algorithm::HS256, TEST_JWT_SECRET)),
        ("garbage", "not.a.jwt".to_owned()),
        ("an API key instead", "slk_0000".to_owned()),
    ];
    for (what, t) in attacks {
        let (status, body) = api.get("/api/v1/auth/me", &t).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    }
    let (status, _, _) = api.send(api.http.get(format!("{url}/api/v1/keys"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token");
    // The genuine token, for contrast.
    assert_eq!(api.get("/api/v1/auth/me", &token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn registration_rules_and_login_failures_answer_alike() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let api = Api::new(&url);
    let e = email();
    let (s, b) = api.register("not-an-email", PASSWORD).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["details"][0]["path"], "/email");
    let (s, b) = api.register(&e, "short").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["details"][0]["path"], "/password");
    assert_eq!(api.register(&e, PASSWORD).await.0, StatusCode::CREATED);
    let (s, b) = api.register(&e.to_uppercase(), PASSWORD).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "email_taken");

    let (s1, _, unknown) = api.login(&email(), PASSWORD).await;
    let (s2, _, wrong) = api.login(&e, "the wrong password!!").await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!(s2, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown, wrong,
        "the same answer for an unknown email and a wrong password"
    );

    let (s, _, b) = api
        .send(
            api.http
                .post(format!("{url}/api/v1/auth/login"))
                .header("content-type", "application/json")
                .body("{\"email\":"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], "malformed_json");
}

#[tokio::test]
async fn floods_of_logins_and_events_over_quota_get_429_with_retry_after() {
    let mut settings: Settings = test_settings();
    settings.auth.login_per_minute = 5;
    let (url, _stop) = spawn_api(&settings).await;
    let api = Api::new(&url);
    let e = email();
    assert_eq!(api.register(&e, PASSWORD).await.0, StatusCode::CREATED);
    let mut last = None;
    for _ in 0..5 {
        last = Some(api.login(&e, "wrong password here").await);
    }
    let (s, h, b) = last.unwrap();
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["error"]["code"], "rate_limited");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(
        api.register(&email(), PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A key with its own quota of 3 events per second.
    let pool = sluice_api::store::pool(&settings.postgres).unwrap();
    let account = sluice_api::store::create_account(&pool, &email(), None)
        .await
        .unwrap();
    let (record, key) = sluice_api::store::create_key(&pool, account, "tight")
        .await
        .unwrap();
    sluice_api::store::set_key_quota(&pool, record.id, 3, 3)
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(post_event(&url, &key, &format!("q{i}")).await.0, 202);
    }
    let (status, body, retry_after) = post_event(&url, &key, "q-over").await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(retry_after);
}

#[tokio::test]
async fn one_account_cannot_see_or_revoke_another_accounts_keys() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let api = Api::new(&url);
    let alice = api.token_for(&email(), PASSWORD).await;
    let bob = api.token_for(&email(), PASSWORD).await;
    let (_, bobs_key) = api.create_key(&bob, "bob's").await;
    let (_, alices_keys) = api.get("/api/v1/keys", &alice).await;
    assert_eq!(alices_keys, json!([]));
    let id = bobs_key["id"].as_str().unwrap();
    assert_eq!(api.delete_key(&alice, id).await, StatusCode::NOT_FOUND);
    assert_eq!(
        api.delete_key(&alice, "not-a-uuid").await,
        StatusCode::NOT_FOUND
    );
    let key = bobs_key["key"].as_str().unwrap();
    assert_eq!(post_event(&url, key, "still-works").await.0, 202);
    assert_eq!(api.delete_key(&bob, id).await, StatusCode::NO_CONTENT);
    assert_eq!(
        api.delete_key(&bob, id).await,
        StatusCode::NO_CONTENT,
        "already revoked: the revocation is sent again, so a cut-short one can be retried"
    );
    assert_eq!(
        api.delete_key(&alice, id).await,
        StatusCode::NOT_FOUND,
        "still another account's key"
    );
}

#[tokio::test]
async fn an_account_may_hold_only_so_many_active_keys() {
    let mut settings = test_settings();
    settings.auth.max_active_keys = 2;
    let (url, _stop) = spawn_api(&settings).await;
    let api = Api::new(&url);
    let t = api.token_for(&email(), PASSWORD).await;
    assert_eq!(api.create_key(&t, "one").await.0, StatusCode::CREATED);
    let (_, two) = api.create_key(&t, "two").await;
    let (s, b) = api.create_key(&t, "three").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "too_many_keys");
    assert_eq!(api.create_key(&t, "").await.0, StatusCode::BAD_REQUEST);
    api.delete_key(&t, two["id"].as_str().unwrap()).await;
    assert_eq!(api.create_key(&t, "three").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn logs_hold_no_key_password_or_token() {
    let settings = test_settings();
    let port = sluice_testkit::servers::free_port();
    let log = std::env::temp_dir().join(format!("sluice-api-log-{}.json", uuid::Uuid::new_v4()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-api"))
        .env("SLUICE_API__PORT", port.to_string())
        .env("SLUICE_REDIS__KEY_PREFIX", &settings.redis.key_prefix)
        .env(
            "SLUICE_REDIS__PARTITIONS",
            settings.redis.partitions.to_string(),
        )
        .env("SLUICE_AUTH__JWT_SECRET", TEST_JWT_SECRET)
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let api = Api::new(&url);
    let deadline = Instant::now() + Duration::from_secs(20);
    while api
        .http
        .get(format!("{url}/api/ready"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the api did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let password = format!("secret-password-{}", uuid::Uuid::new_v4().simple());
    let token = api.token_for(&email(), &password).await;
    let (_, created) = api.create_key(&token, "logged?").await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(post_event(&url, key, "l1").await.0, 202);
    api.login("nobody@example.com", &password).await;
    sluice_testkit::servers::sigterm(&child);
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("/api/v1/auth/login"),
        "the requests were logged"
    );
    assert!(!text.contains(&password), "password in the logs");
    assert!(!text.contains(key), "API key in the logs");
    assert!(!text.contains(&token), "token in the logs");
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_its_docs_page_is_self_contained() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let http = reqwest::Client::new();
    let spec: Value = http
        .get(format!("{url}/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    // Every route `startup::routes` and the skeleton register, by method and path.
    let routes = [
        ("post", "/api/v1/events"),
        ("post", "/api/v1/events/batch"),
        ("get", "/api/v1/events"),
        ("get", "/api/v1/events/{eventId}"),
        ("get", "/api/v1/users/{userId}/export"),
        ("get", "/api/v1/export/events"),
        ("get", "/api/v1/quarantine"),
        ("post", "/api/v1/quarantine/replay"),
        ("post", "/api/v1/dlq/replay"),
        ("post", "/api/v1/schemas"),
        ("get", "/api/v1/schemas"),
        ("get", "/api/v1/schemas/{eventType}"),
        ("get", "/api/v1/schemas/{eventType}/{version}"),
        ("put", "/api/v1/schemas/{eventType}/mode"),
        ("get", "/api/v1/account/schema-mode"),
        ("put", "/api/v1/account/schema-mode"),
        ("post", "/api/v1/auth/register"),
        ("post", "/api/v1/auth/login"),
        ("get", "/api/v1/auth/me"),
        ("post", "/api/v1/keys"),
        ("get", "/api/v1/keys"),
        ("delete", "/api/v1/keys/{id}"),
        ("get", "/api/v1/dlq"),
        ("post", "/api/v1/dlq/{id}/replay"),
        ("post", "/api/v1/sources"),
        ("get", "/api/v1/sources"),
        ("delete", "/api/v1/sources/{id}"),
        ("post", "/api/v1/sources/{id}/rotate"),
        ("post", "/api/v1/webhooks/{id}"),
        ("post", "/api/v1/rules"),
        ("get", "/api/v1/rules"),
        ("get", "/api/v1/rules/{id}"),
        ("put", "/api/v1/rules/{id}"),
        ("patch", "/api/v1/rules/{id}"),
        ("delete", "/api/v1/rules/{id}"),
        ("get", "/api/v1/anomalies"),
        ("get", "/api/v1/anomalies/{id}"),
        ("delete", "/api/v1/anomalies/{id}"),
        ("post", "/api/v1/channels"),
        ("get", "/api/v1/channels"),
        ("delete", "/api/v1/channels/{id}"),
        ("post", "/api/v1/live/ticket"),
        ("get", "/api/v1/live"),
        ("get", "/api/v1/account/retention"),
        ("put", "/api/v1/account/retention"),
        ("post", "/api/v1/regulations"),
        ("get", "/api/v1/regulations"),
        ("get", "/api/v1/regulations/{id}"),
        ("get", "/api/v1/suppressions"),
        ("post", "/v1/batch"),
        ("post", "/v1/track"),
        ("post", "/v1/identify"),
        ("post", "/v1/page"),
        ("post", "/v1/screen"),
        ("post", "/v1/group"),
        ("post", "/v1/alias"),
        ("post", "/v1/batch/"),
        ("post", "/v1/track/"),
        ("post", "/v1/identify/"),
        ("post", "/v1/page/"),
        ("post", "/v1/screen/"),
        ("post", "/v1/group/"),
        ("post", "/v1/alias/"),
        ("post", "/batch"),
        ("post", "/batch/"),
        ("post", "/capture"),
        ("post", "/capture/"),
        ("post", "/e"),
        ("post", "/e/"),
        ("post", "/i/v0/e"),
        ("post", "/i/v0/e/"),
        ("post", "/decide"),
        ("get", "/decide"),
        ("post", "/decide/"),
        ("get", "/decide/"),
        ("post", "/flags"),
        ("get", "/flags"),
        ("post", "/flags/"),
        ("get", "/flags/"),
        ("get", "/api/health"),
        ("get", "/api/ready"),
        ("get", "/api/live"),
        ("get", "/metrics"),
        ("get", "/api/openapi.json"),
    ];
    for (method, path) in routes {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    let documented: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "nothing documented that is not served"
    );
    // And every documented path answers something other than the catch-all 404.
    for (method, path) in routes {
        let path = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{eventId}", "e1")
            .replace("{userId}", "u1")
            .replace("{eventType}", "purchase")
            .replace("{version}", "1");
        let r = http
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{url}{path}"),
            )
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["error"]["message"], "no such endpoint",
            "{method} {path}"
        );
    }
    let page = http.get(format!("{url}/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("/api/docs.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    let js = http
        .get(format!("{url}/api/docs.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!js.contains("http://") && !js.contains("https://"));
}

#[tokio::test]
async fn cors_admits_only_the_dashboard_and_responses_carry_security_headers() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{url}/api/v1/keys"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("http://127.0.0.1:8080").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());

    let r = http.get(format!("{url}/api/live")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.headers().contains_key("content-security-policy"));
}

#[tokio::test]
async fn a_method_a_known_path_does_not_serve_is_405_with_allow_in_the_error_shape() {
    let settings = test_settings();
    let (url, _stop) = spawn_api(&settings).await;
    let http = reqwest::Client::new();
    let resp = http.put(format!("{url}/api/v1/keys")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST, GET");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(body["error"]["message"].as_str().unwrap().contains("PUT"));
    // Refused before auth or the body are looked at.
    let resp = http
        .delete(format!("{url}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST, GET");
    let resp = http
        .get(format!("{url}/api/v1/no-such-path"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
