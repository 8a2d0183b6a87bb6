//! The REST API under `/v1`: handlers, with their OpenAPI descriptions next to them (the
//! router and `/openapi.json` are built from the same list, so they cannot drift).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use farthing_ledger::amount::parse_amount;
use farthing_ledger::limits::BATCH_EVENTS_MAX;
use farthing_ledger::{
    Account, AccountFilter, AccountFlags, Asset, AssetKind, CreateAccountResult, CreateAssetResult,
    CreateTransferResult, PendingStatus, QueryError, Transfer, TransferFlags,
};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

use crate::auth::{NewKey, Principal, Role};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::model::*;
use crate::state::{AccountInfo, AppState};

// ----- parsing -----

/// A decimal `u128` id that is neither 0 nor `u128::MAX`.
pub fn parse_id(field: &str, text: &str) -> ApiResult<u128> {
    match text.parse::<u128>() {
        Ok(id) if id != 0 && id != u128::MAX => Ok(id),
        _ => Err(ApiError::invalid(
            field,
            format!(
                "{field} must be a decimal id between 1 and 2^128-2, as a string; got {text:?}."
            ),
        )),
    }
}

fn parse_u64(field: &str, text: &str) -> ApiResult<u64> {
    text.parse::<u64>()
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a decimal u64 string.")))
}

pub fn parse_u128(field: &str, text: &str) -> ApiResult<u128> {
    text.parse::<u128>()
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a decimal u128 string.")))
}

tokio::task_local! {
    /// Set while a request with an `Idempotency-Key` runs: the ids the server chooses for
    /// it follow from the key, so a retry after a crash (or a lost record) names the same
    /// transfers, and the ledger applies them once.
    pub static ID_SEED: IdSeed;
}

/// Ids derived from a request's idempotency key, in the order the request asks for them.
pub struct IdSeed {
    base: [u8; 32],
    next: std::cell::Cell<u64>,
}

impl IdSeed {
    pub fn new(base: [u8; 32]) -> Self {
        Self { base, next: std::cell::Cell::new(0) }
    }

    fn id(&self) -> u128 {
        use sha2::{Digest, Sha256};
        loop {
            let n = self.next.replace(self.next.get() + 1);
            let mut h = Sha256::new();
            h.update(self.base);
            h.update(n.to_le_bytes());
            let id = u128::from_le_bytes(h.finalize()[..16].try_into().expect("16 bytes"));
            if id != 0 && id != u128::MAX {
                return id;
            }
        }
    }
}

fn new_id() -> u128 {
    if let Ok(id) = ID_SEED.try_with(IdSeed::id) {
        return id;
    }
    loop {
        let id: u128 = rand::random();
        if id != 0 && id != u128::MAX {
            return id;
        }
    }
}

pub(crate) fn id_or_new(field: &str, id: &Option<String>) -> ApiResult<u128> {
    id.as_deref().map_or(Ok(new_id()), |t| parse_id(field, t))
}

fn amount(field: &str, text: &str, scale: u8) -> ApiResult<u128> {
    parse_amount(text, scale)
        .map_err(|e| ApiError::invalid(field, format!("{field} {text:?}: {e}.")))
}

fn unprocessable(code: &str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
}

/// A ledger refusal of a transfer as an answer: conflicts for ids reused with other fields,
/// 422 for every business rule.
pub(crate) fn transfer_refused(code: CreateTransferResult) -> ApiError {
    if code == CreateTransferResult::PendingTransferHeld {
        return ApiError::new(
            StatusCode::CONFLICT,
            "held_by_risk",
            "The risk engine holds this payment: approve or reject it at \
             /v1/transfers/{id}/approve or /reject.",
        );
    }
    let status =
        if code.is_exists() { StatusCode::CONFLICT } else { StatusCode::UNPROCESSABLE_ENTITY };
    ApiError::new(status, code.code(), code.message())
}

// ----- assets -----

