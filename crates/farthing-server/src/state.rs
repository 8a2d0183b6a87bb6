//! What every handler shares: the engine, the keys, the server's store, a directory of
//! assets and accounts (immutable facts, cached for authorization and amounts), the event
//! hub and the metrics.

use std::collections::HashMap;
use std::sync::Arc;

use farthing_store::EngineHandle;

use crate::auth::Keys;
use crate::config::Config;
use crate::events::Hub;
use crate::idempotency::Idempotency;
use crate::meta::Meta;
use crate::metrics::Metrics;
use crate::webhooks::Webhooks;

pub use crate::directory::{AccountInfo, AssetInfo, Directory};

#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub engine: EngineHandle,
    pub config: Config,
    pub keys: Keys,
    pub meta: Meta,
    pub directory: Directory,
    pub hub: Arc<Hub>,
    pub idempotency: Idempotency,
    pub metrics: Metrics,
    pub webhooks: Arc<Webhooks>,
    /// The risk engine (None when `risk = false`).
    pub risk: Option<Arc<crate::risk::Risk>>,
    /// Payment channels and streams.
    pub rails: Arc<crate::channels::Rails>,
    /// The transparency log's verifier key, if the log is on.
    pub verifier_key: Option<String>,
    /// Secret of this data directory, for ids derived from idempotency keys.
    pub id_secret: crate::meta::Secret,
    /// Event streams open, per key prefix.
    pub streams: std::sync::Mutex<HashMap<String, usize>>,
    /// Held while an asset is created: ids are allocated one at a time.
    pub asset_lock: tokio::sync::Mutex<()>,
    /// Set once the server begins to stop (streams end, background tasks return).
    pub stop: tokio::sync::watch::Sender<bool>,
}
