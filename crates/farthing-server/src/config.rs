//! Server settings: defaults, then a TOML file, then `FARTHING_*` environment variables, then
//! command-line flags (each overriding the one before).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything `farthing serve` can be told. Every bound has its unit in its name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the ledger, its log and the server's own records live.
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: both set means HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The transparency log's origin (its name in checkpoints), used when it is created.
    pub log_origin: Option<String>,
    /// Bytes a request body may hold, for every route but the batch one.
    pub body_bytes_max: usize,
    /// Bytes a batch request body may hold.
    pub batch_body_bytes_max: usize,
    /// Transfers in one batch request (the engine's own bound is 8,190).
    pub batch_transfers_max: usize,
    /// Rows one page may hold.
    pub page_size_max: u32,
    /// Requests per second a key may make when its own limit is not set (0: unlimited).
    pub rate_limit_per_s: u32,
    /// Requests a key may make in a burst above its rate.
    pub rate_limit_burst: u32,
    /// Idempotency keys are kept at least this long.
    pub idempotency_ttl_h: u64,
    /// The first retry of a failed webhook delivery waits this long; each next one doubles.
    pub webhook_retry_base_ms: u64,
    /// ...up to this long.
    pub webhook_retry_max_ms: u64,
    /// Attempts before a delivery is marked failed.
    pub webhook_attempts_max: u32,
    /// How long one delivery attempt may take.
    pub webhook_timeout_ms: u64,
    /// May webhooks go to loopback, private, link-local or other internal addresses?
    /// Unset: only when the server itself listens on a loopback address (a developer's
    /// machine); a server reachable from outside must not be steered at its own network.
    pub webhook_private_addresses: Option<bool>,
    /// Enabled webhooks one owner may have (admin keys' all-events webhooks count as one
    /// owner).
    pub webhooks_per_owner_max: usize,
    /// Finished deliveries (and removed webhooks) are kept this long, then pruned.
    pub webhook_deliveries_retention_s: u64,
    /// SSE keep-alive comment interval.
    pub events_keepalive_s: u64,
    /// Event streams one key may hold open at once.
    pub events_streams_per_key_max: usize,
    /// The engine signs a checkpoint at least this often when the log grew.
    pub checkpoint_interval_ms: u64,
    /// Client connections open at once. When all are taken, the one idle the longest is
    /// closed to make room; only when every one has a request in flight do new ones wait in
    /// the kernel's backlog.
    pub connections_max: usize,
    /// An HTTP/1 request's headers must arrive within this.
    pub http_header_read_timeout_ms: u64,
    /// A connection with no request in flight is closed after this (keep-alive, or a
    /// connection that never completes a request).
    pub http_idle_timeout_ms: u64,
    /// A request body must arrive whole within this: with the body limits, a minimum body
    /// rate (64 KiB in 30 s by default; a 4 MiB batch, 140 KB/s).
    pub http_body_read_timeout_ms: u64,
    /// HTTP/2 connections are pinged this often, and closed when a ping is not answered
    /// within as long.
    pub http2_keep_alive_interval_s: u64,
    /// Streams (requests) one HTTP/2 connection may carry at once.
    pub http2_max_concurrent_streams: u32,
    /// Worker threads of the server's runtime (0: one per core).
    pub worker_threads: usize,
    /// Transfers to allocate memory for at start (the ledger still grows past it).
    pub transfers_capacity: usize,
    pub accounts_capacity: usize,
    /// Judge payments with the risk engine (policies, limits, fraud model) before the
    /// ledger. Off only for measuring what it costs.
    pub risk: bool,
    /// The risk policy file (TOML), reloaded when it changes; unset: the shipped default.
    pub risk_policy: Option<PathBuf>,
    /// How often the policy file (and the model files it names) are checked for changes.
    pub risk_reload_ms: u64,
    /// The features each judged payment was scored on are kept this long (a label — a
    /// chargeback, a confirmed fraud — teaches the model from them), then pruned.
    pub risk_features_retention_days: u64,
    /// The rails' network name, in CAIP-2 form (`farthing:<ledger>`), that paywalls quote.
    pub rails_network: String,
    /// How often channels with new claims are settled on the ledger (one transfer each,
    /// all in one batch), and closing or expired channels finalized.
    pub channel_settle_ms: u64,
    /// A channel's life when its opener does not say, and the longest it may ask for.
    pub channel_expires_in_s: u64,
    pub channel_expires_in_s_max: u64,
    /// The dispute window after a payer closes a channel, when the opener does not say,
    /// and the shortest one may ask for.
    pub channel_dispute_s: u64,
    pub channel_dispute_s_min: u64,
    /// Hash-chain ticks a stream's payee hashes forward over at most (skipped ticks).
    pub stream_ticks_skip_max: u64,
    /// The log on standard error: `text` (for a person) or `json` (one object a line).
    pub log_format: String,
    /// Which log lines to keep, as a `tracing` filter (`info`, `warn,farthing_server=debug`);
    /// `RUST_LOG` overrides it.
    pub log_level: String,
    /// Where `/metrics` is served. Unset: on `listen`, to admin and auditor keys only. Set:
    /// on this address only, without a key (keep it on a private network).
    pub metrics_listen: Option<SocketAddr>,
    /// Origins browser clients may call the API from (`https://shop.example`), or `["*"]`
    /// for any; preflight requests are answered for them. Empty: no CORS headers (only
    /// same-origin pages, and non-browser clients).
    pub cors_allowed_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./farthing-data"),
            listen: "127.0.0.1:8080".parse().expect("address"),
            tls_cert: None,
            tls_key: None,
            log_origin: None,
            body_bytes_max: 64 << 10,
            batch_body_bytes_max: 4 << 20,
            batch_transfers_max: 8_190,
            page_size_max: 1_000,
            rate_limit_per_s: 0,
            rate_limit_burst: 1_000,
            idempotency_ttl_h: 48,
            webhook_retry_base_ms: 1_000,
            webhook_retry_max_ms: 3_600_000,
            webhook_attempts_max: 12,
            webhook_timeout_ms: 10_000,
            webhook_private_addresses: None,
            webhooks_per_owner_max: 16,
            webhook_deliveries_retention_s: 7 * 86_400,
            events_keepalive_s: 15,
            events_streams_per_key_max: 8,
            checkpoint_interval_ms: 1_000,
            connections_max: 10_000,
            http_header_read_timeout_ms: 10_000,
            http_idle_timeout_ms: 60_000,
            http_body_read_timeout_ms: 30_000,
            http2_keep_alive_interval_s: 20,
            http2_max_concurrent_streams: 256,
            worker_threads: 0,
            transfers_capacity: 1_000_000,
            accounts_capacity: 100_000,
            risk: true,
            risk_policy: None,
            risk_reload_ms: 1_000,
            risk_features_retention_days: 180,
            rails_network: "farthing:local".into(),
            channel_settle_ms: 1_000,
            channel_expires_in_s: 86_400,
            channel_expires_in_s_max: 30 * 86_400,
            channel_dispute_s: 3_600,
            channel_dispute_s_min: 60,
            stream_ticks_skip_max: 10_000,
            log_format: "text".into(),
            log_level: "info".into(),
            metrics_listen: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl Config {
    /// Defaults, then `file` (if given, it must exist), then `FARTHING_*` variables
    /// (`FARTHING_LISTEN`, `FARTHING_DATA_DIR`, ...). `FARTHING_ADMIN_KEY` is not a setting:
    /// it is read once, at first start.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(format!("config file {} does not exist", file.display()));
            }
            figment = figment.merge(Toml::file(file));
        }
        let env = Env::prefixed("FARTHING_").ignore(&["ADMIN_KEY"]).only(&Self::FIELDS);
        figment.merge(env).extract().map_err(|e| format!("configuration: {e}"))
    }

    const FIELDS: [&'static str; 46] = [
        "data_dir",
        "listen",
        "tls_cert",
        "tls_key",
        "log_origin",
        "body_bytes_max",
        "batch_body_bytes_max",
        "batch_transfers_max",
        "page_size_max",
        "rate_limit_per_s",
        "rate_limit_burst",
        "idempotency_ttl_h",
        "webhook_retry_base_ms",
        "webhook_retry_max_ms",
        "webhook_attempts_max",
        "webhook_timeout_ms",
        "events_keepalive_s",
        "events_streams_per_key_max",
        "webhook_private_addresses",
        "webhooks_per_owner_max",
        "webhook_deliveries_retention_s",
        "checkpoint_interval_ms",
        "connections_max",
        "http_header_read_timeout_ms",
        "http_idle_timeout_ms",
        "http_body_read_timeout_ms",
        "http2_keep_alive_interval_s",
        "http2_max_concurrent_streams",
        "worker_threads",
        "transfers_capacity",
        "accounts_capacity",
        "risk",
        "risk_policy",
        "risk_reload_ms",
        "risk_features_retention_days",
        "rails_network",
        "channel_settle_ms",
        "channel_expires_in_s",
        "channel_expires_in_s_max",
        "channel_dispute_s",
        "channel_dispute_s_min",
        "stream_ticks_skip_max",
        "log_format",
        "log_level",
        "metrics_listen",
        "cors_allowed_origins",
    ];

    /// Whether webhooks may reach internal addresses (see `webhook_private_addresses`).
    pub fn webhooks_may_reach_private(&self) -> bool {
        self.webhook_private_addresses.unwrap_or_else(|| self.listen.ip().is_loopback())
    }

    /// Refuses settings that cannot work, with the setting's name.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key must be set together".into());
        }
        if self.batch_transfers_max == 0
            || self.batch_transfers_max > farthing_ledger::limits::BATCH_EVENTS_MAX
        {
            return Err(format!(
                "batch_transfers_max must be 1..={}",
                farthing_ledger::limits::BATCH_EVENTS_MAX
            ));
        }
        if self.page_size_max == 0 || self.page_size_max > farthing_ledger::limits::QUERY_LIMIT_MAX
        {
            return Err(format!(
                "page_size_max must be 1..={}",
                farthing_ledger::limits::QUERY_LIMIT_MAX
            ));
        }
        if self.idempotency_ttl_h < 24 {
            return Err("idempotency_ttl_h must be at least 24".into());
        }
        for (name, value) in [
            ("webhook_attempts_max", u64::from(self.webhook_attempts_max)),
            ("webhook_retry_base_ms", self.webhook_retry_base_ms),
            ("webhook_timeout_ms", self.webhook_timeout_ms),
            ("webhooks_per_owner_max", self.webhooks_per_owner_max as u64),
            ("webhook_deliveries_retention_s", self.webhook_deliveries_retention_s),
            ("events_keepalive_s", self.events_keepalive_s),
            ("events_streams_per_key_max", self.events_streams_per_key_max as u64),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
            ("connections_max", self.connections_max as u64),
            ("http_header_read_timeout_ms", self.http_header_read_timeout_ms),
            ("http_idle_timeout_ms", self.http_idle_timeout_ms),
            ("http_body_read_timeout_ms", self.http_body_read_timeout_ms),
            ("http2_keep_alive_interval_s", self.http2_keep_alive_interval_s),
            ("http2_max_concurrent_streams", u64::from(self.http2_max_concurrent_streams)),
            ("risk_reload_ms", self.risk_reload_ms),
            ("risk_features_retention_days", self.risk_features_retention_days),
            ("channel_settle_ms", self.channel_settle_ms),
            ("channel_expires_in_s", self.channel_expires_in_s),
            ("channel_dispute_s_min", self.channel_dispute_s_min),
            ("stream_ticks_skip_max", self.stream_ticks_skip_max),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.channel_expires_in_s > self.channel_expires_in_s_max {
            return Err("channel_expires_in_s must be at most channel_expires_in_s_max".into());
        }
        if self.channel_dispute_s < self.channel_dispute_s_min {
            return Err("channel_dispute_s must be at least channel_dispute_s_min".into());
        }
        let reference = self.rails_network.strip_prefix("farthing:").unwrap_or("");
        if reference.is_empty()
            || reference.len() > 32
            || !reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "rails_network {:?} must be farthing:<name>, the name 1 to 32 letters, digits, - or _ (CAIP-2)",
                self.rails_network
            ));
        }
        if self.log_format != "text" && self.log_format != "json" {
            return Err(format!("log_format {:?} must be text or json", self.log_format));
        }
        for origin in &self.cors_allowed_origins {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && axum::http::HeaderValue::from_str(origin).is_ok());
            if !ok {
                return Err(format!(
                    "cors_allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path) nor \"*\""
                ));
            }
        }
        if self.metrics_listen.is_some_and(|m| m == self.listen) {
            return Err("metrics_listen must differ from listen".into());
        }
        if self.webhook_retry_max_ms < self.webhook_retry_base_ms {
            return Err("webhook_retry_max_ms must be at least webhook_retry_base_ms".into());
        }
        Ok(())
    }
}
