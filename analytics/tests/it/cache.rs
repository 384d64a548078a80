//! Answers come from a TTL cache judged by a clock, and concurrent misses are computed once.
use std::time::Duration;

use crate::spawn_analytics;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_hits_expires_with_its_clock_and_computes_concurrent_misses_once() {
    let app = spawn_analytics().await;
    let analytics = app.stack.analytics();
    let a = app.stack.tenant().await;
    let first = analytics.summary(&a.token, "1h").await;
    let second = analytics.summary(&a.token, "1h").await;
    assert_eq!(
        (first.header("x-cache"), second.header("x-cache")),
        (Some("miss"), Some("hit"))
    );
    app.clock.advance(Duration::from_millis(9_900));
    assert_eq!(
        analytics.summary(&a.token, "1h").await.header("x-cache"),
        Some("hit")
    );
    app.clock.advance(Duration::from_millis(200));
    assert_eq!(
        analytics.summary(&a.token, "1h").await.header("x-cache"),
        Some("miss")
    );

    let before = app.state.cache.computations();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let analytics = analytics.clone();
        let token = a.token.clone();
        tasks.spawn(async move {
            let r = analytics.summary(&token, "7d").await;
            assert_eq!(r.status, 200);
            r.header("x-cache").unwrap().to_owned()
        });
    }
    let mut misses = 0;
    while let Some(c) = tasks.join_next().await {
        misses += usize::from(c.unwrap() == "miss");
    }
    assert_eq!(app.state.cache.computations() - before, 1);
    assert_eq!(misses, 1);
}
