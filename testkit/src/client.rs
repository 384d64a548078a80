//! Typed clients per endpoint: a test says `api.post_event(&key, &event)`, not how to build the
//! request. Every call returns a [`Reply`] (status, headers, JSON body — or the text as a JSON
//! string when the body is not JSON).
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    async fn from(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A request with optional bearer token and extra headers.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let mut req = http.request(method, url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    Reply::from(req.send().await.expect("the service answers")).await
}

fn json_body(v: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(v).expect("JSON"))
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// The api's endpoints.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub base: String,
    pub port: u16,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(port: u16, http: reqwest::Client) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            http,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        send(
            &self.http,
            reqwest::Method::GET,
            format!("{}{path}", self.base),
            token,
            &[],
            None,
        )
        .await
    }

    /// Any request, for the tests that craft one.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        send(
            &self.http,
            method,
            format!("{}{path}", self.base),
            None,
            headers,
            body,
        )
        .await
    }

    /// `POST path` with raw bytes and headers.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
        self.request(reqwest::Method::POST, path, headers, Some(body))
            .await
    }

    /// A request with the account's token and, when given, a JSON body.
    pub async fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Reply {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        let headers: &[(&str, &str)] = if bytes.is_some() { &[JSON] } else { &[] };
        send(
            &self.http,
            method,
            format!("{}{path}", self.base),
            Some(token),
            headers,
            bytes,
        )
        .await
    }

    /// `POST /api/v1/sources`.
    pub async fn create_source(&self, token: &str, body: &Value) -> Reply {
        self.authed(reqwest::Method::POST, "/api/v1/sources", token, Some(body))
            .await
    }

    /// `GET /api/v1/sources`.
    pub async fn sources(&self, token: &str) -> Reply {
        self.get("/api/v1/sources", Some(token)).await
    }

    /// `POST /api/v1/sources/{id}/rotate`, without a body (Sluice makes the secret).
    pub async fn rotate_source(&self, token: &str, id: &str) -> Reply {
        let path = format!("/api/v1/sources/{id}/rotate");
        self.authed(reqwest::Method::POST, &path, token, None).await
    }

    /// `DELETE /api/v1/sources/{id}`.
    pub async fn delete_source(&self, token: &str, id: &str) -> Reply {
        let path = format!("/api/v1/sources/{id}");
        self.authed(reqwest::Method::DELETE, &path, token, None)
            .await
    }

    /// `POST /api/v1/events`.
    pub async fn post_event(&self, key: &str, event: &Value) -> Reply {
        let body = serde_json::to_vec(event).expect("JSON");
        self.post_raw("/api/v1/events", body, &[JSON, ("x-api-key", key)])
            .await
    }

    /// `POST /api/v1/events/batch`.
    pub async fn post_batch(&self, key: &str, events: &[Value]) -> Reply {
        let body = serde_json::to_vec(&json!({ "events": events })).expect("JSON");
        self.post_raw("/api/v1/events/batch", body, &[JSON, ("x-api-key", key)])
            .await
    }

    /// `POST /api/v1/auth/register`.
    pub async fn register(&self, email: &str, password: &str) -> Reply {
        let body = json_body(&json!({"email": email, "password": password}));
        send(
            &self.http,
            reqwest::Method::POST,
            format!("{}/api/v1/auth/register", self.base),
            None,
            &[JSON],
            body,
        )
        .await
    }

    /// `POST /api/v1/auth/login`.
    pub async fn login(&self, email: &str, password: &str) -> Reply {
        let body = json_body(&json!({"email": email, "password": password}));
        send(
            &self.http,
            reqwest::Method::POST,
            format!("{}/api/v1/auth/login", self.base),
            None,
            &[JSON],
            body,
        )
        .await
    }

    /// `GET /api/v1/auth/me`.
    pub async fn me(&self, token: &str) -> Reply {
        self.get("/api/v1/auth/me", Some(token)).await
    }

    /// `POST /api/v1/keys`.
    pub async fn create_key(&self, token: &str, name: &str) -> Reply {
        let body = json_body(&json!({"name": name}));
        send(
            &self.http,
            reqwest::Method::POST,
            format!("{}/api/v1/keys", self.base),
            Some(token),
            &[JSON],
            body,
        )
        .await
    }

    /// `GET /api/v1/keys`.
    pub async fn list_keys(&self, token: &str) -> Reply {
        self.get("/api/v1/keys", Some(token)).await
    }

    /// `DELETE /api/v1/keys/{id}`.
    pub async fn revoke_key(&self, token: &str, id: &str) -> Reply {
        send(
            &self.http,
            reqwest::Method::DELETE,
            format!("{}/api/v1/keys/{id}", self.base),
            Some(token),
            &[],
            None,
        )
        .await
    }

    /// `GET /api/v1/dlq?{query}`.
    pub async fn dead_letters(&self, token: &str, query: &str) -> Reply {
        self.get(&format!("/api/v1/dlq?{query}"), Some(token)).await
    }

    /// `POST /api/v1/dlq/{id}/replay`.
    pub async fn replay(&self, token: &str, id: &str) -> Reply {
        send(
            &self.http,
            reqwest::Method::POST,
            format!("{}/api/v1/dlq/{id}/replay", self.base),
            Some(token),
            &[],
            None,
        )
        .await
    }
}

/// The analytics service's endpoints; every answer's `x-cache` is in its headers.
#[derive(Debug, Clone)]
pub struct AnalyticsClient {
    pub base: String,
    pub port: u16,
    http: reqwest::Client,
}

impl AnalyticsClient {
    pub fn new(port: u16, http: reqwest::Client) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            http,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        send(
            &self.http,
            reqwest::Method::GET,
            format!("{}{path}", self.base),
            token,
            &[],
            None,
        )
        .await
    }

    /// `GET /api/v1/analytics/summary?range=`.
    pub async fn summary(&self, token: &str, range: &str) -> Reply {
        self.get(
            &format!("/api/v1/analytics/summary?range={range}"),
            Some(token),
        )
        .await
    }

    /// `GET /api/v1/analytics/timeseries?{query}`.
    pub async fn timeseries(&self, token: &str, query: &str) -> Reply {
        self.get(
            &format!("/api/v1/analytics/timeseries?{query}"),
            Some(token),
        )
        .await
    }

    /// `GET /api/v1/analytics/users/{userId}/events?{query}`.
    pub async fn user_events(&self, token: &str, user: &str, query: &str) -> Reply {
        self.get(
            &format!("/api/v1/analytics/users/{user}/events?{query}"),
            Some(token),
        )
        .await
    }

    /// `GET /api/v1/analytics/pipeline`.
    pub async fn pipeline(&self, token: &str) -> Reply {
        self.get("/api/v1/analytics/pipeline", Some(token)).await
    }
}
