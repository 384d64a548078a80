//! `POST/GET/DELETE /api/v1/keys`: an account's API keys. The key itself appears only in the
//! create answer; listings show its prefix. Another account's key is 404, never 403.
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use sluice_http::{ApiError, AuthedAccount};

use crate::state::AppState;
use crate::store;
use sluice_shared::error::ErrorBody;

#[derive(Deserialize, ToSchema)]
pub struct NewKeyRequest {
    /// A label for the key: 1 to 100 characters, not all white space; stored trimmed. (The
    /// pattern spells out the characters `str::trim` removes, Unicode `White_Space`, so every
    /// regex engine reads it alike.)
    #[schema(
        example = "production",
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
}

/// The key name's rule, as the schema declares it.
pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.chars().count()) && name.chars().any(|c| !c.is_whitespace())
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewKeyView {
    pub id: Uuid,
    pub name: String,
    /// The key itself: shown this once, stored only as its SHA-256.
    pub key: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", security(("jwt" = [])),
    request_body(content = NewKeyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The new key, shown once", body = NewKeyView),
        (status = 400, description = "Malformed JSON, or a name that breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 409, description = "Too many active keys", body = ErrorBody),
        (status = 413, description = "A body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn create(
    account: AuthedAccount,
    body: web::Json<NewKeyRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !valid_name(&body.name) {
        return Err(ApiError::invalid_request(
            "/name",
            "must be 1 to 100 characters, not all white space",
        ));
    }
    let name = body.name.trim();
    let limit = state.settings.auth.max_active_keys;
    let (record, key) = match store::create_key_within_limit(&state.pool, account.id, name, limit)
        .await
        .map_err(ApiError::AccountsUnavailable)?
    {
        store::KeyCreation::Created(record, key) => (record, key),
        store::KeyCreation::LimitReached => return Err(ApiError::TooManyKeys(limit)),
        store::KeyCreation::NoAccount => return Err(ApiError::Unauthorized),
    };
    Ok(HttpResponse::Created().json(NewKeyView {
        id: record.id,
        name: record.name,
        key,
        prefix: record.prefix,
        created_at: record.created_at,
    }))
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", security(("jwt" = [])),
    responses(
        (status = 200, description = "The account's keys, without their secrets", body = [KeyView]),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "PostgreSQL unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let keys = store::list_keys(&state.pool, account.id)
        .await
        .map_err(ApiError::AccountsUnavailable)?;
    let view: Vec<KeyView> = keys
        .into_iter()
        .map(|k| KeyView {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", security(("jwt" = [])),
    params(("id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked (or already revoked: the revocation is sent again); every api instance refuses it within a second"),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such key in this account", body = ErrorBody),
        (status = 503, description = "PostgreSQL or Redis unreachable; the DELETE may be retried until 204", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn revoke(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let no_such_key = || ApiError::not_found("no such key");
    let id: Uuid = path.parse().map_err(|_| no_such_key())?;
    let revoked = crate::revocation::revoke(
        &state.pool,
        &state.redis,
        id,
        Some(account.id),
        state.settings.api.key_tombstone_ttl_secs,
    )
    .await?;
    if !revoked {
        return Err(no_such_key());
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_1_to_100_characters_not_all_white_space() {
        for ok in ["a", " production ", &"é".repeat(100), "\u{1c}"] {
            assert!(valid_name(ok), "{ok:?}");
        }
        for bad in ["", " ", "\t\u{3000}\u{a0}", &"a".repeat(101)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
