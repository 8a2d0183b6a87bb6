//! Farthing's payment API server: `farthing serve`.
//!
//! ```text
//!  HTTP/1.1, HTTP/2 (TLS optional) ─> metrics ─> auth ─> idempotency ─> handler ─> engine
//!                                                                               (group commit)
//!  engine WAL thread ── durable transfers ─> event hub ─> SSE readers, webhook dispatcher
//! ```
//! The engine is the ledger (`farthing-store`); this crate adds who may ask (`auth`), what
//! they were told (`idempotency`), and who hears of it (`events`, `stream`, `webhooks`). The
//! server's own records live in `server.redb` beside the ledger (`meta`).

pub mod api;
pub mod auth;
pub mod channels;
pub mod channels_api;
pub mod config;
pub mod conn;
pub mod directory;
pub mod error;
pub mod events;
pub mod extract;
pub mod idempotency;
pub mod idempotent;
pub mod meta;
pub mod metrics;
pub mod model;
pub mod receipt;
pub mod risk;
pub mod risk_api;
pub mod state;
pub mod stream;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use farthing_store::{Engine, EngineConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::Config;
use error::ApiError;
use state::{AppState, Directory, Shared};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Farthing API",
        description = "Payments, accounts and receipts over Farthing's ledger. Amounts and ids \
                       are strings; errors are RFC 9457 problem details with a stable `code`. \
                       Guide: docs/API.md.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(error::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

impl Shared {
    /// Fires (true) when the server begins to stop.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// The router and the OpenAPI document, built from the same list of handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let authed = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::create_asset, api::list_assets))
        .routes(routes!(api::get_asset))
        .routes(routes!(api::create_account, api::list_accounts))
        .routes(routes!(api::get_account))
        .routes(routes!(api::account_transfers))
        .routes(routes!(api::account_balances))
        .routes(routes!(api::create_transfer))
        .routes(routes!(api::get_transfer))
        .routes(routes!(api::post_pending))
        .routes(routes!(api::void_pending))
        .routes(routes!(api::get_receipt))
        .routes(routes!(api::get_checkpoint))
        .routes(routes!(api::get_consistency))
        .routes(routes!(api::create_key, api::list_keys))
        .routes(routes!(api::revoke_key))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(stream::events))
        .routes(routes!(risk_api::approve))
        .routes(routes!(risk_api::reject))
        .routes(routes!(risk_api::post_label))
        .routes(routes!(risk_api::get_decision))
        .routes(routes!(risk_api::status))
        .routes(routes!(risk_api::get_policy))
        .routes(routes!(risk_api::policy_versions))
        .routes(routes!(risk_api::audit_trail))
        .routes(routes!(risk_api::get_limits, risk_api::put_limits))
        .routes(routes!(risk_api::put_profiling))
        .routes(routes!(channels_api::open_channel, channels_api::list_channels))
        .routes(routes!(channels_api::get_channel))
        .routes(routes!(channels_api::post_voucher))
        .routes(routes!(channels_api::post_tick))
        .routes(routes!(channels_api::settle_channel))
        .routes(routes!(channels_api::top_up))
        .routes(routes!(channels_api::close_channel))
        .routes(routes!(channels_api::rails_info))
        .layer(DefaultBodyLimit::max(state.config.body_bytes_max));
    let batch = OpenApiRouter::new()
        .routes(routes!(api::create_transfer_batch))
        .routes(routes!(channels_api::post_vouchers))
        .layer(DefaultBodyLimit::max(state.config.batch_body_bytes_max));
    let authed = authed
        .merge(batch)
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let (authed, mut openapi) = authed.split_for_parts();
    let (public, public_doc) =
        OpenApiRouter::new().routes(routes!(api::get_log_key)).split_for_parts();
    openapi.merge(public_doc);
    let doc = Arc::new(openapi.clone());
    let app = Router::new()
        .merge(authed)
        .merge(public)
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics_for_key))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such route.") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This route does not take that method.",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(cors(&state.config))
        .with_state(state);
    (app, openapi)
}

