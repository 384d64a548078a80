//! The rows of docs/SECURITY.md (OWASP API Security Top 10, 2023) that analytics answers for: every
//! read is scoped to the token's account, and an ingest key opens none of them.
use crate::spawn_analytics;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_key_opens_no_analytics_endpoint() {
    let app = spawn_analytics().await;
    let a = app.stack.tenant().await;
    let analytics = app.stack.analytics();
    let gets = [
        "/api/v1/analytics/summary?range=1h",
        "/api/v1/analytics/timeseries?range=1h&bucket=1m",
        "/api/v1/analytics/users/u/events",
        "/api/v1/analytics/pipeline",
    ];
    for path in gets {
        let url = format!("{}{path}", analytics.base);
        for req in [
            app.stack.http.get(&url).bearer_auth(&a.key),
            app.stack.http.get(&url).header("x-api-key", &a.key),
        ] {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
        }
        // The account's own token opens it.
        let r = analytics.get(path, Some(&a.token)).await;
        assert!(r.status == 200 || r.status == 404, "{path}: {r:?}");
    }
}
