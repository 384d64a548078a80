//! PostHog capture: `POST /batch`, `/capture`, `/e`, `/i/v0/e` (each with and without a trailing
//! slash; [`ALIASES`]), the key (`api_key` or `token`) in the body. Success is 200
//! `{"status": 1}`. `/decide` and `/flags` answer "no flags, nothing to record" so PostHog's
//! browser SDK starts and captures without a PostHog behind it.
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sluice_http::body::read_raw;
use sluice_http::ApiError;
use sluice_shared::error::SdkErrorBody;
use tracing_actix_web::RequestId;
use utoipa::{IntoParams, ToSchema};

use crate::ingest::{BatchReply, BatchStatus};
use crate::sources::posthog::{self, Arrival, Limits};
use crate::state::AppState;

/// Every path the capture endpoint answers on besides `/batch` (PostHog's SDKs use all of them).
pub const ALIASES: [&str; 7] = [
    "/batch/",
    "/capture",
    "/capture/",
    "/e",
    "/e/",
    "/i/v0/e",
    "/i/v0/e/",
];

/// Where PostHog's SDKs ask for flags and settings.
pub const DECIDE_PATHS: [&str; 4] = ["/decide", "/decide/", "/flags", "/flags/"];

/// Every path of the SDK intakes (Segment's and PostHog's): browsers call them from any origin.
pub fn open_cors_paths() -> Vec<&'static str> {
    let mut paths = vec!["/v1/*", "/batch"];
    paths.extend(ALIASES);
    paths.extend(DECIDE_PATHS);
    paths
}

/// The answer: PostHog's `status: 1` and Sluice's per-event results.
#[derive(Serialize, ToSchema)]
pub struct CaptureReply {
    /// Always 1 on success (what PostHog answers).
    pub status: u8,
    #[serde(flatten)]
    pub batch: BatchReply,
}

/// One PostHog event (its common fields; others are accepted and not kept).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CaptureEvent {
    /// The event's name, kept verbatim (`$pageview`; printable, up to 200 characters).
    pub event: String,
    /// The userId (or `properties.distinct_id`).
    #[schema(value_type = Option<String>)]
    pub distinct_id: Option<Box<RawValue>>,
    /// The eventId (derived from it when it is not `[A-Za-z0-9_.:-]{1,128}`).
    pub uuid: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Box<RawValue>>,
    /// Moved into `properties.$set`, as PostHog does.
    #[serde(rename = "$set")]
    #[schema(value_type = Option<Object>)]
    pub set: Option<Box<RawValue>>,
    pub timestamp: Option<String>,
    /// The key, here or on the body.
    pub api_key: Option<String>,
    pub token: Option<String>,
}

/// A batch (`{"api_key", "batch": [...]}`); one event alone, or an array of events, is taken too.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CaptureBatch {
    pub api_key: Option<String>,
    #[schema(min_items = 1)]
    pub batch: Vec<CaptureEvent>,
    pub sent_at: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CaptureQuery {
    /// How the body is encoded (`gzip-js`, `gzip`, `base64`; `lz64` is refused with 415).
    pub compression: Option<String>,
}

fn limits(state: &AppState) -> Limits {
    let (s, api) = (&state.settings.sources, &state.settings.api);
    Limits {
        max_body_bytes: s.posthog_max_body_bytes,
        max_event_bytes: api.max_event_bytes,
        max_events: s.max_messages,
        max_event_values: api.max_event_values,
        max_request_values: api.max_request_values,
    }
}

