//! Every way a Sluice request can fail, and the one table that maps each to its contract code, its
//! HTTP status and its `Retry-After`. The client sees a clean body in the contract's shape; the
//! cause chain of an outage or an unexpected error goes to the log.
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use sluice_shared::error::{ErrorBody, SdkErrorBody, Violation};

#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{message}")]
    InvalidEvent {
        message: String,
        details: Vec<Violation>,
    },
    #[error("{message}")]
    InvalidRequest {
        message: String,
        details: Vec<Violation>,
    },
    #[error("missing, invalid, expired or revoked credentials")]
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
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("an account may hold at most {0} active keys; revoke one first")]
    TooManyKeys(i64),
    #[error("an account may hold at most {0} webhook sources; delete one first")]
    TooManySources(i64),
    #[error("an account may publish at most {0} schema versions")]
    TooManySchemas(i64),
    #[error("an account may hold at most {0} rules; delete one first")]
    TooManyRules(i64),
    #[error("an account may hold at most {0} channels; delete one first")]
    TooManyChannels(i64),
    /// A read-modify-write lost to a concurrent change.
    #[error("{0}")]
    EditConflict(String),
    #[error("{0}")]
    NotFound(String),
    /// A known path asked with a method it does not serve; `allow` lists those it serves.
    #[error("{method} is not served here; this path serves {allow}")]
    MethodNotAllowed { method: String, allow: String },
    #[error("{0}")]
    AlreadyReplayed(String),
    #[error("{0}")]
    Unreplayable(String),
    /// Redis: the event queue, and the caches and counters on it.
    #[error("Redis (the event queue) is unreachable; retry later")]
    QueueUnavailable(#[source] anyhow::Error),
    /// PostgreSQL: accounts and API keys.
    #[error("PostgreSQL (accounts and API keys) is unreachable; retry later")]
    AccountsUnavailable(#[source] anyhow::Error),
    /// MongoDB: stored events, aggregates and dead letters.
    #[error("MongoDB (stored events) is unreachable; retry later")]
    StoreUnavailable(#[source] anyhow::Error),
    #[error("too many API-key lookups are waiting on PostgreSQL; retry later")]
    KeyLookupsBusy,
    #[error("too many password checks are in progress; retry later")]
    PasswordHashingBusy,
    /// The SDK intakes read a body before its key is known; only so many at once.
    #[error("too many requests are being read before their key is known; retry later")]
    UnauthenticatedReadsBusy,
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

/// Debug as the log shows it (tracing-actix-web writes every failed request's error with `{:?}`):
/// an outage's cause chain, never its backtrace.
impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::QueueUnavailable(e)
            | ApiError::AccountsUnavailable(e)
            | ApiError::StoreUnavailable(e) => {
                write!(f, "{}({:#})", self.code(), e)
            }
            ApiError::Unexpected(e) => write!(f, "Unexpected({e:?})"),
            other => write!(f, "{}: {}", other.code(), other),
        }
    }
}

