//! The rails' API (docs/RAILS.md): open a channel (or a hash-chain stream), present
//! vouchers and ticks, settle, top up, close.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use farthing_ledger::amount::{format_amount, parse_amount};
use farthing_ledger::{CreateTransferResult, Transfer};
use farthing_rails::channel::{ChannelError, SignedVoucher, Voucher};
use farthing_rails::payword::Stream;
use farthing_risk::engine::{Decision, Request};
use farthing_risk::policy::Action;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{id_or_new, page_limit, parse_id, parse_u128, transfer_refused};
use crate::auth::{now_unix_s, Principal, Role};
use crate::channels::{
    commitment, hex32, hex64, parse_key, to_hex, ChannelRecord, Claim, Live, PaywordTerms, Phase,
    Rails, Rule, CODE_ESCROW, CODE_TOP_UP,
};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::model::{Page, RiskContext};
use crate::risk_api::{declined, internal};
use crate::state::AppState;

/// A refused claim or operation, with its code.
pub fn refusal(e: ChannelError) -> ApiError {
    let status = match e {
        ChannelError::NotHigher | ChannelError::Closed | ChannelError::NotYet => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let detail = match e {
        ChannelError::WrongChannel => "The voucher names another channel (or this channel takes hash-chain ticks, not vouchers).",
        ChannelError::BadSignature => "The signature is not the payer's over this voucher.",
        ChannelError::NotHigher => "The voucher's sequence or total is not above the best one kept: a replay, or an older voucher.",
        ChannelError::OverLocked => "The voucher claims more than the channel has locked.",
        ChannelError::Expired => "The voucher (or the stream) has expired.",
        ChannelError::Closed => "The channel takes no more claims: it is closed, past its dispute window, or past its expiry.",
        ChannelError::NotYet => "Not now: the channel is not in a state for this.",
        ChannelError::NotOnChain => "The preimage does not hash to the last tick accepted.",
        ChannelError::TooFarAhead => "The tick is further ahead than this server hashes forward (stream_ticks_skip_max).",
        ChannelError::Exhausted => "The tick is past the end of the stream's hash chain.",
        ChannelError::AmountOverflow => "The amount is past what the channel can hold (2^128 minor units).",
    };
    ApiError::new(status, e.code(), detail)
}

fn rails_of(s: &AppState) -> &Arc<Rails> {
    &s.rails
}

fn no_channel() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "No channel with this id that this key may see.",
    )
}

/// Which sides of a channel a caller is on.
struct Sides {
    payer: bool,
    payee: bool,
}

fn sides(s: &AppState, p: &Principal, live: &Live) -> Sides {
    let owner = |id| s.directory.account(id).map(|a| a.owner);
    let on = |id: u128| p.role == Role::Admin || owner(id).is_some_and(|o| p.owns(id, o));
    Sides { payer: on(live.payer), payee: on(live.payee) }
}

fn sees(s: &AppState, p: &Principal, live: &Live) -> bool {
    p.role.sees_all() || {
        let x = sides(s, p, live);
        x.payer || x.payee
    }
}

// ----- views -----

/// A voucher as JSON: amounts in minor units, as signed.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherJson {
    /// The channel (may be left out where the path names it).
    #[serde(default)]
    pub channel_id: Option<String>,
    pub sequence: String,
    /// What the payee may claim in all, in minor units.
    pub cumulative: String,
    /// Unix seconds after which the voucher is refused.
    pub expires_at: u64,
    /// Ed25519, 128 hexadecimal characters.
    pub signature: String,
}

impl VoucherJson {
    pub fn of(sv: &SignedVoucher) -> Self {
        Self {
            channel_id: Some(sv.voucher.channel.to_string()),
            sequence: sv.voucher.sequence.to_string(),
            cumulative: sv.voucher.cumulative.to_string(),
            expires_at: sv.voucher.expires_at_s,
            signature: to_hex(&sv.signature),
        }
    }

