//! One skeleton serves all three services: the same security headers and request id on every
//! response of every service, whatever its status.
use sluice_testkit::{spawn_stack, Options};

use crate::{analytics, worker};

/// (service, method, path, headers, body, expected status)
type Case<'a> = (
    &'a str,
    &'a str,
    String,
    &'a [(&'a str, &'a str)],
    Vec<u8>,
    u16,
);

#[tokio::test]
async fn every_response_of_every_service_carries_the_same_security_headers() {
    let stack = spawn_stack(Options::api().worker(worker()).analytics(analytics())).await;
    let tenant = stack.tenant().await;
    let api = stack.api().base.clone();
    let analytics = stack.analytics().base.clone();
    let worker = format!("http://127.0.0.1:{}", stack.worker_port.unwrap());
    let bad_key = [
        ("x-api-key", "sk_live_nope"),
        ("content-type", "application/json"),
    ];
    let good_key = [
        ("x-api-key", tenant.key.as_str()),
        ("content-type", "application/json"),
    ];
    let bearer = format!("Bearer {}", tenant.token);
    let token = [("authorization", bearer.as_str())];
    let ok_event = br#"{"eventType":"click","userId":"u-1"}"#.to_vec();
    let cases: Vec<Case> = vec![
        (
            "api",
            "POST",
            format!("{api}/api/v1/events"),
            &good_key,
            ok_event.clone(),
            202,
        ),
        (
            "api",
            "POST",
            format!("{api}/api/v1/events"),
            &good_key,
            b"{".to_vec(),
            400,
        ),
        (
            "api",
            "POST",
            format!("{api}/api/v1/events"),
            &bad_key,
            ok_event,
            401,
        ),
        (
            "api",
            "GET",
            format!("{api}/api/v1/auth/me"),
            &token,
            vec![],
            200,
        ),
        (
            "api",
            "PUT",
            format!("{api}/api/v1/keys"),
            &token,
            vec![],
            405,
        ),
        ("api", "GET", format!("{api}/nowhere"), &[], vec![], 404),
        (
            "api",
            "GET",
            format!("{api}/api/openapi.json"),
            &[],
            vec![],
            200,
        ),
        (
            "analytics",
            "GET",
            format!("{analytics}/api/v1/analytics/summary?range=1h"),
            &token,
            vec![],
            200,
        ),
        (
            "analytics",
            "GET",
            format!("{analytics}/api/v1/analytics/summary?range=1y"),
            &token,
            vec![],
            400,
        ),
        (
            "analytics",
            "GET",
            format!("{analytics}/api/v1/analytics/summary?range=1h"),
            &[],
            vec![],
            401,
        ),
        (
            "analytics",
            "DELETE",
            format!("{analytics}/api/v1/analytics/pipeline"),
            &token,
            vec![],
            405,
        ),
        (
            "analytics",
            "GET",
            format!("{analytics}/nowhere"),
            &[],
            vec![],
            404,
        ),
        (
            "analytics",
            "GET",
            format!("{analytics}/api/openapi.json"),
            &[],
            vec![],
            200,
        ),
        (
            "worker",
            "GET",
            format!("{worker}/nowhere"),
            &[],
            vec![],
            404,
        ),
        (
            "worker",
            "POST",
            format!("{worker}/api/live"),
            &[],
            vec![],
            405,
        ),
    ];
    let mut checked = 0;
    for (service, method, url, headers, body, status) in cases {
        let mut req = stack.http.request(method.parse().unwrap(), &url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.body(body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{service}: {method} {url}");
        assert_security_headers(&r, &format!("{service}: {method} {url}"));
        checked += 1;
    }
    for (service, base) in [
        ("api", &api),
        ("analytics", &analytics),
        ("worker", &worker),
    ] {
        for path in ["/api/health", "/api/ready", "/api/live", "/metrics"] {
            let r = stack
                .http
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{service}: GET {path}");
            assert_security_headers(&r, &format!("{service}: GET {path}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 27);
}

fn assert_security_headers(r: &reqwest::Response, what: &str) {
    for (name, value) in sluice_http::server::SECURITY_HEADERS {
        assert_eq!(
            r.headers().get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{name} on {what}"
        );
    }
    assert!(
        r.headers()
            .get("x-request-id")
            .is_some_and(|v| !v.is_empty()),
        "x-request-id on {what}"
    );
}
