//! Rust client for Farthing's payment API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), farthing_client::Error> {
//! use farthing_client::Client;
//! use serde_json::json;
//! let client = Client::new("http://127.0.0.1:8080", "fk_...");
//! let paid = client
//!     .create_transfer(&json!({"debit_account_id": "1001", "credit_account_id": "2001",
//!                              "amount": "0.0001"}), Some("order-42"))
//!     .await?;
//! println!("paid: transfer {}", paid["id"]);
//! # Ok(()) }
//! ```
//! Answers are JSON values as the API documents them (docs/API.md); failures are
//! [`Error::Api`] with the problem's stable `code`. [`events`] reads the event stream,
//! [`webhook::verify`] checks a webhook's signature, and [`raw`] is one bare keep-alive
//! connection for load generation.

pub mod raw;
pub mod webhook;

use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

/// What can go wrong talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with a problem (RFC 9457).
    #[error("{0}")]
    Api(Box<Problem>),
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// An RFC 9457 problem the API answered with.
#[derive(Debug)]
pub struct Problem {
    pub status: u16,
    /// Stable and machine-readable: `exceeds_credits`, `invalid_field`...
    pub code: String,
    pub detail: String,
    /// The field at fault (a JSON pointer), for validation failures.
    pub field: Option<String>,
    /// The whole problem document.
    pub body: Value,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl Error {
    /// The problem's code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api(p) => Some(&p.code),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(p) => Some(p.status),
            _ => None,
        }
    }
}

