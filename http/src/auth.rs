//! The one JWT extractor: `AuthedAccount` is the account whose valid token is in
//! `Authorization: Bearer`, or the request is refused 401. The verifier is the service's
//! `web::Data<Jwt>`, registered in its app data.
use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest};
use sluice_shared::jwt::Jwt;
use uuid::Uuid;

use crate::error::ApiError;

/// The account a request's JWT belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthedAccount {
    pub id: Uuid,
}

impl FromRequest for AuthedAccount {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let account = req
            .app_data::<web::Data<Jwt>>()
            .and_then(|jwt| sluice_shared::jwt::bearer_account(req, jwt))
            .map(|id| AuthedAccount { id });
        ready(account.ok_or(ApiError::Unauthorized))
    }
}

/// Declares the `jwt` security scheme (`Authorization: Bearer <JWT>`, what [`AuthedAccount`]
/// reads) in a service's OpenAPI document: `modifiers(&sluice_http::auth::JwtScheme)`.
pub struct JwtScheme;

impl utoipa::Modify for JwtScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "jwt",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
    }
}
