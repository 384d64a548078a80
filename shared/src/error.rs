//! The contract's one error shape: `{"error": {"code", "message", "details"?}}`.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Violation {
    /// JSON pointer into the offending document.
    #[schema(example = "/userId")]
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The contract code (the table is `sluice_http::ApiError::row`).
    #[schema(example = "invalid_event")]
    pub code: String,
    pub message: String,
    /// Every violation, each with its JSON pointer (invalid events and requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub details: Option<Vec<Violation>>,
}

/// `{"error": {"code", "message", "details"?}}`: the one error shape of every service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error shape of the SDK intakes (Segment, PostHog): the contract's `error` object, and its
/// `code` and `message` again at the top, where some SDKs read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SdkErrorBody {
    pub error: ErrorDetail,
    pub code: String,
    pub message: String,
}

impl From<ErrorBody> for SdkErrorBody {
    fn from(body: ErrorBody) -> Self {
        Self {
            code: body.error.code.clone(),
            message: body.error.message.clone(),
            error: body.error,
        }
    }
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                details: None,
            },
        }
    }

    pub fn with_details(mut self, details: Vec<Violation>) -> Self {
        self.error.details = Some(details);
        self
    }
}
