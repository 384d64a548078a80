//! `POST/GET /api/v1/channels`, `DELETE /api/v1/channels/{id}`: where an account's rules send
//! their anomalies. A webhook channel's signing secret appears only in the answer that creates
//! it. Another account's channel is 404.
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use mongodb::bson;
use serde::{Deserialize, Serialize};
use sluice_http::{ApiError, AuthedAccount};
use sluice_rules::channels::{self, ChannelDoc, ChannelType};
use sluice_shared::error::ErrorBody;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::state::AppState;

/// Channels one account may hold.
const MAX_CHANNELS: usize = 20;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewChannel {
    #[serde(rename = "type")]
    pub kind: ChannelType,
    /// Where to POST: an `http` or `https` URL, at most 2048 characters.
    #[schema(
        example = "https://hooks.slack.com/services/T000/B000/XXXX",
        max_length = 2048
    )]
    pub url: String,
    /// A label (default: the type), at most 100 characters.
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: ChannelType,
    pub name: String,
    /// Slack's URL carries its secret: only its origin is shown once created.
    pub url: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelCreated {
    #[serde(flatten)]
    pub channel: ChannelView,
    /// Webhook channels: the `whsec_…` secret their deliveries are signed with (Standard
    /// Webhooks), shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ChannelList {
    pub channels: Vec<ChannelView>,
}

fn shown_url(c: &ChannelDoc) -> String {
    match c.kind {
        ChannelType::Webhook => c.url.clone(),
        ChannelType::Slack => reqwest_free_origin(&c.url),
    }
}

/// `scheme://host[:port]/…` of a URL: Slack's path is its credential.
fn reqwest_free_origin(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    format!("{}/…", &url[..end])
}

fn view(c: &ChannelDoc) -> Result<ChannelView, ApiError> {
    Ok(ChannelView {
        id: c.id.parse().map_err(anyhow::Error::from)?,
        kind: c.kind,
        name: c.name.clone(),
        url: shown_url(c),
        created_at: sluice_rules::store::utc(c.created_at),
    })
}

fn url_problem(url: &str) -> Option<&'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        _ if url.len() > 2048 => Some("at most 2048 characters"),
        None => Some("an http:// or https:// URL"),
        Some(r) if r.is_empty() || r.starts_with('/') => Some("a URL with a host"),
        Some(_) if url.chars().any(|c| c.is_control() || c.is_whitespace()) => {
            Some("no spaces or control characters")
        }
        Some(_) => None,
    }
}

#[utoipa::path(post, path = "/api/v1/channels", tag = "rules", security(("jwt" = [])),
    request_body(content = NewChannel, content_type = "application/json"),
    responses(
        (status = 201, description = "The new channel (a webhook's secret shown once)", body = ChannelCreated),
        (status = 400, description = "Malformed JSON, or a field that breaks its rule", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 409, description = "The account holds 20 channels already", body = ErrorBody),
        (status = 413, description = "A body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn create(
    account: AuthedAccount,
    body: web::Json<NewChannel>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if let Some(problem) = url_problem(&b.url) {
        return Err(ApiError::invalid_request("/url", problem));
    }
    let name = match b.name.as_deref().map(str::trim) {
        None => match b.kind {
            ChannelType::Slack => "slack".to_owned(),
            ChannelType::Webhook => "webhook".to_owned(),
        },
        Some(n) if !n.is_empty() && n.chars().count() <= 100 => n.to_owned(),
        Some(_) => {
            return Err(ApiError::invalid_request(
                "/name",
                "must be 1 to 100 characters, not all white space",
            ))
        }
    };
    let acct = account.id.to_string();
    let held = channels::account_channels(&state.mongo, &acct)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if held.len() >= MAX_CHANNELS {
        return Err(ApiError::TooManyChannels(MAX_CHANNELS as i64));
    }
    let secret = (b.kind == ChannelType::Webhook).then(channels::new_secret);
    let doc = ChannelDoc {
        id: Uuid::now_v7().to_string(),
        account_id: acct,
        kind: b.kind,
        name,
        url: b.url,
        secret: secret.clone().unwrap_or_default(),
        created_at: bson::DateTime::now(),
    };
    channels::insert_channel(&state.mongo, &doc)
        .await
        .map_err(ApiError::StoreUnavailable)?;
    Ok(HttpResponse::Created().json(ChannelCreated {
        channel: view(&doc)?,
        secret,
    }))
}

#[utoipa::path(get, path = "/api/v1/channels", tag = "rules", security(("jwt" = [])),
    responses(
        (status = 200, description = "The account's channels, without secrets", body = ChannelList),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    account: AuthedAccount,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let docs = channels::account_channels(&state.mongo, &account.id.to_string())
        .await
        .map_err(ApiError::StoreUnavailable)?;
    let channels = docs.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(ChannelList { channels }))
}

#[utoipa::path(delete, path = "/api/v1/channels/{id}", tag = "rules", security(("jwt" = [])),
    params(("id" = Uuid, Path, description = "The channel's id")),
    responses(
        (status = 204, description = "Deleted: anomalies are no longer delivered to it"),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such channel in this account", body = ErrorBody),
        (status = 503, description = "MongoDB unreachable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn delete(
    account: AuthedAccount,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id: Uuid = path
        .parse()
        .map_err(|_| ApiError::not_found("no such channel"))?;
    let deleted = channels::delete_channel(&state.mongo, &account.id.to_string(), &id.to_string())
        .await
        .map_err(ApiError::StoreUnavailable)?;
    if !deleted {
        return Err(ApiError::not_found("no such channel"));
    }
    Ok(HttpResponse::NoContent().finish())
}
