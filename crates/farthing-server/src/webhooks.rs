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

mod address;
mod delivery;
mod retention;

use std::collections::HashSet;
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

pub use address::{is_internal, is_metadata, Reach, Refusal, Resolve, SystemResolver};
pub use delivery::deliver;
pub use retention::{prune, prune_task};

use crate::api::{page_limit, parse_u128};
use crate::auth::{now_unix_s, Principal, Role};
use crate::error::{ApiError, ApiResult, Problem};
use crate::events::{event_type, read_range};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::meta::{Meta, Table, Write};
use crate::model::{CreateWebhook, CreatedWebhook, Page, TransferView, WebhookView};
use crate::receipt::utc;
use crate::state::AppState;

impl std::fmt::Debug for Webhook {
    /// Everything but the signing secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &"redacted")
            .field("owner_id", &self.owner_id)
            .field("created_by", &self.created_by)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

const CURSOR: &str = "webhook_cursor";
const NEXT_DELIVERY: &str = "webhook_next_delivery";
/// Attempts in flight at once, over every endpoint.
pub(crate) const CONCURRENT_ATTEMPTS: usize = 32;

#[derive(Clone, Serialize, Deserialize)]
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
    /// Position in the order of creation (the list's order and cursor).
    #[serde(default)]
    pub seq: u64,
    /// When it was removed (0 while enabled): it is pruned a retention period later.
    #[serde(default)]
    pub disabled_unix_s: u64,
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
    /// When the event was queued for this endpoint; the record is pruned
    /// `webhook_deliveries_retention_s` later, once finished.
    #[serde(default)]
    pub created_unix_ms: u64,
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

/// Endpoints, and the deliveries being attempted.
pub struct Webhooks {
    /// Which addresses deliveries may reach (config `webhook_private_addresses`).
    reach: Reach,
    /// Every endpoint, enabled or removed, in the order they were made (`seq`).
    hooks: Mutex<Vec<Webhook>>,
    /// Keys of the deliveries being attempted now (at most `CONCURRENT_ATTEMPTS`).
    in_flight: Mutex<HashSet<Vec<u8>>>,
    /// Wakes the delivery loop: a delivery queued, or an attempt finished.
    wake: Notify,
    client: reqwest::Client,
}

impl Webhooks {
    /// Loads the endpoints (not the deliveries: those are read from the store as they fall
    /// due). Names are looked up with `resolver`, and only addresses `reach` allows are
    /// connected to; no proxy is ever used, as one would resolve names past that check.
    pub fn load(
        meta: Meta,
        timeout: Duration,
        reach: Reach,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, String> {
        let mut hooks = Vec::new();
        for (_, v) in meta.scan(Table::Webhooks, b"")? {
            hooks.push(serde_json::from_slice::<Webhook>(&v).map_err(|e| e.to_string())?);
        }
        hooks.sort_by(|a, b| order(a).cmp(&order(b)));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(address::Checked { inner: resolver, reach }))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            reach,
            hooks: Mutex::new(hooks),
            in_flight: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            client,
        })
    }
}

/// The list's order: creation, then id (endpoints stored before `seq` existed are 0).
fn order(h: &Webhook) -> (u64, &str) {
    (h.seq, &h.id)
}

/// Turns committed transfers into deliveries, from the stored position on, as they commit.
pub async fn dispatch(s: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut cursor = match s.meta.counter(CURSOR) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks stopped");
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
                    tracing::warn!(error = %e, "webhook dispatch failed; retrying");
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
                created_unix_ms: now,
                payload,
            };
            writes.push(delivery::put_record(&key, &d));
            writes.push(Write::Put(Table::DeliveryQueue, delivery::entry(now, &key), vec![]));
        }
    }
    writes.push(Write::Put(
        Table::Meta,
        NEXT_DELIVERY.as_bytes().to_vec(),
        seq.to_be_bytes().to_vec(),
    ));
    writes.push(Write::Put(Table::Meta, CURSOR.as_bytes().to_vec(), end.to_be_bytes().to_vec()));
    let queued = writes.len() > 2;
    s.meta.write(writes).await?;
    if queued {
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

// ----- the API -----

fn random_token(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|_| rand::random::<u8>()).collect()
}

/// May this key see (and remove) this endpoint? Admins see all; an unlimited merchant key,
/// its owner's.
fn may_see(p: &Principal, h: &Webhook) -> bool {
    p.role == Role::Admin
        || p.role == Role::Merchant
            && p.accounts.is_empty()
            && h.owner_id.is_some()
            && h.owner_id == p.owner_id
}

