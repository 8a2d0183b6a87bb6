//! The API's JSON: requests (unknown fields refused) and answers. Ids and amounts are
//! strings: ids are decimal `u128`, amounts are decimal in the asset's major units
//! ("0.000125" USD at scale 6); JSON numbers are refused for both.

use farthing_ledger::amount::{format_amount, Amount};
use farthing_ledger::{
    Account, AccountFlags, Asset, AssetKind, PendingStatus, Transfer, TransferFlags,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::receipt::{flag_names, utc, Utc};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAsset {
    /// 1 to 12 of `A-Z 0-9 - _ .`: "USD", "USDC", "EUR-CBDC".
    pub code: String,
    /// Decimal places of the smallest unit, 0 to 18 (USD at 6: a millionth of a dollar).
    pub scale: u8,
    /// fiat (default), stablecoin, cbdc or token.
    #[serde(default)]
    pub kind: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssetView {
    pub id: String,
    pub code: String,
    pub scale: u8,
    pub kind: String,
    pub created_at: String,
}

impl AssetView {
    pub fn new(a: &Asset) -> Self {
        Self {
            id: a.id.to_string(),
            code: a.code_str().to_string(),
            scale: a.scale,
            kind: AssetKind::from_u8(a.kind).map_or("unknown", AssetKind::name).to_string(),
            created_at: utc(a.timestamp),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Decimal u128, not 0; chosen by the server if absent. Creating the same account
    /// twice answers the existing one.
    #[serde(default)]
    pub id: Option<String>,
    /// Pseudonymous owner id (decimal u128; never personal data). Payer and merchant keys
    /// may leave it out: it is theirs.
    #[serde(default)]
    pub owner_id: Option<String>,
    /// The asset's code.
    pub asset: String,
    /// Chart-of-accounts code, 1 to 65535 (default 1). For a payee it is the merchant
    /// category the risk policy's `blocked.merchant_categories` judge payments by, so only an
    /// admin key may set it.
    #[serde(default)]
    pub code: Option<u16>,
    /// Any of debits_must_not_exceed_credits (a wallet that cannot go below zero),
    /// credits_must_not_exceed_debits, history.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Free for the client (decimal u64).
    #[serde(default)]
    pub user_data_64: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub owner_id: String,
    pub asset: String,
    pub code: u16,
    pub flags: Vec<String>,
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
    /// credits_posted − debits_posted.
    pub balance: String,
    /// balance − debits_pending: what a payment may still take.
    pub available: String,
    pub user_data_64: String,
    pub created_at: String,
    pub timestamp: String,
}

/// `a − b` in an asset's units, with a sign.
fn signed(a: u128, b: u128, scale: u8) -> String {
    if a >= b {
        format_amount(a - b, scale)
    } else {
        format!("-{}", format_amount(b - a, scale))
    }
}

impl AccountView {
    pub fn new(a: &Account, asset: &str, scale: u8) -> Self {
        let b = &a.balances;
        Self {
            id: a.id.to_string(),
            owner_id: a.owner_id.to_string(),
            asset: asset.to_string(),
            code: a.code,
            flags: flag_names(AccountFlags::NAMED, a.flags.0),
            debits_pending: format_amount(b.debits_pending, scale),
            debits_posted: format_amount(b.debits_posted, scale),
            credits_pending: format_amount(b.credits_pending, scale),
            credits_posted: format_amount(b.credits_posted, scale),
            balance: signed(b.credits_posted, b.debits_posted, scale),
            available: signed(
                b.credits_posted,
                b.debits_posted.saturating_add(b.debits_pending),
                scale,
            ),
            user_data_64: a.user_data_64.to_string(),
            created_at: utc(a.timestamp),
            timestamp: a.timestamp.to_string(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfer {
    /// Decimal u128, not 0; chosen by the server if absent. The ledger applies an id
    /// once: sending it again answers the transfer that exists.
    #[serde(default)]
    pub id: Option<String>,
    pub debit_account_id: String,
    pub credit_account_id: String,
    /// Decimal string in the asset's units, e.g. "0.0001". Numbers are refused.
    pub amount: String,
    /// The asset's code; defaults to the debit account's.
    #[serde(default)]
    pub asset: Option<String>,
    /// Hold the amount (two-phase): it moves when posted, or is released by a void or
    /// when `timeout_s` passes.
    #[serde(default)]
    pub pending: bool,
    #[serde(default)]
    pub timeout_s: Option<u32>,
    /// Chart-of-accounts reason code, 1 to 65535 (default 1).
    #[serde(default)]
    pub code: Option<u16>,
    /// Any of linked (this and the next succeed or fail together: batches),
    /// balancing_debit, balancing_credit.
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub user_data_128: Option<String>,
    #[serde(default)]
    pub user_data_64: Option<String>,
    #[serde(default)]
    pub user_data_32: Option<u32>,
    /// Where the payment comes from, for the risk engine (hashed before use; never
    /// stored as given).
    #[serde(default)]
    pub risk_context: Option<RiskContext>,
}

pub use crate::risk::RiskContext;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransferBatch {
    pub transfers: Vec<CreateTransfer>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchFailure {
    pub index: usize,
    pub id: String,
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// Transfers applied by this request.
    pub accepted: usize,
    /// Transfers that already existed (same id): not applied again.
    pub existing: usize,
    /// The ids of every transfer of the batch, in order (the server's where it chose).
    pub ids: Vec<String>,
    /// The transfers refused, with the ledger's code.
    pub failed: Vec<BatchFailure>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostPending {
    /// Id of the posting transfer (default: chosen by the server).
    #[serde(default)]
    pub id: Option<String>,
    /// Amount to post, at most the pending amount (default: all of it).
    #[serde(default)]
    pub amount: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidPending {
    /// Id of the voiding transfer (default: chosen by the server).
    #[serde(default)]
    pub id: Option<String>,
}

/// A transfer. Ids, amounts and timestamps are decimal strings.
// Serialized without a string per field: numbers are written as decimal text straight
// into the answer (it is the hot path's answer).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TransferView {
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub id: u128,
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub debit_account_id: u128,
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub credit_account_id: u128,
    /// Decimal, in the asset's units.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub amount: Amount,
    pub asset: String,
    #[serde(serialize_with = "transfer_flags")]
    #[schema(value_type = Vec<String>)]
    pub flags: TransferFlags,
    /// For a post or void: the pending transfer.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_text")]
    #[schema(value_type = Option<String>)]
    pub pending_id: Option<u128>,
    /// For a pending transfer: pending, posted, voided or expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    pub timeout_s: u32,
    pub code: u16,
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub user_data_128: u128,
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Engine time, nanoseconds since the epoch (also the transfer's order).
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub timestamp: u64,
    /// The same time, RFC 3339 UTC.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub created_at: Utc,
    /// The risk engine's decision, for a payment it judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<Box<crate::risk::DecisionRecord>>,
}

fn as_text<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn opt_text<S: serde::Serializer>(v: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn transfer_flags<S: serde::Serializer>(flags: &TransferFlags, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(TransferFlags::NAMED.iter().filter(|(_, f)| flags.contains(*f)).map(|(n, _)| n))
}

fn pending_status_name(s: PendingStatus) -> &'static str {
    match s {
        PendingStatus::Pending => "pending",
        PendingStatus::Posted => "posted",
        PendingStatus::Voided => "voided",
        PendingStatus::Expired => "expired",
    }
}

impl TransferView {
    pub fn new(t: &Transfer, asset: &str, scale: u8, status: Option<PendingStatus>) -> Self {
        Self {
            id: t.id,
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount: Amount { minor: t.amount, scale },
            asset: asset.to_string(),
            flags: t.flags,
            pending_id: (t.pending_id != 0).then_some(t.pending_id),
            status: status.map(pending_status_name),
            timeout_s: t.timeout_s,
            code: t.code,
            user_data_128: t.user_data_128,
            user_data_64: t.user_data_64,
            user_data_32: t.user_data_32,
            timestamp: t.timestamp,
            created_at: Utc(t.timestamp),
            risk: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    pub debits_pending: String,
    pub debits_posted: String,
    pub credits_pending: String,
    pub credits_posted: String,
    pub timestamp: String,
    pub at: String,
}

/// One page of a list; pass `next_cursor` as `cursor` for the next.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub role: crate::auth::Role,
    /// Decimal u128; required for merchant, payer and read_only keys.
    #[serde(default)]
    pub owner_id: Option<String>,
    /// Limit the key to these of its owner's accounts.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Requests per second (default: the server's setting; 0 there means unlimited).
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// The public prefix: how the key is named in lists and logs.
    pub prefix: String,
    pub role: crate::auth::Role,
    pub owner_id: Option<String>,
    pub accounts: Vec<String>,
    pub rate_limit_per_s: u32,
    pub label: String,
    pub created_at: String,
    pub revoked: bool,
}

impl KeyView {
    pub fn new(r: &crate::auth::KeyRecord) -> Self {
        Self {
            prefix: r.prefix.clone(),
            role: r.role,
            owner_id: r.owner_id.map(|o| o.to_string()),
            accounts: r.accounts.iter().map(u128::to_string).collect(),
            rate_limit_per_s: r.rate_limit_per_s,
            label: r.label.clone(),
            created_at: utc(r.created_unix_s * 1_000_000_000),
            revoked: r.revoked,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key itself: shown this once, stored only as a hash.
    pub key: String,
    #[serde(flatten)]
    pub record: KeyView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// http or https URL that receives POSTed events.
    pub url: String,
    /// Whose events (decimal u128). Merchant keys: their own (the default); admin keys:
    /// any owner, or every event when left out.
    #[serde(default)]
    pub owner_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub owner_id: Option<String>,
    pub description: String,
    pub created_at: String,
    /// Events from this commit position on are delivered.
    pub from_event: String,
    pub enabled: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// The signing secret (Standard Webhooks `whsec_` form): shown this once.
    pub secret: String,
    #[serde(flatten)]
    pub webhook: WebhookView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Receipt {
    pub format: String,
    pub log: String,
    pub index: u64,
    pub tree_size: u64,
    pub root: String,
    pub leaf: String,
    pub leaf_hash: String,
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint (a C2SP signed note) the proof leads to.
    pub checkpoint: String,
    /// The transfer as the leaf records it (amounts in minor units).
    #[schema(value_type = Object)]
    pub transfer: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl std::fmt::Debug for CreatedWebhook {
    /// Everything but the signing secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedWebhook")
            .field("secret", &"redacted")
            .field("webhook", &self.webhook)
            .finish()
    }
}
