//! Webhooks: endpoints registered per merchant receive each event that concerns them as a
//! POST signed per the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).
//!
//! Events come from the commit path (the hub's count of durable transfers wakes the
//! dispatcher; nothing polls). The dispatcher turns each event into a delivery per matching
//! endpoint and stores those deliveries, with its position in the feed, in one durable
//! transaction; so after a restart it resumes where it stopped, and no event is delivered
//! twice by the dispatcher or lost. Deliveries are retried with exponential backoff until
//! the endpoint answers 2xx or the attempts run out; every attempt is in the delivery log.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use farthing_ledger::Transfer;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Notify;
use utoipa::{IntoParams, ToSchema};

use crate::api::{page_limit, parse_u128};
use crate::auth::{now_unix_s, Principal, Role};
use crate::error::{ApiError, ApiResult, Problem};
use crate::events::{event_type, read_range};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::meta::{Meta, Table, Write};
use crate::model::{CreateWebhook, CreatedWebhook, TransferView, WebhookView};
use crate::receipt::utc;
use crate::state::AppState;

const CURSOR: &str = "webhook_cursor";
const NEXT_DELIVERY: &str = "webhook_next_delivery";
/// Attempts in flight at once, over every endpoint.
const CONCURRENT_ATTEMPTS: usize = 32;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub owner_id: Option<u128>,
    pub created_by: String,
    pub description: String,
    pub created_unix_s: u64,
    pub from_event: u64,
    pub enabled: bool,
}

impl Webhook {
    fn view(&self) -> WebhookView {
        WebhookView {
            id: self.id.clone(),
            url: self.url.clone(),
            owner_id: self.owner_id.map(|o| o.to_string()),
            description: self.description.clone(),
            created_at: utc(self.created_unix_s * 1_000_000_000),
            from_event: self.from_event.to_string(),
            enabled: self.enabled,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub at: String,
    /// The endpoint's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub took_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    /// The event's id (`webhook-id` header): `evt_<commit position>`.
    pub event_id: String,
    pub event_type: String,
    /// pending, succeeded or failed (attempts ran out).
    pub state: String,
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (pending deliveries; 0 once done).
    pub next_attempt_unix_ms: u64,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn delivery_key(webhook_id: &str, seq: u64) -> Vec<u8> {
    let mut k = format!("{webhook_id}/").into_bytes();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The Standard Webhooks signature header value for a message. `secret` is `whsec_` and
/// base64 (as the server makes them); anything else is refused rather than used as an
/// empty key.
pub fn sign(secret: &str, id: &str, timestamp_s: u64, body: &str) -> Result<String, String> {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| "a webhook secret is whsec_ followed by base64".to_string())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp_s}.{body}").as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// Addresses a webhook must not reach from a server others can reach: loopback, private,
/// link-local (cloud metadata), carrier-grade NAT, multicast, unspecified, documentation.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || o[0] == 100 && o[1] & 0xc0 == 64
                || o[0] == 192 && o[1] == 0 && o[2] == 0
                || o[0] == 198 && o[1] & 0xfe == 18
                || o[0] >= 240
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            let seg = a.segments();
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80
                || first & 0xffc0 == 0xfec0
                || a.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
                // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4
                // (2002::/16) addresses carry an IPv4 address that may be internal.
                || seg[..6] == [0; 6] && is_internal(IpAddr::V4(embedded(seg[6], seg[7])))
                || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_internal(IpAddr::V4(embedded(seg[6], seg[7])))
                || seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1
                || first == 0x2002 && is_internal(IpAddr::V4(embedded(seg[1], seg[2])))
        }
    }
}

/// A resolver that drops internal addresses, so a name cannot be pointed (or re-pointed,
/// after registration) at the server's own network.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let public: Vec<std::net::SocketAddr> =
                found.filter(|a| !is_internal(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{} resolves to internal addresses only: refused",
                    name.as_str()
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Link-local addresses (cloud metadata services live there): refused even where other
/// internal addresses are allowed.
fn link_local(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_link_local(),
        Some(url::Host::Ipv6(a)) => {
            a.segments()[0] & 0xffc0 == 0xfe80
                || a.to_ipv4_mapped().is_some_and(|v| v.is_link_local())
        }
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("metadata.google.internal"),
        None => true,
    }
}

/// Is the URL's host an internal address written out (names are checked when resolved)?
fn internal_literal(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => is_internal(a.into()),
        Some(url::Host::Ipv6(a)) => is_internal(a.into()),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost")
        }
        None => true,
    }
}

