//! The event feed, fed by the engine's commit path.
//!
//! Every committed transfer is an event whose id is its commit position (its leaf index in
//! the transparency log): ids are dense, ordered, and survive restarts, so a reader can
//! resume from any id by reading the ledger itself. Live readers get batches as the engine's
//! WAL thread makes them durable; a reader that falls behind catches up from the ledger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use farthing_ledger::{Transfer, TransferFlags};
use farthing_store::{CommitListener, EngineError, EngineHandle};
use tokio::sync::{broadcast, watch};

/// A run of committed transfers, the first at commit position `first`.
#[derive(Clone)]
pub struct Batch {
    pub first: u64,
    pub transfers: Arc<[Transfer]>,
}

pub struct Hub {
    committed: AtomicU64,
    live: broadcast::Sender<Batch>,
    count: watch::Sender<u64>,
}

/// Batches a live reader may fall behind by before it reads from the ledger instead
/// (bounds the memory a slow reader pins: batches hold up to 8,190 transfers).
const LIVE_BATCHES_MAX: usize = 64;
/// Transfers read from the ledger at a time when catching up.
pub const CATCH_UP_CHUNK: u64 = 1_024;

impl Hub {
    pub fn new(committed: u64) -> Arc<Self> {
        let (live, _) = broadcast::channel(LIVE_BATCHES_MAX);
        let (count, _) = watch::channel(committed);
        Arc::new(Self { committed: AtomicU64::new(committed), live, count })
    }

    /// The listener to give the engine.
    pub fn listener(self: &Arc<Self>) -> CommitListener {
        let hub = self.clone();
        Arc::new(move |first, transfers| hub.publish(first, transfers))
    }

    fn publish(&self, first: u64, transfers: &[Transfer]) {
        let end = first + transfers.len() as u64;
        // The count first: a reader that subscribes after the check below still sees it,
        // and reads the batch from the ledger.
        self.committed.store(end, Ordering::Release);
        self.count.send_replace(end);
        // Copy only for live readers; the others read the ledger when woken.
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(Batch { first, transfers: transfers.into() });
        }
    }

    /// Sets the count of transfers already committed when the engine opened.
    pub fn start_at(&self, committed: u64) {
        self.committed.store(committed, Ordering::Release);
        self.count.send_replace(committed);
    }

    /// Transfers committed and durable so far.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.live.subscribe()
    }

    /// Wakes when the committed count changes.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.count.subscribe()
    }
}

/// Committed transfers `[from, to)` read from the ledger (at most `CATCH_UP_CHUNK`).
pub async fn read_range(engine: &EngineHandle, from: u64, to: u64) -> Result<Batch, EngineError> {
    let to = to.min(from + CATCH_UP_CHUNK);
    let transfers = engine
        .read_async(move |sm| {
            let all = sm.transfers();
            let end = (to as usize).min(all.len());
            all[(from as usize).min(end)..end].to_vec()
        })
        .await?;
    Ok(Batch { first: from, transfers: transfers.into() })
}

/// The event type of a committed transfer.
pub fn event_type(t: &Transfer) -> &'static str {
    if t.flags.contains(TransferFlags::PENDING) {
        "transfer.pending"
    } else if t.flags.contains(TransferFlags::POST_PENDING) {
        "transfer.posted"
    } else if t.flags.contains(TransferFlags::VOID_PENDING) {
        "transfer.voided"
    } else {
        "transfer.created"
    }
}
