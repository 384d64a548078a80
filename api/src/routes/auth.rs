//! `POST /api/v1/auth/register`, `POST /api/v1/auth/login`, `GET /api/v1/auth/me`: an account
//! and its JWT. Register and login are limited per client address.
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_http::{ApiError, AuthedAccount};
use utoipa::ToSchema;

use crate::accounts;
use crate::limits::client_ip;
use crate::state::AppState;
use crate::store;
use sluice_shared::error::ErrorBody;

/// A new account's credentials.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// An email address (at most 254 bytes, a local part of at most 64); compared
    /// case-insensitively.
    #[schema(example = "you@example.com", format = Email, max_length = 254)]
    pub email: String,
    #[schema(
        example = "correct horse battery staple",
        min_length = 12,
        max_length = 1024
    )]
    pub password: String,
}

/// Credentials to log in with: any strings; a wrong pair is 401, whatever it holds.
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(example = "you@example.com")]
    pub email: String,
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub account_id: String,
    pub email: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    /// HS256 JWT; send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "accounts",
    request_body(content = Credentials, content_type = "application/json"),
    responses(
        (status = 201, description = "Account created", body = AccountView),
        (status = 400, description = "Malformed JSON, a bad email, or a password under 12 or over 1024 characters", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 409, description = "Email taken", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "PostgreSQL unreachable, or every password-hashing slot busy", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn register(
    req: HttpRequest,
    body: web::Json<Credentials>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .login_limiter
        .check(client_ip(&req, &state.trusted_proxies))?;
    let Credentials { email, password } = body.into_inner();
    let (id, email) =
        accounts::register(&state.pool, &state.password_slots, &email, password).await?;
    Ok(HttpResponse::Created().json(AccountView {
        account_id: id.to_string(),
        email,
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "accounts",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A token valid for 24 hours", body = TokenView),
        (status = 400, description = "Malformed JSON, or not `{\"email\": string, \"password\": string}`", body = ErrorBody),
        (status = 401, description = "Unknown email or wrong password (the same answer)", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "PostgreSQL unreachable, or every password-hashing slot busy", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn login(
    req: HttpRequest,
    body: web::Json<LoginRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .login_limiter
        .check(client_ip(&req, &state.trusted_proxies))?;
    let LoginRequest { email, password } = body.into_inner();
    let account = accounts::log_in(&state.pool, &state.password_slots, &email, password).await?;
    let (token, expires_at) =
        state
            .jwt
            .issue(&account.id.to_string(), &account.email, Utc::now())?;
    Ok(HttpResponse::Ok().json(TokenView { token, expires_at }))
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "accounts",
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The account of the token", body = AccountView),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn me(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let record = store::find_account_by_id(&state.pool, account.id)
        .await
        .map_err(ApiError::AccountsUnavailable)?
        .ok_or(ApiError::Unauthorized)?;
    Ok(HttpResponse::Ok().json(AccountView {
        account_id: record.id.to_string(),
        email: record.email,
    }))
}
