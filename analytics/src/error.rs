//! Analytics errors and their contract status and code.
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use sluice_shared::error::{ErrorBody, Violation};

#[derive(Debug, Clone, thiserror::Error)]
pub enum AnalyticsError {
    #[error("missing, invalid or expired token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{path}: {message}")]
    InvalidRequest { path: String, message: String },
    /// `code` is the contract code (`already_replayed`, `unreplayable`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("a data store is unreachable; retry later")]
    Unavailable(String),
    /// A known path asked with a method it does not serve; `allow` lists those it serves.
    #[error("{method} is not served here; this path serves {allow}")]
    MethodNotAllowed { method: String, allow: String },
}

impl AnalyticsError {
    pub fn invalid(path: &str, message: impl Into<String>) -> Self {
        AnalyticsError::InvalidRequest {
            path: path.to_owned(),
            message: message.into(),
        }
    }

    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        AnalyticsError::Unavailable(e.to_string())
    }

    fn code(&self) -> &'static str {
        match self {
            AnalyticsError::Unauthorized => "unauthorized",
            AnalyticsError::NotFound(_) => "not_found",
            AnalyticsError::InvalidRequest { .. } => "invalid_request",
            AnalyticsError::Conflict { code, .. } => code,
            AnalyticsError::Unavailable(_) => "unavailable",
            AnalyticsError::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }
}

impl ResponseError for AnalyticsError {
    fn status_code(&self) -> StatusCode {
        match self {
            AnalyticsError::Unauthorized => StatusCode::UNAUTHORIZED,
            AnalyticsError::NotFound(_) => StatusCode::NOT_FOUND,
            AnalyticsError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            AnalyticsError::Conflict { .. } => StatusCode::CONFLICT,
            AnalyticsError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AnalyticsError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            AnalyticsError::InvalidRequest { path, message } => {
                ErrorBody::new(self.code(), self.to_string()).with_details(vec![Violation {
                    path: path.clone(),
                    message: message.clone(),
                }])
            }
            AnalyticsError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "analytics dependency unavailable");
                ErrorBody::new(self.code(), self.to_string())
            }
            _ => ErrorBody::new(self.code(), self.to_string()),
        };
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            AnalyticsError::Unavailable(_) => {
                resp.insert_header(("Retry-After", "1"));
            }
            AnalyticsError::MethodNotAllowed { allow, .. } => {
                resp.insert_header(("Allow", allow.as_str()));
            }
            _ => {}
        }
        resp.json(body)
    }
}
