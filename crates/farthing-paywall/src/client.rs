//! The payer's side: [`PaywallClient`] answers a 402 by signing the next voucher of a
//! channel to the payee (opening one when there is none), within a budget.
//!
//! The first request to a URL costs two round trips (the 402, then the paid retry); the
//! client remembers the URL's terms, so later requests carry their voucher at once.
//! Requests on one channel may be concurrent: vouchers that overtake each other on the wire
//! are each served by the paywall while a higher one pays for them (up to 128 behind the
//! best; see [`crate::served`]), and a refused voucher's price is given back to the budget
//! when no later voucher was signed after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use farthing_rails::channel::Voucher;
use reqwest::header::HeaderValue;
use reqwest::StatusCode;

use crate::source::{read_json, wire, BoxFuture, SourceError};
use crate::x402::{
    to_hex, HeaderError, PaymentPayload, PaymentRequired, PaymentRequirements, SettlementResponse,
    VoucherPayload, HEADER_REQUIRED, HEADER_RESPONSE, HEADER_SIGNATURE, X402_VERSION,
};

/// What can stop a payment.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Paying would spend more than the budget: nothing was signed or sent.
    #[error("over budget: {price} more minor units on {spent} spent would exceed the budget of {budget}")]
    OverBudget { price: u128, spent: u128, budget: u128 },
    /// The route refused the voucher; `code` as in docs/RAILS.md.
    #[error("payment refused: {code}")]
    Refused { code: String, required: Box<PaymentRequired> },
    /// The 402 offers no `batch-settlement` entry.
    #[error("the route accepts no batch-settlement payment")]
    NoScheme,
    #[error("bad payment header: {0}")]
    Header(#[from] HeaderError),
    /// A 402 without a `PAYMENT-REQUIRED` header.
    #[error("402 without PAYMENT-REQUIRED")]
    NoRequirements,
    #[error("opening a channel: {0}")]
    Open(#[from] SourceError),
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// A request whose body cannot be sent twice (a stream).
    #[error("the request cannot be retried (streaming body)")]
    NotRetryable,
}

/// A channel the client pays through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedChannel {
    pub id: u128,
    pub locked_units: u128,
    /// Unix seconds; vouchers are signed valid until then.
    pub expires_at: u64,
}

/// Opens a channel to pay a route's terms with `deposit` minor units locked.
pub trait ChannelOpener: Send + Sync + 'static {
    fn open<'a>(
        &'a self,
        terms: &'a PaymentRequirements,
        deposit: u128,
        payer_key: VerifyingKey,
    ) -> BoxFuture<'a, Result<OpenedChannel, SourceError>>;
}

/// Opens channels with the payer's own Farthing: `POST /v1/channels` with the payer's API
/// key. The Farthing is the payer's choice, never the paywall's (`extra.farthing` is only a
/// hint): a payer key must not go wherever a 402 points.
#[derive(Clone, Debug)]
pub struct FarthingOpener {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    payer_account_id: String,
    expires_in_s: u64,
}

impl FarthingOpener {
    pub fn new(
        farthing_url: &str,
        api_key: &str,
        payer_account_id: &str,
        expires_in_s: u64,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(crate::source::FARTHING_TIMEOUT_MS))
            .build()
            .expect("a reqwest client with a timeout builds");
        Self {
            http,
            base_url: farthing_url.trim_end_matches('/').into(),
            api_key: api_key.into(),
            payer_account_id: payer_account_id.into(),
            expires_in_s,
        }
    }

    async fn open_channel(
        &self,
        terms: &PaymentRequirements,
        deposit: u128,
        payer_key: VerifyingKey,
    ) -> Result<OpenedChannel, SourceError> {
        let url = format!("{}/v1/channels", self.base_url);
        let body = serde_json::json!({
            "payer_account_id": self.payer_account_id,
            "payee_account_id": terms.pay_to,
            "amount": decimal(deposit, terms.extra.asset_scale),
            "payer_key": to_hex(payer_key.as_bytes()),
            "expires_in_s": self.expires_in_s,
        });
        let response = self.http.post(url).bearer_auth(&self.api_key).json(&body).send().await?;
        let channel: wire::ChannelJson = read_json(response).await?;
        let info = channel.to_info()?;
        if info.payer_key != payer_key || info.payee_account_id != terms.pay_to {
            return Err(SourceError::Unexpected("the channel opened is not the one asked".into()));
        }
        Ok(OpenedChannel {
            id: info.id,
            locked_units: info.locked_units,
            expires_at: info.expires_at,
        })
    }
}

