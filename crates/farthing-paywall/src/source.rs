//! Where the paywall learns channels and sends vouchers: the [`ChannelSource`] trait, and
//! [`FarthingSource`], its implementation over the Farthing API (docs/RAILS.md, "API").
//! [`wire`] holds the API's JSON shapes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use farthing_rails::channel::SignedVoucher;

use crate::x402::HeaderError;

/// A boxed future, so that a [`ChannelSource`] can live behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a channel is in its life, as the API says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    Open,
    Closing,
    Closed,
}

/// What the paywall needs of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    pub id: u128,
    pub payer_account_id: String,
    pub payee_account_id: String,
    pub asset: String,
    pub payer_key: VerifyingKey,
    /// Minor units locked in all.
    pub locked_units: u128,
    pub state: ChannelState,
    /// Unix seconds.
    pub expires_at: u64,
    /// The window after the payer's close in which the payee's vouchers still count.
    pub dispute_s: u64,
    /// The best voucher Farthing keeps for the channel.
    pub best_voucher: Option<SignedVoucher>,
}

/// Farthing's answer for one submitted voucher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitResult {
    pub channel_id: u128,
    /// `Ok(claimable units)`, or the refusal's code (docs/RAILS.md) and detail.
    pub outcome: Result<u128, Refusal>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: String,
    pub detail: String,
}

/// Why a [`ChannelSource`] call failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no such channel")]
    NotFound,
    #[error("Farthing answered {status} {code}: {detail}")]
    Api { status: u16, code: String, detail: String },
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl From<HeaderError> for SourceError {
    fn from(e: HeaderError) -> Self {
        Self::Unexpected(e.to_string())
    }
}

/// Channels and settlement, as the paywall sees them. A test or another backend can stand
/// in for Farthing.
pub trait ChannelSource: Send + Sync + 'static {
    /// The channel as it is now.
    fn fetch(&self, channel_id: u128) -> BoxFuture<'_, Result<ChannelInfo, SourceError>>;
    /// Presents vouchers; one result each, in order.
    fn submit(
        &self,
        vouchers: Vec<SignedVoucher>,
    ) -> BoxFuture<'_, Result<Vec<SubmitResult>, SourceError>>;
}

/// How long one call to Farthing may take.
pub const FARTHING_TIMEOUT_MS: u64 = 10_000;

/// [`ChannelSource`] over the Farthing API, with the merchant's API key.
#[derive(Clone, Debug)]
pub struct FarthingSource {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl FarthingSource {
    pub fn new(base_url: &str, api_key: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(FARTHING_TIMEOUT_MS))
            .build()
            .expect("a reqwest client with a timeout builds");
        Self { http, base_url: base_url.trim_end_matches('/').into(), api_key: api_key.into() }
    }

    async fn fetch_channel(&self, id: u128) -> Result<ChannelInfo, SourceError> {
        let url = format!("{}/v1/channels/{id}", self.base_url);
        let response = self.http.get(url).bearer_auth(&self.api_key).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(SourceError::NotFound);
        }
        let channel: wire::ChannelJson = read_json(response).await?;
        channel.to_info()
    }

    async fn submit_vouchers(
        &self,
        vouchers: Vec<SignedVoucher>,
    ) -> Result<Vec<SubmitResult>, SourceError> {
        let url = format!("{}/v1/channels/vouchers", self.base_url);
        let body = wire::VouchersJson {
            vouchers: vouchers.iter().map(wire::VoucherJson::from_signed).collect(),
        };
        let response = self.http.post(url).bearer_auth(&self.api_key).json(&body).send().await?;
        let results: wire::ResultsJson = read_json(response).await?;
        if results.results.len() != vouchers.len() {
            return Err(SourceError::Unexpected(format!(
                "{} results for {} vouchers",
                results.results.len(),
                vouchers.len()
            )));
        }
        results.results.into_iter().map(wire::ResultJson::to_result).collect()
    }
}

impl ChannelSource for FarthingSource {
    fn fetch(&self, channel_id: u128) -> BoxFuture<'_, Result<ChannelInfo, SourceError>> {
        Box::pin(self.fetch_channel(channel_id))
    }

    fn submit(
        &self,
        vouchers: Vec<SignedVoucher>,
    ) -> BoxFuture<'_, Result<Vec<SubmitResult>, SourceError>> {
        Box::pin(self.submit_vouchers(vouchers))
    }
}

