//! The analytics endpoints, one module per resource. Every figure covers the caller's account
//! only: the account comes from the JWT ([`sluice_http::AuthedAccount`]) and is part of every
//! query and every cache key. Every answer is a type of [`crate::views`], served from the cache
//! with `x-cache: hit|miss`.
pub mod pipeline;
pub mod summary;
pub mod timeseries;
pub mod users;

use actix_web::http::header::ContentType;
use actix_web::web::Bytes;
use actix_web::HttpResponse;

use crate::cache::Source;

/// An encoded answer from the cache, with where it came from.
fn answer(body: Bytes, source: Source) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header(source.header())
        .body(body)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
