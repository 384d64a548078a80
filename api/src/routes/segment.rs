//! The Segment / RudderStack HTTP API: `POST /v1/batch` and one endpoint per call (`/v1/track`,
//! `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias`). The key is the HTTP Basic
//! user name (Segment's way), a Sluice key header, or `writeKey` in the body. Success is 200
//! `{"success": true}` (some SDKs take any other 2xx for a failure); errors carry the contract's
//! `error` object and `code` and `message` at the top.
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_http::body::read_body;
use sluice_http::ApiError;
use sluice_shared::error::SdkErrorBody;
use tracing_actix_web::RequestId;
use utoipa::ToSchema;

use crate::auth::presented_key;
use crate::ingest::{BatchReply, BatchStatus};
use crate::sources::segment::{self, Call, Limits};
use crate::state::AppState;
use crate::store::KeyOwner;

/// The answer: `success` and Sluice's per-message results.
#[derive(Serialize, ToSchema)]
pub struct SegmentReply {
    /// `true` when nothing was refused as a whole (messages may still be rejected one by one).
    pub success: bool,
    #[serde(flatten)]
    pub batch: BatchReply,
    /// When every message was rejected: the error's code and message, as some SDKs read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
}

/// One Segment message (the spec's common fields; others are accepted and not kept).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SegmentMessage {
    /// In a batch: `track`, `identify`, `page`, `screen`, `group` or `alias`.
    #[serde(rename = "type")]
    pub call: Option<String>,
    /// The eventId (derived from it when it is not `[A-Za-z0-9_.:-]{1,128}`).
    pub message_id: Option<String>,
    #[schema(value_type = Option<String>)]
    pub user_id: Option<Box<RawValue>>,
    #[schema(value_type = Option<String>)]
    pub anonymous_id: Option<Box<RawValue>>,
    /// A track call's event name, kept verbatim (printable, up to 200 characters).
    pub event: Option<String>,
    pub name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Box<RawValue>>,
    #[schema(value_type = Option<Object>)]
    pub traits: Option<Box<RawValue>>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Box<RawValue>>,
    #[schema(value_type = Option<Object>)]
    pub integrations: Option<Box<RawValue>>,
    pub timestamp: Option<String>,
    pub original_timestamp: Option<String>,
    pub sent_at: Option<String>,
    /// The key, when it is not in the `Authorization` header.
    pub write_key: Option<String>,
}

/// `POST /v1/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SegmentBatch {
    #[schema(min_items = 1)]
    pub batch: Vec<SegmentMessage>,
    pub sent_at: Option<String>,
    pub write_key: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Box<RawValue>>,
}

fn limits(state: &AppState) -> Limits {
    let (s, api) = (&state.settings.sources, &state.settings.api);
    Limits {
        max_message_bytes: s.segment_max_message_bytes,
        max_messages: s.max_messages,
        max_event_values: api.max_event_values,
        max_request_values: api.max_request_values,
    }
}

/// The key of `Authorization: Basic <base64(key:)>`: Segment's SDKs send the write key as the
/// user name with an empty password.
pub fn basic_user(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or("").trim();
    (!user.is_empty()).then(|| user.to_owned())
}