/// The body of a success, or the API's problem as [`SourceError::Api`].
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, SourceError> {
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = |k: &str| problem[k].as_str().unwrap_or_default().to_string();
        return Err(SourceError::Api {
            status: status.as_u16(),
            code: text("code"),
            detail: text("detail"),
        });
    }
    serde_json::from_slice(&body).map_err(|e| SourceError::Unexpected(e.to_string()))
}

/// The Farthing API's JSON shapes for channels and vouchers (docs/RAILS.md).
pub mod wire {
    use super::*;
    use crate::x402::{from_hex, parse_units, to_hex};
    use farthing_rails::channel::Voucher;
    use serde::{Deserialize, Serialize};

    /// A voucher as the API carries it.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VoucherJson {
        pub channel_id: String,
        pub sequence: String,
        pub cumulative: String,
        pub expires_at: u64,
        pub signature: String,
    }

    impl VoucherJson {
        pub fn from_signed(sv: &SignedVoucher) -> Self {
            let v = &sv.voucher;
            Self {
                channel_id: v.channel.to_string(),
                sequence: v.sequence.to_string(),
                cumulative: v.cumulative.to_string(),
                expires_at: v.expires_at_s,
                signature: to_hex(&sv.signature),
            }
        }

        pub fn to_signed(&self) -> Result<SignedVoucher, HeaderError> {
            let voucher = Voucher {
                channel: parse_units("channel_id", &self.channel_id)?,
                sequence: u64::try_from(parse_units("sequence", &self.sequence)?).map_err(
                    |_| HeaderError::Field { field: "sequence", why: "too large".into() },
                )?,
                cumulative: parse_units("cumulative", &self.cumulative)?,
                expires_at_s: self.expires_at,
            };
            let signature = from_hex::<64>(&self.signature).ok_or(HeaderError::Field {
                field: "signature",
                why: "not 128 hex characters".into(),
            })?;
            Ok(SignedVoucher { voucher, signature })
        }
    }

    /// A channel as the API shows it (the fields the paywall and the client read; the
    /// others are ignored).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ChannelJson {
        pub id: String,
        pub payer_account_id: String,
        pub payee_account_id: String,
        pub asset: String,
        pub asset_scale: u32,
        pub payer_key: String,
        pub locked_units: String,
        pub state: String,
        pub expires_at: u64,
        pub dispute_s: u64,
        #[serde(default)]
        pub best_voucher: Option<VoucherJson>,
        #[serde(default)]
        pub network: Option<String>,
    }

    impl ChannelJson {
        pub fn to_info(&self) -> Result<ChannelInfo, SourceError> {
            let bad = |what: &str| SourceError::Unexpected(format!("channel {}: {what}", self.id));
            let key = from_hex::<32>(&self.payer_key).ok_or_else(|| bad("payer_key not hex"))?;
            let payer_key = VerifyingKey::from_bytes(&key).map_err(|_| bad("payer_key"))?;
            let state = match self.state.as_str() {
                "open" => ChannelState::Open,
                "closing" => ChannelState::Closing,
                "closed" => ChannelState::Closed,
                other => return Err(bad(&format!("state {other:?}"))),
            };
            Ok(ChannelInfo {
                id: parse_units("id", &self.id)?,
                payer_account_id: self.payer_account_id.clone(),
                payee_account_id: self.payee_account_id.clone(),
                asset: self.asset.clone(),
                payer_key,
                locked_units: parse_units("locked_units", &self.locked_units)?,
                state,
                expires_at: self.expires_at,
                dispute_s: self.dispute_s,
                best_voucher: self.best_voucher.as_ref().map(|v| v.to_signed()).transpose()?,
            })
        }
    }

    /// `POST /v1/channels/vouchers`' body.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct VouchersJson {
        pub vouchers: Vec<VoucherJson>,
    }

    /// `POST /v1/channels/vouchers`' answer.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct ResultsJson {
        pub results: Vec<ResultJson>,
    }

    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct ResultJson {
        pub channel_id: String,
        pub ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub claimable_units: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub detail: Option<String>,
    }

    impl ResultJson {
        pub fn to_result(self) -> Result<SubmitResult, SourceError> {
            let channel_id = parse_units("channel_id", &self.channel_id)?;
            let outcome = if self.ok {
                let claimable = self.claimable_units.as_deref().unwrap_or("0");
                Ok(parse_units("claimable_units", claimable)?)
            } else {
                Err(Refusal {
                    code: self.code.unwrap_or_default(),
                    detail: self.detail.unwrap_or_default(),
                })
            };
            Ok(SubmitResult { channel_id, outcome })
        }
    }
}
