//! The risk engine's side of the API: payments judged before the ledger, held payments
//! approved or rejected, labels, the policy and its history, an account's own limits and
//! profiling choice.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use farthing_ledger::{CreateTransferResult, EventResult, Transfer, TransferFlags};
use farthing_risk::engine::{Decision, Request};
use farthing_risk::policy::Action;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{id_or_new, outcome, parse_id, pending_for, submit_one};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::model::{Page, RiskContext, TransferView};
use crate::risk::{AuditEntry, DecisionRecord, PolicyVersion, Risk, RiskStatus, SelfLimitsView};
use crate::state::AppState;

pub fn internal(e: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e)
}

fn risk_of(s: &AppState) -> ApiResult<&Arc<Risk>> {
    s.risk.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "risk_off",
            "The risk engine is off on this server (risk = false).",
        )
    })
}

/// The payment a transfer is, for the risk engine (None: not a payment).
pub fn payment(
    s: &AppState,
    risk: &Risk,
    t: &Transfer,
    context: Option<&RiskContext>,
) -> ApiResult<Option<Request>> {
    let [d, c] = s.directory.accounts([t.debit_account_id, t.credit_account_id]);
    let Some(d) = d else { return Ok(None) };
    let scale = s.directory.asset(t.asset).map_or(0, |a| a.scale);
    risk.payment(t, scale, &d, c.as_ref(), context)
}

pub(crate) fn declined(record: &DecisionRecord) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::PAYMENT_REQUIRED,
        "risk_declined",
        format!("The risk engine declined this payment ({}).", record.reasons.join(", ")),
    );
    e.risk = serde_json::to_value(record.view()).ok().map(Box::new);
    e
}

/// Makes a payment the risk engine let through, or holds it: the transfer goes to the
/// ledger with its decision in the same WAL record, and a hold is the ledger's own
/// (`held`: only an approval or rejection settles it).
fn judged(risk: &Risk, t: &mut Transfer, r: &Request, d: &Decision) -> farthing_ledger::Decision {
    if matches!(d.action, Action::StepUp | Action::Review) {
        let timeout = risk.hold_timeout_s(d.action);
        t.timeout_s = if t.flags.contains(TransferFlags::PENDING) && t.timeout_s != 0 {
            t.timeout_s.min(timeout)
        } else {
            timeout
        };
        t.flags.set(TransferFlags::PENDING, true);
        t.flags.set(TransferFlags::HELD, true);
    }
    risk.kept(t.id, r, d)
}

/// Judges a payment, then: declined, nothing moves (402, the decision kept); step_up or
/// review, the funds are held as a pending transfer until approved or rejected (202);
/// approved, it is made (201). The decision is durable with the transfer, before the
/// answer.
pub async fn pay(
    s: &AppState,
    p: &Principal,
    risk: &Risk,
    mut t: Transfer,
    r: Request,
) -> ApiResult<Response> {
    let d = risk.assess(&r);
    let held = matches!(d.action, Action::StepUp | Action::Review);
    let scale = s.directory.asset(t.asset).map_or(0, |a| a.scale);
    s.metrics.count_risk(d.action);
    let requested = t;
    if d.action == Action::Decline {
        // A retry of a payment already made answers as it did, whatever the engine thinks
        // of it now (its velocity counts the retry).
        if let Some(answer) = existing(s, p, risk, &requested).await? {
            return Ok(answer);
        }
        let record = risk.record(t.id, &r, &d, false, scale);
        risk.keep_decline(&record).await.map_err(internal)?;
        return Err(declined(&record));
    }
    let kept = judged(risk, &mut t, &r, &d);
    let result = match s.engine.create_judged_transfers_async(vec![t], vec![kept]).await {
        Ok(r) => r[0],
        Err(e) => {
            // Not made — unless the outcome is unknown: then the reservation stays, as the
            // payment may have been made (with its decision).
            if !matches!(e, farthing_store::EngineError::OutcomeUnknown) {
                risk.release(&r, &d, false);
            }
            return Err(e.into());
        }
    };
    if result.code != CreateTransferResult::Ok {
        // Not made by this request: the reservation goes; a retry of the payment that
        // exists answers with that payment and its decision.
        risk.release(&r, &d, !result.code.is_exists());
        if result.code.is_exists() {
            if let Some(answer) = existing(s, p, risk, &requested).await? {
                return Ok(answer);
            }
        }
        let (status, view) = outcome(s, p, t, result).await?;
        return Ok((status, Json(view)).into_response());
    }
    risk.keep_features(&t, &d);
    let (mut status, mut view) = outcome(s, p, t, result).await?;
    if held && status == StatusCode::CREATED {
        status = StatusCode::ACCEPTED;
    }
    view.risk = Some(Box::new(risk.record(t.id, &r, &d, held, scale).view()));
    Ok((status, Json(view)).into_response())
}