    pub fn parse(&self, channel: Option<u128>) -> ApiResult<SignedVoucher> {
        let named = match &self.channel_id {
            Some(t) => Some(parse_id("channel_id", t)?),
            None => None,
        };
        let channel = match (named, channel) {
            (Some(a), Some(b)) if a != b => return Err(refusal(ChannelError::WrongChannel)),
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => return Err(ApiError::invalid("channel_id", "channel_id is required.")),
        };
        let sequence = self
            .sequence
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("sequence", "sequence is a decimal u64 in a string."))?;
        Ok(SignedVoucher {
            voucher: Voucher {
                channel,
                sequence,
                cumulative: parse_u128("cumulative", &self.cumulative)?,
                expires_at_s: self.expires_at,
            },
            signature: hex64(&self.signature).map_err(|e| ApiError::invalid("signature", e))?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaywordView {
    pub root: String,
    /// Minor units per tick.
    pub unit_price: String,
    pub length: u64,
    /// The payer's signature over the commitment: a payee checks it with the payer's key
    /// alone.
    pub signature: String,
    pub ticks: u64,
    pub best_tick: Option<u64>,
}

/// A channel. Amounts as decimal text in the asset's units, and as minor units (`*_units`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: String,
    pub payer_account_id: String,
    pub payee_account_id: String,
    pub escrow_account_id: String,
    pub asset: String,
    pub asset_scale: u8,
    pub payer_key: String,
    pub locked: String,
    pub locked_units: String,
    pub claimable: String,
    pub claimable_units: String,
    pub settled: String,
    pub settled_units: String,
    pub refunded: String,
    pub refunded_units: String,
    /// open, closing or closed.
    pub state: String,
    pub expires_at: u64,
    pub dispute_s: u64,
    pub dispute_until: Option<u64>,
    pub best_voucher: Option<VoucherJson>,
    pub payword: Option<PaywordView>,
    pub network: String,
    /// The ledger transfer that locked the funds.
    pub lock_transfer_id: String,
}

fn view(s: &AppState, live: &Live) -> ChannelView {
    let (asset, scale) = s.directory.asset_text(live.rec.asset);
    let both = |v: u128| (format_amount(v, scale), v.to_string());
    let (locked, locked_units) = both(live.locked());
    let (claimable, claimable_units) = both(live.claimable());
    let (settled, settled_units) = both(live.settled);
    let (refunded, refunded_units) = both(live.refunded);
    let (state, dispute_until) = match &live.rec.state {
        Phase::Opening | Phase::Open => ("open", None),
        Phase::Closing { dispute_until } => ("closing", Some(*dispute_until)),
        Phase::Closed { .. } => ("closed", None),
    };
    let (best_voucher, payword) = match &live.rule {
        Rule::Vouchers(c) => (c.best.as_ref().map(VoucherJson::of), None),
        Rule::Stream { stream, best, .. } => (
            None,
            Some(PaywordView {
                root: to_hex(&stream.commitment.root),
                unit_price: stream.commitment.unit_price.to_string(),
                length: stream.commitment.length,
                signature: live
                    .rec
                    .payword
                    .as_ref()
                    .map(|t| t.signature.clone())
                    .unwrap_or_default(),
                ticks: stream.ticks,
                best_tick: best.map(|b| b.0),
            }),
        ),
    };
    ChannelView {
        id: live.rec.id.clone(),
        payer_account_id: live.rec.payer_account_id.clone(),
        payee_account_id: live.rec.payee_account_id.clone(),
        escrow_account_id: live.rec.escrow_account_id.clone(),
        asset,
        asset_scale: scale,
        payer_key: live.rec.payer_key.clone(),
        locked,
        locked_units,
        claimable,
        claimable_units,
        settled,
        settled_units,
        refunded,
        refunded_units,
        state: state.into(),
        expires_at: live.rec.expires_at,
        dispute_s: live.rec.dispute_s,
        dispute_until,
        best_voucher,
        payword,
        network: s.config.rails_network.clone(),
        lock_transfer_id: s.rails.lock_id(live.id).to_string(),
    }
}

// ----- the risk engine on opening and topping up -----

/// A payment the risk engine let through: its reservation and kept decision, to give back
/// if the ledger refuses.
struct Judged {
    request: Request,
    decision: Decision,
    /// The decision as the ledger keeps it with the transfer.
    kept: farthing_ledger::Decision,
}

/// Locking funds in a channel is a payment to its payee, judged as one: caps, the payer's
/// own limits, velocity, the model. A decline, step-up or review opens nothing (402): a
/// channel cannot wait for an approval (lock less, or pay this amount as a transfer).
async fn judge(
    s: &AppState,
    lock: &Transfer,
    payee: u128,
    context: Option<&RiskContext>,
) -> ApiResult<Option<Judged>> {
    let Some(risk) = &s.risk else { return Ok(None) };
    let as_payment = Transfer { credit_account_id: payee, ..*lock };
    let Some(r) = crate::risk_api::payment(s, risk, &as_payment, context)? else {
        return Ok(None);
    };
    let d = risk.assess(&r);
    let scale = s.directory.asset(lock.asset).map_or(0, |a| a.scale);
    let record = risk.record(lock.id, &r, &d, false, scale);
    s.metrics.count_risk(d.action);
    match d.action {
        Action::Approve => {
            let kept = risk.kept(lock.id, &r, &d);
            Ok(Some(Judged { request: r, decision: d, kept }))
        }
        Action::Decline => {
            risk.keep_decline(&record).await.map_err(internal)?;
            Err(declined(&record))
        }
        Action::StepUp | Action::Review => {
            risk.release(&r, &d, false);
            risk.keep_decline(&record).await.map_err(internal)?;
            let mut e = declined(&record);
            e.code = "risk_step_up_required".into();
            e.detail = format!(
                "The risk engine asks for a {} before locking this much ({}); a channel cannot \
                 wait for an approval: lock less, or pay it as a transfer.",
                d.action.as_str(),
                record.reasons.join(", ")
            );
            Err(e)
        }
    }
}

/// After the ledger answered: a refusal gives the reservation back (the decision was kept
/// with the transfer, so only if it was made).
async fn judged_outcome(s: &AppState, _id: u128, j: Option<Judged>, made: bool) -> ApiResult<()> {
    let (Some(risk), Some(j)) = (&s.risk, j) else { return Ok(()) };
    if !made {
        risk.release(&j.request, &j.decision, true);
    }
    Ok(())
}

/// The decision to send with a transfer (none when the risk engine did not judge it).
fn kept_of(j: &Option<Judged>) -> farthing_ledger::Decision {
    j.as_ref().map_or(farthing_ledger::Decision::NONE, |j| j.kept)
}

fn cap_check(s: &AppState, asset: u32, locked_after: u128) -> ApiResult<()> {
    let (Some(risk), Some(info)) = (&s.risk, s.directory.asset(asset)) else { return Ok(()) };
    if let Some(max) = risk.channel_locked_max(&info.code, info.scale) {
        if locked_after > max {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "channel_cap_exceeded",
                format!(
                    "A channel in {} may lock at most {} in all (the risk policy's channel cap); \
                     this would make it {}.",
                    info.code,
                    format_amount(max, info.scale),
                    format_amount(locked_after, info.scale)
                ),
            ));
        }
    }
    Ok(())
}

