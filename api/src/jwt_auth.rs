//! The `AuthedAccount` extractor: a valid JWT in `Authorization: Bearer`, or 401.
use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest};
use uuid::Uuid;

use crate::error::ApiError;
use crate::startup::AppState;

/// The account a request's JWT belongs to.
pub struct AuthedAccount {
    pub id: Uuid,
}

impl FromRequest for AuthedAccount {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>();
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let account = match (state, token) {
            (Some(state), Some(token)) => state
                .jwt
                .verify(token)
                .and_then(|c| c.sub.parse().ok())
                .map(|id| AuthedAccount { id }),
            _ => None,
        };
        ready(account.ok_or(ApiError::Unauthorized))
    }
}
