//! Farthing's offline fraud-model tooling, apart from the risk engine so that the server
//! does not carry it:
//!
//! - [`simulate`]: labelled synthetic micropayment traffic — honest habits with named
//!   fraud patterns mixed in — deterministic for a seed;
//! - [`train`]: gradient-boosted trees trained in pure Rust (histograms, leaf-wise growth,
//!   learned directions for missing values), written back in LightGBM's text format, which
//!   `farthing_risk::gbdt` loads;
//! - [`eval`]: labelled data (generic and PaySim layouts), features replayed in time order
//!   through the engine, and the measures of a model's quality.

pub mod eval;
pub mod simulate;
pub mod train;