/// CORS for browser clients of `cors_allowed_origins` (none: no CORS headers at all).
/// Preflight requests are answered here, before authentication; API keys travel in the
/// `Authorization` header, never in cookies, so credentials are not allowed.
fn cors(config: &Config) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = &config.cors_allowed_origins;
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = match origins.iter().any(|o| o == "*") {
        true => AllowOrigin::any(),
        false => AllowOrigin::list(
            origins.iter().filter_map(|o| axum::http::HeaderValue::from_str(o).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::LOCATION,
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Routes whose bodies may be as large as `batch_body_bytes_max`.
const BATCH_ROUTES: [&str; 2] = ["/v1/transfers/batch", "/v1/channels/vouchers"];

/// The most bytes the request's route takes in a body.
pub(crate) fn body_limit(s: &AppState, parts: &axum::http::request::Parts) -> usize {
    let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str());
    match route.is_some_and(|r| BATCH_ROUTES.contains(&r)) {
        true => s.config.batch_body_bytes_max,
        false => s.config.body_bytes_max,
    }
}

/// Every `/v1` route but the log's key: the caller's key, then its `Idempotency-Key`.
async fn authenticate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match s.keys.authenticate(req.headers()) {
        Ok(p) => {
            // A body declared over the route's limit is refused before a byte of it is
            // read, with or without an Idempotency-Key (a body without a length is cut off
            // at the limit as it is read).
            let (parts, body) = req.into_parts();
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > body_limit(&s, &parts) as u64) {
                return idempotent::too_large().into_response();
            }
            let mut req = Request::from_parts(parts, body);
            req.extensions_mut().insert(p.clone());
            if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
                return next.run(req).await;
            }
            // A change runs to its end even if the caller hangs up: the ledger, the
            // directory of accounts, the server's records and the idempotency record never
            // disagree because a connection dropped half-way. A transfer without an
            // Idempotency-Key needs no task of its own (the hot path): once queued, the
            // engine commits it whether or not anyone waits, and nothing else is written.
            const TRANSFER_ROUTES: [&str; 4] = [
                "/v1/transfers",
                "/v1/transfers/batch",
                "/v1/transfers/{id}/post",
                "/v1/transfers/{id}/void",
            ];
            let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
            let plain_transfer = route.is_some_and(|r| TRANSFER_ROUTES.contains(&r))
                && req.method() == axum::http::Method::POST
                && !req.headers().contains_key("idempotency-key");
            if plain_transfer {
                return idempotent::layer(&s, &p, req, next).await;
            }
            let run = tokio::spawn(async move { idempotent::layer(&s, &p, req, next).await });
            run.await.unwrap_or_else(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                    .into_response()
            })
        }
        Err(e) => e.into_response(),
    }
}

async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |m| m.as_str());
    s.metrics.observe(&method, route, response.status().as_u16(), started.elapsed());
    response
}

async fn healthz() -> Json<model::Health> {
    Json(model::Health { status: "ok".into(), detail: None })
}

async fn readyz(State(s): State<AppState>) -> Response {
    let probe = tokio::time::timeout(Duration::from_secs(2), s.engine.read_async(|_| ())).await;
    let (status, detail) = match probe {
        _ if *s.stop.borrow() => (StatusCode::SERVICE_UNAVAILABLE, Some("stopping".to_string())),
        Ok(Ok(())) => (StatusCode::OK, None),
        Ok(Err(e)) => {
            // The cause may name paths and storage errors: it goes to the log, not out.
            tracing::error!(error = %e, "readiness probe: the engine did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, Some("the engine is not answering".to_string()))
        }
        Err(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, Some("the engine did not answer in 2 s".into()))
        }
    };
    let status_text = if status == StatusCode::OK { "ready" } else { "unavailable" };
    (status, Json(model::Health { status: status_text.into(), detail })).into_response()
}