impl ChannelOpener for FarthingOpener {
    fn open<'a>(
        &'a self,
        terms: &'a PaymentRequirements,
        deposit: u128,
        payer_key: VerifyingKey,
    ) -> BoxFuture<'a, Result<OpenedChannel, SourceError>> {
        Box::pin(self.open_channel(terms, deposit, payer_key))
    }
}

/// `units` minor units as decimal text in the asset's units: 1500 at scale 6 is
/// "0.001500".
pub fn decimal(units: u128, scale: u32) -> String {
    if scale == 0 {
        return units.to_string();
    }
    let digits = format!("{units:0>width$}", width = scale as usize + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale as usize);
    format!("{whole}.{fraction}")
}

/// The client's running state of a channel.
#[derive(Clone, Debug)]
struct Pay {
    channel: OpenedChannel,
    sequence: u64,
    cumulative: u128,
}

#[derive(Default)]
struct Book {
    spent: u128,
    /// By (network, payTo, asset).
    channels: HashMap<(String, String, String), Pay>,
    /// The terms last asked for, by URL.
    terms: HashMap<String, PaymentRequirements>,
}

/// A paid answer: the response, and the receipt when a payment was made.
#[derive(Debug)]
pub struct Paid {
    pub response: reqwest::Response,
    pub receipt: Option<SettlementResponse>,
    /// Minor units paid for this response.
    pub price: u128,
}

/// An HTTP client that pays 402s with vouchers, within a budget.
pub struct PaywallClient {
    http: reqwest::Client,
    key: SigningKey,
    budget: u128,
    opener: Arc<dyn ChannelOpener>,
    /// Held across a payment's preparation (so vouchers are numbered in order), not across
    /// the request.
    book: tokio::sync::Mutex<Book>,
}

/// A voucher signed for a request, to undo if refused.
struct Signed {
    channel_key: (String, String, String),
    channel_id: u128,
    header: String,
    price: u128,
    cumulative: u128,
}

impl PaywallClient {
    /// `budget`: the most minor units to spend in all (deposits are not spending: what is
    /// not claimed goes back to the payer when the channel closes).
    pub fn new(http: reqwest::Client, key: SigningKey, budget: u128) -> Self {
        Self::with_opener(http, key, budget, Arc::new(NoOpener))
    }

    pub fn with_opener(
        http: reqwest::Client,
        key: SigningKey,
        budget: u128,
        opener: Arc<dyn ChannelOpener>,
    ) -> Self {
        let book = tokio::sync::Mutex::new(Book::default());
        Self { http, key, budget, opener, book }
    }

    /// Uses an already open channel for (network, payTo, asset), from its last voucher.
    pub async fn add_channel(
        &self,
        network: &str,
        pay_to: &str,
        asset: &str,
        channel: OpenedChannel,
        sequence: u64,
        cumulative: u128,
    ) {
        let key = (network.to_string(), pay_to.to_string(), asset.to_string());
        self.book.lock().await.channels.insert(key, Pay { channel, sequence, cumulative });
    }

    pub async fn spent(&self) -> u128 {
        self.book.lock().await.spent
    }

    pub async fn remaining(&self) -> u128 {
        self.budget - self.book.lock().await.spent
    }

    pub async fn get(&self, url: &str) -> Result<Paid, ClientError> {
        let request = self.http.get(url).build()?;
        self.send(request).await
    }

