//! One resource of a route table: a path, the handler of each method it serves, and 405 with
//! `Allow` (in the error shape) for the others. Every service's routes and the operations
//! endpoints are built with it.
use actix_web::{web, HttpResponse};

use crate::error::ApiError;

/// One path and the handler of each method it serves; any other method is 405 with `Allow`.
pub fn at(
    path: &str,
    methods: Vec<(actix_web::http::Method, actix_web::Route)>,
) -> actix_web::Resource {
    let allow = methods
        .iter()
        .map(|(m, _)| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut resource = web::resource(path);
    for (method, route) in methods {
        resource = resource.route(route.method(method));
    }
    resource.default_service(web::to(move |req: actix_web::HttpRequest| {
        let err = ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: allow.clone(),
        };
        async move { Err::<HttpResponse, _>(err) }
    }))
}
