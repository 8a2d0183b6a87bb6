//! `Idempotency-Key` on POST requests, with Stripe's semantics: the same key with the same
//! request replays the first answer (status and body, marked `Idempotent-Replayed: true`);
//! the same key with a different request is refused (422); a request still running under
//! the key answers 409. Keys are scoped to the API key that sent them and kept at least
//! `idempotency_ttl_h` hours, across restarts: the record is durable before the answer.
//!
//! What is recorded: answers of requests that ran to a decision — 2xx, and the ledger's
//! refusals (409, 422), and the risk engine's declines (402). Requests refused before they ran (400, 401, 403, 404, 413, 415,
//! 429) and failures (5xx) are not: a retry runs again. Answers that show a secret once
//! (a new API key, a webhook's signing secret) are never stored, nor transient conflicts
//! (a 409 with `Retry-After`, such as `channel_busy`). Requests are compared as
//! JSON (key order and spacing do not matter). Beneath this, the ledger's own ids make a
//! retried transfer safe even without a key.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{hex, now_unix_s, Principal};
use crate::error::ApiError;
use crate::meta::{Meta, Table, Write};
use crate::state::AppState;

/// Longest `Idempotency-Key` accepted.
const KEY_CHARS_MAX: usize = 255;

/// Put on a response that must not be stored for replay (it shows a secret once).
#[derive(Clone, Copy, Debug)]
pub struct NoReplay;

#[derive(Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    status: u16,
    content_type: String,
    body: String,
    created_unix_s: u64,
}

pub struct Idempotency {
    meta: Meta,
    in_flight: Mutex<HashSet<String>>,
    ttl_s: u64,
}

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

impl Idempotency {
    pub fn new(meta: Meta, ttl_h: u64) -> Self {
        Self { meta, in_flight: Mutex::default(), ttl_s: ttl_h * 3_600 }
    }

    /// Deletes records older than the retention; returns how many. The table is walked a
    /// page at a time (never loaded whole), each page's old records deleted in one write.
    pub async fn prune(&self) -> Result<usize, String> {
        const PAGE_ROWS: usize = 4_096;
        let cutoff = now_unix_s().saturating_sub(self.ttl_s);
        let mut from = Vec::new();
        let mut n = 0;
        loop {
            let rows = self.meta.range(Table::Idempotency, &from, PAGE_ROWS)?;
            let Some((last, _)) = rows.last() else { break };
            from = last.clone();
            from.push(0);
            let full = rows.len() == PAGE_ROWS;
            let old: Vec<Write> = rows
                .into_iter()
                .filter(|(_, value)| {
                    serde_json::from_slice::<Record>(value).map_or(0, |r| r.created_unix_s) < cutoff
                })
                .map(|(key, _)| Write::Delete(Table::Idempotency, key))
                .collect();
            n += old.len();
            if !old.is_empty() {
                self.meta.write(old).await?;
            }
            if !full {
                break;
            }
        }
        Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pruning walks the table a page at a time: more records than a page, old and new
    /// interleaved, and exactly the old ones go.
    #[tokio::test]
    async fn pruning_pages_through_the_table_and_keeps_the_young() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("server.redb")).unwrap();
        let idempotency = Idempotency::new(meta.clone(), 24);
        let now = now_unix_s();
        let writes = (0..10_000u32)
            .map(|i| {
                let created_unix_s = if i % 3 == 0 { now - 25 * 3_600 } else { now };
                let record = Record {
                    fingerprint: String::new(),
                    status: 200,
                    content_type: "application/json".into(),
                    body: String::new(),
                    created_unix_s,
                };
                let key = format!("fk_x:{i:05}").into_bytes();
                Write::Put(Table::Idempotency, key, serde_json::to_vec(&record).unwrap())
            })
            .collect();
        meta.write(writes).await.unwrap();
        assert_eq!(idempotency.prune().await.unwrap(), 3_334);
        assert_eq!(meta.scan(Table::Idempotency, b"").unwrap().len(), 6_666);
        assert_eq!(idempotency.prune().await.unwrap(), 0);
        meta.close();
    }
}