#[utoipa::path(post, path = "/batch", tag = "sources",
    params(CaptureQuery),
    request_body(content = CaptureBatch, content_type = "application/json",
        description = "Also sent as text/plain, gzip (by header, `?compression=gzip-js` or the magic bytes alone), or a `data=` form of base64 or JSON; the same at /batch/, /capture[/], /e[/] and /i/v0/e[/]"),
    responses(
        (status = 200, description = "Taken in: every valid event queued (or already seen), the others rejected one by one", body = CaptureReply),
        (status = 400, description = "Malformed, not a batch, or every event invalid", body = SdkErrorBody),
        (status = 401, description = "Missing, unknown or revoked key (`api_key` or `token`)", body = SdkErrorBody),
        (status = 408, description = "The body did not arrive in time", body = SdkErrorBody),
        (status = 413, description = "Over 5 MiB decoded, an event over 64 KiB, or too many events or values", body = SdkErrorBody),
        (status = 415, description = "lz64, or an encoding other than gzip", body = SdkErrorBody),
        (status = 429, description = "Over the key's quota", body = SdkErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Backlog over its limit, Redis unreachable, or too many unauthenticated reads", body = SdkErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn capture(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> HttpResponse {
    match take_in(&req, payload, &state, &request_id.to_string()).await {
        Ok(reply) => reply,
        Err(e) => e.sdk_response(),
    }
}

/// `?compression=` from the query string, if any.
fn compression(req: &HttpRequest) -> Option<&str> {
    req.query_string()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "compression")
        .map(|(_, v)| v)
}

async fn take_in(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    request_id: &str,
) -> Result<HttpResponse, ApiError> {
    state.check_queue()?;
    let limits = limits(state);
    let permit = state.unauthenticated_read()?;
    let raw = read_raw(req, payload, limits.max_body_bytes, "body").await?;
    let text_header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let arrival = Arrival {
        content_type: text_header(header::CONTENT_TYPE),
        content_encoding: text_header(header::CONTENT_ENCODING),
        compression: compression(req),
    };
    let body = posthog::decode_body(raw, arrival, limits.max_body_bytes)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not UTF-8: {e}")))?;
    serde_json::from_str::<&serde_json::value::RawValue>(text)
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let key = posthog::api_key(text).ok_or(ApiError::Unauthorized)?;
    let owner = state.auth.authenticate_key(&key).await?;
    let parsed = posthog::parse_body(text, &limits)?;
    drop(permit);
    state.quotas.check(
        &owner,
        u32::try_from(parsed.events.len()).unwrap_or(u32::MAX),
    )?;
    let account = owner.account_id.to_string();
    let items = posthog::judge_all(&parsed, &account, Utc::now(), &limits)?;
    drop(parsed);
    let (status, batch) =
        crate::routes::intake::queue(req, state, owner.account_id, items, request_id).await?;
    Ok(match status {
        BatchStatus::AllRejected => {
            let error = batch
                .error
                .clone()
                .unwrap_or_else(|| ApiError::invalid(vec![]).body().error);
            HttpResponse::BadRequest().json(SdkErrorBody {
                code: error.code.clone(),
                message: error.message.clone(),
                error,
            })
        }
        BatchStatus::Queued | BatchStatus::NothingNew => {
            HttpResponse::Ok().json(CaptureReply { status: 1, batch })
        }
    })
}

/// What `/decide` and `/flags` answer: no feature flags, no session recording, the encodings
/// this intake reads.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecideReply {
    pub feature_flags: serde_json::Map<String, serde_json::Value>,
    pub feature_flag_payloads: serde_json::Map<String, serde_json::Value>,
    pub flags: serde_json::Map<String, serde_json::Value>,
    pub errors_while_computing_flags: bool,
    pub session_recording: bool,
    pub supported_compression: Vec<&'static str>,
    pub autocapture_opt_out: bool,
    pub is_authenticated: bool,
}

#[utoipa::path(post, path = "/decide", tag = "sources",
    responses((status = 200, description = "No feature flags and nothing to record: Sluice takes events, it does not evaluate flags (also GET, and at /decide/, /flags, /flags/)", body = DecideReply)))]
pub async fn decide() -> HttpResponse {
    HttpResponse::Ok().json(DecideReply {
        feature_flags: Default::default(),
        feature_flag_payloads: Default::default(),
        flags: Default::default(),
        errors_while_computing_flags: false,
        session_recording: false,
        supported_compression: vec!["gzip", "gzip-js", "base64"],
        autocapture_opt_out: false,
        is_authenticated: false,
    })
}