/// The answer to a retry of a payment that exists (200, with its decision), if `t` is that
/// payment.
async fn existing(
    s: &AppState,
    p: &Principal,
    risk: &Risk,
    t: &Transfer,
) -> ApiResult<Option<Response>> {
    let id = t.id;
    let Some(found) = risk.decision(id).await.map_err(internal)? else { return Ok(None) };
    let Some(stored) = found.transfer else { return Ok(None) };
    if !same_payment(&stored, t) {
        return Ok(None);
    }
    let status = s.engine.read_async(move |sm| sm.pending_status(id)).await?;
    let mut view = crate::api::transfer_view(s, &stored, status);
    view.risk = Some(Box::new(view_for(s, p, risk, &found.record)));
    Ok(Some((StatusCode::OK, Json(view)).into_response()))
}

/// Is a retried request the payment that exists? Everything the client chose must match;
/// the hold and timeout the risk engine may have set do not count.
fn same_payment(stored: &Transfer, t: &Transfer) -> bool {
    let mut a = stored.flags;
    let mut b = t.flags;
    let requested_hold = b.contains(TransferFlags::PENDING);
    for f in [TransferFlags::PENDING, TransferFlags::HELD] {
        a.set(f, false);
        b.set(f, false);
    }
    stored.debit_account_id == t.debit_account_id
        && stored.credit_account_id == t.credit_account_id
        && stored.amount == t.amount
        && stored.asset == t.asset
        && stored.user_data_128 == t.user_data_128
        && stored.user_data_64 == t.user_data_64
        && stored.user_data_32 == t.user_data_32
        && stored.code == t.code
        && a == b
        && (!requested_hold || stored.flags.contains(TransferFlags::PENDING))
}

/// A decision as this caller may see it: all of it for the payer's side and operators;
/// for the payee's side only the outcome.
pub fn view_for(
    s: &AppState,
    p: &Principal,
    risk: &Risk,
    record: &DecisionRecord,
) -> DecisionRecord {
    let payer: u128 = record.payer_account_id.parse().unwrap_or(0);
    let payer_side =
        p.role.sees_all() || s.directory.account(payer).is_some_and(|a| p.owns(payer, a.owner));
    if payer_side {
        risk.explained_view(record)
    } else {
        record.payee_view()
    }
}

/// A batch after the risk engine: what goes to the ledger, and where each came from.
pub struct JudgedBatch {
    pub transfers: Vec<Transfer>,
    /// Each transfer's decision (`Decision::NONE` for those that are not payments).
    pub decisions: Vec<farthing_ledger::Decision>,
    /// For each transfer sent, its index in the request.
    pub index: Vec<usize>,
    /// (index in the request, decision) for payments declined.
    declines: Vec<(usize, DecisionRecord)>,
    /// (position among those sent, request, decision) for payments judged and sent.
    judged: Vec<(usize, Request, Decision)>,
}

impl JudgedBatch {
    /// Gives back the reservations of payments the ledger did not make (all of them when
    /// `results` is empty: the ledger call failed), and keeps the features of those made.
    pub fn settle(&self, s: &AppState, results: &[EventResult<CreateTransferResult>]) {
        let Some(risk) = &s.risk else { return };
        for (k, r, d) in &self.judged {
            match results.get(*k).map(|r| r.code) {
                Some(CreateTransferResult::Ok) => risk.keep_features(&self.transfers[*k], d),
                code => risk.release(r, d, code.is_some_and(|c| !c.is_exists())),
            }
        }
    }

