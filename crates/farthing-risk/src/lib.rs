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
//! - [`ftrl`]: an online logistic model (FTRL-Proximal) that learns from each confirmed
//!   outcome;
//! - [`simulate`]: deterministic, labelled synthetic micropayment traffic (honest habits
//!   and named fraud patterns) to train and evaluate models on, as records or CSV.
pub mod ftrl;
pub mod gbdt;
pub mod sca;
pub mod simulate;
pub mod window;
