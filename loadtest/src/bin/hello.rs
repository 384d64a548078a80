//! `sluice-hello`: the ceiling the api is measured against. The same actix-web set-up as the api
//! (workers, JSON answer), but a handler that reads the body and answers 202 without doing anything.
use actix_web::{web, App, HttpResponse, HttpServer};

async fn accept(body: web::Bytes) -> HttpResponse {
    HttpResponse::Accepted()
        .json(serde_json::json!({"eventId": body.len().to_string(), "status": "accepted"}))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("HELLO_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3009);
    HttpServer::new(|| {
        App::new()
            .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
            .default_service(web::to(accept))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