    pub fn declined(&self, ids: &[String]) -> Vec<crate::model::BatchFailure> {
        self.declines
            .iter()
            .map(|(i, rec)| crate::model::BatchFailure {
                index: *i,
                id: ids[*i].clone(),
                code: "risk_declined".into(),
                detail: format!(
                    "The risk engine declined this payment ({}).",
                    rec.reasons.join(", ")
                ),
            })
            .collect()
    }
}

/// Judges the payments of a batch: declined ones are left out (and reported), held ones
/// become held pending transfers. A batch with linked chains is all or nothing: if the
/// engine declines or would hold any of its payments, nothing is applied.
pub async fn judge_batch(
    s: &AppState,
    transfers: Vec<Transfer>,
    contexts: &[Option<RiskContext>],
) -> ApiResult<JudgedBatch> {
    let n = transfers.len();
    let mut out = JudgedBatch {
        decisions: vec![farthing_ledger::Decision::NONE; n],
        index: (0..n).collect(),
        transfers,
        declines: Vec::new(),
        judged: Vec::new(),
    };
    let Some(risk) = &s.risk else { return Ok(out) };
    let transfers = std::mem::take(&mut out.transfers);
    out.decisions.clear();
    out.index.clear();
    let linked = transfers.iter().any(|t| t.flags.contains(TransferFlags::LINKED));
    let mut declines = Vec::new();
    // In a batch with linked chains (all or nothing), a payment the engine would hold or
    // decline stops the whole batch: nothing is applied, every reservation is given back.
    let refuse_all = |out: &JudgedBatch, error: ApiError| {
        for (_, r, d) in &out.judged {
            risk.release(r, d, false);
        }
        Err(error)
    };
    // Every payment's context is checked before any is judged (and reserved).
    let requests = transfers
        .iter()
        .zip(contexts)
        .map(|(t, c)| payment(s, risk, t, c.as_ref()))
        .collect::<ApiResult<Vec<_>>>()?;
    // A judged payment travels with its decision: two events' room in the engine's batch.
    // Checked before anything is judged, so that a refused batch changes nothing.
    let half = farthing_ledger::limits::BATCH_EVENTS_MAX / 2;
    if n > half && requests.iter().any(Option::is_some) {
        return Err(ApiError::bad_request(
            "batch_size",
            format!(
                "A batch with payments the risk engine judges holds 1 to {half} transfers; this one has {n}."
            ),
        )
        .field("/transfers"));
    }
    for ((i, mut t), r) in transfers.into_iter().enumerate().zip(requests) {
        let Some(r) = r else {
            out.index.push(i);
            out.transfers.push(t);
            out.decisions.push(farthing_ledger::Decision::NONE);
            continue;
        };
        let d = risk.assess(&r);
        s.metrics.count_risk(d.action);
        if linked && d.action != Action::Approve {
            risk.release(&r, &d, false);
            let record =
                risk.record(t.id, &r, &d, false, s.directory.asset(t.asset).map_or(0, |a| a.scale));
            let error = if d.action == Action::Decline {
                match risk.keep_decline(&record).await {
                    Ok(()) => declined(&record).at(i),
                    Err(e) => internal(e),
                }
            } else {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "risk_hold_in_linked_batch",
                    "The risk engine would hold this payment for approval, which a linked \
                     (all-or-nothing) batch cannot wait for: send it on its own.",
                )
                .at(i)
            };
            return refuse_all(&out, error);
        }
        if d.action == Action::Decline {
            let scale = s.directory.asset(t.asset).map_or(0, |a| a.scale);
            declines.push((i, risk.record(t.id, &r, &d, false, scale)));
            continue;
        }
        let kept = judged(risk, &mut t, &r, &d);
        out.judged.push((out.transfers.len(), r, d));
        out.index.push(i);
        out.transfers.push(t);
        out.decisions.push(kept);
    }
    for (_, record) in &declines {
        if let Err(e) = risk.keep_decline(record).await {
            return refuse_all(&out, internal(e));
        }
    }
    out.declines = declines;
    if out.transfers.is_empty() {
        // Everything was declined: nothing for the ledger.
        if let Some((i, record)) = out.declines.first() {
            return Err(declined(record).at(*i));
        }
    }
    Ok(out)
}

