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
        let account = req
            .app_data::<web::Data<AppState>>()
            .and_then(|state| sluice_shared::jwt::bearer_account(req, &state.jwt))
            .map(|id| AuthedAccount { id });
        ready(account.ok_or(ApiError::Unauthorized))
    }
}
