//! Errors as RFC 9457 problem details (`application/problem+json`), each with a stable `code`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use farthing_store::EngineError;
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem: `type` is `/problems/<code>` (see docs/API.md, "Errors").
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable: a ledger result code or one of the API's own.
    pub code: String,
    /// For validation failures: the field concerned (a JSON pointer), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For batch requests: the index of the event concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// For payments the risk engine declined: its decision (score, reasons, top features).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub risk: Option<serde_json::Value>,
}

/// An error answer: status, code and a sentence for a person.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    pub field: Option<String>,
    pub index: Option<usize>,
    pub retry_after_s: Option<u64>,
    pub risk: Option<Box<serde_json::Value>>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            field: None,
            index: None,
            retry_after_s: None,
            risk: None,
        }
    }
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_field", detail);
        e.field = Some(format!("/{field}"));
        e
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("No {what} has this id."))
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("/problems/{}", self.code),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.clone(),
            field: self.field.clone(),
            index: self.index,
            risk: self.risk.as_deref().cloned(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            EngineError::BatchSize { .. } => (StatusCode::BAD_REQUEST, "batch_size"),
            EngineError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
            EngineError::Failed(_) => (StatusCode::SERVICE_UNAVAILABLE, "engine_failed"),
            EngineError::OutcomeUnknown => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            EngineError::ReadPanicked(_) | EngineError::DecisionMismatch => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            EngineError::SnapshotFailed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            EngineError::LogOff => (StatusCode::NOT_FOUND, "log_off"),
            EngineError::Log(_) => (StatusCode::INTERNAL_SERVER_ERROR, "log_failed"),
        };
        let mut error = ApiError::new(status, code, e.to_string());
        if matches!(e, EngineError::Overloaded | EngineError::Stopped) {
            error.retry_after_s = Some(1);
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).expect("problem json");
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
