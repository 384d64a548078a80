//! The route table: 405 with `Allow` for a method a known path does not serve, 404 for anything
//! else (the dead-letter endpoints are the api's), and an OpenAPI document covering exactly what
//! is served.
use crate::spawn_analytics;

#[tokio::test]
async fn a_method_a_known_path_does_not_serve_is_405_with_allow_and_the_document_covers_every_route(
) {
    let app = spawn_analytics().await;
    let analytics = app.stack.analytics();
    let delete = |path: &str| {
        app.stack
            .http
            .delete(format!("{}{path}", analytics.base))
            .send()
    };
    let resp = delete("/api/v1/analytics/summary").await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("DELETE"));
    let resp = app
        .stack
        .http
        .post(format!(
            "{}/api/v1/analytics/users/u/events",
            analytics.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");
    // An unknown path stays 404.
    assert_eq!(analytics.get("/api/v1/nothing", None).await.status, 404);

    let spec = analytics.get("/api/openapi.json", None).await.body;
    let routes = [
        ("get", "/api/v1/analytics/summary"),
        ("get", "/api/v1/analytics/timeseries"),
        ("get", "/api/v1/analytics/users/{userId}/events"),
        ("get", "/api/v1/analytics/pipeline"),
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
}

/// Dead letters and their replay are the api's (the write side): analytics neither serves nor
/// documents them.
#[tokio::test]
async fn analytics_serves_no_dead_letter_endpoint() {
    let app = spawn_analytics().await;
    let a = app.stack.tenant().await;
    let analytics = app.stack.analytics();
    let r = analytics.get("/api/v1/dlq", Some(&a.token)).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "not_found");
    let r = app
        .stack
        .http
        .post(format!("{}/api/v1/dlq/some-id/replay", analytics.base))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let spec = analytics.get("/api/openapi.json", None).await.body;
    let paths = spec["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|p| !p.contains("dlq")),
        "{:?}",
        paths.keys()
    );
}
