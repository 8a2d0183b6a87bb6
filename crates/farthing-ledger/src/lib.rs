//! Farthing's ledger: a deterministic double-entry state machine over multi-asset accounts.
//!
//! It does no I/O: no files, no clock, no threads. The engine (in `farthing-store`) feeds it
//! batches with the timestamps it assigned and writes them to its log first; replaying the
//! same batches rebuilds the same state, which [`StateMachine::digest`] proves.
//!
//! ```
//! use farthing_ledger::*;
//!
//! let mut ledger = StateMachine::new();
//! ledger.create_assets(&[Asset::new(1, "USD", 6, AssetKind::Fiat)], 1);
//! let account = |id, flags| Account { id, asset: 1, code: 1, flags, ..Default::default() };
//! let wallet = account(10, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
//! let results = ledger.create_accounts(&[account(1, AccountFlags::empty()), wallet], 2);
//! assert!(results.iter().all(|r| r.code == CreateAccountResult::Ok));
//!
//! // $0.000250 for one API call, from an empty wallet: refused.
//! let call = Transfer {
//!     id: 100, debit_account_id: 10, credit_account_id: 1, amount: 250, asset: 1, code: 7,
//!     ..Default::default()
//! };
//! let results = ledger.create_transfers(&[call], 10);
//! assert_eq!(results[0].code, CreateTransferResult::ExceedsCredits);
//! ```

pub mod amount;
pub mod audit;
pub mod codec;
mod index;
pub mod leaf;
pub mod limits;
pub mod query;
pub mod results;
mod snapshot;
mod state;
pub mod types;

pub use query::{AccountFilter, Page, QueryError};
pub use results::{CreateAccountResult, CreateAssetResult, CreateTransferResult, EventResult};
pub use snapshot::SnapshotBuilder;
pub use state::{Counts, StateMachine};
pub use types::{
    Account, AccountFlags, Asset, AssetKind, BalanceAt, Balances, Decision, PendingStatus,
    Transfer, TransferFlags, DECISION_BODY_BYTES,
};