/// `/metrics` on the API's address: to admin and auditor keys, and only when no separate
/// `metrics_listen` address is set (then it is there, without a key, and not here).
async fn metrics_for_key(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if s.config.metrics_listen.is_some() {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such route.").into_response();
    }
    match s.keys.authenticate(&headers) {
        Ok(p) if matches!(p.role, auth::Role::Admin | auth::Role::Auditor) => {
            metrics_text(State(s)).await
        }
        Ok(_) => ApiError::forbidden("The metrics are for admin and auditor keys.").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    let stats = s.engine.stats();
    let extra = [
        (
            "process_cpu_seconds_total",
            "CPU seconds used by the server process.",
            metrics::process_cpu_seconds(),
        ),
        ("process_resident_memory_bytes", "Resident memory.", metrics::resident_bytes()),
        (
            "farthing_events_committed",
            "Transfers committed and durable (the event feed's length).",
            s.hub.committed() as f64,
        ),
        (
            "farthing_engine_events_durable_total",
            "Events the engine made durable.",
            stats.events_durable.load(Ordering::Relaxed) as f64,
        ),
        (
            "farthing_engine_records_durable_total",
            "WAL records made durable.",
            stats.records_durable.load(Ordering::Relaxed) as f64,
        ),
        (
            "farthing_engine_syncs_total",
            "WAL fsyncs (group commits).",
            stats.syncs.load(Ordering::Relaxed) as f64,
        ),
        (
            "farthing_engine_wal_bytes_total",
            "WAL bytes written.",
            stats.wal_bytes_written.load(Ordering::Relaxed) as f64,
        ),
        (
            "farthing_webhook_deliveries_pending",
            "Webhook deliveries waiting for an attempt.",
            webhooks::pending(&s) as f64,
        ),
    ];
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(&extra))
        .into_response()
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// `http://...` or `https://...`.
    pub url: String,
    /// The admin key made at this start (first start only): shown once.
    pub new_admin_key: Option<String>,
    pub state: AppState,
    engine: Option<Engine>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

impl Server {
    /// Opens the data directory (creating it, its keys and the first admin key on first
    /// start), and starts serving. `admin_key`: the key to adopt at first start.
    pub async fn start(config: Config, admin_key: Option<String>) -> Result<Self, String> {
        Self::start_with_resolver(config, admin_key, Arc::new(webhooks::SystemResolver)).await
    }

    /// `start`, with webhook endpoints' names looked up by `resolver` (a test's, say).
    pub async fn start_with_resolver(
        config: Config,
        admin_key: Option<String>,
        resolver: Arc<dyn webhooks::Resolve>,
    ) -> Result<Self, String> {
        config.validate()?;
        // The port first: a start that cannot serve creates nothing (and shows no key that
        // would then be lost).
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(at) => Some(
                TcpListener::bind(at)
                    .await
                    .map_err(|e| format!("cannot listen on {at} (metrics_listen): {e}"))?,
            ),
            None => None,
        };
        let mut tasks_early = Vec::new();
        let root = config.data_dir.clone();
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let tls = tls_acceptor(&config)?;
        let hub = events::Hub::new(0);
        let mut engine_config = EngineConfig::new(&root);
        engine_config.log = true;
        engine_config.log_origin = config.log_origin.clone();
        engine_config.checkpoint_interval_ms = config.checkpoint_interval_ms;
        engine_config.on_commit = Some(hub.listener());
        engine_config.transfers_capacity = config.transfers_capacity;
        engine_config.accounts_capacity = config.accounts_capacity;
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let handle = engine.handle();
        let (assets, accounts, committed) = handle
            .read_async(|sm| (sm.assets(), sm.accounts().to_vec(), sm.transfers().len() as u64))
            .await
            .map_err(|e| e.to_string())?;
        hub.start_at(committed);
        let records = root.join("server.redb");
        let used = !assets.is_empty() || !accounts.is_empty() || committed > 0;
        if !records.exists() && used && farthing_store::datadir::holds(&root, "server.redb") {
            return Err(format!(
                "{}: missing beside a ledger that holds {} assets, {} accounts and {} transfers: \
                 starting would make new API keys, webhooks, channel and risk records. Nothing was \
                 changed. Restore it from a backup; or, if the loss is known and accepted, \
                 `farthing recover --data-dir {} --new-server-records` starts them afresh (and \
                 prints a new admin key)",
                records.display(),
                assets.len(),
                accounts.len(),
                committed,
                root.display()
            ));
        }
        let meta = meta::Meta::open(&records)?;
        // From now on its absence beside a used ledger is a loss, not a first start.
        farthing_store::datadir::mark_holds(&root, "server.redb").map_err(|e| e.to_string())?;
        let meta_for_secret = meta.clone();
        let keys =
            auth::Keys::load(meta.clone(), config.rate_limit_per_s, config.rate_limit_burst)?;
        let verifier_key = farthing_store::tlog::verifier_key(&root).ok();
        let webhooks = Arc::new(webhooks::Webhooks::load(
            meta.clone(),
            Duration::from_millis(config.webhook_timeout_ms),
            match config.webhooks_may_reach_private() {
                true => webhooks::Reach::AllowPrivate,
                false => webhooks::Reach::PublicOnly,
            },
            resolver,
        )?);
        let (stop, _) = watch::channel(false);
        let directory = Directory::load(&assets, &accounts);
        let secrets = meta::secrets(&meta_for_secret).await?;
        let risk = match config.risk {
            true => Some(
                risk::Risk::open(
                    meta.clone(),
                    config.risk_policy.clone(),
                    &handle,
                    &directory,
                    secrets.hashing.0,
                )
                .await?,
            ),
            false => None,
        };
        let rails =
            Arc::new(channels::Rails::open(meta.clone(), handle.clone(), secrets.channels).await?);
        let state = AppState(Arc::new(Shared {
            engine: handle,
            idempotency: idempotency::Idempotency::new(meta.clone(), config.idempotency_ttl_h),
            config: config.clone(),
            keys,
            meta,
            directory,
            hub,
            metrics: metrics::Metrics::default(),
            webhooks,
            verifier_key,
            id_secret: secrets.ids,
            risk,
            rails,
            streams: Default::default(),
            asset_lock: Default::default(),
            stop,
        }));
        let mut new_admin_key = None;
        if !state.keys.has_admin() {
            let new = auth::NewKey {
                role: auth::Role::Admin,
                owner_id: None,
                accounts: Vec::new(),
                rate_limit_per_s: 0,
                label: "first admin key".into(),
            };
            let (key, _) = state
                .keys
                .create(new, admin_key.as_deref())
                .await
                .map_err(|e| format!("FARTHING_ADMIN_KEY: {}", e.detail))?;
            new_admin_key = Some(key);
        }
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (app, _) = router(state.clone());
        let limits = conn::Limits {
            connections_max: config.connections_max,
            header_read_timeout: Duration::from_millis(config.http_header_read_timeout_ms),
            idle_timeout: Duration::from_millis(config.http_idle_timeout_ms),
            http2_keep_alive_interval: Duration::from_secs(config.http2_keep_alive_interval_s),
            http2_max_concurrent_streams: config.http2_max_concurrent_streams,
            tls_handshake_timeout: Duration::from_millis(config.http_header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(config.http_body_read_timeout_ms),
        };
        if let Some(listener) = metrics_listener {
            // The metrics' own address: `/metrics` only, no key, the same connection bounds.
            let metrics = Router::new()
                .route("/metrics", axum::routing::get(metrics_text))
                .with_state(state.clone());
            let small = conn::Limits { connections_max: 64, ..limits };
            tasks_early.push(tokio::spawn(conn::serve(
                listener,
                None,
                metrics,
                state.stop_signal(),
                small,
            )));
        }
        let serving = tokio::spawn(conn::serve(listener, tls, app, state.stop_signal(), limits));
        // Every background task is supervised: a panic or an early end is logged and the
        // task restarted (settlement must never stop silently).
        let restarts = state.metrics.task_restarts.clone();
        let sup = |name: &'static str, make: Box<dyn Fn() -> BoxedTask + Send + Sync>| {
            supervise(name, state.stop_signal(), restarts.clone(), make)
        };
        let mut tasks = tasks_early;
        let st = state.clone();
        tasks.push(sup(
            "webhook dispatch",
            Box::new(move || Box::pin(webhooks::dispatch(st.clone(), st.stop_signal()))),
        ));
        let st = state.clone();
        tasks.push(sup(
            "webhook delivery",
            Box::new(move || Box::pin(webhooks::deliver(st.clone(), st.stop_signal()))),
        ));
        let st = state.clone();
        tasks.push(sup(
            "webhook pruning",
            Box::new(move || Box::pin(webhooks::prune_task(st.clone(), st.stop_signal()))),
        ));
        let st = state.clone();
        tasks.push(sup(
            "idempotency pruning",
            Box::new(move || Box::pin(prune(st.clone(), st.stop_signal()))),
        ));
        let st = state.clone();
        let every = Duration::from_millis(config.channel_settle_ms);
        tasks.push(sup(
            "channel settlement",
            Box::new(move || Box::pin(channels::run(st.clone(), every, st.stop_signal()))),
        ));
        if let Some(r) = &state.risk {
            let (st, risk) = (state.clone(), r.clone());
            let every = Duration::from_millis(config.risk_reload_ms);
            tasks.push(sup(
                "risk policy reload",
                Box::new(move || Box::pin(risk::watch(risk.clone(), every, st.stop_signal()))),
            ));
            let (st, risk) = (state.clone(), r.clone());
            let retention = Duration::from_secs(config.risk_features_retention_days * 86_400);
            tasks.push(sup(
                "risk features pruning",
                Box::new(move || {
                    Box::pin(risk::prune_features_task(risk.clone(), retention, st.stop_signal()))
                }),
            ));
        }
        Ok(Self {
            addr,
            url: format!("{scheme}://{addr}"),
            new_admin_key,
            state,
            engine: Some(engine),
            tasks,
            serving: Some(serving),
        })
    }

    /// Stops taking connections, lets requests in flight finish (up to 30 s), ends event
    /// streams, then shuts the engine down (its last checkpoint signed). Nothing
    /// acknowledged is lost: every answer was durable before it was sent.
    pub async fn shutdown(mut self) -> Result<(), String> {
        self.state.stop.send_replace(true);
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.state.meta.close();
        if let Some(engine) = self.engine.take() {
            tokio::task::spawn_blocking(move || engine.shutdown())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Starts the server's records afresh for a data directory whose `server.redb` was lost or
/// damaged (`farthing recover --new-server-records`): the old file, if any, is moved aside
/// to `server.redb.lost-<unix seconds>`, and a new one is made with a new admin key, which
/// is returned to be shown once. API keys, webhooks, channel records and risk records of the
/// old file are gone; the ledger and its log are untouched.
pub async fn start_new_server_records(data_dir: &std::path::Path) -> Result<String, String> {
    let path = data_dir.join("server.redb");
    if !data_dir.join("FORMAT").exists() {
        return Err(format!("{} is not a Farthing data directory", data_dir.display()));
    }
    // The lock: no server may be running on the directory.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(data_dir.join("LOCK"))
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    lock.try_lock().map_err(|_| {
        format!("{} is in use by a running server: stop it first", data_dir.display())
    })?;
    if path.exists() {
        let now = auth::now_unix_s();
        let aside = data_dir.join(format!("server.redb.lost-{now}"));
        std::fs::rename(&path, &aside).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    drop(lock);
    meta::Meta::open(&path)?.close();
    make_admin_key(data_dir, "made by farthing recover").await
}

/// Makes a new admin key for a data directory no server is using (the recovery when every
/// admin key is lost); returns the key, to be shown once.
pub async fn make_admin_key(data_dir: &std::path::Path, label: &str) -> Result<String, String> {
    let path = data_dir.join("server.redb");
    if !path.exists() {
        return Err(format!("{} does not exist: start the server once first", path.display()));
    }
    let meta = meta::Meta::open(&path)
        .map_err(|e| format!("{e} (is a server running on it? stop it first)"))?;
    let keys = auth::Keys::load(meta.clone(), 0, 1)?;
    let new = auth::NewKey {
        role: auth::Role::Admin,
        owner_id: None,
        accounts: Vec::new(),
        rate_limit_per_s: 0,
        label: label.to_string(),
    };
    let made = keys.create(new, None).await.map_err(|e| e.detail);
    meta.close();
    Ok(made?.0)
}

/// A background task's future.
pub type BoxedTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Aborts the task it holds when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the task `make` makes until the server stops. If it panics, or ends while the
/// server runs, the failure is logged (error level, with the task's name), counted in
/// `restarts`, and the task made again after a pause (1 s, doubling to a minute). Aborting
/// the supervisor aborts the task.
pub fn supervise(
    name: &'static str,
    mut stop: watch::Receiver<bool>,
    restarts: Arc<std::sync::atomic::AtomicU64>,
    make: Box<dyn Fn() -> BoxedTask + Send + Sync>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pause = Duration::from_secs(1);
        loop {
            let mut run = AbortOnDrop(tokio::spawn(make()));
            let outcome = (&mut run.0).await;
            if *stop.borrow() {
                return;
            }
            match outcome {
                Ok(()) => tracing::error!(task = name, "background task ended early; restarting"),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let text = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(task = name, panic = %text, "background task panicked; restarting");
                }
                Err(_) => return,
            }
            restarts.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(60));
        }
    })
}