/// A held payment and its decision, if the caller may see it and may decide it.
async fn held(s: &AppState, p: &Principal, risk: &Risk, id: u128) -> ApiResult<DecisionRecord> {
    let (pending, d, _) = pending_for(s, p, id).await?;
    let found = risk.decision(id).await.map_err(internal)?;
    let record = found.map(|f| f.record).filter(|r| r.held).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_held_by_risk",
            "This transfer is not a payment held by the risk engine (or it was settled).",
        )
    })?;
    let payer = p.owns(pending.debit_account_id, d.owner) && p.role != Role::ReadOnly;
    let allowed = match record.action() {
        // The payer confirms (a passkey step-up replaces this later) or an operator does.
        Action::StepUp => p.role == Role::Admin || (payer && p.writes()),
        // Only an operator clears a review.
        _ => p.role == Role::Admin,
    };
    if !allowed {
        return Err(ApiError::forbidden(match record.action() {
            Action::StepUp => "Only the payer (or an admin) may approve or reject a step-up.",
            _ => "Only an admin key may approve or reject a payment held for review.",
        }));
    }
    Ok(record)
}

#[utoipa::path(post, path = "/v1/transfers/{id}/approve", tag = "risk",
    params(("id" = String, Path, description = "The held payment"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "The hold is posted: the payment is made", body = TransferView),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn approve(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    decide_hold(&s, &p, &id, true).await
}

/// Who settled a hold, as the release records it: `user_data_32` says how it was decided,
/// `user_data_128` the deciding key's prefix (ASCII, zero padded).
pub const RELEASED_BY_PAYER: u32 = 1;
pub const RELEASED_BY_OPERATOR: u32 = 2;

fn key_prefix_bits(prefix: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let n = prefix.len().min(16);
    bytes[..n].copy_from_slice(&prefix.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// Approves (posts in full) or rejects (voids) a held payment: the ledger's release of
/// its hold, recorded with who decided; then the engine and the audit trail follow.
async fn decide_hold(s: &AppState, p: &Principal, id: &str, approved: bool) -> ApiResult<Response> {
    p.require_writer()?;
    let risk = risk_of(s)?;
    let id = parse_id("id", id)?;
    let record = held(s, p, risk, id).await?;
    let mut flags =
        if approved { TransferFlags::POST_PENDING } else { TransferFlags::VOID_PENDING };
    flags.set(TransferFlags::RELEASE_HOLD, true);
    let t = Transfer {
        id: id_or_new("id", &None)?,
        pending_id: id,
        amount: if approved { u128::MAX } else { 0 },
        flags,
        user_data_128: key_prefix_bits(&p.prefix),
        user_data_32: if p.role == Role::Admin { RELEASED_BY_OPERATOR } else { RELEASED_BY_PAYER },
        ..Transfer::default()
    };
    let response = submit_one(s, p, t).await?;
    if response.status().is_success() {
        risk.settle_hold(&record, approved, &p.prefix).await.map_err(internal)?;
    }
    Ok(response)
}

#[utoipa::path(post, path = "/v1/transfers/{id}/reject", tag = "risk",
    params(("id" = String, Path, description = "The held payment"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, description = "The hold is voided: the funds go back", body = TransferView),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn reject(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    decide_hold(&s, &p, &id, false).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    pub transfer_id: String,
    /// fraud, legitimate or chargeback.
    pub label: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelResult {
    pub transfer_id: String,
    pub label: String,
    /// The payment's score when it was decided, and what the same payment scores now.
    pub score_then: Option<f64>,
    pub score_now: Option<f64>,
    pub online_updates: u64,
}

#[utoipa::path(post, path = "/v1/risk/labels", tag = "risk", request_body = LabelRequest,
    responses((status = 200, body = LabelResult), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn post_label(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<LabelRequest>,
) -> ApiResult<Json<LabelResult>> {
    p.require_admin()?;
    let risk = risk_of(&s)?;
    let id = parse_id("transfer_id", &req.transfer_id)?;
    if !matches!(req.label.as_str(), "fraud" | "legitimate" | "chargeback") {
        return Err(ApiError::invalid("label", "label is one of fraud, legitimate, chargeback."));
    }
    let record = risk
        .decision(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("decided payment"))?
        .record;
    risk.label(&record, &req.label, &p.prefix).await.map_err(|e| {
        if e == crate::risk::ALREADY_LABELLED {
            ApiError::new(
                StatusCode::CONFLICT,
                "already_labelled",
                "This payment already has a label.",
            )
        } else {
            internal(e)
        }
    })?;
    Ok(Json(LabelResult {
        transfer_id: record.transfer_id.clone(),
        label: req.label,
        score_then: record.score,
        score_now: risk.rescore(&record),
        online_updates: risk.status().online_updates,
    }))
}

#[utoipa::path(get, path = "/v1/risk/decisions/{id}", tag = "risk",
    params(("id" = String, Path, description = "Transfer id")),
    responses((status = 200, body = DecisionRecord), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_decision(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DecisionRecord>> {
    let risk = risk_of(&s)?;
    let id = parse_id("id", &id)?;
    let record = risk
        .decision(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::not_found("decision"))?
        .record;
    let payer: u128 = record.payer_account_id.parse().unwrap_or(0);
    let payee: u128 = record.payee_account_id.parse().unwrap_or(0);
    let [d, c] = s.directory.accounts([payer, payee]);
    let sees = |id, info: Option<crate::state::AccountInfo>| {
        info.is_some_and(|i| p.sees_account(id, i.owner))
    };
    if !sees(payer, d) && !sees(payee, c) {
        return Err(ApiError::not_found("decision"));
    }
    Ok(Json(view_for(&s, &p, risk, &record)))
}

#[utoipa::path(get, path = "/v1/risk/status", tag = "risk",
    responses((status = 200, body = RiskStatus)), security(("bearer" = [])))]
pub async fn status(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
) -> ApiResult<Json<RiskStatus>> {
    require_operator(&p)?;
    Ok(Json(risk_of(&s)?.status()))
}

fn require_operator(p: &Principal) -> ApiResult<()> {
    match p.role {
        Role::Admin | Role::Auditor => Ok(()),
        _ => {
            Err(ApiError::forbidden("Only admin and auditor keys see the risk engine's settings."))
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// At most this many, newest first (default 100, at most `page_size_max`).
    pub limit: Option<u32>,
    /// From a previous page's next_cursor.
    pub cursor: Option<String>,
}

/// A cursor over stored rows: the hex of the last row's key.
pub(crate) fn row_cursor(key: &[u8]) -> String {
    crate::auth::hex(key)
}

pub(crate) fn parse_row_cursor(text: &str) -> ApiResult<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) || bytes.len() > 512 {
        return Err(ApiError::invalid("cursor", "Not a cursor this list gave."));
    }
    bytes
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::invalid("cursor", "Not a cursor this list gave."))
        })
        .collect()
}

fn page_of(s: &AppState, q: &LimitQuery) -> ApiResult<(usize, Option<Vec<u8>>)> {
    let limit = match q.limit {
        None => 100.min(s.config.page_size_max),
        Some(_) => crate::api::page_limit(s, q.limit)?,
    } as usize;
    Ok((limit, q.cursor.as_deref().map(parse_row_cursor).transpose()?))
}

#[utoipa::path(get, path = "/v1/risk/policy", tag = "risk",
    responses((status = 200, body = PolicyVersion)), security(("bearer" = [])))]
pub async fn get_policy(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
) -> ApiResult<Json<PolicyVersion>> {
    require_operator(&p)?;
    let risk = risk_of(&s)?;
    let current = risk.status().policy_version;
    risk.policy_version(current)
        .map_err(internal)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("policy"))
}