fn visible_hook(s: &AppState, p: &Principal, id: &str) -> ApiResult<Webhook> {
    let hook = s.webhooks.hooks.lock().unwrap().iter().find(|h| h.id == id).cloned();
    hook.filter(|h| may_see(p, h)).ok_or_else(|| ApiError::not_found("webhook"))
}

/// Whose events a new endpoint gets, as the key may ask.
fn owner_for(p: &Principal, asked: Option<&str>) -> ApiResult<Option<u128>> {
    match p.role {
        Role::Admin => asked.map(|o| parse_u128("owner_id", o)).transpose(),
        Role::Merchant if !p.accounts.is_empty() => Err(ApiError::forbidden(
            "This key is limited to some of its owner's accounts; webhooks carry all of \
             the owner's events: register them with an unlimited merchant key.",
        )),
        Role::Merchant => {
            let own = p.owner_id.expect("bound key");
            match asked.map(|o| parse_u128("owner_id", o)).transpose()? {
                Some(o) if o != own => Err(ApiError::forbidden(
                    "A merchant key registers webhooks for its own owner only.",
                )),
                _ => Ok(Some(own)),
            }
        }
        _ => Err(ApiError::forbidden("Only merchant and admin keys register webhooks.")),
    }
}

/// An absolute http(s) URL whose host a webhook may reach (names are checked again where
/// they resolve, at every attempt).
fn endpoint_url(s: &AppState, url: &str) -> ApiResult<reqwest::Url> {
    let url = reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| ApiError::invalid("url", "url must be an absolute http or https URL."))?;
    address::check_host(&url, s.webhooks.reach).map_err(|refused| {
        let hint = match refused {
            Refusal::Metadata(_) => "",
            _ => " (setting webhook_private_addresses)",
        };
        ApiError::invalid("url", format!("url: {refused}{hint}."))
    })?;
    Ok(url)
}

/// Lists a new endpoint, if its owner has room. Its first event is read under the lock
/// the dispatcher reads the list and the range under: no event falls between the two.
fn register(s: &AppState, hook: &mut Webhook) -> ApiResult<()> {
    let max = s.config.webhooks_per_owner_max;
    let mut hooks = s.webhooks.hooks.lock().unwrap();
    let owned = hooks.iter().filter(|h| h.enabled && h.owner_id == hook.owner_id).count();
    if owned >= max {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!(
                "This owner has {owned} webhooks, the most it may have \
                 (webhooks_per_owner_max): remove one first."
            ),
        ));
    }
    hook.seq = hooks.last().map_or(1, |h| h.seq + 1);
    hook.from_event = s.hub.committed();
    hooks.push(hook.clone());
    Ok(())
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
    let owner_id = owner_for(&p, req.owner_id.as_deref())?;
    let url = endpoint_url(&s, &req.url)?;
    let mut hook = Webhook {
        id: format!("wh_{}", crate::auth::hex(&random_token(8))),
        url: url.to_string(),
        secret: format!("whsec_{}", STANDARD.encode(random_token(24))),
        owner_id,
        created_by: p.prefix.clone(),
        description: req.description.unwrap_or_default(),
        created_unix_s: now_unix_s(),
        from_event: 0,
        enabled: true,
        seq: 0,
        disabled_unix_s: 0,
    };
    register(&s, &mut hook)?;
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
    for hook in hooks {
        disable(s, hook).await?;
    }
    Ok(())
}

/// Removes an endpoint: disabled (listed until pruned), its waiting deliveries failed.
async fn disable(s: &AppState, mut hook: Webhook) -> ApiResult<Webhook> {
    hook.enabled = false;
    hook.disabled_unix_s = now_unix_s();
    save(s, &hook).await?;
    cancel_pending(s, &hook.id).await?;
    Ok(hook)
}

fn storage(e: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e)
}