#[utoipa::path(post, path = "/v1/assets", tag = "assets", request_body = CreateAsset,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a repeated request (answers that show a secret once are not stored)")),
    responses((status = 201, body = AssetView), (status = 200, description = "It existed, identical", body = AssetView),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_asset(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<CreateAsset>,
) -> ApiResult<Response> {
    p.require_admin()?;
    // Asset ids are allocated one creation at a time.
    let _one_at_a_time = s.asset_lock.lock().await;
    let kind = match req.kind.as_deref() {
        None => AssetKind::Fiat,
        Some(k) => AssetKind::parse(k).ok_or_else(|| {
            ApiError::invalid("kind", "kind must be fiat, stablecoin, cbdc or token.")
        })?,
    };
    if let Ok(existing) = s.directory.asset_by_code(&req.code) {
        let asset = s.engine.read_async(move |sm| sm.asset(existing.id).copied()).await?;
        let asset = asset.ok_or_else(|| ApiError::not_found("asset"))?;
        if asset.scale != req.scale || asset.kind != kind as u8 {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "exists_with_different_fields",
                "An asset with this code exists with a different scale or kind.",
            ));
        }
        return Ok((StatusCode::OK, Json(AssetView::new(&asset))).into_response());
    }
    let asset = Asset::new(s.directory.next_asset_id(), &req.code, req.scale, kind);
    let result = s.engine.create_assets_async(vec![asset]).await?[0];
    if result.code != CreateAssetResult::Ok {
        return Err(unprocessable(result.code.code(), result.code.message()));
    }
    let created = Asset { timestamp: result.timestamp, ..asset };
    s.directory.add_asset(&created);
    if let Some(risk) = &s.risk {
        risk.register_asset(created.id, created.code_str(), created.scale);
        if !risk.assets_without_rules(&[created.code_str().to_string()]).is_empty() {
            tracing::warn!(
                asset = created.code_str(),
                "the risk policy has no caps or security tiers for this asset: its payments are judged by the model and velocity alone"
            );
        }
    }
    Ok((StatusCode::CREATED, Json(AssetView::new(&created))).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// At most this many (default 100, at most `page_size_max`).
    pub limit: Option<u32>,
    /// From a previous page's next_cursor.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/assets", tag = "assets", params(PageQuery),
    responses((status = 200, body = Page<AssetView>)), security(("bearer" = [])))]
