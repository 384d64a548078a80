//! The operations endpoints every service serves the same way: `/api/health` (the service's own
//! dependency checks), `/api/ready`, `/api/live`, `/metrics` and `/api/openapi.json`. [`OpsDoc`]
//! documents them; each service merges it into its own OpenAPI document.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use futures::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

use crate::lifecycle::{HeartView, Lifecycle};

/// A service's dependency checks, run on every `GET /api/health`.
pub type HealthChecks = Arc<dyn Fn() -> BoxFuture<'static, Vec<Check>> + Send + Sync>;

/// One dependency's state in `GET /api/health`.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub error: Option<String>,
    /// Whether the service's main job needs this dependency: a required one down is a 503, an
    /// optional one down only `degraded`.
    pub required: bool,
}

impl Check {
    pub fn from_result<E: std::fmt::Display>(name: &'static str, r: Result<(), E>) -> Self {
        let error = r.err().map(|e| e.to_string());
        Check {
            name,
            ok: error.is_none(),
            error,
            required: true,
        }
    }

    /// A dependency only some endpoints need: down, health says `degraded` but answers 200.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
}

/// `GET /api/health`: `ok` when every dependency the service needs answers, else `degraded`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok` or `degraded`.
    #[schema(example = "ok")]
    pub status: &'static str,
    pub dependencies: BTreeMap<&'static str, DependencyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyView {
    /// `up` or `down`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/ready` and `GET /api/live`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    /// `ready`, `not_ready`, `starting`, `alive` or `stalled`.
    pub status: &'static str,
    /// On `/api/live`: each watched loop, its last beat and its limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub loops: Option<Vec<HeartView>>,
}

/// Each dependency's status; `degraded` when one is down, and 503 when a required one is.
pub fn health_response(checks: Vec<Check>) -> HttpResponse {
    let all_ok = checks.iter().all(|c| c.ok);
    let needed_ok = checks.iter().all(|c| c.ok || !c.required);
    let view = HealthView {
        status: if all_ok { "ok" } else { "degraded" },
        dependencies: checks
            .into_iter()
            .map(|c| {
                (
                    c.name,
                    DependencyView {
                        status: if c.ok { "up" } else { "down" },
                        error: c.error,
                    },
                )
            })
            .collect(),
    };
    if needed_ok {
        HttpResponse::Ok().json(view)
    } else {
        HttpResponse::ServiceUnavailable().json(view)
    }
}

/// Checks one dependency, treating no answer within `within` as down.
pub async fn timed_check<F>(name: &'static str, within: Duration, check: F) -> Check
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let r = tokio::time::timeout(within, check)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "no answer within {} ms",
                within.as_millis()
            ))
        });
    Check::from_result(name, r)
}

/// What the operations handlers read: set up once per service by the skeleton.
pub(crate) struct Ops {
    pub lifecycle: Lifecycle,
    pub health: HealthChecks,
    /// The service's OpenAPI document, rendered once.
    pub openapi_json: Option<String>,
}

#[utoipa::path(get, path = "/api/health", tag = "operations",
    responses((status = 200, description = "Every dependency answers", body = HealthView),
              (status = 503, description = "A dependency is down", body = HealthView)))]
pub(crate) async fn health(ops: web::Data<Ops>) -> HttpResponse {
    health_response((ops.health)().await)
}

#[utoipa::path(get, path = "/api/ready", tag = "operations",
    responses((status = 200, description = "Taking traffic", body = StatusView),
              (status = 503, description = "Starting or shutting down", body = StatusView)))]
pub(crate) async fn ready(ops: web::Data<Ops>) -> HttpResponse {
    if ops.lifecycle.is_ready() {
        HttpResponse::Ok().json(StatusView {
            status: "ready",
            loops: None,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(StatusView {
            status: "not_ready",
            loops: None,
        })
    }
}

#[utoipa::path(get, path = "/api/live", tag = "operations",
    responses((status = 200, description = "Every watched loop beats", body = StatusView),
              (status = 503, description = "A watched loop has stalled", body = StatusView)))]
pub(crate) async fn live(ops: web::Data<Ops>) -> HttpResponse {
    let loops = ops.lifecycle.hearts_view();
    if loops.iter().all(|h| !h.stalled) {
        HttpResponse::Ok().json(StatusView {
            status: "alive",
            loops: Some(loops),
        })
    } else {
        HttpResponse::ServiceUnavailable().json(StatusView {
            status: "stalled",
            loops: Some(loops),
        })
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics() -> HttpResponse {
    sluice_shared::telemetry_metrics::metrics_endpoint().await
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "This service's OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn openapi_json(ops: web::Data<Ops>) -> HttpResponse {
    match &ops.openapi_json {
        Some(doc) => HttpResponse::Ok()
            .content_type("application/json")
            .body(doc.clone()),
        None => actix_web::ResponseError::error_response(&crate::error::ApiError::not_found(
            "this service has no OpenAPI document",
        )),
    }
}

/// The operations endpoints' part of every service's OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(health, ready, live, metrics, openapi_json),
    components(schemas(HealthView, DependencyView, StatusView))
)]
pub struct OpsDoc;

/// Mounts the operations endpoints (405 with `Allow` for other methods).
pub(crate) fn routes(cfg: &mut web::ServiceConfig, with_openapi: bool) {
    use actix_web::http::Method;
    cfg.service(crate::route::at(
        "/api/health",
        vec![(Method::GET, web::to(health))],
    ))
    .service(crate::route::at(
        "/api/ready",
        vec![(Method::GET, web::to(ready))],
    ))
    .service(crate::route::at(
        "/api/live",
        vec![(Method::GET, web::to(live))],
    ))
    .service(crate::route::at(
        "/metrics",
        vec![(Method::GET, web::to(metrics))],
    ));
    if with_openapi {
        cfg.service(crate::route::at(
            "/api/openapi.json",
            vec![(Method::GET, web::to(openapi_json))],
        ));
    }
}