/// One row of the table: what a client sees of an error besides its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub code: &'static str,
    pub status: StatusCode,
    /// Seconds for `Retry-After`, on the errors a client should retry.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// The table: one row per error.
    pub fn row(&self) -> Row {
        use ApiError as E;
        use StatusCode as S;
        let (code, status, retry_after) = match self {
            E::MalformedJson(_) => ("malformed_json", S::BAD_REQUEST, None),
            E::InvalidEvent { .. } => ("invalid_event", S::BAD_REQUEST, None),
            E::InvalidRequest { .. } => ("invalid_request", S::BAD_REQUEST, None),
            E::Unauthorized => ("unauthorized", S::UNAUTHORIZED, None),
            E::PayloadTooLarge { .. } => ("payload_too_large", S::PAYLOAD_TOO_LARGE, None),
            E::TooManyEvents(_) => ("payload_too_large", S::PAYLOAD_TOO_LARGE, None),
            E::TooManyValues(_) => ("payload_too_large", S::PAYLOAD_TOO_LARGE, None),
            E::UnsupportedMediaType(_) => {
                ("unsupported_media_type", S::UNSUPPORTED_MEDIA_TYPE, None)
            }
            E::Overloaded => ("overloaded", S::SERVICE_UNAVAILABLE, Some(1)),
            E::RateLimited { retry_after_secs } => (
                "rate_limited",
                S::TOO_MANY_REQUESTS,
                Some(*retry_after_secs),
            ),
            E::EmailTaken => ("email_taken", S::CONFLICT, None),
            E::TooManyKeys(_) => ("too_many_keys", S::CONFLICT, None),
            E::TooManySources(_) => ("too_many_sources", S::CONFLICT, None),
            E::TooManySchemas(_) => ("too_many_schemas", S::CONFLICT, None),
            E::TooManyRules(_) => ("too_many_rules", S::CONFLICT, None),
            E::TooManyChannels(_) => ("too_many_channels", S::CONFLICT, None),
            E::EditConflict(_) => ("edit_conflict", S::CONFLICT, None),
            E::NotFound(_) => ("not_found", S::NOT_FOUND, None),
            E::MethodNotAllowed { .. } => ("method_not_allowed", S::METHOD_NOT_ALLOWED, None),
            E::AlreadyReplayed(_) => ("already_replayed", S::CONFLICT, None),
            E::Unreplayable(_) => ("unreplayable", S::CONFLICT, None),
            E::QueueUnavailable(_) => ("unavailable", S::SERVICE_UNAVAILABLE, Some(1)),
            E::AccountsUnavailable(_) => ("unavailable", S::SERVICE_UNAVAILABLE, Some(1)),
            E::StoreUnavailable(_) => ("unavailable", S::SERVICE_UNAVAILABLE, Some(1)),
            E::KeyLookupsBusy => ("unavailable", S::SERVICE_UNAVAILABLE, Some(1)),
            E::PasswordHashingBusy => ("overloaded", S::SERVICE_UNAVAILABLE, Some(1)),
            E::UnauthenticatedReadsBusy => ("overloaded", S::SERVICE_UNAVAILABLE, Some(1)),
            E::RequestTimeout(_) => ("request_timeout", S::REQUEST_TIMEOUT, None),
            E::Unexpected(_) => ("internal", S::INTERNAL_SERVER_ERROR, None),
        };
        Row {
            code,
            status,
            retry_after,
        }
    }

    pub fn code(&self) -> &'static str {
        self.row().code
    }

    /// A schema failure of an event, every violation with its JSON pointer.
    pub fn invalid(details: Vec<Violation>) -> Self {
        let message = match details.as_slice() {
            [one] if one.path.is_empty() => one.message.clone(),
            [one] => format!("{}: {}", one.path, one.message),
            many => format!("{} schema violations", many.len()),
        };
        ApiError::InvalidEvent { message, details }
    }

    /// A request field that breaks its rule, at JSON pointer (or parameter name) `path`.
    pub fn invalid_request(path: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::InvalidRequest {
            message: if path.is_empty() {
                message.clone()
            } else {
                format!("{path}: {message}")
            },
            details: vec![Violation {
                path: path.to_owned(),
                message,
            }],
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound(what.into())
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

    /// An outage is logged with its cause chain (`{:#}`), one line per request: not with a
    /// backtrace, which under `RUST_BACKTRACE` made each 503 of a Redis failover a 30 KB log
    /// entry (2 GB of api log in the cluster suite's kill -9 phase). An unexpected error keeps it.
    fn log(&self) {
        match self {
            ApiError::QueueUnavailable(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "Redis unavailable")
            }
            ApiError::AccountsUnavailable(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "PostgreSQL unavailable")
            }
            ApiError::StoreUnavailable(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "MongoDB unavailable")
            }
            ApiError::Unexpected(e) => tracing::error!(error = ?e, "unexpected error"),
            _ => {}
        }
    }
}

