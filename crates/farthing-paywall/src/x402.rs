//! The x402 v2 shapes of docs/RAILS.md ("HTTP 402 paywall"): what a paid route asks for
//! (`PAYMENT-REQUIRED`), what the client pays with (`PAYMENT-SIGNATURE`) and what the
//! route answers once paid (`PAYMENT-RESPONSE`). Each header is standard base64 of the
//! JSON. A payload converts to and from a [`SignedVoucher`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use farthing_rails::channel::{SignedVoucher, Voucher};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version these shapes are.
pub const X402_VERSION: u32 = 2;
/// The scheme Farthing channels are offered under.
pub const SCHEME: &str = "batch-settlement";
/// The voucher encoding named in `extra.voucher`.
pub const VOUCHER_ENCODING: &str = "farthing-voucher/v1";
/// The `error` of a first 402, when nothing was presented.
pub const PAYMENT_REQUIRED: &str = "payment_required";

pub const HEADER_REQUIRED: &str = "payment-required";
pub const HEADER_SIGNATURE: &str = "payment-signature";
pub const HEADER_RESPONSE: &str = "payment-response";

/// The most bytes of a payment header read; anything longer is refused unread.
pub const HEADER_BYTES_MAX: usize = 8 * 1024;

/// What a paid route asks for, in `PAYMENT-REQUIRED` (and the 402's body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u32,
    /// [`PAYMENT_REQUIRED`], or the code of the refusal of what was presented.
    pub error: String,
    pub resource: Resource,
    pub accepts: Vec<PaymentRequirements>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub url: String,
    pub description: String,
    pub mime_type: String,
}

/// One way to pay: for Farthing, [`SCHEME`] on a network `farthing:<ledger>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: String,
    /// The price in minor units, decimal integer text.
    pub amount: String,
    pub asset: String,
    /// The payee's account id.
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub extra: RequirementsExtra,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsExtra {
    /// The Farthing API's base URL, where a channel is opened.
    pub farthing: String,
    /// Decimal places of the asset: `amount` is in units of 10^-assetScale.
    pub asset_scale: u32,
    /// [`VOUCHER_ENCODING`].
    pub voucher: String,
    /// Minor units the payee suggests locking in a new channel.
    pub suggested_deposit: String,
}

impl PaymentRequirements {
    /// The price in minor units.
    pub fn price(&self) -> Result<u128, HeaderError> {
        parse_units("amount", &self.amount)
    }

    pub fn suggested_deposit(&self) -> Result<u128, HeaderError> {
        parse_units("extra.suggestedDeposit", &self.extra.suggested_deposit)
    }
}

/// What the client pays with, in `PAYMENT-SIGNATURE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: u32,
    /// The entry of `accepts` the client chose.
    pub accepted: PaymentRequirements,
    pub payload: VoucherPayload,
}

/// A voucher in x402 dress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoucherPayload {
    pub channel_id: String,
    /// The voucher's cumulative total, minor units.
    pub max_claimable_amount: String,
    pub sequence: String,
    pub expires_at: u64,
    /// 128 lowercase hex characters.
    pub signature: String,
}

/// What a paid route answers with, in `PAYMENT-RESPONSE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementResponse {
    pub success: bool,
    pub network: String,
    /// `channel/sequence` of the voucher taken.
    pub transaction: String,
    /// The payer's account id.
    pub payer: String,
    pub extra: SettlementExtra,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementExtra {
    pub channel_id: String,
    /// The channel's total claimed so far (the voucher's cumulative), minor units.
    pub claimed: String,
    /// Locked less claimed, minor units.
    pub remaining: String,
}

/// Why a payment header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("payment header longer than {HEADER_BYTES_MAX} bytes")]
    TooLong,
    #[error("payment header is not standard base64: {0}")]
    NotBase64(#[from] base64::DecodeError),
    #[error("payment header is not the expected JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("x402Version {0} is not supported (only {X402_VERSION})")]
    Version(u32),
    #[error("{field}: {why}")]
    Field { field: &'static str, why: String },
}

/// Standard base64 of the JSON, as the headers carry it.
pub fn encode_header<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).expect("x402 shapes always serialize");
    STANDARD.encode(json)
}

/// Reads a header written by [`encode_header`].
pub fn decode_header<T: DeserializeOwned>(header: &str) -> Result<T, HeaderError> {
    if header.len() > HEADER_BYTES_MAX {
        return Err(HeaderError::TooLong);
    }
    let json = STANDARD.decode(header.trim())?;
    Ok(serde_json::from_slice(&json)?)
}

impl PaymentRequired {
    pub fn to_header(&self) -> String {
        encode_header(self)
    }
    pub fn from_header(header: &str) -> Result<Self, HeaderError> {
        let value: Self = decode_header(header)?;
        check_version(value.x402_version)?;
        Ok(value)
    }

    /// The entry offering [`SCHEME`], if any.
    pub fn batch_settlement(&self) -> Option<&PaymentRequirements> {
        self.accepts.iter().find(|a| a.scheme == SCHEME)
    }
}

impl PaymentPayload {
    pub fn to_header(&self) -> String {
        encode_header(self)
    }
    pub fn from_header(header: &str) -> Result<Self, HeaderError> {
        let value: Self = decode_header(header)?;
        check_version(value.x402_version)?;
        if value.accepted.scheme != SCHEME {
            return Err(HeaderError::Field {
                field: "accepted.scheme",
                why: format!("{:?} is not {SCHEME:?}", value.accepted.scheme),
            });
        }
        Ok(value)
    }
}

impl SettlementResponse {
    pub fn to_header(&self) -> String {
        encode_header(self)
    }
    pub fn from_header(header: &str) -> Result<Self, HeaderError> {
        decode_header(header)
    }
}

