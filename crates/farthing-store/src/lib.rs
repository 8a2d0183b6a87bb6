//! Farthing's durable engine: the imperative shell around the ledger's state machine.
//!
//! One writer thread owns the [`farthing_ledger::StateMachine`]; any number of callers submit
//! batches through an [`EngineHandle`]; waiting requests are merged into one checksummed WAL
//! record per durable write (group commit) and nobody is answered before that record is
//! fsynced. Restart loads the chain of snapshots, then replays the WAL after the newest,
//! deterministically.
//!
//! ```no_run
//! use farthing_store::{Engine, EngineConfig};
//! use farthing_ledger::{Asset, AssetKind};
//!
//! let engine = Engine::open(EngineConfig::new("./farthing-data"))?;
//! let ledger = engine.handle();
//! let results = ledger.create_assets(vec![Asset::new(1, "USD", 6, AssetKind::Fiat)]).unwrap();
//! println!("{:?}", results[0].code);
//! engine.shutdown().unwrap();
//! # Ok::<(), farthing_store::StoreError>(())
//! ```

pub mod audit;
pub mod clock;
pub mod datadir;
mod engine;
mod error;
pub mod tlog;
pub mod wal;

pub use clock::{Clock, SystemClock};
pub use datadir::{recover, DataDir, Recovery};
pub use engine::{CommitListener, Engine, EngineConfig, EngineHandle, EngineStats};
pub use error::{EngineError, StoreError};
pub use tlog::{CheckpointPolicy, Receipt};