impl ApiError {
    /// The answer with `body`: status, `Retry-After` and the headers the error calls for.
    fn respond(&self, body: impl serde::Serialize) -> HttpResponse {
        self.log();
        let row = self.row();
        let mut resp = HttpResponse::build(row.status);
        if let Some(secs) = row.retry_after {
            resp.insert_header(("Retry-After", secs.to_string()));
        }
        match self {
            // The rest of the body may still be on its way: do not read it, close.
            ApiError::RequestTimeout(_) => {
                resp.insert_header(("Connection", "close"));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.insert_header(("Allow", allow.as_str()));
            }
            ApiError::Unauthorized => {
                resp.insert_header(("WWW-Authenticate", "Bearer"));
            }
            _ => {}
        }
        resp.json(body)
    }

    /// The answer to an SDK intake (Segment, PostHog): the contract's body, with `code` and
    /// `message` at the top as well ([`SdkErrorBody`]).
    pub fn sdk_response(&self) -> HttpResponse {
        self.respond(SdkErrorBody::from(self.body()))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.row().status
    }

    fn error_response(&self) -> HttpResponse {
        self.respond(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn render(e: &ApiError) -> serde_json::Value {
        let resp = e.error_response();
        let status = resp.status().as_u16();
        let mut headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str() != "content-type")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        headers.sort();
        let bytes = resp
            .into_body()
            .try_into_bytes()
            .unwrap_or_else(|_| panic!("a JSON body"));
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        serde_json::json!({"status": status, "headers": headers, "body": body})
    }

    fn every_error() -> Vec<ApiError> {
        let down = || anyhow::anyhow!("connection refused");
        vec![
            ApiError::MalformedJson("EOF while parsing an object at line 1 column 9".into()),
            ApiError::invalid(vec![Violation {
                path: "/userId".into(),
                message: "`userId` is required".into(),
            }]),
            ApiError::invalid(vec![
                Violation {
                    path: "/userId".into(),
                    message: "`userId` is required".into(),
                },
                Violation {
                    path: "/timestamp".into(),
                    message: "must be an RFC 3339 date-time".into(),
                },
            ]),
            ApiError::invalid_request("/email", "must be an email address"),
            ApiError::Unauthorized,
            ApiError::PayloadTooLarge {
                what: "event",
                limit: 65_536,
            },
            ApiError::TooManyEvents(1_000),
            ApiError::TooManyValues(200_000),
            ApiError::UnsupportedMediaType("Content-Type must be application/json".into()),
            ApiError::Overloaded,
            ApiError::RateLimited {
                retry_after_secs: 2,
            },
            ApiError::EmailTaken,
            ApiError::TooManyKeys(20),
            ApiError::TooManySources(100),
            ApiError::TooManySchemas(200),
            ApiError::not_found("no such key"),
            ApiError::MethodNotAllowed {
                method: "PUT".into(),
                allow: "GET, POST".into(),
            },
            ApiError::AlreadyReplayed("this dead letter was replayed already".into()),
            ApiError::Unreplayable("this dead letter holds no event to replay".into()),
            ApiError::QueueUnavailable(down()),
            ApiError::AccountsUnavailable(down()),
            ApiError::StoreUnavailable(down()),
            ApiError::KeyLookupsBusy,
            ApiError::PasswordHashingBusy,
            ApiError::UnauthenticatedReadsBusy,
            ApiError::RequestTimeout(30),
            ApiError::Unexpected(down()),
        ]
    }

    /// Every error body, status and header a client can see, as one reviewed snapshot: a change
    /// to any of them shows in review as a diff of `snapshots/`.
    #[test]
    fn every_error_renders_its_contract_status_headers_and_body() {
        let rendered: Vec<serde_json::Value> = every_error().iter().map(render).collect();
        insta::assert_json_snapshot!(rendered);
    }

    #[test]
    fn no_outage_message_leaks_its_cause() {
        for e in every_error() {
            let message = e.body().error.message;
            assert!(!message.contains("refused"), "{message}");
        }
    }

    #[test]
    fn each_dependency_is_named_in_its_outage_message() {
        let down = || anyhow::anyhow!("x");
        for (e, name) in [
            (ApiError::QueueUnavailable(down()), "Redis"),
            (ApiError::AccountsUnavailable(down()), "PostgreSQL"),
            (ApiError::StoreUnavailable(down()), "MongoDB"),
        ] {
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