// ----- handlers -----

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenPayword {
    /// The hash chain's root w₀, 64 hexadecimal characters.
    pub root: String,
    /// Minor units per tick.
    pub unit_price: String,
    /// Ticks in the chain.
    pub length: u64,
    /// The payer's Ed25519 signature over the commitment (docs/RAILS.md).
    pub signature: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenChannel {
    /// Chosen by the client (needed for a stream, whose commitment names it); else made.
    #[serde(default)]
    pub id: Option<String>,
    pub payer_account_id: String,
    pub payee_account_id: String,
    /// What to lock, in the asset's units ("1.00").
    pub amount: String,
    /// The Ed25519 public key that signs the vouchers, 64 hexadecimal characters.
    pub payer_key: String,
    /// The channel's life from now; or `expires_at` (Unix seconds), which a stream needs.
    #[serde(default)]
    pub expires_in_s: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The dispute window after the payer closes.
    #[serde(default)]
    pub dispute_s: Option<u64>,
    /// Makes it a hash-chain stream.
    #[serde(default)]
    pub payword: Option<OpenPayword>,
    #[serde(default)]
    pub risk_context: Option<RiskContext>,
}

/// Ends an open in progress when dropped.
struct Opening<'a>(&'a Rails, u128);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.end_open(self.1);
    }
}

