//! Farthing's risk engine core: pure values in, values out — no clock, no I/O. Time is
//! always an argument (engine nanoseconds), so replaying the same payments gives the same
//! features and the same decisions.
//!
//! - [`features`]: a payment's real-time features (sliding windows per payer, payee,
//!   device and IP; amount against the payer's history; first payment to a payee; account
//!   age; young-payer fan-in; in-to-out flows; shared devices), in bounded memory;
//! - [`window`]: counts and sums over sliding windows (1 min, 1 h, 24 h) in fixed memory
//!   per key, and bounded tables of per-key state;
//! - [`policy`]: the operator's policy file (caps, velocity caps, blocked merchant
//!   categories, security tiers), checked;
//! - [`engine`]: the decision — approve, step_up, review or decline — with a score,
//!   reasons and the features that weighed most;
//! - [`kept`]: a decision as kept with its transfer in the ledger (a fixed 112-byte body);
//! - [`sca`]: the PSD2 RTS Art. 16 low-value exemption counters (which a strong
//!   authentication resets);
//! - [`gbdt`]: gradient-boosted trees imported from LightGBM's text format, evaluated and
//!   explained per feature (held to LightGBM's own predictions by a fixture);
//! - [`xgboost`]: the same trees imported from XGBoost's JSON format, with XGBoost's own
//!   split rules (held to XGBoost's predictions and contributions by a fixture);
//! - [`ftrl`]: an online logistic model (FTRL-Proximal) that learns from each confirmed
//!   outcome;
//! - [`calendar`]: the UTC dates the caps count days and months by.
//!
//! The offline tooling — the simulator, the trainer and the evaluator — is
//! `farthing-risk-lab`: the server does not depend on it.

/// The model Farthing ships (LightGBM text, trained with `farthing risk train` on
/// `farthing simulate` traffic); empty until one is trained.
pub const DEFAULT_MODEL: &str = include_str!("../models/default.txt");

pub mod calendar;
pub mod engine;
pub mod features;
pub mod ftrl;
pub mod gbdt;
pub mod kept;
pub mod policy;
pub mod sca;
pub mod window;
pub mod xgboost;