/// Endpoints, and the queue of deliveries waiting for their next attempt.
pub struct Webhooks {
    /// May deliveries go to internal addresses (config `webhook_private_addresses`)?
    private: bool,
    hooks: Mutex<Vec<Webhook>>,
    /// (due unix ms, delivery key) of every pending delivery.
    queue: Mutex<BTreeSet<(u64, Vec<u8>)>>,
    wake: Notify,
    client: reqwest::Client,
}

impl Webhooks {
    pub fn load(meta: Meta, timeout: Duration, private: bool) -> Result<Self, String> {
        let mut hooks = Vec::new();
        for (_, v) in meta.scan(Table::Webhooks, b"")? {
            hooks.push(serde_json::from_slice::<Webhook>(&v).map_err(|e| e.to_string())?);
        }
        hooks.sort_by(|a, b| (a.created_unix_s, &a.id).cmp(&(b.created_unix_s, &b.id)));
        let mut queue = BTreeSet::new();
        for (k, v) in meta.scan(Table::Deliveries, b"")? {
            let d: Delivery = serde_json::from_slice(&v).map_err(|e| e.to_string())?;
            if d.state == "pending" {
                queue.insert((d.next_attempt_unix_ms, k));
            }
        }
        let mut client =
            reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none());
        if !private {
            client = client.dns_resolver(Arc::new(PublicOnly));
        }
        let client = client.build().map_err(|e| e.to_string())?;
        Ok(Self {
            private,
            hooks: Mutex::new(hooks),
            queue: Mutex::new(queue),
            wake: Notify::new(),
            client,
        })
    }
}