/// An answer in full, for callers that need the status or headers.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// A client bound to one server and one API key. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub fn new(base_url: &str, key: &str) -> Self {
        let http =
            reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("reqwest client");
        Self { http, base: base_url.trim_end_matches('/').to_string(), key: key.to_string() }
    }

    /// A client over a `reqwest::Client` built by the caller (its own TLS roots, proxy,
    /// timeouts).
    pub fn with_http(http: reqwest::Client, base_url: &str, key: &str) -> Self {
        Self { http, base: base_url.trim_end_matches('/').to_string(), key: key.to_string() }
    }

    /// The same server with another key.
    pub fn with_key(&self, key: &str) -> Self {
        Self { http: self.http.clone(), base: self.base.clone(), key: key.to_string() }
    }

    /// The API key this client sends.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn answer(response: reqwest::Response) -> Result<Answer, Error> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Answer { status, headers, body })
    }

    fn check(answer: Answer) -> Result<Answer, Error> {
        if answer.status < 400 {
            return Ok(answer);
        }
        Err(Self::refusal(answer))
    }

    /// An answer that is not a success, as an error (a problem if it is one).
    fn refusal(answer: Answer) -> Error {
        let text = |k: &str| answer.body[k].as_str().map(str::to_string);
        Error::Api(Box::new(Problem {
            status: answer.status,
            code: text("code").unwrap_or_else(|| "unknown".into()),
            detail: text("detail").unwrap_or_else(|| answer.body.to_string()),
            field: text("field"),
            body: answer.body,
        }))
    }

    /// POSTs JSON; returns the whole answer, whatever its status.
    pub async fn post_raw(
        &self,
        path: &str,
        body: &impl Serialize,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, Error> {
        let mut request = self.http.post(self.url(path)).bearer_auth(&self.key).json(body);
        if let Some(k) = idempotency_key {
            request = request.header("Idempotency-Key", k);
        }
        Self::answer(request.send().await?).await
    }

    /// GETs; returns the whole answer, whatever its status.
    pub async fn get_raw(&self, path: &str) -> Result<Answer, Error> {
        Self::answer(self.http.get(self.url(path)).bearer_auth(&self.key).send().await?).await
    }

    pub async fn delete_raw(&self, path: &str) -> Result<Answer, Error> {
        Self::answer(self.http.delete(self.url(path)).bearer_auth(&self.key).send().await?).await
    }

    /// POSTs JSON and returns the body of a successful answer.
    pub async fn post(
        &self,
        path: &str,
        body: &impl Serialize,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Error> {
        Ok(Self::check(self.post_raw(path, body, idempotency_key).await?)?.body)
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        Ok(Self::check(self.get_raw(path).await?)?.body)
    }

    /// PUTs JSON and returns the body of a successful answer.
    pub async fn put(&self, path: &str, body: &impl Serialize) -> Result<Value, Error> {
        let request = self.http.put(self.url(path)).bearer_auth(&self.key).json(body);
        Ok(Self::check(Self::answer(request.send().await?).await?)?.body)
    }

    /// GETs a text resource (checkpoints, keys, tlog-proofs).
    pub async fn get_text(&self, path: &str) -> Result<String, Error> {
        let response = self.http.get(self.url(path)).bearer_auth(&self.key).send().await?;
        if !response.status().is_success() {
            return Err(Self::refusal(Self::answer(response).await?));
        }
        Ok(response.text().await?)
    }

    pub async fn create_asset(&self, code: &str, scale: u8) -> Result<Value, Error> {
        self.post("/v1/assets", &serde_json::json!({"code": code, "scale": scale}), None).await
    }

    /// `account`: the JSON of `POST /v1/accounts`.
    pub async fn create_account(&self, account: &Value) -> Result<Value, Error> {
        self.post("/v1/accounts", account, None).await
    }

    pub async fn account(&self, id: &str) -> Result<Value, Error> {
        self.get(&format!("/v1/accounts/{id}")).await
    }

    /// `transfer`: the JSON of `POST /v1/transfers`.
    pub async fn create_transfer(
        &self,
        transfer: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Error> {
        self.post("/v1/transfers", transfer, idempotency_key).await
    }

    /// Up to 8,190 transfers in one request; the answer lists the refused ones.
    pub async fn create_transfers(&self, transfers: &[Value]) -> Result<Value, Error> {
        self.post("/v1/transfers/batch", &serde_json::json!({ "transfers": transfers }), None).await
    }

    pub async fn transfer(&self, id: &str) -> Result<Value, Error> {
        self.get(&format!("/v1/transfers/{id}")).await
    }

    /// The transfer's receipt (JSON form; `farthing verify receipt` checks it offline).
    pub async fn receipt(&self, id: &str) -> Result<Value, Error> {
        self.get(&format!("/v1/transfers/{id}/receipt")).await
    }

    pub async fn checkpoint(&self) -> Result<String, Error> {
        self.get_text("/v1/log/checkpoint").await
    }

    pub async fn log_key(&self) -> Result<String, Error> {
        Ok(self.get_text("/v1/log/key").await?.trim().to_string())
    }

    /// Makes an API key (admin keys only); the answer's `key` is shown only this once.
    pub async fn create_key(&self, key: &Value) -> Result<Value, Error> {
        self.post("/v1/api-keys", key, None).await
    }

    pub async fn create_webhook(&self, url: &str, owner_id: Option<&str>) -> Result<Value, Error> {
        let mut body = serde_json::json!({ "url": url });
        if let Some(o) = owner_id {
            body["owner_id"] = o.into();
        }
        self.post("/v1/webhooks", &body, None).await
    }

    /// The newest page of a webhook's delivery log (its `data`: an array, newest first).
    pub async fn deliveries(&self, webhook_id: &str) -> Result<Value, Error> {
        let mut page = self.get(&format!("/v1/webhooks/{webhook_id}/deliveries")).await?;
        Ok(page["data"].take())
    }

    /// Opens the event stream: from the next commit, or after `last_event_id`.
    pub async fn events(&self, last_event_id: Option<u64>) -> Result<Events, Error> {
        let mut request = self.http.get(self.url("/v1/events")).bearer_auth(&self.key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(Self::refusal(Self::answer(response).await?));
        }
        Ok(Events { stream: Box::pin(response.bytes_stream()), buffer: Vec::new() })
    }
}

/// One server-sent event.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: Option<u64>,
    pub kind: String,
    pub data: Value,
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// The event stream of [`Client::events`].
pub struct Events {
    stream: ByteStream,
    buffer: Vec<u8>,
}

impl Events {
    /// The next event (comments and keep-alives skipped); `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut id, mut kind, mut data) = (None, String::from("message"), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data =
                    serde_json::from_str(&data).map_err(|e| Error::Unexpected(e.to_string()))?;
                return Ok(Some(Event { id, kind, data }));
            }
            match self.stream.next().await {
                Some(chunk) => self.buffer.extend_from_slice(&chunk?),
                None => return Ok(None),
            }
        }
    }

    /// The next event, or `None` if none comes within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        tokio::time::timeout(timeout, self.next()).await.unwrap_or(Ok(None))
    }
}
