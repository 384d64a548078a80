//! The skeleton served for real on port 0: what every service gets from it.
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use sluice_http::{at, health, Check, ServeOptions, Service};

async fn hello() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"hello": "world"}))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(at("/hello", vec![(Method::GET, web::to(hello))]));
}

fn options(drain_gap: Duration, redis_up: bool) -> ServeOptions {
    let mut o = ServeOptions::new(health(move || async move {
        vec![
            Check::from_result("redis", if redis_up { Ok(()) } else { Err("refused") }),
            Check::from_result("mongodb", Err::<(), _>("refused")).optional(),
        ]
    }));
    o.drain_gap = drain_gap;
    o.shutdown_timeout = Duration::from_secs(1);
    o
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("the service answers")
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_errors_their_contract_shape() {
    let service = Service::bind("test", "127.0.0.1", 0).expect("binds");
    let base = format!("http://127.0.0.1:{}", service.port());
    let running = service
        .serve(options(Duration::ZERO, true), routes)
        .expect("serves");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(running.run_until(async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    for (method, path, status) in [
        ("GET", "/hello", 200),
        ("GET", "/nowhere", 404),
        ("POST", "/hello", 405),
        ("GET", "/api/health", 200),
        ("GET", "/api/ready", 200),
        ("GET", "/api/live", 200),
        ("GET", "/metrics", 200),
        ("GET", "/api/openapi.json", 404),
    ] {
        let r = client
            .request(method.parse().expect("method"), format!("{base}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        for (name, value) in sluice_http::server::SECURITY_HEADERS {
            assert_eq!(
                r.headers().get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{name} on {method} {path}"
            );
        }
        assert!(r.headers().contains_key("x-request-id"), "{method} {path}");
        if status >= 400 {
            let allow = r
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let body: serde_json::Value = r.json().await.expect("a JSON error");
            assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
            if status == 405 {
                assert_eq!(allow.as_deref(), Some("GET"));
                assert_eq!(body["error"]["code"], "method_not_allowed");
            }
        }
    }
    // MongoDB is optional here: down, health says degraded but answers 200.
    let health: serde_json::Value = get(&format!("{base}/api/health"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["dependencies"]["mongodb"]["status"], "down");
    assert_eq!(health["dependencies"]["redis"]["status"], "up");
    let _ = stop.send(());
    task.await.expect("joins").expect("stops cleanly");
}

#[tokio::test]
async fn a_required_dependency_down_is_a_503_health() {
    let service = Service::bind("test", "127.0.0.1", 0).expect("binds");
    let base = format!("http://127.0.0.1:{}", service.port());
    let running = service
        .serve(options(Duration::ZERO, false), routes)
        .expect("serves");
    let task = tokio::spawn(running.run_until(std::future::pending()));
    let r = get(&format!("{base}/api/health")).await;
    assert_eq!(r.status().as_u16(), 503);
    task.abort();
}

#[tokio::test]
async fn shutdown_turns_readiness_off_then_serves_through_the_drain_gap_then_closes() {
    let gap = Duration::from_millis(1_500);
    let service = Service::bind("test", "127.0.0.1", 0).expect("binds");
    let base = format!("http://127.0.0.1:{}", service.port());
    let running = service.serve(options(gap, true), routes).expect("serves");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(running.run_until(async {
        let _ = stopped.await;
    }));
    assert_eq!(
        get(&format!("{base}/api/ready")).await.status().as_u16(),
        200
    );

    let asked = Instant::now();
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Within the gap: not ready, and still serving.
    assert_eq!(
        get(&format!("{base}/api/ready")).await.status().as_u16(),
        503
    );
    assert_eq!(get(&format!("{base}/hello")).await.status().as_u16(), 200);
    task.await.expect("joins").expect("stops cleanly");
    let took = asked.elapsed();
    assert!(
        took >= gap,
        "stopped after {took:?}, before the drain gap of {gap:?}"
    );
    assert!(
        reqwest::get(format!("{base}/hello")).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_stalled_loop_turns_liveness_off_and_names_the_loop() {
    let service = Service::bind("test", "127.0.0.1", 0).expect("binds");
    let base = format!("http://127.0.0.1:{}", service.port());
    let heart = service
        .lifecycle()
        .heart("backlog_monitor", Duration::from_millis(200));
    let running = service
        .serve(options(Duration::ZERO, true), routes)
        .expect("serves");
    let task = tokio::spawn(running.run_until(std::future::pending()));
    heart.beat();
    assert_eq!(
        get(&format!("{base}/api/live")).await.status().as_u16(),
        200
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = get(&format!("{base}/api/live")).await;
    assert_eq!(r.status().as_u16(), 503);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["status"], "stalled");
    assert_eq!(body["loops"][0]["name"], "backlog_monitor");
    assert_eq!(body["loops"][0]["stalled"], true);
    heart.beat();
    assert_eq!(
        get(&format!("{base}/api/live")).await.status().as_u16(),
        200
    );
    task.abort();
}