/// Drops idempotency records past their retention, hourly.
async fn prune(s: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = s.idempotency.prune().await {
            tracing::warn!(error = %e, "pruning idempotency records");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3_600)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A task that panics, then one that ends early, are each restarted (and counted); once
    /// the server stops, nothing is restarted.
    #[tokio::test(start_paused = true)]
    async fn a_background_task_that_panics_or_ends_is_restarted() {
        let (stop, signal) = watch::channel(false);
        let restarts = Arc::new(AtomicU64::new(0));
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        let task = supervise(
            "test",
            signal.clone(),
            restarts.clone(),
            Box::new(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let mut stop = signal.clone();
                Box::pin(async move {
                    match n {
                        0 => panic!("settlement broke"),
                        1 => {}
                        _ => {
                            let _ = stop.wait_for(|s| *s).await;
                        }
                    }
                })
            }),
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "made again after the panic and the early end");
        assert_eq!(restarts.load(Ordering::SeqCst), 2);
        stop.send_replace(true);
        task.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "not restarted once stopped");
    }
}

#[cfg(test)]
mod shape {
    /// The offline model tooling (simulator, trainer, evaluator) is not the server's: it
    /// lives in `farthing-risk-lab`, which only the `farthing` command uses.
    #[test]
    fn the_server_does_not_depend_on_the_model_tooling() {
        let manifest = include_str!("../Cargo.toml");
        assert!(
            !manifest.contains("farthing-risk-lab"),
            "farthing-server depends on farthing-risk-lab"
        );
    }
}