/// Turns committed transfers into deliveries, from the stored position on, as they commit.
pub async fn dispatch(s: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut cursor = match s.meta.counter(CURSOR) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("farthing: webhooks stopped: {e}");
            return;
        }
    };
    let mut committed = s.hub.watch();
    loop {
        // The hooks and the end of the range are read together, under the hooks' lock: a
        // hook registered after this sees only events from its `from_event`, which is at
        // least `end` (see `create_webhook`).
        let (end, hooks) = {
            let all = s.webhooks.hooks.lock().unwrap();
            let live = |h: &&Webhook| h.enabled && !s.keys.revoked_merchant(&h.created_by);
            let hooks: Vec<Webhook> = all.iter().filter(live).cloned().collect();
            (s.hub.committed(), hooks)
        };
        if cursor < end {
            match dispatch_range(&s, &hooks, cursor, end).await {
                Ok(next) => cursor = next,
                Err(e) => {
                    eprintln!("farthing: webhook dispatch: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        }
        tokio::select! {
            r = committed.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

async fn dispatch_range(
    s: &AppState,
    hooks: &[Webhook],
    from: u64,
    to: u64,
) -> Result<u64, String> {
    let batch = read_range(&s.engine, from, to).await.map_err(|e| e.to_string())?;
    let end = batch.first + batch.transfers.len() as u64;
    let mut seq = s.meta.counter(NEXT_DELIVERY)?;
    let mut writes = Vec::new();
    let mut queued = Vec::new();
    let now = now_ms();
    for (i, t) in batch.transfers.iter().enumerate() {
        let index = batch.first + i as u64;
        for hook in hooks.iter().filter(|h| index >= h.from_event && concerns(s, h, t)) {
            let view = transfer_view(s, t);
            let payload = serde_json::json!({
                "type": event_type(t),
                "timestamp": utc(t.timestamp),
                "data": view,
            });
            seq += 1;
            let key = delivery_key(&hook.id, seq);
            let d = Delivery {
                id: seq.to_string(),
                webhook_id: hook.id.clone(),
                event_id: format!("evt_{index}"),
                event_type: event_type(t).to_string(),
                state: "pending".into(),
                attempts: Vec::new(),
                next_attempt_unix_ms: now,
                payload,
            };
            writes.push(Write::Put(
                Table::Deliveries,
                key.clone(),
                serde_json::to_vec(&d).expect("json"),
            ));
            queued.push((now, key));
        }
    }
    writes.push(Write::Put(
        Table::Meta,
        NEXT_DELIVERY.as_bytes().to_vec(),
        seq.to_be_bytes().to_vec(),
    ));
    writes.push(Write::Put(Table::Meta, CURSOR.as_bytes().to_vec(), end.to_be_bytes().to_vec()));
    s.meta.write(writes).await?;
    if !queued.is_empty() {
        s.webhooks.queue.lock().unwrap().extend(queued);
        s.webhooks.wake.notify_one();
    }
    Ok(end)
}

fn concerns(s: &AppState, hook: &Webhook, t: &Transfer) -> bool {
    let Some(owner) = hook.owner_id else { return true };
    let [d, c] = s.directory.accounts([t.debit_account_id, t.credit_account_id]);
    d.is_some_and(|i| i.owner == owner) || c.is_some_and(|i| i.owner == owner)
}

fn transfer_view(s: &AppState, t: &Transfer) -> TransferView {
    let (code, scale) = s.directory.asset_text(t.asset);
    TransferView::new(t, &code, scale, None)
}

/// Attempts deliveries as they fall due, a bounded number at a time.
pub async fn deliver(s: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ATTEMPTS));
    loop {
        let now = now_ms();
        let (due, next_due) = {
            let mut q = s.webhooks.queue.lock().unwrap();
            let mut due = Vec::new();
            while let Some(first) = q.first() {
                if first.0 > now || due.len() >= CONCURRENT_ATTEMPTS {
                    break;
                }
                due.push(q.pop_first().expect("first").1);
            }
            (due, q.first().map(|f| f.0))
        };
        for key in due {
            let permit = permits.clone().acquire_owned().await.expect("semaphore");
            let s = s.clone();
            tokio::spawn(async move {
                attempt(&s, key).await;
                drop(permit);
            });
        }
        let wait = next_due.map_or(Duration::from_secs(3_600), |t| {
            Duration::from_millis(t.saturating_sub(now_ms()))
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = s.webhooks.wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Marks a delivery failed for good, with the reason as its last attempt.
async fn give_up(s: &AppState, key: Vec<u8>, mut d: Delivery, reason: &str) {
    d.state = "failed".into();
    d.next_attempt_unix_ms = 0;
    d.attempts.push(Attempt {
        at: utc(now_ms() * 1_000_000),
        status: None,
        error: Some(reason.into()),
        took_ms: 0,
    });
    let _ = s
        .meta
        .write(vec![Write::Put(Table::Deliveries, key, serde_json::to_vec(&d).expect("json"))])
        .await;
}

async fn attempt(s: &AppState, key: Vec<u8>) {
    let Ok(Some(raw)) = s.meta.get(Table::Deliveries, &key) else { return };
    let Ok(mut d) = serde_json::from_slice::<Delivery>(&raw) else { return };
    let hook = s.webhooks.hooks.lock().unwrap().iter().find(|h| h.id == d.webhook_id).cloned();
    let Some(hook) = hook.filter(|h| h.enabled && !s.keys.revoked_merchant(&h.created_by)) else {
        return give_up(s, key, d, "the endpoint was removed").await;
    };
    let refused = |u: &reqwest::Url| link_local(u) || !s.webhooks.private && internal_literal(u);
    if reqwest::Url::parse(&hook.url).map_or(true, |u| refused(&u)) {
        return give_up(s, key, d, "the endpoint's address is internal: refused").await;
    }
    let body = serde_json::to_string(&d.payload).expect("json");
    let ts = now_unix_s();
    let started = std::time::Instant::now();
    let result = s
        .webhooks
        .client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("user-agent", "farthing-webhooks/1")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(&hook.secret, &d.event_id, ts, &body).unwrap_or_default())
        .body(body)
        .send()
        .await;
    let took_ms = started.elapsed().as_millis() as u64;
    let (status, error) = match result {
        Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
        Ok(r) => (Some(r.status().as_u16()), Some(format!("the endpoint answered {}", r.status()))),
        Err(e) => (None, Some(error_chain(&e))),
    };
    d.attempts.push(Attempt {
        at: utc(now_ms() * 1_000_000),
        status,
        error: error.clone(),
        took_ms,
    });
    let cfg = &s.config;
    if error.is_none() {
        d.state = "succeeded".into();
        d.next_attempt_unix_ms = 0;
        s.metrics.webhook_deliveries_ok.fetch_add(1, Ordering::Relaxed);
    } else if d.attempts.len() as u32 >= cfg.webhook_attempts_max {
        d.state = "failed".into();
        d.next_attempt_unix_ms = 0;
        s.metrics.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
        s.metrics.webhook_deliveries_failed.fetch_add(1, Ordering::Relaxed);
    } else {
        s.metrics.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
        let exp = (d.attempts.len() as u32 - 1).min(30);
        let backoff =
            cfg.webhook_retry_base_ms.saturating_mul(1 << exp).min(cfg.webhook_retry_max_ms);
        d.next_attempt_unix_ms = now_ms() + backoff;
    }
    let pending = d.state == "pending";
    let due = d.next_attempt_unix_ms;
    if let Err(e) = s
        .meta
        .write(vec![Write::Put(
            Table::Deliveries,
            key.clone(),
            serde_json::to_vec(&d).expect("json"),
        )])
        .await
    {
        eprintln!("farthing: webhook delivery record not saved: {e}");
    }
    if pending {
        s.webhooks.queue.lock().unwrap().insert((due, key));
        s.webhooks.wake.notify_one();
    }
}

/// An error and its causes ("error sending request: ... : Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ----- the API -----

fn random_token(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|_| rand::random::<u8>()).collect()
}

fn visible_hook(s: &AppState, p: &Principal, id: &str) -> ApiResult<Webhook> {
    let hook = s.webhooks.hooks.lock().unwrap().iter().find(|h| h.id == id).cloned();
    match hook {
        Some(h)
            if p.role == Role::Admin
                || p.role == Role::Merchant
                    && p.accounts.is_empty()
                    && h.owner_id.is_some()
                    && h.owner_id == p.owner_id =>
        {
            Ok(h)
        }
        _ => Err(ApiError::not_found("webhook")),
    }
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a repeated request (answers that show a secret once are not stored)")),
    responses((status = 201, body = CreatedWebhook), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_webhook(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> ApiResult<axum::response::Response> {
    let owner_id = match p.role {
        Role::Admin => req.owner_id.as_deref().map(|o| parse_u128("owner_id", o)).transpose()?,
        Role::Merchant if !p.accounts.is_empty() => {
            return Err(ApiError::forbidden(
                "This key is limited to some of its owner's accounts; webhooks carry all of \
                 the owner's events: register them with an unlimited merchant key.",
            ))
        }
        Role::Merchant => {
            let own = p.owner_id.expect("bound key");
            if let Some(o) = req.owner_id.as_deref() {
                if parse_u128("owner_id", o)? != own {
                    return Err(ApiError::forbidden(
                        "A merchant key registers webhooks for its own owner only.",
                    ));
                }
            }
            Some(own)
        }
        _ => return Err(ApiError::forbidden("Only merchant and admin keys register webhooks.")),
    };
    let url = reqwest::Url::parse(&req.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| ApiError::invalid("url", "url must be an absolute http or https URL."))?;
    if link_local(&url) || !s.webhooks.private && internal_literal(&url) {
        return Err(ApiError::invalid(
            "url",
            "url points at an internal address (loopback, private, link-local): refused on a \
             server that listens beyond loopback (setting webhook_private_addresses).",
        ));
    }
    let id = format!("wh_{}", crate::auth::hex(&random_token(8)));
    let mut hook = Webhook {
        id: id.clone(),
        url: url.to_string(),
        secret: format!("whsec_{}", STANDARD.encode(random_token(24))),
        owner_id,
        created_by: p.prefix.clone(),
        description: req.description.unwrap_or_default(),
        created_unix_s: now_unix_s(),
        from_event: 0,
        enabled: true,
    };
    // Listed before it is stored, with its first event read under the same lock as the
    // dispatcher reads the list and the range: no event falls between the two.
    {
        let mut hooks = s.webhooks.hooks.lock().unwrap();
        hook.from_event = s.hub.committed();
        hooks.push(hook.clone());
    }
    if let Err(e) = save(&s, &hook).await {
        s.webhooks.hooks.lock().unwrap().retain(|h| h.id != hook.id);
        return Err(e);
    }
    let created = CreatedWebhook { secret: hook.secret.clone(), webhook: hook.view() };
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    // The secret is shown once: an idempotent replay must not show it again.
    response.extensions_mut().insert(crate::idempotency::NoReplay);
    Ok(response)
}

/// Disables every webhook a revoked merchant key registered (an admin's registrations
/// belong to the owners they were made for, and outlive the admin's key).
pub async fn disable_created_by(s: &AppState, prefix: &str) -> ApiResult<()> {
    let hooks: Vec<Webhook> = s
        .webhooks
        .hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.created_by == prefix && h.enabled)
        .cloned()
        .collect();
    for mut hook in hooks {
        hook.enabled = false;
        save(s, &hook).await?;
        cancel_pending(s, &hook.id).await?;
    }
    Ok(())
}

async fn save(s: &AppState, hook: &Webhook) -> ApiResult<()> {
    s.meta
        .write(vec![Write::Put(
            Table::Webhooks,
            hook.id.as_bytes().to_vec(),
            serde_json::to_vec(hook).expect("json"),
        )])
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e))?;
    let mut hooks = s.webhooks.hooks.lock().unwrap();
    hooks.retain(|h| h.id != hook.id);
    hooks.push(hook.clone());
    Ok(())
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<WebhookView>)), security(("bearer" = [])))]
pub async fn list_webhooks(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
) -> ApiResult<Json<Vec<WebhookView>>> {
    if !matches!(p.role, Role::Admin | Role::Merchant) {
        return Err(ApiError::forbidden("Only merchant and admin keys have webhooks."));
    }
    let hooks = s.webhooks.hooks.lock().unwrap().clone();
    Ok(Json(
        hooks.iter().filter(|h| visible_hook(&s, &p, &h.id).is_ok()).map(Webhook::view).collect(),
    ))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete_webhook(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookView>> {
    let mut hook = visible_hook(&s, &p, &id)?;
    hook.enabled = false;
    save(&s, &hook).await?;
    cancel_pending(&s, &hook.id).await?;
    Ok(Json(hook.view()))
}

/// Marks a removed endpoint's waiting deliveries failed at once (rather than at their next
/// attempt, which may be an hour away).
async fn cancel_pending(s: &AppState, webhook_id: &str) -> ApiResult<()> {
    let storage = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e);
    let prefix = format!("{webhook_id}/");
    s.webhooks.queue.lock().unwrap().retain(|(_, k)| !k.starts_with(prefix.as_bytes()));
    let mut writes = Vec::new();
    for (key, value) in s.meta.scan(Table::Deliveries, prefix.as_bytes()).map_err(storage)? {
        let Ok(mut d) = serde_json::from_slice::<Delivery>(&value) else { continue };
        if d.state == "pending" {
            d.state = "failed".into();
            d.next_attempt_unix_ms = 0;
            writes.push(Write::Put(Table::Deliveries, key, serde_json::to_vec(&d).expect("json")));
        }
    }
    if !writes.is_empty() {
        s.meta.write(writes).await.map_err(storage)?;
    }
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Most recent first, at most this many (default 100).
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), DeliveriesQuery),
    responses((status = 200, body = Vec<Delivery>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Vec<Delivery>>> {
    let hook = visible_hook(&s, &p, &id)?;
    let limit = page_limit(&s, q.limit)? as usize;
    let rows = s
        .meta
        .scan_rev(Table::Deliveries, format!("{}/", hook.id).as_bytes(), limit)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e))?;
    Ok(Json(rows.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect()))
}

/// Pending deliveries by endpoint, for `/metrics`.
pub fn pending(s: &AppState) -> usize {
    s.webhooks.queue.lock().unwrap().len()
}
