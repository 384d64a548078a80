//! Export through the whole stack: a user's events and an account's range as NDJSON, oldest
//! first, plain and gzip, filters, a bad parameter, and isolation between accounts.
use std::io::Read;
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use serde_json::{json, Value};
use sluice_testkit::{spawn_stack, Options, Stack, Tenant};

use crate::worker;

async fn wait_stored(stack: &Stack, t: &Tenant, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = stack.db.collection::<mongodb::bson::Document>("events");
    loop {
        let c = events
            .count_documents(doc! {"accountId": t.account.to_string()})
            .await
            .unwrap();
        if c >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{c} of {n} stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of `GET path`, decompressed when it came gzipped, as its JSON lines.
async fn export(stack: &Stack, t: &Tenant, path: &str, gzip: bool) -> (u16, Vec<Value>) {
    let mut req = stack
        .http
        .get(format!("{}{path}", stack.api().base))
        .bearer_auth(&t.token);
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let encoding = resp
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    if status == 200 {
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "application/x-ndjson"
        );
    }
    let bytes = resp.bytes().await.unwrap();
    let text = if encoding.as_deref() == Some("gzip") {
        assert!(gzip, "gzip only when accepted");
        let mut out = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut out)
            .unwrap();
        out
    } else {
        assert!(!gzip || status != 200, "gzip when accepted");
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    if status != 200 {
        return (status, vec![serde_json::from_str(&text).unwrap()]);
    }
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (status, lines)
}

fn ids(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["eventId"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_users_events_and_an_accounts_range_export_as_ndjson_oldest_first() {
    let stack = spawn_stack(Options::api().worker(worker())).await;
    let (a, b) = (stack.tenant().await, stack.tenant().await);
    let at = |minute: u32| format!("2026-11-01T10:{minute:02}:00.000Z");
    let mut events = Vec::new();
    for i in 0..6u32 {
        events.push(json!({"eventId": format!("x{i}"), "eventType": if i % 2 == 0 { "checkout" } else { "view" },
            "userId": "alice", "timestamp": at(50 - i), "properties": {"n": i}}));
    }
    events.push(json!({"eventId": "y0", "eventType": "view", "userId": "bob", "timestamp": at(1)}));
    assert_eq!(stack.api().post_batch(&a.key, &events).await.status, 202);
    wait_stored(&stack, &a, 7).await;

    for gzip in [false, true] {
        let (status, lines) = export(&stack, &a, "/api/v1/users/alice/export", gzip).await;
        assert_eq!(status, 200);
        // Oldest first: x5 (10:45) … x0 (10:50).
        assert_eq!(
            ids(&lines),
            ["x5", "x4", "x3", "x2", "x1", "x0"],
            "gzip {gzip}"
        );
        assert_eq!(lines[0]["properties"]["n"], 5);
        assert_eq!(lines[0]["userId"], "alice");
    }
    let (_, lines) = export(&stack, &a, "/api/v1/export/events?eventType=checkout", true).await;
    assert_eq!(ids(&lines), ["x4", "x2", "x0"]);
    let range = format!("/api/v1/export/events?from={}&to={}", at(0), at(47));
    let (_, lines) = export(&stack, &a, &range, false).await;
    assert_eq!(ids(&lines), ["y0", "x5", "x4"]);
    let (status, body) = export(&stack, &a, "/api/v1/export/events?from=yesterday", false).await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["error"]["details"][0]["path"], "/from");
    // Account B exports nothing of A's.
    let (status, lines) = export(&stack, &b, "/api/v1/users/alice/export", false).await;
    assert_eq!((status, lines.len()), (200, 0));
    let (_, lines) = export(&stack, &b, "/api/v1/export/events", false).await;
    assert!(lines.is_empty());
    // Without a token: 401.
    let r = stack.api().get("/api/v1/users/alice/export", None).await;
    assert_eq!(r.status, 401);
}
