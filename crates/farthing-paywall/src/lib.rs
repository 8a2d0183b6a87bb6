//! An HTTP 402 paywall for any axum/tower service, paid with Farthing channel vouchers in
//! the x402 v2 shapes of docs/RAILS.md, and the client that pays it.
//!
//! The merchant puts a [`Paywall`] in front of routes, one [`Paywall::layer`] per price;
//! vouchers are checked in memory (signatures in batches) and the best of each channel
//! settles with Farthing every flush interval. The payer's [`PaywallClient`] answers a 402
//! with the next voucher of its channel, within a budget.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use farthing_paywall::{FarthingOpener, FarthingSource, Paywall, PaywallClient, PaywallConfig};
//! let farthing = "http://127.0.0.1:8080";
//! let config = PaywallConfig::new("farthing:local", "2001", "USD", 6, farthing);
//! let paywall = Paywall::new(config, Arc::new(FarthingSource::new(farthing, "fk_merchant")));
//! let app: Router = Router::new()
//!     .route("/articles/7", get(|| async { "..." }).layer(paywall.layer(100, "Article 7")));
//! // ... serve `app`; at shutdown, `paywall.flush().await?`.
//!
//! let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
//! let opener = Arc::new(FarthingOpener::new(farthing, "fk_payer", "1001", 86_400));
//! let client = PaywallClient::with_opener(reqwest::Client::new(), key, 10_000, opener);
//! let paid = client.get("http://127.0.0.1:3000/articles/7").await?;
//! println!("{} for {}", paid.response.text().await?, paid.price);
//! # Ok(()) }
//! ```

pub mod client;
pub mod layer;
pub mod paywall;
pub mod served;
pub mod source;
pub mod x402;

pub use client::{ChannelOpener, ClientError, FarthingOpener, OpenedChannel, Paid, PaywallClient};
pub use layer::{PaidLayer, PaidService};
pub use paywall::{FlushReport, Paywall, PaywallConfig, Refused};
pub use source::{
    ChannelInfo, ChannelSource, ChannelState, FarthingSource, SourceError, SubmitResult,
};