/// The owner named by the request's headers, if they name one (a wrong key there is 401 at
/// once, before the body is read).
pub async fn header_owner(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Option<KeyOwner>, ApiError> {
    let key = basic_user(req).or_else(|| presented_key(req).map(str::to_owned));
    match key {
        Some(key) => Ok(Some(state.auth.authenticate_key(&key).await?)),
        None => Ok(None),
    }
}

async fn intake(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: RequestId,
    endpoint: Option<Call>,
) -> HttpResponse {
    match take_in(&req, payload, &state, &request_id.to_string(), endpoint).await {
        Ok(reply) => reply,
        Err(e) => e.sdk_response(),
    }
}

async fn take_in(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    request_id: &str,
    endpoint: Option<Call>,
) -> Result<HttpResponse, ApiError> {
    let early = header_owner(req, state).await?;
    state.check_queue()?;
    let limits = limits(state);
    let permit = match early {
        Some(_) => None,
        None => Some(state.unauthenticated_read()?),
    };
    let max = state.settings.sources.segment_max_batch_bytes;
    let body = read_body(req, payload, max, "batch").await?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not UTF-8: {e}")))?;
    let owner = match early {
        Some(owner) => owner,
        None => {
            serde_json::from_str::<&RawValue>(text)
                .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
            let key = segment::write_key(text).ok_or(ApiError::Unauthorized)?;
            state.auth.authenticate_key(&key).await?
        }
    };
    let parsed = segment::parse_body(text, endpoint, &limits)?;
    drop(permit);
    state.quotas.check(
        &owner,
        u32::try_from(parsed.messages.len()).unwrap_or(u32::MAX),
    )?;
    let account = owner.account_id.to_string();
    let mut items = segment::judge_all(&parsed, endpoint, &account, Utc::now(), &limits)?;
    drop(parsed);
    // A call's endpoint takes one message: refused, it is the request that is refused.
    if endpoint.is_some() && items.len() == 1 && items[0].is_err() {
        if let Some(Err(e)) = items.pop() {
            crate::ingest::count("rejected", crate::ingest::reason_of(&e), 1);
            return Err(e);
        }
    }
    let (status, batch) =
        crate::routes::intake::queue(req, state, owner.account_id, items, request_id).await?;
    Ok(match status {
        BatchStatus::AllRejected => {
            let error = batch.error.clone();
            HttpResponse::BadRequest().json(SegmentReply {
                success: false,
                code: error.as_ref().map(|e| e.code.clone()),
                message: error.map(|e| e.message),
                batch,
            })
        }
        BatchStatus::Queued | BatchStatus::NothingNew => HttpResponse::Ok().json(SegmentReply {
            success: true,
            batch,
            code: None,
            message: None,
        }),
    })
}

macro_rules! segment_call {
    ($name:ident, $call:expr, $path:literal, $what:literal) => {
        #[utoipa::path(post, path = $path, tag = "sources",
            security((), ("segmentWriteKey" = [])),
            request_body(content = SegmentMessage, content_type = "application/json",
                description = $what),
            responses(
                (status = 200, description = "Taken in (queued, or already seen)", body = SegmentReply),
                (status = 400, description = "Malformed JSON, or the message is invalid", body = SdkErrorBody),
                (status = 401, description = "Missing, unknown or revoked key", body = SdkErrorBody),
                (status = 408, description = "The body did not arrive in time", body = SdkErrorBody),
                (status = 413, description = "Over 32 KB for the message or 500 KB for the body (decompressed)", body = SdkErrorBody),
                (status = 415, description = "An encoding other than gzip", body = SdkErrorBody),
                (status = 429, description = "Over the key's quota", body = SdkErrorBody,
                    headers(("Retry-After" = u64, description = "Seconds to wait"))),
                (status = 503, description = "Backlog over its limit, Redis unreachable, or too many unauthenticated reads", body = SdkErrorBody,
                    headers(("Retry-After" = u64, description = "Seconds to wait"))),
            ))]
        pub async fn $name(
            req: HttpRequest,
            payload: web::Payload,
            state: web::Data<AppState>,
            request_id: RequestId,
        ) -> HttpResponse {
            intake(req, payload, state, request_id, Some($call)).await
        }
    };
}

segment_call!(
    track,
    Call::Track,
    "/v1/track",
    "A track call: `event` names what happened"
);
segment_call!(
    identify,
    Call::Identify,
    "/v1/identify",
    "An identify call: `traits` of the user"
);
segment_call!(
    page,
    Call::Page,
    "/v1/page",
    "A page view: `name`, `properties`"
);
segment_call!(
    screen,
    Call::Screen,
    "/v1/screen",
    "A screen view: `name`, `properties`"
);
segment_call!(
    group,
    Call::Group,
    "/v1/group",
    "A group call: `groupId`, `traits`"
);
segment_call!(
    alias,
    Call::Alias,
    "/v1/alias",
    "An alias call: `previousId` becomes `userId`"
);

#[utoipa::path(post, path = "/v1/batch", tag = "sources",
    security((), ("segmentWriteKey" = [])),
    request_body(content = SegmentBatch, content_type = "application/json",
        description = "Messages of any call, each with its `type`; `Content-Encoding: gzip` is accepted"),
    responses(
        (status = 200, description = "Taken in: every valid message queued (or already seen), the others rejected one by one", body = SegmentReply),
        (status = 400, description = "Malformed JSON, not a batch, or every message invalid", body = SdkErrorBody),
        (status = 401, description = "Missing, unknown or revoked key", body = SdkErrorBody),
        (status = 408, description = "The body did not arrive in time", body = SdkErrorBody),
        (status = 413, description = "Over 500 KB (decompressed), a message over 32 KB, or too many messages or values", body = SdkErrorBody),
        (status = 415, description = "An encoding other than gzip", body = SdkErrorBody),
        (status = 429, description = "Over the key's quota", body = SdkErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Backlog over its limit, Redis unreachable, or too many unauthenticated reads", body = SdkErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> HttpResponse {
    intake(req, payload, state, request_id, None).await
}