fn check_version(version: u32) -> Result<(), HeaderError> {
    if version == X402_VERSION {
        Ok(())
    } else {
        Err(HeaderError::Version(version))
    }
}

impl VoucherPayload {
    pub fn from_signed(sv: &SignedVoucher) -> Self {
        let v = &sv.voucher;
        Self {
            channel_id: v.channel.to_string(),
            max_claimable_amount: v.cumulative.to_string(),
            sequence: v.sequence.to_string(),
            expires_at: v.expires_at_s,
            signature: to_hex(&sv.signature),
        }
    }

    pub fn to_signed(&self) -> Result<SignedVoucher, HeaderError> {
        let sequence = self.sequence.parse().map_err(|_| HeaderError::Field {
            field: "payload.sequence",
            why: format!("{:?} is not a decimal u64", self.sequence),
        })?;
        let voucher = Voucher {
            channel: parse_units("payload.channelId", &self.channel_id)?,
            sequence,
            cumulative: parse_units("payload.maxClaimableAmount", &self.max_claimable_amount)?,
            expires_at_s: self.expires_at,
        };
        let signature = from_hex::<64>(&self.signature).ok_or_else(|| HeaderError::Field {
            field: "payload.signature",
            why: "not 128 hex characters".into(),
        })?;
        Ok(SignedVoucher { voucher, signature })
    }
}

/// Decimal integer text of a u128 (amounts and ids): digits only, no sign, no spaces.
pub fn parse_units(field: &'static str, text: &str) -> Result<u128, HeaderError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::Field { field, why: format!("{text:?} is not decimal digits") });
    }
    text.parse().map_err(|_| HeaderError::Field { field, why: format!("{text:?} is too large") })
}

pub use farthing_rails::hex::{from_hex, to_hex};

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn requirements() -> PaymentRequirements {
        PaymentRequirements {
            scheme: SCHEME.into(),
            network: "farthing:local".into(),
            amount: "100".into(),
            asset: "USD".into(),
            pay_to: "2001".into(),
            max_timeout_seconds: 60,
            extra: RequirementsExtra {
                farthing: "http://127.0.0.1:8080".into(),
                asset_scale: 6,
                voucher: VOUCHER_ENCODING.into(),
                suggested_deposit: "1000000".into(),
            },
        }
    }

    #[test]
    fn payment_required_has_the_contract_field_names() {
        let required = PaymentRequired {
            x402_version: 2,
            error: PAYMENT_REQUIRED.into(),
            resource: Resource {
                url: "/articles/7".into(),
                description: "Article 7".into(),
                mime_type: "text/html".into(),
            },
            accepts: vec![requirements()],
        };
        let json = serde_json::to_value(&required).unwrap();
        assert_eq!(json["x402Version"], 2);
        assert_eq!(json["resource"]["mimeType"], "text/html");
        assert_eq!(json["accepts"][0]["payTo"], "2001");
        assert_eq!(json["accepts"][0]["maxTimeoutSeconds"], 60);
        assert_eq!(json["accepts"][0]["extra"]["assetScale"], 6);
        assert_eq!(json["accepts"][0]["extra"]["suggestedDeposit"], "1000000");
        assert_eq!(PaymentRequired::from_header(&required.to_header()).unwrap(), required);
    }

    #[test]
    fn a_payload_carries_a_signed_voucher_both_ways() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let sv =
            Voucher { channel: 77, sequence: 12, cumulative: 1200, expires_at_s: 1_795_000_000 }
                .sign(&key);
        let payload = PaymentPayload {
            x402_version: 2,
            accepted: requirements(),
            payload: VoucherPayload::from_signed(&sv),
        };
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(json["payload"]["channelId"], "77");
        assert_eq!(json["payload"]["maxClaimableAmount"], "1200");
        assert_eq!(json["payload"]["expiresAt"], 1_795_000_000u64);
        assert_eq!(json["payload"]["signature"].as_str().unwrap().len(), 128);
        let back = PaymentPayload::from_header(&payload.to_header()).unwrap();
        assert_eq!(back.payload.to_signed().unwrap(), sv);
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        assert!(matches!(PaymentPayload::from_header("%%%"), Err(HeaderError::NotBase64(_))));
        let not_json = STANDARD.encode("{");
        assert!(matches!(PaymentPayload::from_header(&not_json), Err(HeaderError::NotJson(_))));
        let key = SigningKey::from_bytes(&[3; 32]);
        let sv = Voucher { channel: 1, sequence: 1, cumulative: 1, expires_at_s: 1 }.sign(&key);
        let mut payload = PaymentPayload {
            x402_version: 1,
            accepted: requirements(),
            payload: VoucherPayload::from_signed(&sv),
        };
        let header = payload.to_header();
        assert!(matches!(PaymentPayload::from_header(&header), Err(HeaderError::Version(1))));
        payload.x402_version = 2;
        payload.payload.max_claimable_amount = "-5".into();
        let err = payload.payload.to_signed().unwrap_err();
        assert!(err.to_string().starts_with("payload.maxClaimableAmount"), "{err}");
        payload.payload.max_claimable_amount = "5".into();
        payload.payload.signature = "zz".into();
        let err = payload.payload.to_signed().unwrap_err();
        assert!(err.to_string().starts_with("payload.signature"), "{err}");
        let long = "A".repeat(HEADER_BYTES_MAX + 1);
        assert!(matches!(PaymentPayload::from_header(&long), Err(HeaderError::TooLong)));
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex::<4>("0001ABff"), Some(bytes));
        assert_eq!(from_hex::<4>("0001abf"), None);
        assert_eq!(from_hex::<2>("+1ab"), None);
    }
}