#[utoipa::path(post, path = "/v1/channels", tag = "rails", request_body = OpenChannel,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a repeated request")),
    responses((status = 201, body = ChannelView), (status = 200, description = "It existed, identical", body = ChannelView),
              (status = 402, description = "The risk engine refused the lock", body = Problem, content_type = "application/problem+json"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn open_channel(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<OpenChannel>,
) -> ApiResult<Response> {
    p.require_writer()?;
    let rails = rails_of(&s);
    let payer = parse_id("payer_account_id", &req.payer_account_id)?;
    let payee = parse_id("payee_account_id", &req.payee_account_id)?;
    let payer_info = match s.directory.account(payer) {
        Some(i) if p.sees_account(payer, i.owner) => i,
        _ => {
            return Err(ApiError::not_found("account").field("/payer_account_id"));
        }
    };
    if !p.may_debit(payer, payer_info.owner) {
        return Err(ApiError::forbidden("This key may not move money out of that account.")
            .field("/payer_account_id"));
    }
    if p.role != Role::Admin && !payer_info.bounded {
        return Err(ApiError::forbidden(
            "This account may go below zero: only an admin key may lock funds from it.",
        )
        .field("/payer_account_id"));
    }
    let payee_info = s
        .directory
        .account(payee)
        .ok_or_else(|| ApiError::not_found("account").field("/payee_account_id"))?;
    if payee == payer {
        return Err(ApiError::invalid("payee_account_id", "A channel pays another account."));
    }
    if payer_info.code == CODE_ESCROW || payee_info.code == CODE_ESCROW {
        return Err(ApiError::forbidden(
            "A channel's escrow account moves only by its own channel's rules.",
        ));
    }
    if payee_info.asset != payer_info.asset {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "accounts_must_have_the_same_asset",
            "The payer's and the payee's accounts hold different assets.",
        ));
    }
    let asset = s.directory.asset(payer_info.asset).ok_or_else(|| ApiError::not_found("asset"))?;
    let amount = parse_amount(&req.amount, asset.scale)
        .map_err(|e| ApiError::invalid("amount", format!("amount {:?}: {e}.", req.amount)))?;
    if amount == 0 {
        return Err(ApiError::invalid("amount", "A channel locks more than zero."));
    }
    let key = parse_key(&req.payer_key).map_err(|e| ApiError::invalid("payer_key", e))?;
    let now = now_unix_s();
    let cfg = &s.config;
    let expires_at = match (req.expires_at, req.expires_in_s) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "expires_at",
                "Give expires_at or expires_in_s, not both.",
            ))
        }
        (Some(at), None) => at,
        (None, Some(n)) => now.saturating_add(n),
        (None, None) => now + cfg.channel_expires_in_s,
    };
    if expires_at <= now || expires_at - now > cfg.channel_expires_in_s_max {
        return Err(ApiError::invalid(
            "expires_at",
            format!(
                "A channel lives from 1 s to {} s (channel_expires_in_s_max).",
                cfg.channel_expires_in_s_max
            ),
        ));
    }
    let dispute_s = req.dispute_s.unwrap_or(cfg.channel_dispute_s);
    if dispute_s < cfg.channel_dispute_s_min || dispute_s > cfg.channel_expires_in_s_max {
        return Err(ApiError::invalid(
            "dispute_s",
            format!(
                "The dispute window is {} s to {} s.",
                cfg.channel_dispute_s_min, cfg.channel_expires_in_s_max
            ),
        ));
    }
    let id = id_or_new("id", &req.id)?;
    let payword = match &req.payword {
        None => None,
        Some(pw) => {
            if req.id.is_none() {
                return Err(ApiError::invalid(
                    "id",
                    "A stream's commitment names its id: give it.",
                ));
            }
            let terms = PaywordTerms {
                root: pw.root.clone(),
                unit_price: parse_u128("payword/unit_price", &pw.unit_price)?.to_string(),
                length: pw.length,
                signature: pw.signature.clone(),
            };
            hex32(&terms.root).map_err(|e| ApiError::invalid("payword/root", e))?;
            let sig =
                hex64(&terms.signature).map_err(|e| ApiError::invalid("payword/signature", e))?;
            if pw.length == 0 || terms.unit_price == "0" {
                return Err(ApiError::invalid("payword", "A stream has ticks, at a price."));
            }
            if pw.length > STREAM_LENGTH_MAX {
                // A restart hashes a stream's chain up to its best tick again.
                return Err(ApiError::invalid(
                    "payword/length",
                    format!(
                        "A stream has at most {STREAM_LENGTH_MAX} ticks; open another for more."
                    ),
                ));
            }
            let c = commitment(id, payee, &terms, expires_at)
                .map_err(|e| ApiError::invalid("payword", e))?;
            Stream::open(c, &sig, &key).map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "commitment_bad_signature",
                    "The payword signature is not the payer's over this commitment (its id, payee, root, price, length and expires_at).",
                )
            })?;
            Some(terms)
        }
    };
    let rec = ChannelRecord {
        id: id.to_string(),
        payer_account_id: payer.to_string(),
        payee_account_id: payee.to_string(),
        escrow_account_id: rails.escrow_id(id).to_string(),
        asset: asset.id,
        payer_key: to_hex(key.as_bytes()),
        expires_at,
        dispute_s,
        state: Phase::Opening,
        payword,
        opened_amount: amount.to_string(),
        created_at: now,
    };
    if let Some(slot) = rails.get(id) {
        let live = slot.live.lock().unwrap().clone();
        let same = live.rec.payer_account_id == rec.payer_account_id
            && live.rec.payee_account_id == rec.payee_account_id
            && live.rec.opened_amount == rec.opened_amount
            && live.rec.payer_key == rec.payer_key
            && live.rec.payword == rec.payword;
        return match (same, sees(&s, &p, &live)) {
            (true, true) => Ok((StatusCode::OK, Json(view(&s, &live))).into_response()),
            _ => Err(ApiError::new(
                StatusCode::CONFLICT,
                "id_in_use",
                "This id is taken; choose another.",
            )),
        };
    }
    if !rails.begin_open(id) {
        let mut busy = ApiError::new(
            StatusCode::CONFLICT,
            "channel_busy",
            "This channel is being opened by another request; retry when it has answered.",
        );
        // Transient: never kept as an Idempotency-Key's answer.
        busy.retry_after_s = Some(1);
        return Err(busy);
    }
    let _opening = Opening(rails, id);
    cap_check(&s, asset.id, amount)?;
    let lock = Transfer {
        id: rails.lock_id(id),
        debit_account_id: payer,
        credit_account_id: payee,
        amount,
        user_data_128: id,
        asset: asset.id,
        ..Transfer::default()
    };
    let judged = judge(&s, &lock, payee, req.risk_context.as_ref()).await?;
    if let Err(e) = rails.put_record(&rec).await {
        judged_outcome(&s, lock.id, judged, false).await?;
        return Err(internal(e));
    }
    match rails.make(rec, amount, payer_info.owner, kept_of(&judged)).await {
        Ok(Ok((live, escrow))) => {
            s.directory.add_account(&escrow);
            judged_outcome(&s, lock.id, judged, true).await?;
            Ok((StatusCode::CREATED, Json(view(&s, &live))).into_response())
        }
        Ok(Err(code)) => {
            judged_outcome(&s, lock.id, judged, false).await?;
            Err(transfer_refused(code))
        }
        Err(e) => {
            // Not opened as asked. If the lock was made (or its outcome is unknown), the
            // next start resolves the record from the ledger, and the reservation stays.
            let lock_id = lock.id;
            let made = s.engine.read_async(move |sm| sm.transfer(lock_id).is_some()).await;
            let unknown = e.contains(&farthing_store::EngineError::OutcomeUnknown.to_string());
            if !unknown && made == Ok(false) {
                judged_outcome(&s, lock.id, judged, false).await?;
            }
            Err(internal(e))
        }
    }
}

