//! `GET /api/docs` and `GET /api/docs.js`: a page that renders `/api/openapi.json` and needs no
//! network (no CDN).
use actix_web::HttpResponse;

const DOCS_HTML: &str = include_str!("../docs/index.html");
const DOCS_JS: &str = include_str!("../docs/docs.js");

pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .body(DOCS_HTML)
}

pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(DOCS_JS)
}
