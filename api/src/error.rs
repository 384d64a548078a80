//! Every way an api request can fail, and the one table that maps each to its status and code.
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use sluice_shared::error::{ErrorBody, Violation};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{message}")]
    InvalidEvent {
        message: String,
        details: Vec<Violation>,
    },
    #[error("missing, unknown or revoked API key")]
    Unauthorized,
    #[error("payload too large: {what} limit is {limit} bytes")]
    PayloadTooLarge { what: &'static str, limit: usize },
    #[error("too many events: the limit is {0} events per batch")]
    TooManyEvents(usize),
    #[error(
        "payload too large: the events of one request may hold at most {0} JSON values together"
    )]
    TooManyValues(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the ingest backlog is over its limit; retry later")]
    Overloaded,
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{message}")]
    InvalidRequest {
        message: String,
        details: Vec<Violation>,
    },
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("an account may hold at most {0} active keys; revoke one first")]
    TooManyKeys(i64),
    #[error("not found")]
    NotFound,
    /// A known path asked with a method it does not serve; `allow` lists those it serves.
    #[error("{method} is not served here; this path serves {allow}")]
    MethodNotAllowed { method: String, allow: String },
    #[error("Redis (the event queue) is unreachable; retry later")]
    Unavailable(#[source] anyhow::Error),
    /// Accounts and API keys live in PostgreSQL; the chain goes to the log, not to the client.
    #[error("PostgreSQL (accounts and API keys) is unreachable; retry later")]
    PostgresUnavailable(#[source] anyhow::Error),
    #[error("too many API-key lookups are waiting on PostgreSQL; retry later")]
    KeyLookupsBusy,
    #[error("too many password checks are in progress; retry later")]
    PasswordHashingBusy,
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(details: Vec<Violation>) -> Self {
        let message = match details.as_slice() {
            [one] if one.path.is_empty() => one.message.clone(),
            [one] => format!("{}: {}", one.path, one.message),
            many => format!("{} schema violations", many.len()),
        };
        ApiError::InvalidEvent { message, details }
    }

    pub fn invalid_request(path: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::InvalidRequest {
            message: format!("{path}: {message}"),
            details: vec![Violation {
                path: path.to_owned(),
                message,
            }],
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidEvent { .. } => "invalid_event",
            ApiError::Unauthorized => "unauthorized",
            ApiError::PayloadTooLarge { .. }
            | ApiError::TooManyEvents(_)
            | ApiError::TooManyValues(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Overloaded => "overloaded",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::EmailTaken => "email_taken",
            ApiError::TooManyKeys(_) => "too_many_keys",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unavailable(_)
            | ApiError::PostgresUnavailable(_)
            | ApiError::KeyLookupsBusy => "unavailable",
            ApiError::PasswordHashingBusy => "overloaded",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Unexpected(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let body = ErrorBody::new(self.code(), self.to_string());
        match self {
            ApiError::InvalidEvent { details, .. } | ApiError::InvalidRequest { details, .. } => {
                body.with_details(details.clone())
            }
            _ => body,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_)
            | ApiError::InvalidEvent { .. }
            | ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::EmailTaken | ApiError::TooManyKeys(_) => StatusCode::CONFLICT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge { .. }
            | ApiError::TooManyEvents(_)
            | ApiError::TooManyValues(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Overloaded
            | ApiError::Unavailable(_)
            | ApiError::PostgresUnavailable(_)
            | ApiError::KeyLookupsBusy
            | ApiError::PasswordHashingBusy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Unavailable(e) => tracing::warn!(error = ?e, "Redis unavailable"),
            ApiError::PostgresUnavailable(e) => {
                tracing::warn!(error = ?e, "PostgreSQL unavailable")
            }
            ApiError::Unexpected(e) => tracing::error!(error = ?e, "unexpected error"),
            _ => {}
        }
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            ApiError::Overloaded
            | ApiError::Unavailable(_)
            | ApiError::PostgresUnavailable(_)
            | ApiError::KeyLookupsBusy
            | ApiError::PasswordHashingBusy => {
                resp.insert_header(("Retry-After", "1"));
            }
            // The rest of the body may still be on its way: do not read it, close.
            ApiError::RequestTimeout(_) => {
                resp.insert_header(("Connection", "close"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                resp.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.insert_header(("Allow", allow.as_str()));
            }
            _ => {}
        }
        if matches!(self, ApiError::Unauthorized) {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        resp.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn render(e: ApiError) -> (u16, serde_json::Value) {
        let resp = e.error_response();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn each_error_maps_to_its_contract_status_and_body() {
        let cases = vec![
            (ApiError::MalformedJson("eof".into()), 400, "malformed_json"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (
                ApiError::PayloadTooLarge {
                    what: "event",
                    limit: 65536,
                },
                413,
                "payload_too_large",
            ),
            (ApiError::TooManyEvents(1000), 413, "payload_too_large"),
            (ApiError::TooManyValues(200_000), 413, "payload_too_large"),
            (
                ApiError::UnsupportedMediaType("Content-Type must be application/json".into()),
                415,
                "unsupported_media_type",
            ),
            (ApiError::Overloaded, 503, "overloaded"),
            (
                ApiError::RateLimited {
                    retry_after_secs: 2,
                },
                429,
                "rate_limited",
            ),
            (ApiError::EmailTaken, 409, "email_taken"),
            (ApiError::TooManyKeys(20), 409, "too_many_keys"),
            (ApiError::NotFound, 404, "not_found"),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                    allow: "GET, POST".into(),
                },
                405,
                "method_not_allowed",
            ),
            (
                ApiError::Unavailable(anyhow::anyhow!("down")),
                503,
                "unavailable",
            ),
            (
                ApiError::PostgresUnavailable(anyhow::anyhow!("down")),
                503,
                "unavailable",
            ),
            (ApiError::KeyLookupsBusy, 503, "unavailable"),
            (ApiError::PasswordHashingBusy, 503, "overloaded"),
            (ApiError::RequestTimeout(30), 408, "request_timeout"),
        ];
        for (err, status, code) in cases {
            let (s, body) = render(err);
            assert_eq!(s, status);
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].as_str().unwrap().len() > 3);
            assert!(body["error"].get("details").is_none());
        }
    }

    #[test]
    fn invalid_events_carry_pointer_details() {
        let (s, body) = render(ApiError::invalid(vec![Violation {
            path: "/userId".into(),
            message: "`userId` is required".into(),
        }]));
        assert_eq!(s, 400);
        assert_eq!(body["error"]["code"], "invalid_event");
        assert_eq!(body["error"]["details"][0]["path"], "/userId");
    }

    #[test]
    fn each_dependency_is_named_in_its_outage_message() {
        let (_, body) = render(ApiError::PostgresUnavailable(anyhow::anyhow!("refused")));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("PostgreSQL"), "{message}");
        assert!(!message.contains("refused"), "the cause stays in the log");
        let (_, body) = render(ApiError::Unavailable(anyhow::anyhow!("refused")));
        assert!(body["error"]["message"].as_str().unwrap().contains("Redis"));
    }

    #[test]
    fn the_too_large_message_names_the_limit() {
        let e = ApiError::PayloadTooLarge {
            what: "event",
            limit: 65536,
        };
        assert!(e.to_string().ends_with("limit is 65536 bytes"));
    }
}
