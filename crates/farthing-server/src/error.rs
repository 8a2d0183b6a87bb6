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
    /// A batch's item (a batch holds at most 8,190).
    pub index: Option<u32>,
    pub retry_after_s: Option<u32>,
    pub risk: Option<Box<serde_json::Value>>,
    /// What went wrong inside, for the server's log only (never in the answer).
    pub cause: Option<Box<String>>,
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
            cause: None,
        }
    }

    /// A failure inside the server: the answer says `public`; `cause` goes to the log only.
    pub fn internal(code: &str, public: &str, cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, public);
        e.cause = Some(Box::new(cause.to_string()));
        e
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
        self.index = Some(u32::try_from(index).unwrap_or(u32::MAX));
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
            index: self.index.map(|i| i as usize),
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

/// 5xx codes whose detail is written for the client (no internal text): kept as they are.
const PUBLIC_5XX: [&str; 3] = ["overloaded", "stopping", "outcome_unknown"];

/// What a client is told for a failure inside the server, by code.
fn public_detail(code: &str) -> &'static str {
    match code {
        "storage" => "The server's records could not be read or written.",
        "log_failed" => "The transparency log could not answer.",
        "engine_failed" => "The ledger engine has stopped; the server needs an operator.",
        _ => "An internal error stopped this request.",
    }
}

impl ApiError {
    /// A server failure's internal text leaves the answer for the log, under an id the
    /// answer names (so an operator can find it): problem documents never carry it.
    fn scrubbed(mut self) -> Self {
        if !self.status.is_server_error() || PUBLIC_5XX.contains(&self.code.as_str()) {
            return self;
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let (public, cause) = match self.cause.take() {
            Some(cause) => (self.detail.clone(), *cause),
            None => (public_detail(&self.code).to_string(), self.detail.clone()),
        };
        tracing::error!(error_id = %id, code = %self.code, status = self.status.as_u16(), cause = %cause, "request failed");
        self.detail =
            format!("{} The server's log has the cause under error {id}.", public.trim_end());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let self_ = self.scrubbed();
        let body = serde_json::to_vec(&self_.problem()).expect("problem json");
        let mut response = (self_.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(s) = self_.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self_.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn detail(e: ApiError) -> String {
        let body = axum::body::to_bytes(e.into_response().into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn a_failure_inside_never_shows_its_text() {
        let inside = "/srv/farthing/server.redb: Input/output error (os error 5)";
        let d = detail(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", inside)).await;
        assert!(!d.contains("server.redb") && !d.contains("os error"), "{d}");
        assert!(d.starts_with("The server's records could not") && d.contains("error "), "{d}");
        let e = ApiError::from(EngineError::Failed(inside.into()));
        assert!(!detail(e).await.contains("server.redb"));
        let public = "The request ran, but its idempotency record was not saved.";
        let d = detail(ApiError::internal("storage", public, inside)).await;
        assert!(d.starts_with(public) && !d.contains("os error"), "{d}");
        // Client errors, and 503s written for clients, keep their detail.
        let d = detail(ApiError::bad_request("x", "The field is wrong.")).await;
        assert_eq!(d, "The field is wrong.");
        let d = detail(ApiError::from(EngineError::Overloaded)).await;
        assert!(d.contains("retry"), "{d}");
    }
}