pub async fn list_assets(
    State(s): State<AppState>,
    Extension(_p): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<AssetView>>> {
    let limit = page_limit(&s, q.limit)? as usize;
    let after = q.cursor.as_deref().map_or(Ok(0), |c| parse_u64("cursor", c))?;
    let mut assets = s.engine.read_async(|sm| sm.assets()).await?;
    assets.retain(|a| u64::from(a.id) > after);
    assets.sort_by_key(|a| a.id);
    let more = assets.len() > limit;
    assets.truncate(limit);
    let next_cursor = more.then(|| assets.last().map(|a| a.id.to_string())).flatten();
    Ok(Json(Page { data: assets.iter().map(AssetView::new).collect(), next_cursor }))
}

#[utoipa::path(get, path = "/v1/assets/{code}", tag = "assets",
    params(("code" = String, Path, description = "The asset's code")),
    responses((status = 200, body = AssetView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_asset(
    State(s): State<AppState>,
    Extension(_p): Extension<Arc<Principal>>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Json<AssetView>> {
    let info = s.directory.asset_by_code(&code).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("No asset has the code {code:?} (codes are upper case: USD, EUR-CBDC)."),
        )
    })?;
    let asset = s.engine.read_async(move |sm| sm.asset(info.id).copied()).await?;
    Ok(Json(AssetView::new(&asset.ok_or_else(|| ApiError::not_found("asset"))?)))
}

// ----- accounts -----

fn account_flags(names: &[String]) -> ApiResult<AccountFlags> {
    let mut flags = AccountFlags::empty();
    for name in names {
        match name.as_str() {
            "debits_must_not_exceed_credits" => {
                flags.set(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS, true)
            }
            "credits_must_not_exceed_debits" => {
                flags.set(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS, true)
            }
            "history" => flags.set(AccountFlags::HISTORY, true),
            other => {
                return Err(ApiError::invalid(
                    "flags",
                    format!(
                        "Unknown account flag {other:?}: use debits_must_not_exceed_credits, \
                         credits_must_not_exceed_debits or history."
                    ),
                ))
            }
        }
    }
    Ok(flags)
}

/// An account's code when its creator gives none: no merchant category.
pub const DEFAULT_ACCOUNT_CODE: u16 = 1;

fn account_view(s: &AppState, a: &Account) -> AccountView {
    let (code, scale) = s.directory.asset_text(a.asset);
    AccountView::new(a, &code, scale)
}

#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = CreateAccount,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a repeated request (answers that show a secret once are not stored)")),
    responses((status = 201, body = AccountView), (status = 200, description = "It existed, identical", body = AccountView),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_account(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<CreateAccount>,
) -> ApiResult<Response> {
    p.require_writer()?;
    let owner = match (&req.owner_id, p.role) {
        (Some(o), _) => parse_u128("owner_id", o)?,
        (None, Role::Admin) => {
            return Err(ApiError::invalid(
                "owner_id",
                "owner_id is required (0 for house accounts).",
            ))
        }
        (None, _) => p.owner_id.expect("bound key"),
    };
    if p.role != Role::Admin && Some(owner) != p.owner_id {
        return Err(ApiError::forbidden("This key may create accounts for its own owner only."));
    }
    if p.role != Role::Admin && !p.accounts.is_empty() {
        return Err(ApiError::forbidden("This key is limited to a list of accounts."));
    }
    let asset = s.directory.asset_by_code(&req.asset)?;
    // The code is the merchant category the risk policy's blocked categories judge a payee
    // by: an account's own owner must not choose it (a blocked merchant would pick another).
    if p.role != Role::Admin && req.code.is_some_and(|c| c != DEFAULT_ACCOUNT_CODE) {
        return Err(ApiError::forbidden(
            "Only an admin key sets an account's code: it is the merchant category the risk \
             policy judges payments to it by.",
        ));
    }
    if req.code == Some(crate::channels::CODE_ESCROW) {
        return Err(ApiError::invalid(
            "code",
            format!(
                "Account code {} is reserved for channels' escrow accounts.",
                crate::channels::CODE_ESCROW
            ),
        ));
    }
    let account = Account {
        id: id_or_new("id", &req.id)?,
        owner_id: owner,
        user_data_64: req
            .user_data_64
            .as_deref()
            .map_or(Ok(0), |u| parse_u64("user_data_64", u))?,
        asset: asset.id,
        code: match (req.code, p.role) {
            (Some(code), _) => code,
            // A merchant's new account is in its owner's category (the code an admin gave
            // the owner's first account): a blocked merchant cannot start afresh
            // uncategorised.
            (None, Role::Admin) => DEFAULT_ACCOUNT_CODE,
            (None, _) => {
                let (first, _) = s.directory.owner_accounts(owner, 0, 1);
                first
                    .first()
                    .and_then(|id| s.directory.account(*id))
                    .map_or(DEFAULT_ACCOUNT_CODE, |a| a.code)
            }
        },
        flags: {
            let mut flags = account_flags(&req.flags)?;
            // Only an admin makes accounts that may go below zero (house accounts, issuance):
            // an account a payer or merchant makes can only spend what it was paid.
            if p.role != Role::Admin {
                flags.set(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS, true);
            }
            flags
        },
        ..Account::default()
    };
    let result = s.engine.create_accounts_async(vec![account]).await?[0];
    let status = match result.code {
        CreateAccountResult::Ok => StatusCode::CREATED,
        CreateAccountResult::Exists => StatusCode::OK,
        code if code.is_exists() => {
            // Which field differs would describe an account the caller may not see.
            let visible = s
                .directory
                .account(account.id)
                .is_some_and(|i| p.sees_account(account.id, i.owner));
            return Err(match visible {
                true => ApiError::new(StatusCode::CONFLICT, code.code(), code.message()),
                false => id_in_use(),
            });
        }
        code => return Err(unprocessable(code.code(), code.message())),
    };
    let id = account.id;
    let stored = s.engine.read_async(move |sm| sm.account(id).copied()).await?;
    let stored = stored.ok_or_else(|| ApiError::not_found("account"))?;
    s.directory.add_account(&stored);
    Ok((status, Json(account_view(&s, &stored))).into_response())
}

/// The account's directory entry, if the caller may see it (404 either way otherwise, so
/// that a key cannot probe for others' ids).
fn visible_account(s: &AppState, p: &Principal, id: u128) -> ApiResult<AccountInfo> {
    match s.directory.account(id) {
        Some(info) if p.sees_account(id, info.owner) => Ok(info),
        _ => Err(ApiError::not_found("account")),
    }
}

#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = AccountView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_account(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AccountView>> {
    let id = parse_id("id", &id)?;
    visible_account(&s, &p, id)?;
    let account = s.engine.read_async(move |sm| sm.account(id).copied()).await?;
    Ok(Json(account_view(&s, &account.ok_or_else(|| ApiError::not_found("account"))?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListAccounts {
    /// Whose accounts (decimal). Bound keys: their own (the default).
    pub owner_id: Option<String>,
    /// Rows per page (default 100, at most the server's page_size_max).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

pub fn page_limit(s: &AppState, limit: Option<u32>) -> ApiResult<u32> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > s.config.page_size_max {
        return Err(ApiError::bad_request(
            "limit_out_of_range",
            format!("limit must be 1 to {}.", s.config.page_size_max),
        )
        .field("/limit"));
    }
    Ok(limit)
}

#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", params(ListAccounts),
    responses((status = 200, body = Page<AccountView>)), security(("bearer" = [])))]
pub async fn list_accounts(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<ListAccounts>,
) -> ApiResult<Json<Page<AccountView>>> {
    let limit = page_limit(&s, q.limit)?;
    let owner = match (&q.owner_id, p.owner_id) {
        (Some(o), _) => parse_u128("owner_id", o)?,
        (None, Some(own)) => own,
        (None, None) => return Err(ApiError::invalid("owner_id", "owner_id is required.")),
    };
    if !p.role.sees_all() && Some(owner) != p.owner_id {
        return Err(ApiError::forbidden("This key may list its own owner's accounts only."));
    }
    let after = q.cursor.as_deref().map_or(Ok(0), |c| parse_u64("cursor", c))? as usize;
    let (ids, more) = s.directory.owner_accounts(owner, after, limit as usize);
    let ids: Vec<u128> = ids.into_iter().filter(|id| p.sees_account(*id, owner)).collect();
    let next = more.then(|| (after + limit as usize).to_string());
    let accounts = s
        .engine
        .read_async(move |sm| {
            ids.iter().filter_map(|id| sm.account(*id).copied()).collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(Page {
        data: accounts.iter().map(|a| account_view(&s, a)).collect(),
        next_cursor: next,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub limit: Option<u32>,
    /// From a previous page's next_cursor.
    pub cursor: Option<String>,
    /// Newest first.
    #[serde(default)]
    pub reverse: bool,
}

fn query_error(e: QueryError) -> ApiError {
    let status = match e {
        QueryError::AccountNotFound => StatusCode::NOT_FOUND,
        QueryError::HistoryNotEnabled => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.code(), e.message())
}

fn history_filter(s: &AppState, id: u128, q: &HistoryQuery) -> ApiResult<AccountFilter> {
    let mut f = AccountFilter::new(id, page_limit(s, q.limit)?);
    f.reverse = q.reverse;
    if let Some(c) = &q.cursor {
        f = f.after(parse_u64("cursor", c)?);
    }
    Ok(f)
}

#[utoipa::path(get, path = "/v1/accounts/{id}/transfers", tag = "accounts",
    params(("id" = String, Path, description = "Account id"), HistoryQuery),
    responses((status = 200, body = Page<TransferView>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn account_transfers(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Page<TransferView>>> {
    let id = parse_id("id", &id)?;
    visible_account(&s, &p, id)?;
    let filter = history_filter(&s, id, &q)?;
    let page = s.engine.get_account_transfers_async(filter).await?.map_err(query_error)?;
    let data = page.items.iter().map(|t| transfer_view(&s, t, None)).collect();
    Ok(Json(Page { data, next_cursor: page.next_cursor.map(|c| c.to_string()) }))
}

#[utoipa::path(get, path = "/v1/accounts/{id}/balances", tag = "accounts",
    params(("id" = String, Path, description = "Account id (created with the history flag)"), HistoryQuery),
    responses((status = 200, body = Page<BalanceView>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn account_balances(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Page<BalanceView>>> {
    let id = parse_id("id", &id)?;
    let info = visible_account(&s, &p, id)?;
    let (_, scale) = s.directory.asset_text(info.asset);
    let filter = history_filter(&s, id, &q)?;
    let page = s.engine.get_account_balances_async(filter).await?.map_err(query_error)?;
    let f = |v| farthing_ledger::amount::format_amount(v, scale);
    let data = page
        .items
        .iter()
        .map(|b| BalanceView {
            debits_pending: f(b.balances.debits_pending),
            debits_posted: f(b.balances.debits_posted),
            credits_pending: f(b.balances.credits_pending),
            credits_posted: f(b.balances.credits_posted),
            timestamp: b.timestamp.to_string(),
            at: crate::receipt::utc(b.timestamp),
        })
        .collect();
    Ok(Json(Page { data, next_cursor: page.next_cursor.map(|c| c.to_string()) }))
}

// ----- transfers -----

pub(crate) fn transfer_view(
    s: &AppState,
    t: &Transfer,
    status: Option<PendingStatus>,
) -> TransferView {
    let (code, scale) = s.directory.asset_text(t.asset);
    TransferView::new(t, &code, scale, status)
}

const TRANSFER_FLAGS_ALLOWED: &str = "linked, balancing_debit or balancing_credit";

/// A transfer request as a ledger transfer, once the caller may make it. The debit account
/// is checked here (it is what authorizes the payment); everything else, the credit account
/// included, is the ledger's to judge (in a batch, per transfer).
pub(crate) fn build_transfer(
    s: &AppState,
    p: &Principal,
    req: &CreateTransfer,
) -> ApiResult<Transfer> {
    let debit = parse_id("debit_account_id", &req.debit_account_id)?;
    let credit = parse_id("credit_account_id", &req.credit_account_id)?;
    let debit_info = s.directory.account(debit);
    let debit_info = match debit_info {
        Some(info) if p.sees_account(debit, info.owner) => info,
        _ => {
            return Err(unprocessable(
                "debit_account_not_found",
                "No account with this id that this key may see.",
            )
            .field("/debit_account_id"))
        }
    };
    if !p.may_debit(debit, debit_info.owner) {
        return Err(ApiError::forbidden("This key may not move money out of that account.")
            .field("/debit_account_id"));
    }
    let escrow =
        |id| s.directory.account(id).is_some_and(|a| a.code == crate::channels::CODE_ESCROW);
    if escrow(debit) || escrow(credit) {
        return Err(ApiError::forbidden(
            "A channel's escrow account moves only by the channel's rules (settle, top-up, close).",
        ));
    }
    if p.role != Role::Admin && !debit_info.bounded {
        return Err(ApiError::forbidden(
            "This account may go below zero (it has no debits_must_not_exceed_credits flag): \
             only an admin key may pay from it.",
        )
        .field("/debit_account_id"));
    }
    let asset = match &req.asset {
        Some(code) => s.directory.asset_by_code(code)?,
        None => s.directory.asset(debit_info.asset).ok_or_else(|| ApiError::not_found("asset"))?,
    };
    let mut flags = TransferFlags::empty();
    for name in &req.flags {
        match name.as_str() {
            "linked" => flags.set(TransferFlags::LINKED, true),
            "balancing_debit" => flags.set(TransferFlags::BALANCING_DEBIT, true),
            "balancing_credit" => {
                // The amount that moves would tell the caller how much the credit account
                // may still take: only for the caller's own (or an admin).
                let own = s.directory.account(credit).is_some_and(|c| p.role == Role::Admin || p.owns(credit, c.owner));
                if !own {
                    return Err(ApiError::forbidden("balancing_credit needs a credit account of this key's own.")
                        .field("/flags"));
                }
                flags.set(TransferFlags::BALANCING_CREDIT, true)
            }
            other => {
                return Err(ApiError::invalid(
                    "flags",
                    format!("Unknown transfer flag {other:?}: use {TRANSFER_FLAGS_ALLOWED}; `pending` is a field."),
                ))
            }
        }
    }
    flags.set(TransferFlags::PENDING, req.pending);
    if req.timeout_s.is_some() && !req.pending {
        return Err(ApiError::invalid("timeout_s", "timeout_s applies to pending transfers only."));
    }
    Ok(Transfer {
        id: id_or_new("id", &req.id)?,
        debit_account_id: debit,
        credit_account_id: credit,
        amount: amount("amount", &req.amount, asset.scale)?,
        user_data_128: req
            .user_data_128
            .as_deref()
            .map_or(Ok(0), |u| parse_u128("user_data_128", u))?,
        user_data_64: req
            .user_data_64
            .as_deref()
            .map_or(Ok(0), |u| parse_u64("user_data_64", u))?,
        user_data_32: req.user_data_32.unwrap_or(0),
        timeout_s: req.timeout_s.unwrap_or(0),
        asset: asset.id,
        code: req.code.unwrap_or(1),
        flags,
        ..Transfer::default()
    })
}

/// Submits one transfer and answers as the API does: 201 applied, 200 it existed
/// (identical), else the ledger's code.
/// A conflict on an id whose owner the caller may not see: no detail.
fn id_in_use() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "id_in_use", "This id is taken; choose another.")
}

pub(crate) async fn submit_one(s: &AppState, p: &Principal, t: Transfer) -> ApiResult<Response> {
    let result = s.engine.create_transfers_async(vec![t]).await?[0];
    let (status, view) = outcome(s, p, t, result).await?;
    Ok((status, Json(view)).into_response())
}

/// The answer to one submitted transfer: 201 applied, 200 it existed (identical), else
/// the ledger's code.
pub(crate) async fn outcome(
    s: &AppState,
    p: &Principal,
    t: Transfer,
    result: farthing_ledger::EventResult<CreateTransferResult>,
) -> ApiResult<(StatusCode, TransferView)> {
    use std::sync::atomic::Ordering::Relaxed;
    match result.code {
        CreateTransferResult::Ok => {
            s.metrics.transfers_accepted.fetch_add(1, Relaxed);
            let mut stored = t;
            stored.timestamp = result.timestamp;
            if t.pending_id != 0
                || t.flags.contains(TransferFlags::BALANCING_DEBIT)
                || t.flags.contains(TransferFlags::BALANCING_CREDIT)
            {
                // The ledger completes posts and voids from the pending transfer, and the
                // amount that moved may differ from the one asked: answer what is stored.
                let id = t.id;
                stored = s
                    .engine
                    .read_async(move |sm| sm.transfer(id).copied())
                    .await?
                    .unwrap_or(stored);
            }
            let status =
                stored.flags.contains(TransferFlags::PENDING).then_some(PendingStatus::Pending);
            Ok((StatusCode::CREATED, transfer_view(s, &stored, status)))
        }
        CreateTransferResult::Exists => {
            let id = t.id;
            let (stored, status) = s
                .engine
                .read_async(move |sm| (sm.transfer(id).copied(), sm.pending_status(id)))
                .await?;
            let stored = stored.ok_or_else(|| ApiError::not_found("transfer"))?;
            Ok((StatusCode::OK, transfer_view(s, &stored, status)))
        }
        code if code.is_exists() && !p.role.sees_all() => {
            // Which field differs would describe a transfer the caller may not see.
            let id = t.id;
            if visible_transfer(s, p, id).await.is_ok() {
                return Err(transfer_refused(code));
            }
            Err(id_in_use())
        }
        code => {
            s.metrics.transfers_refused.fetch_add(1, Relaxed);
            Err(transfer_refused(code))
        }
    }
}

#[utoipa::path(post, path = "/v1/transfers", tag = "transfers", request_body = CreateTransfer,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a repeated request")),
    responses((status = 201, body = TransferView), (status = 200, description = "It existed, identical", body = TransferView),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_transfer(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<CreateTransfer>,
) -> ApiResult<Response> {
    p.require_writer()?;
    if req.flags.iter().any(|f| f == "linked") {
        return Err(ApiError::invalid(
            "flags",
            "linked joins a transfer to the next one in a batch.",
        ));
    }
    let t = build_transfer(&s, &p, &req)?;
    if let Some(risk) = &s.risk {
        if let Some(r) = crate::risk_api::payment(&s, risk, &t, req.risk_context.as_ref())? {
            return crate::risk_api::pay(&s, &p, risk, t, r).await;
        }
    }
    submit_one(&s, &p, t).await
}

#[utoipa::path(post, path = "/v1/transfers/batch", tag = "transfers", request_body = CreateTransferBatch,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a repeated request")),
    responses((status = 200, body = BatchResult), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_transfer_batch(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<CreateTransferBatch>,
) -> ApiResult<Json<BatchResult>> {
    p.require_writer()?;
    let n = req.transfers.len();
    let max = s.config.batch_transfers_max.min(BATCH_EVENTS_MAX);
    if n == 0 || n > max {
        return Err(ApiError::bad_request(
            "batch_size",
            format!("A batch holds 1 to {max} transfers; this one has {n}."),
        )
        .field("/transfers"));
    }
    let transfers = req
        .transfers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            build_transfer(&s, &p, t).map_err(|mut e| {
                let field = e.field.take_field();
                e.at(i).field(format!("/transfers/{i}{field}"))
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let ids: Vec<String> = transfers.iter().map(|t| t.id.to_string()).collect();
    let contexts: Vec<_> = req.transfers.iter().map(|t| t.risk_context.clone()).collect();
    let judged = crate::risk_api::judge_batch(&s, transfers, &contexts).await?;
    // A batch of moves the risk engine does not judge (between house accounts) is plain;
    // one with judged payments carries their decisions (`judge_batch` bounds its size).
    let any_judged = judged.decisions.iter().any(|d| !d.is_none());
    let sent = match any_judged {
        true => {
            s.engine
                .create_judged_transfers_async(judged.transfers.clone(), judged.decisions.clone())
                .await
        }
        false => s.engine.create_transfers_async(judged.transfers.clone()).await,
    };
    let results = match sent {
        Ok(results) => results,
        Err(e) => {
            // Nothing was made: give every reservation back. If the outcome is unknown,
            // keep them: the payments may have been made (with their decisions).
            if !matches!(e, farthing_store::EngineError::OutcomeUnknown) {
                judged.settle(&s, &[]);
            }
            return Err(e.into());
        }
    };
    judged.settle(&s, &results);
    let (mut accepted, mut existing, mut failed) = (0, 0, judged.declined(&ids));
    for (k, r) in results.iter().enumerate() {
        let i = judged.index[k];
        match r.code {
            CreateTransferResult::Ok => accepted += 1,
            CreateTransferResult::Exists => existing += 1,
            // Which field differs could describe another's transfer: bound keys get no detail.
            code if code.is_exists() && !p.role.sees_all() => failed.push(BatchFailure {
                index: i,
                id: ids[i].clone(),
                code: "id_in_use".into(),
                detail: "This id is taken; choose another.".into(),
            }),
            code => failed.push(BatchFailure {
                index: i,
                id: ids[i].clone(),
                code: code.code().to_string(),
                detail: code.message().to_string(),
            }),
        }
    }
    use std::sync::atomic::Ordering::Relaxed;
    s.metrics.transfers_accepted.fetch_add(accepted as u64, Relaxed);
    s.metrics.transfers_refused.fetch_add(failed.len() as u64, Relaxed);
    Ok(Json(BatchResult { accepted, existing, ids, failed }))
}

trait TakeField {
    fn take_field(&mut self) -> String;
}
impl TakeField for Option<String> {
    fn take_field(&mut self) -> String {
        self.take().unwrap_or_default()
    }
}

/// The pending transfer named in the path, if the caller may see it.
pub(crate) async fn pending_for(
    s: &AppState,
    p: &Principal,
    id: u128,
) -> ApiResult<(Transfer, AccountInfo, AccountInfo)> {
    let pending = s.engine.read_async(move |sm| sm.transfer(id).copied()).await?;
    let pending = pending.ok_or_else(|| ApiError::not_found("transfer"))?;
    let [d, c] = s.directory.accounts([pending.debit_account_id, pending.credit_account_id]);
    let (d, c) = (
        d.ok_or_else(|| ApiError::not_found("transfer"))?,
        c.ok_or_else(|| ApiError::not_found("transfer"))?,
    );
    if !p.sees_account(pending.debit_account_id, d.owner)
        && !p.sees_account(pending.credit_account_id, c.owner)
    {
        return Err(ApiError::not_found("transfer"));
    }
    if !pending.flags.contains(TransferFlags::PENDING) {
        return Err(unprocessable(
            "pending_transfer_not_pending",
            CreateTransferResult::PendingTransferNotPending.message(),
        ));
    }
    Ok((pending, d, c))
}

#[utoipa::path(post, path = "/v1/transfers/{id}/post", tag = "transfers", request_body = PostPending,
    params(("id" = String, Path, description = "The pending transfer"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TransferView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn post_pending(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    body: Option<ApiJson<PostPending>>,
) -> ApiResult<Response> {
    p.require_writer()?;
    let req = body.map(|b| b.0).unwrap_or_default();
    let pending_id = parse_id("id", &id)?;
    let (pending, d, c) = pending_for(&s, &p, pending_id).await?;
    // Either side may complete a hold: the payee captures it (all or part: the rest goes
    // back to the payer), the payer pays it (in full only, else posting a millionth would
    // release the hold, which only the payee may do).
    let payee = p.role == Role::Admin
        || p.role == Role::Merchant && p.owns(pending.credit_account_id, c.owner);
    if !payee && !p.owns(pending.debit_account_id, d.owner) {
        return Err(ApiError::forbidden("This key may not post that pending transfer."));
    }
    let (_, scale) = s.directory.asset_text(pending.asset);
    let amount = req.amount.as_deref().map_or(Ok(u128::MAX), |a| amount("amount", a, scale))?;
    if !payee && amount != u128::MAX && amount != pending.amount {
        return Err(ApiError::forbidden(
            "The payer posts a hold in full; only the payee's merchant key captures part of it.",
        )
        .field("/amount"));
    }
    let t = Transfer {
        id: id_or_new("id", &req.id)?,
        pending_id,
        amount,
        flags: TransferFlags::POST_PENDING,
        ..Transfer::default()
    };
    submit_one(&s, &p, t).await
}

#[utoipa::path(post, path = "/v1/transfers/{id}/void", tag = "transfers", request_body = VoidPending,
    params(("id" = String, Path, description = "The pending transfer"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TransferView), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn void_pending(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    body: Option<ApiJson<VoidPending>>,
) -> ApiResult<Response> {
    p.require_writer()?;
    let req = body.map(|b| b.0).unwrap_or_default();
    let pending_id = parse_id("id", &id)?;
    let (pending, _, c) = pending_for(&s, &p, pending_id).await?;
    // Only the payee (or an admin) releases a hold: a payer cannot cancel what it authorised;
    // holds with a timeout also expire by themselves.
    if p.role != Role::Admin
        && !(p.role == Role::Merchant && p.owns(pending.credit_account_id, c.owner))
    {
        return Err(ApiError::forbidden(
            "Only the payee's merchant key (or an admin) may void a hold.",
        ));
    }
    let t = Transfer {
        id: id_or_new("id", &req.id)?,
        pending_id,
        flags: TransferFlags::VOID_PENDING,
        ..Transfer::default()
    };
    submit_one(&s, &p, t).await
}

/// A committed transfer, if the caller may see either side.
async fn visible_transfer(
    s: &AppState,
    p: &Principal,
    id: u128,
) -> ApiResult<(Transfer, Option<PendingStatus>)> {
    let (t, status) =
        s.engine.read_async(move |sm| (sm.transfer(id).copied(), sm.pending_status(id))).await?;
    let t = t.ok_or_else(|| ApiError::not_found("transfer"))?;
    let [d, c] = s.directory.accounts([t.debit_account_id, t.credit_account_id]);
    let sees = |id, info: Option<AccountInfo>| info.is_some_and(|i| p.sees_account(id, i.owner));
    if !sees(t.debit_account_id, d) && !sees(t.credit_account_id, c) {
        return Err(ApiError::not_found("transfer"));
    }
    Ok((t, status))
}

#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "Transfer id")),
    responses((status = 200, body = TransferView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_transfer(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TransferView>> {
    let id = parse_id("id", &id)?;
    let (t, status) = visible_transfer(&s, &p, id).await?;
    let mut view = transfer_view(&s, &t, status);
    if let Some(risk) = &s.risk {
        view.risk = risk
            .decision(id)
            .await
            .map_err(crate::risk_api::internal)?
            .map(|f| Box::new(crate::risk_api::view_for(&s, &p, risk, &f.record)));
    }
    Ok(Json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReceiptQuery {
    /// json (default) or tlog-proof (C2SP text).
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/v1/transfers/{id}/receipt", tag = "transparency log",
    params(("id" = String, Path, description = "Transfer id"), ReceiptQuery),
    responses((status = 200, body = Receipt, description = "JSON, or text/plain tlog-proof with ?format=tlog-proof"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_receipt(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReceiptQuery>,
) -> ApiResult<Response> {
    let id = parse_id("id", &id)?;
    let text = match q.format.as_deref() {
        None | Some("json") => false,
        Some("tlog-proof") => true,
        Some(_) => return Err(ApiError::invalid("format", "format is json or tlog-proof.")),
    };
    visible_transfer(&s, &p, id).await?;
    let engine = s.engine.clone();
    let receipt = tokio::task::spawn_blocking(move || engine.receipt(id))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??
        .ok_or_else(|| ApiError::not_found("transfer"))?;
    if text {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            receipt.proof.to_text(),
        )
            .into_response());
    }
    let doc = crate::receipt::receipt_json(&receipt)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "log_failed", e))?;
    Ok(Json(doc).into_response())
}

// ----- the transparency log -----

#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "transparency log",
    responses((status = 200, content_type = "text/plain", body = String, description = "The latest signed checkpoint (a C2SP signed note), covering every transfer answered before the request")),
    security(("bearer" = [])))]
pub async fn get_checkpoint(
    State(s): State<AppState>,
    Extension(_p): Extension<Arc<Principal>>,
) -> ApiResult<Response> {
    let engine = s.engine.clone();
    let note = tokio::task::spawn_blocking(move || engine.checkpoint()).await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })??;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

#[utoipa::path(get, path = "/v1/log/key", tag = "transparency log",
    responses((status = 200, content_type = "text/plain", body = String, description = "The log's verifier key (name+keyid+base64)")))]
pub async fn get_log_key(State(s): State<AppState>) -> ApiResult<Response> {
    let key = s
        .verifier_key
        .clone()
        .ok_or_else(|| ApiError::from(farthing_store::EngineError::LogOff))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{key}\n")).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    pub old: u64,
    pub new: u64,
}

#[utoipa::path(get, path = "/v1/log/consistency", tag = "transparency log", params(ConsistencyQuery),
    responses((status = 200, content_type = "text/plain", body = String, description = "Base64 hashes, one per line"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_consistency(
    State(s): State<AppState>,
    Extension(_p): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Response> {
    if q.old == 0 || q.old > q.new {
        return Err(ApiError::bad_request("invalid_range", "Need 0 < old <= new."));
    }
    let engine = s.engine.clone();
    let proof = tokio::task::spawn_blocking(move || engine.consistency_proof(q.old, q.new))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| match e {
            farthing_store::EngineError::Log(m) => ApiError::bad_request("invalid_range", m),
            e => e.into(),
        })?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        farthing_tlog::proof::encode_hashes(&proof),
    )
        .into_response())
}

// ----- keys -----

#[utoipa::path(post, path = "/v1/api-keys", tag = "keys", request_body = CreateKey,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a repeated request (answers that show a secret once are not stored)")),
    responses((status = 201, body = CreatedKey), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_key(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiJson(req): ApiJson<CreateKey>,
) -> ApiResult<Response> {
    p.require_admin()?;
    let owner_id = req.owner_id.as_deref().map(|o| parse_u128("owner_id", o)).transpose()?;
    let accounts =
        req.accounts.iter().map(|a| parse_id("accounts", a)).collect::<ApiResult<Vec<_>>>()?;
    for a in &accounts {
        if s.directory.account(*a).map(|i| i.owner) != owner_id {
            return Err(ApiError::invalid(
                "accounts",
                format!("Account {a} is not one of the owner's."),
            ));
        }
    }
    let new = NewKey {
        role: req.role,
        owner_id,
        accounts,
        rate_limit_per_s: req.rate_limit_per_s.unwrap_or(0),
        label: req.label.unwrap_or_default(),
    };
    let (key, record) = s.keys.create(new, None).await?;
    let mut response =
        (StatusCode::CREATED, Json(CreatedKey { key, record: KeyView::new(&record) }))
            .into_response();
    // The key is shown once: an idempotent replay must not show it again.
    response.extensions_mut().insert(crate::idempotency::NoReplay);
    Ok(response)
}

#[utoipa::path(get, path = "/v1/api-keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = Page<KeyView>)), security(("bearer" = [])))]
pub async fn list_keys(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<KeyView>>> {
    p.require_admin()?;
    let limit = page_limit(&s, q.limit)? as usize;
    // By prefix; the cursor is the last prefix shown.
    let mut keys = s.keys.list();
    if let Some(after) = &q.cursor {
        keys.retain(|k| k.prefix.as_str() > after.as_str());
    }
    keys.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let more = keys.len() > limit;
    keys.truncate(limit);
    let next_cursor = more.then(|| keys.last().map(|k| k.prefix.clone())).flatten();
    Ok(Json(Page { data: keys.iter().map(KeyView::new).collect(), next_cursor }))
}

#[utoipa::path(delete, path = "/v1/api-keys/{prefix}", tag = "keys",
    params(("prefix" = String, Path, description = "The key's public prefix")),
    responses((status = 200, body = KeyView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn revoke_key(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    ApiPath(prefix): ApiPath<String>,
) -> ApiResult<Json<KeyView>> {
    p.require_admin()?;
    if prefix == p.prefix {
        return Err(ApiError::bad_request("revoke_self", "A key cannot revoke itself."));
    }
    let revoked = s.keys.revoke(&prefix).await?;
    // What a merchant key set up stops with it: its webhooks (its streams end by themselves).
    if revoked.role == Role::Merchant {
        crate::webhooks::disable_created_by(&s, &prefix).await?;
    }
    Ok(Json(KeyView::new(&revoked)))
}