    /// Sends the request, paying if asked.
    pub async fn send(&self, request: reqwest::Request) -> Result<Paid, ClientError> {
        let url = request.url().to_string();
        let known = self.book.lock().await.terms.get(&url).cloned();
        let first = match known {
            Some(terms) => {
                let signed = self.sign(&terms).await?;
                let response = self.attempt(&request, Some(&signed)).await?;
                if response.headers().contains_key(HEADER_RESPONSE) {
                    return paid(response, signed.price);
                }
                // The terms changed, or the voucher was refused: read the 402 afresh.
                self.undo(&signed).await;
                response
            }
            None => self.attempt(&request, None).await?,
        };
        if first.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(Paid { response: first, receipt: None, price: 0 });
        }
        let terms =
            requirements(&first)?.batch_settlement().cloned().ok_or(ClientError::NoScheme)?;
        self.book.lock().await.terms.insert(url, terms.clone());
        let signed = self.sign(&terms).await?;
        let response = self.attempt(&request, Some(&signed)).await?;
        if response.headers().contains_key(HEADER_RESPONSE) {
            return paid(response, signed.price);
        }
        self.undo(&signed).await;
        if !response.headers().contains_key(HEADER_REQUIRED) {
            return Ok(Paid { response, receipt: None, price: 0 });
        }
        let required = requirements(&response)?;
        Err(ClientError::Refused { code: required.error.clone(), required: required.into() })
    }

    async fn attempt(
        &self,
        request: &reqwest::Request,
        signed: Option<&Signed>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = request.try_clone().ok_or(ClientError::NotRetryable)?;
        if let Some(signed) = signed {
            let value = HeaderValue::from_str(&signed.header).expect("base64 is a header value");
            request.headers_mut().insert(HEADER_SIGNATURE, value);
        }
        Ok(self.http.execute(request).await?)
    }

    /// Signs the next voucher for `terms`, within the budget, opening a channel if needed.
    async fn sign(&self, terms: &PaymentRequirements) -> Result<Signed, ClientError> {
        let price = terms.price()?;
        let mut book = self.book.lock().await;
        if book.spent.checked_add(price).is_none_or(|total| total > self.budget) {
            return Err(ClientError::OverBudget { price, spent: book.spent, budget: self.budget });
        }
        let channel_key = (terms.network.clone(), terms.pay_to.clone(), terms.asset.clone());
        let usable = book.channels.get(&channel_key).is_some_and(|pay| {
            pay.cumulative.checked_add(price).is_some_and(|c| c <= pay.channel.locked_units)
                && pay.channel.expires_at > crate::paywall::now_s()
        });
        if !usable {
            let remaining = self.budget - book.spent;
            let deposit = remaining.min(terms.suggested_deposit()?).max(price);
            let channel = self.opener.open(terms, deposit, self.key.verifying_key()).await?;
            book.channels.insert(channel_key.clone(), Pay { channel, sequence: 0, cumulative: 0 });
        }
        let pay = book.channels.get_mut(&channel_key).expect("inserted above");
        pay.sequence += 1;
        pay.cumulative += price;
        let voucher = Voucher {
            channel: pay.channel.id,
            sequence: pay.sequence,
            cumulative: pay.cumulative,
            expires_at_s: pay.channel.expires_at,
        };
        let cumulative = pay.cumulative;
        let channel_id = pay.channel.id;
        book.spent += price;
        let payload = PaymentPayload {
            x402_version: X402_VERSION,
            accepted: terms.clone(),
            payload: VoucherPayload::from_signed(&voucher.sign(&self.key)),
        };
        Ok(Signed { channel_key, channel_id, header: payload.to_header(), price, cumulative })
    }

    /// A refused voucher paid nothing: its amount is not spent (its sequence stays used).
    async fn undo(&self, signed: &Signed) {
        let mut book = self.book.lock().await;
        let Some(pay) = book.channels.get_mut(&signed.channel_key) else { return };
        // Only if it is still the channel and the voucher last signed (a channel opened
        // since, or a later voucher, must not be rewound).
        if pay.channel.id == signed.channel_id && pay.cumulative == signed.cumulative {
            pay.cumulative -= signed.price;
            book.spent -= signed.price;
        }
    }
}

fn requirements(response: &reqwest::Response) -> Result<PaymentRequired, ClientError> {
    let header = response.headers().get(HEADER_REQUIRED).ok_or(ClientError::NoRequirements)?;
    let text = header.to_str().map_err(|_| ClientError::NoRequirements)?;
    Ok(PaymentRequired::from_header(text)?)
}

fn paid(response: reqwest::Response, price: u128) -> Result<Paid, ClientError> {
    let receipt = match response.headers().get(HEADER_RESPONSE) {
        Some(h) => Some(SettlementResponse::from_header(
            h.to_str().map_err(|_| ClientError::NoRequirements)?,
        )?),
        None => None,
    };
    Ok(Paid { response, receipt, price })
}

/// The opener of a client given no opener: channels must be added by hand.
struct NoOpener;

impl ChannelOpener for NoOpener {
    fn open<'a>(
        &'a self,
        _: &'a PaymentRequirements,
        _: u128,
        _: VerifyingKey,
    ) -> BoxFuture<'a, Result<OpenedChannel, SourceError>> {
        Box::pin(async { Err(SourceError::Unexpected("no channel, and no opener".into())) })
    }
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_text_has_the_asset_scale() {
        assert_eq!(decimal(1_500, 6), "0.001500");
        assert_eq!(decimal(1_000_000, 6), "1.000000");
        assert_eq!(decimal(42, 0), "42");
        assert_eq!(decimal(0, 2), "0.00");
    }
}