#[utoipa::path(get, path = "/v1/risk/policy/versions", tag = "risk", params(LimitQuery),
    responses((status = 200, body = Page<PolicyVersion>)), security(("bearer" = [])))]
pub async fn policy_versions(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<Page<PolicyVersion>>> {
    require_operator(&p)?;
    let (limit, before) = page_of(&s, &q)?;
    let (data, next) = risk_of(&s)?.policy_versions(limit, before.as_deref()).map_err(internal)?;
    Ok(Json(Page { data, next_cursor: next.as_deref().map(row_cursor) }))
}

#[utoipa::path(get, path = "/v1/risk/audit", tag = "risk", params(LimitQuery),
    responses((status = 200, body = Page<AuditEntry>)), security(("bearer" = [])))]
pub async fn audit_trail(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    require_operator(&p)?;
    let (limit, before) = page_of(&s, &q)?;
    let (data, next) = risk_of(&s)?.audit_trail(limit, before.as_deref()).map_err(internal)?;
    Ok(Json(Page { data, next_cursor: next.as_deref().map(row_cursor) }))
}

/// An account the caller may set risk settings for: its own (payer or merchant key), or
/// any (admin).
fn own_account(s: &AppState, p: &Principal, id: u128) -> ApiResult<u8> {
    let info = s
        .directory
        .account(id)
        .filter(|i| p.sees_account(id, i.owner))
        .ok_or_else(|| ApiError::not_found("account"))?;
    if !(p.role == Role::Admin || (p.writes() && p.owns(id, info.owner))) {
        return Err(ApiError::forbidden(
            "Only the account's own key (or an admin) may change its risk settings.",
        ));
    }
    Ok(s.directory.asset(info.asset).map_or(0, |a| a.scale))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountRiskSettings {
    pub account_id: String,
    pub limits: SelfLimitsView,
    /// Profiling is off: the payer is judged by rules and policies only.
    pub profiling_opted_out: bool,
}

fn settings(risk: &Risk, id: u128, scale: u8) -> AccountRiskSettings {
    let (limits, opted_out) = risk.self_limits_view(id, scale);
    AccountRiskSettings { account_id: id.to_string(), limits, profiling_opted_out: opted_out }
}

#[utoipa::path(get, path = "/v1/accounts/{id}/limits", tag = "risk",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountRiskSettings)), security(("bearer" = [])))]
pub async fn get_limits(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AccountRiskSettings>> {
    let risk = risk_of(&s)?;
    let id = parse_id("id", &id)?;
    let info = s
        .directory
        .account(id)
        .filter(|i| p.sees_account(id, i.owner))
        .ok_or_else(|| ApiError::not_found("account"))?;
    let scale = s.directory.asset(info.asset).map_or(0, |a| a.scale);
    Ok(Json(settings(risk, id, scale)))
}

#[utoipa::path(put, path = "/v1/accounts/{id}/limits", tag = "risk", request_body = SelfLimitsView,
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountRiskSettings), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_limits(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SelfLimitsView>,
) -> ApiResult<Json<AccountRiskSettings>> {
    let risk = risk_of(&s)?;
    let id = parse_id("id", &id)?;
    let scale = own_account(&s, &p, id)?;
    risk.set_account(id, scale, Some(req), None, &p.prefix).await?;
    Ok(Json(settings(risk, id, scale)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilingRequest {
    /// false: opt out of behavioural profiling (rules and policies only).
    pub enabled: bool,
}

#[utoipa::path(put, path = "/v1/accounts/{id}/profiling", tag = "risk", request_body = ProfilingRequest,
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountRiskSettings), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_profiling(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ProfilingRequest>,
) -> ApiResult<Json<AccountRiskSettings>> {
    let risk = risk_of(&s)?;
    let id = parse_id("id", &id)?;
    let scale = own_account(&s, &p, id)?;
    risk.set_account(id, scale, None, Some(!req.enabled), &p.prefix).await?;
    Ok(Json(settings(risk, id, scale)))
}

pub use crate::metrics::action_index;
