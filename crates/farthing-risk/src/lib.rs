//! Farthing's risk engine core (issue 5, in progress): pure values in, values out — no
//! clock, no I/O. Time is always an argument (engine nanoseconds), so replaying the same
//! payments gives the same features and the same decisions.
//!
//! Built so far:
//! - [`window`]: counts and sums over sliding windows (1 min, 1 h, 24 h) in fixed memory
//!   per key, and a bounded table of such windows per payer, payee, device or IP;
//! - [`sca`]: the PSD2 RTS Art. 16 low-value exemption counters (which a strong
//!   authentication resets);
//! - [`gbdt`]: gradient-boosted trees imported from LightGBM's text format, evaluated and
//!   explained per feature (held to LightGBM's own predictions by a fixture);
//! - [`xgboost`]: the same trees imported from XGBoost's JSON format, with XGBoost's own
//!   split rules (held to XGBoost's predictions and contributions by a fixture);
//! - [`ftrl`]: an online logistic model (FTRL-Proximal) that learns from each confirmed
//!   outcome.

/// The model Farthing ships (LightGBM text, trained with `farthing risk train` on
/// `farthing simulate` traffic); empty until one is trained.
pub const DEFAULT_MODEL: &str = include_str!("../models/default.txt");

pub mod engine;
pub mod eval;
pub mod features;
pub mod ftrl;
pub mod gbdt;
pub mod policy;
pub mod sca;
pub mod window;
pub mod xgboost;
