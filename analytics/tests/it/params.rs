//! Every parameter is judged before any query runs: a bad one is 400 in the contract's shape,
//! naming the parameter as a JSON pointer; event-type filters are judged by the event schema.
use crate::spawn_analytics;

#[tokio::test]
async fn bad_parameters_are_400_in_the_contract_shape() {
    let app = spawn_analytics().await;
    let a = app.stack.tenant().await;
    for (path, pointer) in [
        ("/api/v1/analytics/summary?range=2h", "/range"),
        ("/api/v1/analytics/timeseries?range=7d&bucket=1m", "/bucket"),
        ("/api/v1/analytics/timeseries?range=1h&bucket=3m", "/bucket"),
        ("/api/v1/analytics/users/u/events?limit=0", "/limit"),
        ("/api/v1/analytics/users/u/events?limit=abc", "/limit"),
        (
            "/api/v1/analytics/users/u/events?before=nonsense",
            "/before",
        ),
    ] {
        let r = app.stack.analytics().get(path, Some(&a.token)).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.body["error"]["code"], "invalid_request", "{path}");
        assert_eq!(r.body["error"]["details"][0]["path"], pointer, "{path}");
    }
}

#[tokio::test]
async fn event_type_filters_take_any_stored_name_and_refuse_the_rest_with_400() {
    let app = spawn_analytics().await;
    let a = app.stack.tenant().await;
    let long = "a".repeat(201);
    for bad in ["a%00b", "tab%09here", "%C2%85", long.as_str()] {
        let query = format!("range=1h&bucket=1m&eventType={bad}");
        let r = app.stack.analytics().timeseries(&a.token, &query).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_request", "{bad}");
        assert_eq!(r.body["error"]["details"][0]["path"], "/eventType", "{bad}");
    }
    // Sluice's own identifiers and the sources' verbatim names (`$pageview`, `Order Completed`).
    for good in [
        "page.view",
        "a",
        "Order:Completed-2_x",
        "%24pageview",
        "Order%20Completed",
        "caf%C3%A9",
        "%24where",
    ] {
        let query = format!("range=1h&bucket=1m&eventType={good}");
        let r = app.stack.analytics().timeseries(&a.token, &query).await;
        assert_eq!(r.status, 200, "{good}: {}", r.body);
    }
}
