//! Request bodies: JSON only, unknown fields refused, every failure a problem with a code.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, checked: `Content-Type: application/json`, within the route's size limit,
/// well formed, no unknown fields, the right types (amounts and ids must be strings).
pub struct ApiJson<T>(pub T);

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "The request body is larger than this route accepts (see docs/API.md, Limits).",
            )
        } else {
            ApiError::bad_request("body_unreadable", rejection.body_text())
        }
    })
}

/// Parses a JSON object into `T`, naming the field at fault (a JSON pointer).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body is an object: serde would also fill a struct from an array, in
    // field order, which no client means.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(ApiError::bad_request(
            "invalid_body",
            "The body must be a JSON object: { ... }.",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        use serde_path_to_error::Segment;
        let mut pointer = String::new();
        for segment in e.path().iter() {
            match segment {
                Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                Segment::Map { key } => pointer.push_str(&format!("/{key}")),
                Segment::Enum { variant } => pointer.push_str(&format!("/{variant}")),
                Segment::Unknown => {}
            }
        }
        let inner = e.into_inner();
        // A missing field is named only in the message: point at it.
        let text = inner.to_string();
        if let Some(name) = text.strip_prefix("missing field `").and_then(|t| t.split('`').next()) {
            pointer.push('/');
            pointer.push_str(name);
        }
        let pointer = (!pointer.is_empty()).then_some(pointer);
        use serde_json::error::Category;
        let (code, detail) = match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ("malformed_json", format!("The body is not valid JSON: {inner}."))
            }
            Category::Data => {
                let text = inner.to_string();
                let code = if text.starts_with("unknown field") {
                    "unknown_field"
                } else if text.starts_with("missing field") {
                    "missing_field"
                } else {
                    "invalid_field"
                };
                let hint = if text.contains("invalid type: integer")
                    || text.contains("invalid type: floating point")
                {
                    " Amounts and ids are strings: \"0.25\", not 0.25."
                } else {
                    ""
                };
                (code, format!("{text}.{hint}"))
            }
        };
        let mut error = ApiError::bad_request(code, detail);
        error.field = pointer;
        error
    })?;
    // One JSON document, then at most whitespace: bytes after it are refused, not ignored
    // (a proxy or a client that appends a second document must not be half-read).
    de.end().map_err(|_| {
        ApiError::bad_request(
            "trailing_bytes",
            "The body holds bytes after its JSON document; send one JSON object only.",
        )
    })?;
    Ok(value)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(&req) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send JSON with Content-Type: application/json.",
            ));
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// For routes whose body may be left out (no body, or an empty one, means defaults).
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let declared = req.headers().contains_key(header::CONTENT_TYPE);
        if declared && !is_json(&req) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send JSON with Content-Type: application/json.",
            ));
        }
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !declared {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send JSON with Content-Type: application/json.",
            ));
        }
        parse_json(&bytes).map(|v| Some(ApiJson(v)))
    }
}

/// Query parameters, checked like bodies: unknown or malformed parameters are problems.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query).map(ApiQuery).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("The query string is not valid: {e}."))
        })
    }
}

/// Path parameters: a malformed one (not UTF-8, say) is a problem, not plain text.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_path",
                    format!("The path is not valid: {}.", e.body_text()),
                )
            })
    }
}