/// Stores an endpoint, and lists it in its place.
async fn save(s: &AppState, hook: &Webhook) -> ApiResult<()> {
    let value = serde_json::to_vec(hook).expect("json");
    s.meta
        .write(vec![Write::Put(Table::Webhooks, hook.id.as_bytes().to_vec(), value)])
        .await
        .map_err(storage)?;
    let mut hooks = s.webhooks.hooks.lock().unwrap();
    match hooks.iter_mut().find(|h| h.id == hook.id) {
        Some(listed) => *listed = hook.clone(),
        None => hooks.push(hook.clone()),
    }
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListWebhooks {
    /// Rows per page (default 100, at most the server's page_size_max).
    pub limit: Option<u32>,
    /// From a previous page's next_cursor.
    pub cursor: Option<String>,
}

/// A cursor names the last endpoint of a page: `<seq>_<id>` (opaque to clients).
fn cursor_of(h: &Webhook) -> String {
    format!("{}_{}", h.seq, h.id)
}

fn parse_cursor(c: &str) -> ApiResult<(u64, String)> {
    c.split_once('_')
        .and_then(|(seq, id)| Some((seq.parse().ok()?, id.to_string())))
        .filter(|(_, id)| id.starts_with("wh_"))
        .ok_or_else(|| ApiError::invalid("cursor", "cursor is not one this list gave."))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(ListWebhooks),
    responses((status = 200, body = Page<WebhookView>)), security(("bearer" = [])))]
pub async fn list_webhooks(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<ListWebhooks>,
) -> ApiResult<Json<Page<WebhookView>>> {
    if !matches!(p.role, Role::Admin | Role::Merchant) {
        return Err(ApiError::forbidden("Only merchant and admin keys have webhooks."));
    }
    let limit = page_limit(&s, q.limit)? as usize;
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let hooks = s.webhooks.hooks.lock().unwrap();
    // In creation order, after the cursor's endpoint (whether or not it is still listed).
    let mut page: Vec<&Webhook> = hooks
        .iter()
        .filter(|h| after.as_ref().is_none_or(|(seq, id)| order(h) > (*seq, id.as_str())))
        .filter(|h| may_see(&p, h))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = more.then(|| cursor_of(page[limit - 1]));
    Ok(Json(Page { data: page.into_iter().map(Webhook::view).collect(), next_cursor }))
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
    let hook = visible_hook(&s, &p, &id)?;
    Ok(Json(disable(&s, hook).await?.view()))
}

/// Records read from the store at a time when a removed endpoint's deliveries are failed.
const CANCEL_BATCH_MAX: usize = 1_000;

/// Marks a removed endpoint's waiting deliveries failed at once (rather than at their next
/// attempt, which may be an hour away), a batch at a time.
async fn cancel_pending(s: &AppState, webhook_id: &str) -> ApiResult<()> {
    let prefix = format!("{webhook_id}/").into_bytes();
    let mut start = prefix.clone();
    loop {
        let rows = s.meta.range(Table::Deliveries, &start, CANCEL_BATCH_MAX).map_err(storage)?;
        let last = rows.len() < CANCEL_BATCH_MAX;
        let mut writes = Vec::new();
        for (key, value) in rows.into_iter().take_while(|(k, _)| k.starts_with(&prefix)) {
            start = key.clone();
            start.push(0);
            let Ok(mut d) = serde_json::from_slice::<Delivery>(&value) else { continue };
            if d.state == "pending" {
                let queued = delivery::entry(d.next_attempt_unix_ms, &key);
                d.state = "failed".into();
                d.next_attempt_unix_ms = 0;
                writes.push(delivery::put_record(&key, &d));
                writes.push(Write::Delete(Table::DeliveryQueue, queued));
            }
        }
        if !writes.is_empty() {
            s.meta.write(writes).await.map_err(storage)?;
        }
        if last || !start.starts_with(&prefix) {
            return Ok(());
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Most recent first, at most this many (default 100).
    pub limit: Option<u32>,
    /// From a previous page's next_cursor.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id"), DeliveriesQuery),
    responses((status = 200, body = Page<Delivery>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Page<Delivery>>> {
    let hook = visible_hook(&s, &p, &id)?;
    let limit = match q.limit {
        None => 100.min(s.config.page_size_max),
        Some(_) => page_limit(&s, q.limit)?,
    } as usize;
    let before = q.cursor.as_deref().map(crate::risk_api::parse_row_cursor).transpose()?;
    let prefix = format!("{}/", hook.id);
    let (rows, next) = s
        .meta
        .page_rev(Table::Deliveries, prefix.as_bytes(), before.as_deref(), limit)
        .map_err(storage)?;
    Ok(Json(Page {
        data: rows.iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect(),
        next_cursor: next.as_deref().map(crate::risk_api::row_cursor),
    }))
}

/// Deliveries waiting for an attempt, for `/metrics` (the store keeps the count).
pub fn pending(s: &AppState) -> usize {
    s.meta.row_count(Table::DeliveryQueue).unwrap_or(0) as usize
}