fn slot_for(s: &AppState, p: &Principal, id: &str) -> ApiResult<Arc<crate::channels::Slot>> {
    let id = parse_id("id", id)?;
    let slot = s.rails.get(id).ok_or_else(no_channel)?;
    let visible = sees(s, p, &slot.live.lock().unwrap());
    if !visible {
        return Err(no_channel());
    }
    Ok(slot)
}

#[utoipa::path(get, path = "/v1/channels/{id}", tag = "rails",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = ChannelView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_channel(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ChannelView>> {
    let slot = slot_for(&s, &p, &id)?;
    let live = slot.live.lock().unwrap().clone();
    Ok(Json(view(&s, &live)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListChannels {
    /// Channels this account pays or is paid by (needed but for admin and auditor keys).
    pub account_id: Option<String>,
    pub limit: Option<u32>,
    /// From a previous page's next_cursor.
    pub cursor: Option<String>,
}

/// A list's cursor: the last channel's creation time and id.
fn cursor_text((created_at, id): crate::channels::ListKey) -> String {
    format!("{created_at}.{id}")
}

fn parse_cursor(text: &str) -> Result<crate::channels::ListKey, ApiError> {
    text.split_once('.')
        .and_then(|(t, id)| Some((t.parse().ok()?, id.parse().ok()?)))
        .ok_or_else(|| ApiError::invalid("cursor", "Not a cursor this list gave."))
}

#[utoipa::path(get, path = "/v1/channels", tag = "rails", params(ListChannels),
    responses((status = 200, body = Page<ChannelView>), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list_channels(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<ListChannels>,
) -> ApiResult<Json<Page<ChannelView>>> {
    let limit = page_limit(&s, q.limit)? as usize;
    let account = match &q.account_id {
        Some(t) => {
            let id = parse_id("account_id", t)?;
            match s.directory.account(id) {
                Some(i) if p.sees_account(id, i.owner) => Some(id),
                _ => return Err(ApiError::not_found("account")),
            }
        }
        None if p.role.sees_all() => None,
        None => return Err(ApiError::invalid("account_id", "Name the account (account_id).")),
    };
    let before = q.cursor.as_deref().map(parse_cursor).transpose()?;
    // Newest first, a range of the book's index: never a walk of every channel.
    let (slots, more) = s.rails.page(account, before, limit);
    let lives: Vec<Live> = slots.iter().map(|slot| slot.live.lock().unwrap().clone()).collect();
    let next_cursor =
        more.then(|| lives.last().map(|l| cursor_text((l.rec.created_at, l.id)))).flatten();
    Ok(Json(Page { data: lives.iter().map(|l| view(&s, l)).collect(), next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimAccepted {
    pub channel_id: String,
    /// What this claim added (0 for the best claim presented again).
    pub increment_units: String,
    pub claimable_units: String,
    /// Locked and not yet claimable.
    pub remaining_units: String,
}

fn accepted(live: &Live, increment: u128) -> ClaimAccepted {
    ClaimAccepted {
        channel_id: live.rec.id.clone(),
        increment_units: increment.to_string(),
        claimable_units: live.claimable().to_string(),
        remaining_units: (live.locked() - live.claimable()).to_string(),
    }
}

#[utoipa::path(post, path = "/v1/channels/{id}/vouchers", tag = "rails", request_body = VoucherJson,
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, description = "Accepted and kept (durably) as the channel's best", body = ClaimAccepted),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn post_voucher(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<VoucherJson>,
) -> ApiResult<Json<ClaimAccepted>> {
    p.require_writer()?;
    let slot = slot_for(&s, &p, &id)?;
    let channel = slot.live.lock().unwrap().id;
    let sv = req.parse(Some(channel))?;
    let now = now_unix_s();
    let (write, answer) = {
        let mut live = slot.live.lock().unwrap();
        let increment = live.accept_voucher(&sv, now).map_err(refusal)?;
        (Rails::claim_write(channel, &Claim::Voucher(sv)), accepted(&live, increment))
    };
    s.meta.write(vec![write]).await.map_err(internal)?;
    s.metrics.vouchers_accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Json(answer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoucherBatch {
    pub vouchers: Vec<VoucherJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VoucherResult {
    pub channel_id: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimable_units: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VoucherBatchResult {
    pub results: Vec<VoucherResult>,
}

/// Ticks one stream may have (a restart hashes up to the best tick again: 10 million is
/// under a second).
pub const STREAM_LENGTH_MAX: u64 = 10_000_000;

/// Vouchers one batch may hold.
pub const VOUCHER_BATCH_MAX: usize = 4_096;

#[utoipa::path(post, path = "/v1/channels/vouchers", tag = "rails", request_body = VoucherBatch,
    responses((status = 200, description = "A result per voucher, in order; the accepted ones kept durably", body = VoucherBatchResult),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn post_vouchers(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<VoucherBatch>,
) -> ApiResult<Json<VoucherBatchResult>> {
    p.require_writer()?;
    let n = req.vouchers.len();
    if n == 0 || n > VOUCHER_BATCH_MAX {
        return Err(ApiError::bad_request(
            "batch_size",
            format!("A batch holds 1 to {VOUCHER_BATCH_MAX} vouchers; this one has {n}."),
        ));
    }
    let now = now_unix_s();
    // First every rule but the signature, then the signatures of what passed, all in
    // batches off the async threads, then the rules again as each is taken.
    let mut outcomes: Vec<ApiResult<(SignedVoucher, Arc<crate::channels::Slot>)>> = req
        .vouchers
        .iter()
        .map(|v| {
            let sv = v.parse(None)?;
            let slot = s.rails.get(sv.voucher.channel).ok_or_else(no_channel)?;
            let live = slot.live.lock().unwrap();
            if !sees(&s, &p, &live) {
                return Err(no_channel());
            }
            live.precheck_voucher(&sv, now).map_err(refusal)?;
            drop(live);
            Ok((sv, slot))
        })
        .collect();
    let to_verify: Vec<(SignedVoucher, ed25519_dalek::VerifyingKey)> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|(sv, slot)| (*sv, slot.live.lock().unwrap().payer_key()))
        .collect();
    let verified = tokio::task::spawn_blocking(move || {
        let pairs: Vec<_> = to_verify.iter().map(|(sv, k)| (sv, k)).collect();
        farthing_rails::channel::verify_signatures(&pairs)
    })
    .await
    .map_err(|e| internal(e.to_string()))?;
    let mut good = verified.into_iter();
    for o in outcomes.iter_mut() {
        if o.is_ok() && !good.next().unwrap_or(false) {
            *o = Err(refusal(ChannelError::BadSignature));
        }
    }
    // The clock again: verifying took time, and a claim is judged when it is taken.
    let now = now_unix_s();
    let mut writes = Vec::new();
    let mut results = Vec::with_capacity(n);
    for (v, outcome) in req.vouchers.iter().zip(outcomes) {
        let name = v.channel_id.clone().unwrap_or_default();
        let outcome = outcome.and_then(|(sv, slot)| {
            let mut live = slot.live.lock().unwrap();
            live.accept_verified_voucher(&sv, now).map_err(refusal)?;
            writes.push(Rails::claim_write(live.id, &Claim::Voucher(sv)));
            Ok(live.claimable())
        });
        results.push(match outcome {
            Ok(claimable) => VoucherResult {
                channel_id: name,
                ok: true,
                claimable_units: Some(claimable.to_string()),
                code: None,
                detail: None,
            },
            Err(e) => VoucherResult {
                channel_id: name,
                ok: false,
                claimable_units: None,
                code: Some(e.code.clone()),
                detail: Some(e.detail.clone()),
            },
        });
    }
    let accepted = writes.len() as u64;
    if !writes.is_empty() {
        s.meta.write(writes).await.map_err(internal)?;
    }
    s.metrics.vouchers_accepted.fetch_add(accepted, std::sync::atomic::Ordering::Relaxed);
    Ok(Json(VoucherBatchResult { results }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TickRequest {
    /// The tick's number (1 is the first).
    pub tick: u64,
    /// wᵢ, 64 hexadecimal characters.
    pub preimage: String,
}

#[utoipa::path(post, path = "/v1/channels/{id}/ticks", tag = "rails", request_body = TickRequest,
    params(("id" = String, Path, description = "Channel id (a stream)")),
    responses((status = 200, body = ClaimAccepted), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn post_tick(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<TickRequest>,
) -> ApiResult<Json<ClaimAccepted>> {
    p.require_writer()?;
    let slot = slot_for(&s, &p, &id)?;
    let preimage = hex32(&req.preimage).map_err(|e| ApiError::invalid("preimage", e))?;
    let now = now_unix_s();
    let (write, answer) = {
        let mut live = slot.live.lock().unwrap();
        let before = live.claimable();
        live.accept_tick(req.tick, &preimage, now, s.config.stream_ticks_skip_max)
            .map_err(refusal)?;
        let claim = Claim::Tick { tick: req.tick, preimage };
        let increment = live.claimable() - before;
        (Rails::claim_write(live.id, &claim), accepted(&live, increment))
    };
    s.meta.write(vec![write]).await.map_err(internal)?;
    Ok(Json(answer))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Settlement {
    /// The ledger transfer that moved what was due to the payee (none if nothing was).
    pub transfer_id: Option<String>,
    pub channel: ChannelView,
}

#[utoipa::path(post, path = "/v1/channels/{id}/settle", tag = "rails",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, body = Settlement), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn settle_channel(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Settlement>> {
    p.require_writer()?;
    let slot = slot_for(&s, &p, &id)?;
    let _op = slot.ops.lock().await;
    let transfer = s.rails.settle_one(&slot).await.map_err(internal)?;
    if transfer.is_some() {
        s.metrics.channel_settlements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let live = slot.live.lock().unwrap().clone();
    Ok(Json(Settlement { transfer_id: transfer.map(|t| t.to_string()), channel: view(&s, &live) }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    /// More to lock, in the asset's units.
    pub amount: String,
    /// A later expiry (Unix seconds), if wanted.
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub risk_context: Option<RiskContext>,
}

#[utoipa::path(post, path = "/v1/channels/{id}/top-up", tag = "rails", request_body = TopUp,
    params(("id" = String, Path, description = "Channel id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a repeated request")),
    responses((status = 200, body = ChannelView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn top_up(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<TopUp>,
) -> ApiResult<Json<ChannelView>> {
    p.require_writer()?;
    let slot = slot_for(&s, &p, &id)?;
    let _op = slot.ops.lock().await;
    let live = slot.live.lock().unwrap().clone();
    let payer_owner = s.directory.account(live.payer).map(|a| a.owner).unwrap_or_default();
    if !p.may_debit(live.payer, payer_owner) {
        return Err(ApiError::forbidden("Only the payer tops up a channel."));
    }
    if matches!(live.rule, Rule::Stream { .. }) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "stream_top_up",
            "A stream's lock is set by its commitment: open another stream.",
        ));
    }
    let now = now_unix_s();
    if live.rec.state != Phase::Open || now >= live.rec.expires_at {
        return Err(refusal(ChannelError::Closed));
    }
    let scale = s.directory.asset(live.rec.asset).map_or(0, |a| a.scale);
    let amount = parse_amount(&req.amount, scale)
        .map_err(|e| ApiError::invalid("amount", format!("amount {:?}: {e}.", req.amount)))?;
    if amount == 0 {
        return Err(ApiError::invalid("amount", "A top-up locks more than zero."));
    }
    let expires_at = req.expires_at.unwrap_or(live.rec.expires_at);
    if expires_at < live.rec.expires_at || expires_at - now > s.config.channel_expires_in_s_max {
        return Err(ApiError::invalid(
            "expires_at",
            "A top-up may keep or extend the expiry, within channel_expires_in_s_max from now.",
        ));
    }
    let locked = live.locked();
    cap_check(&s, live.rec.asset, locked.saturating_add(amount))?;
    let t = Transfer {
        id: s.rails.top_up_id(live.id, locked),
        debit_account_id: live.payer,
        credit_account_id: live.escrow,
        amount,
        user_data_128: live.id,
        asset: live.rec.asset,
        code: CODE_TOP_UP,
        ..Transfer::default()
    };
    let judged = judge(&s, &t, live.payee, req.risk_context.as_ref()).await?;
    let kept = kept_of(&judged);
    let result = match s.engine.create_judged_transfers_async(vec![t], vec![kept]).await {
        Ok(r) => r[0],
        Err(e) => {
            // Not made — unless the outcome is unknown: then the reservation stays, and the
            // channel's amounts are read again from the ledger.
            if matches!(e, farthing_store::EngineError::OutcomeUnknown) {
                s.rails.resync(&slot).await;
            } else {
                judged_outcome(&s, t.id, judged, false).await?;
            }
            return Err(e.into());
        }
    };
    if !matches!(result.code, CreateTransferResult::Ok | CreateTransferResult::Exists) {
        judged_outcome(&s, t.id, judged, false).await?;
        return Err(transfer_refused(result.code));
    }
    // The money moved: the reservation and the decision stand, whatever comes next.
    judged_outcome(&s, t.id, judged, true).await?;
    let rec = {
        let mut live = slot.live.lock().unwrap();
        live.add_locked(amount);
        if let Rule::Vouchers(c) = &mut live.rule {
            c.expires_at_s = expires_at;
        }
        live.rec.expires_at = expires_at;
        live.rec.clone()
    };
    s.rails.put_record(&rec).await.map_err(internal)?;
    let live = slot.live.lock().unwrap().clone();
    Ok(Json(view(&s, &live)))
}

#[utoipa::path(post, path = "/v1/channels/{id}/close", tag = "rails",
    params(("id" = String, Path, description = "Channel id")),
    responses((status = 200, description = "Closed (by the payee: final at once), or closing (by the payer: after the dispute window)", body = ChannelView),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn close_channel(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ChannelView>> {
    p.require_writer()?;
    let slot = slot_for(&s, &p, &id)?;
    let _op = slot.ops.lock().await;
    let live = slot.live.lock().unwrap().clone();
    let side = sides(&s, &p, &live);
    let now = now_unix_s();
    if matches!(live.rec.state, Phase::Closed { .. }) {
        return Ok(Json(view(&s, &live)));
    }
    if side.payee {
        // The payee gives up further claims: nothing to dispute.
        let done = s.rails.finalize(&slot, now).await.map_err(internal)?;
        return Ok(Json(view(&s, &done)));
    }
    if !side.payer {
        return Err(ApiError::forbidden("Only the payer or the payee closes a channel."));
    }
    if live.rec.state != Phase::Open {
        // Closing already: the window runs.
        return Ok(Json(view(&s, &live)));
    }
    let rec = {
        let mut live = slot.live.lock().unwrap();
        let until = now.saturating_add(live.rec.dispute_s);
        live.set_phase(Phase::Closing { dispute_until: until });
        live.rec.clone()
    };
    s.rails.put_record(&rec).await.map_err(internal)?;
    let live = slot.live.lock().unwrap().clone();
    Ok(Json(view(&s, &live)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RailsInfo {
    /// The network name paywalls quote (CAIP-2).
    pub network: String,
    pub voucher: String,
    pub payword: String,
    pub settle_every_ms: u64,
    pub expires_in_s: u64,
    pub expires_in_s_max: u64,
    pub dispute_s: u64,
    pub dispute_s_min: u64,
    pub stream_ticks_skip_max: u64,
}

#[utoipa::path(get, path = "/v1/rails", tag = "rails",
    responses((status = 200, body = RailsInfo)), security(("bearer" = [])))]
pub async fn rails_info(State(s): State<AppState>) -> Json<RailsInfo> {
    let c = &s.config;
    Json(RailsInfo {
        network: c.rails_network.clone(),
        voucher: "farthing-voucher/v1".into(),
        payword: "farthing-payword/v1".into(),
        settle_every_ms: c.channel_settle_ms,
        expires_in_s: c.channel_expires_in_s,
        expires_in_s_max: c.channel_expires_in_s_max,
        dispute_s: c.channel_dispute_s,
        dispute_s_min: c.channel_dispute_s_min,
        stream_ticks_skip_max: c.stream_ticks_skip_max,
    })
}
