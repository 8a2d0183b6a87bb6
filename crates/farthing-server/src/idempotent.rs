//! The `Idempotency-Key` middleware over the store of kept answers (`idempotency.rs`, whose
//! documentation gives the semantics): claims the key, replays or refuses, runs the
//! request with ids derived from the key, and keeps a decided answer durably before it is
//! sent.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::{hex, now_unix_s, Principal};
use crate::error::ApiError;
use crate::idempotency::{NoReplay, Record};
use crate::meta::{Table, Write};
use crate::state::AppState;

/// Longest `Idempotency-Key` accepted.
const KEY_CHARS_MAX: usize = 255;

/// Removes a key from the in-flight set however the request ends.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.key);
    }
}

/// The answer to a body over its route's limit.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "The request body is larger than this route accepts (see docs/API.md, Limits).",
    )
}

fn replay(record: Record) -> Response {
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let mut response = (status, record.body).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&record.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// On every POST under `/v1`, once the caller is known.
pub async fn layer(s: &AppState, p: &Principal, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(value) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    match run(s, p, value, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(
    s: &AppState,
    p: &Principal,
    value: HeaderValue,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= KEY_CHARS_MAX
                && k.bytes().all(|b| (0x21..0x7f).contains(&b))
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!("An Idempotency-Key is 1 to {KEY_CHARS_MAX} printable ASCII characters."),
            )
        })?;
    let (parts, body) = req.into_parts();
    // The route's own limit, as without a key (checked on the declared length before).
    let bytes = to_bytes(body, crate::body_limit(s, &parts)).await.map_err(|e| {
        // Over the limit is 413; a body that broke off or came too slowly is unreadable.
        let over = std::error::Error::source(&e)
            .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>());
        match over {
            true => too_large(),
            false => ApiError::bad_request("body_unreadable", e.to_string()),
        }
    })?;
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path_and_query().map_or("", |pq| pq.as_str()));
    h.update([0]);
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(doc) => h.update(canonical(&doc).as_bytes()),
        Err(_) => h.update(&bytes),
    }
    let fingerprint = hex(&h.finalize());
    let store_key = format!("{}:{key}", p.prefix);
    // Claim the key before looking: two racing requests cannot both find it free.
    if !s.idempotency.in_flight.lock().unwrap().insert(store_key.clone()) {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still running; retry when it has answered.",
        );
        e.retry_after_s = Some(1);
        return Err(e);
    }
    let _guard = InFlight { set: &s.idempotency.in_flight, key: store_key.clone() };
    let stored = s
        .meta
        .get(Table::Idempotency, store_key.as_bytes())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e))?;
    if let Some(record) = stored.and_then(|v| serde_json::from_slice::<Record>(&v).ok()) {
        if record.fingerprint != fingerprint {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request; use a new key.",
            ));
        }
        s.metrics.idempotent_replays.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(replay(record));
    }
    let mut seed = Sha256::new();
    seed.update(s.id_secret.0);
    seed.update(store_key.as_bytes());
    seed.update([0]);
    seed.update(parts.uri.path().as_bytes());
    let seed = crate::api::IdSeed::new(seed.finalize().into());
    let request = Request::from_parts(parts, Body::from(bytes));
    let response = crate::api::ID_SEED.scope(seed, next.run(request)).await;
    let status = response.status();
    // A conflict that asks to be retried (`Retry-After`: `channel_busy`) is transient, not
    // a decision: kept, it would answer every retry with the same refusal.
    let transient = response.headers().contains_key(header::RETRY_AFTER);
    let decided = !transient
        && (status.is_success()
            || status == StatusCode::PAYMENT_REQUIRED
            || status == StatusCode::CONFLICT
            || status == StatusCode::UNPROCESSABLE_ENTITY);
    if !decided || response.extensions().get::<NoReplay>().is_some() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let record = Record {
        fingerprint,
        status: status.as_u16(),
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
        created_unix_s: now_unix_s(),
    };
    let value = serde_json::to_vec(&record).expect("json");
    // Durable before the answer: a retry after a crash replays rather than re-runs.
    if let Err(e) =
        s.meta.write(vec![Write::Put(Table::Idempotency, store_key.into_bytes(), value)]).await
    {
        return Err(ApiError::internal(
            "storage",
            "The request ran, but its idempotency record was not saved: look up what it made \
             before retrying with this key.",
            e,
        ));
    }
    parts.headers.insert("idempotent-replayed", HeaderValue::from_static("false"));
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// JSON with object keys sorted, no spacing: two requests that mean the same are equal.
fn canonical(doc: &serde_json::Value) -> String {
    use serde_json::Value;
    match doc {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&map[*k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(","))
        }
        other => other.to_string(),
    }
}
