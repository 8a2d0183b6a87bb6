//! The state machine: applies batches of events to the ledger, deterministically.
//!
//! Input is a batch and the timestamp of its first event (event `i` gets `timestamp + i`);
//! output is one result per event. Nothing here reads a clock or a file, so replaying the same
//! batches with the same timestamps always rebuilds the same state.

use std::collections::BTreeSet;

use hashbrown::HashMap;

use crate::index::IdIndex;
use crate::limits::{ASSETS_MAX, BATCH_EVENTS_MAX, NS_PER_S, TRANSFERS_MAX};
use crate::results::{CreateAccountResult, CreateAssetResult, CreateTransferResult, EventResult};
use crate::types::{
    Account, AccountFlags, Asset, AssetKind, BalanceAt, Balances, Decision, PendingStatus,
    Transfer, TransferFlags, ASSET_SCALE_MAX,
};

/// How many events ahead the transfer index is prefetched: enough to cover a memory miss,
/// few enough to stay within the CPU's outstanding-miss buffers.
const PREFETCH_DISTANCE: usize = 12;

pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// State of a pending transfer, keyed by its index in the transfer log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingState {
    pub status: PendingStatus,
    /// Engine timestamp at which it expires; `u64::MAX` for never.
    pub expires_at: u64,
}

/// A change made inside an open linked chain, so that a failing chain can be rolled back.
#[derive(Clone, Copy, Debug)]
enum Undo {
    AccountCreated,
    AccountChanged { index: u32, balances: Balances, flags: AccountFlags },
    TransferCreated,
    PendingChanged { index: u32, state: PendingState },
}

/// The whole ledger in memory. Fields are crate-visible for the snapshot codec and queries.
#[derive(Clone, Debug)]
pub struct StateMachine {
    pub(crate) assets: Map<u32, Asset>,
    pub(crate) accounts: Vec<Account>,
    pub(crate) account_index: Map<u128, u32>,
    /// Per account (same index as `accounts`), its transfers' indexes in time order.
    pub(crate) account_transfers: Vec<Vec<u32>>,
    /// Per history-flagged account index, its balances after each change.
    pub(crate) history: Map<u32, Vec<BalanceAt>>,
    /// Every committed transfer, in commit (= timestamp) order.
    pub(crate) transfers: Vec<Transfer>,
    pub(crate) transfer_index: IdIndex,
    pub(crate) pending: Map<u32, PendingState>,
    pub(crate) expiries: BTreeSet<(u64, u32)>,
    /// Ids of transfers refused for a state-dependent reason, with that reason.
    pub(crate) failed: Map<u128, CreateTransferResult>,
    /// The decisions kept with committed transfers, by the transfer's position: appended
    /// as their transfers are, so in position order.
    pub(crate) decisions: Vec<(u32, Decision)>,
    pub(crate) last_timestamp: u64,
    undo: Vec<Undo>,
    chain_open: bool,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// Result of one transfer before chain handling: `Ok` with the effective amount, or a code.
type Outcome<T> = Result<T, CreateTransferResult>;

impl StateMachine {
    pub fn new() -> Self {
        Self {
            assets: Map::default(),
            accounts: Vec::new(),
            account_index: Map::default(),
            account_transfers: Vec::new(),
            history: Map::default(),
            transfers: Vec::new(),
            transfer_index: IdIndex::default(),
            pending: Map::default(),
            expiries: BTreeSet::new(),
            failed: Map::default(),
            decisions: Vec::new(),
            last_timestamp: 0,
            undo: Vec::new(),
            chain_open: false,
        }
    }

    /// Reserves room for this many more accounts and transfers and touches it, so that the
    /// hot path never waits for the kernel to fault in fresh pages (static allocation at
    /// start-up, as an engine configured with a capacity does).
    pub fn reserve(&mut self, accounts: usize, transfers: usize) {
        self.accounts.reserve(accounts);
        self.account_index.reserve(accounts);
        self.account_transfers.reserve(accounts);
        self.transfers.reserve(transfers);
        self.transfer_index.reserve(transfers, &self.transfers);
        // One write per page of the log's spare capacity.
        let per_page = (4096 / std::mem::size_of::<Transfer>()).max(1);
        for slot in self.transfers.spare_capacity_mut().iter_mut().step_by(per_page) {
            slot.write(Transfer::default());
        }
        self.transfer_index.prefault();
    }

    /// Timestamp of the last event applied (0 for an empty ledger).
    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    /// Counts of assets, accounts, transfers and pending transfers still pending.
    pub fn counts(&self) -> Counts {
        let pending_open =
            self.pending.values().filter(|p| p.status == PendingStatus::Pending).count();
        Counts {
            assets: self.assets.len() as u64,
            accounts: self.accounts.len() as u64,
            transfers: self.transfers.len() as u64,
            pending_open: pending_open as u64,
            failed_ids: self.failed.len() as u64,
        }
    }

    /// Opens a batch at `timestamp`: checks that time only moves forward and expires every
    /// pending transfer whose deadline has passed. Returns the number expired.
    fn begin_batch(&mut self, timestamp: u64, events: usize) -> usize {
        assert!(events <= BATCH_EVENTS_MAX, "batch of {events} events exceeds the maximum");
        assert!(
            timestamp > self.last_timestamp,
            "timestamps must increase: {timestamp} after {}",
            self.last_timestamp
        );
        assert!(timestamp.checked_add(events as u64).is_some(), "timestamp overflow");
        self.expire_pending(timestamp)
    }

    /// Advances time without events: expires pending transfers due by `timestamp`.
    pub fn pulse(&mut self, timestamp: u64) -> usize {
        let expired = self.begin_batch(timestamp, 0);
        self.last_timestamp = timestamp;
        expired
    }

    /// Expires every pending transfer due at or before `timestamp`, releasing its amount.
    fn expire_pending(&mut self, timestamp: u64) -> usize {
        let mut expired = 0;
        while let Some(&(expires_at, index)) = self.expiries.first() {
            if expires_at > timestamp {
                break;
            }
            self.expiries.pop_first();
            let state = self.pending.get_mut(&index).expect("expiry of unknown pending");
            assert_eq!(state.status, PendingStatus::Pending, "expiry of resolved pending");
            state.status = PendingStatus::Expired;
            let p = self.transfers[index as usize];
            let (dr, cr) = self.account_pair(p.debit_account_id, p.credit_account_id);
            self.accounts[dr].balances.debits_pending -= p.amount;
            self.accounts[cr].balances.credits_pending -= p.amount;
            self.reopen_if_closing(&p, dr, cr);
            // A deadline inside the last batch's span is applied only now, after that batch's
            // events: date the row after them so that history stays in time order.
            let at = expires_at.max(self.last_timestamp + 1);
            self.record_history(dr, at);
            self.record_history(cr, at);
            expired += 1;
        }
        expired
    }

    // ----- assets -----

    /// Registers assets. Assets are reference data: no chains, each event stands alone.
    pub fn create_assets(
        &mut self,
        events: &[Asset],
        timestamp: u64,
    ) -> Vec<EventResult<CreateAssetResult>> {
        self.begin_batch(timestamp, events.len());
        let mut results = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let ts = timestamp + i as u64;
            let code = self.create_asset(event, ts);
            let timestamp = match code {
                CreateAssetResult::Ok => ts,
                CreateAssetResult::Exists => self.assets[&event.id].timestamp,
                _ => 0,
            };
            results.push(EventResult { code, timestamp });
        }
        self.last_timestamp = timestamp + events.len().max(1) as u64 - 1;
        results
    }

    fn create_asset(&mut self, a: &Asset, ts: u64) -> CreateAssetResult {
        use CreateAssetResult as R;
        if a.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if a.id == 0 {
            return R::IdMustNotBeZero;
        }
        if !a.code_is_valid() {
            return R::CodeInvalid;
        }
        if a.scale > ASSET_SCALE_MAX {
            return R::ScaleExceedsMax;
        }
        if AssetKind::from_u8(a.kind).is_none() {
            return R::KindInvalid;
        }
        if let Some(e) = self.assets.get(&a.id) {
            return if e.code != a.code {
                R::ExistsWithDifferentCode
            } else if e.scale != a.scale {
                R::ExistsWithDifferentScale
            } else if e.kind != a.kind {
                R::ExistsWithDifferentKind
            } else {
                R::Exists
            };
        }
        if self.assets.values().any(|e| e.code == a.code) {
            return R::CodeAlreadyUsed;
        }
        // A client can reach this bound: it is an answer, never a panic (a panic on a
        // logged batch would recur at every replay).
        if self.assets.len() >= ASSETS_MAX {
            return R::AssetsFull;
        }
        self.assets.insert(a.id, Asset { timestamp: ts, ..*a });
        R::Ok
    }

    // ----- accounts -----

    /// Creates accounts. Events flagged `linked` succeed or fail with the next one.
    pub fn create_accounts(
        &mut self,
        events: &[Account],
        timestamp: u64,
    ) -> Vec<EventResult<CreateAccountResult>> {
        use CreateAccountResult as R;
        self.begin_batch(timestamp, events.len());
        let codes = self.run_chains(
            events,
            |a| a.flags.contains(AccountFlags::LINKED),
            |sm, a, i, ts| sm.create_account(&a[i], ts),
            Chain { ok: R::Ok, failed: R::LinkedEventFailed, open: R::LinkedEventChainOpen },
            timestamp,
        );
        self.last_timestamp = timestamp + events.len().max(1) as u64 - 1;
        codes
            .into_iter()
            .zip(events)
            .enumerate()
            .map(|(i, (code, a))| {
                // An id that "exists" only because an earlier event of the same, rolled-back
                // chain created it does not exist: say so, never `exists`.
                let existing = if code.is_exists() { self.account(a.id) } else { None };
                let code = if code.is_exists() && existing.is_none() {
                    R::IdRepeatedInChain
                } else {
                    code
                };
                let timestamp = match code {
                    R::Ok => timestamp + i as u64,
                    R::Exists => existing.map_or(0, |e| e.timestamp),
                    _ => 0,
                };
                EventResult { code, timestamp }
            })
            .collect()
    }

    fn create_account(&mut self, a: &Account, ts: u64) -> CreateAccountResult {
        use CreateAccountResult as R;
        let f = a.flags;
        if a.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if f.has_reserved() {
            return R::ReservedFlag;
        }
        if a.id == 0 {
            return R::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if f.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && f.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            return R::FlagsAreMutuallyExclusive;
        }
        let b = &a.balances;
        let zero_checks = [
            (b.debits_pending, R::DebitsPendingMustBeZero),
            (b.debits_posted, R::DebitsPostedMustBeZero),
            (b.credits_pending, R::CreditsPendingMustBeZero),
            (b.credits_posted, R::CreditsPostedMustBeZero),
        ];
        if let Some((_, code)) = zero_checks.iter().find(|(v, _)| *v != 0) {
            return *code;
        }
        if a.asset == 0 {
            return R::AssetMustNotBeZero;
        }
        if a.code == 0 {
            return R::CodeMustNotBeZero;
        }
        if let Some(e) = self.account(a.id) {
            return account_exists(a, e);
        }
        if !self.assets.contains_key(&a.asset) {
            return R::AssetNotFound;
        }
        let index = self.accounts.len() as u32;
        let mut account = *a;
        account.timestamp = ts;
        self.accounts.push(account);
        self.account_transfers.push(Vec::new());
        self.account_index.insert(a.id, index);
        if f.contains(AccountFlags::HISTORY) {
            self.history.insert(index, Vec::new());
        }
        self.record_undo(Undo::AccountCreated);
        R::Ok
    }

    // ----- transfers -----

    /// Creates transfers. Events flagged `linked` succeed or fail with the next one.
    pub fn create_transfers(
        &mut self,
        events: &[Transfer],
        timestamp: u64,
    ) -> Vec<EventResult<CreateTransferResult>> {
        use CreateTransferResult as R;
        self.begin_batch(timestamp, events.len());
        for t in events.iter().take(PREFETCH_DISTANCE) {
            self.transfer_index.prefetch(t.id);
        }
        let codes = self.run_chains(
            events,
            |t| t.flags.contains(TransferFlags::LINKED),
            |sm, t, i, ts| {
                // Load the index slot of a transfer a few events ahead while this one runs.
                if let Some(ahead) = t.get(i + PREFETCH_DISTANCE) {
                    sm.transfer_index.prefetch(ahead.id);
                }
                sm.create_transfer(&t[i], ts)
            },
            Chain { ok: R::Ok, failed: R::LinkedEventFailed, open: R::LinkedEventChainOpen },
            timestamp,
        );
        self.last_timestamp = timestamp + events.len().max(1) as u64 - 1;
        let mut results = Vec::with_capacity(events.len());
        for (i, (code, t)) in codes.into_iter().zip(events).enumerate() {
            // Only an `exists*` answer needs the stored transfer (the hot path is `ok`).
            let existing = if code.is_exists() { self.transfer(t.id) } else { None };
            let code =
                if code.is_exists() && existing.is_none() { R::IdRepeatedInChain } else { code };
            let timestamp = match code {
                R::Ok => timestamp + i as u64,
                R::Exists => existing.map_or(0, |e| e.timestamp),
                _ => 0,
            };
            results.push(EventResult { code, timestamp });
        }
        results
    }

    /// Creates transfers, each with the decision made about it (or [`Decision::NONE`]). A
    /// decision is kept exactly when its transfer is committed by this call (`ok`): a
    /// refused or repeated transfer leaves the decision kept before it, if any, alone.
    pub fn create_judged_transfers(
        &mut self,
        events: &[Transfer],
        decisions: &[Decision],
        timestamp: u64,
    ) -> Vec<EventResult<CreateTransferResult>> {
        assert_eq!(events.len(), decisions.len(), "one decision (or none) per transfer");
        for (t, d) in events.iter().zip(decisions) {
            assert!(d.is_none() || d.transfer_id == t.id, "a decision names its own transfer");
        }
        let results = self.create_transfers(events, timestamp);
        for ((r, t), d) in results.iter().zip(events).zip(decisions) {
            if r.code != CreateTransferResult::Ok || d.is_none() {
                continue;
            }
            let position = self.transfer_position(t.id).expect("a committed transfer");
            assert!(
                self.decisions.last().is_none_or(|(p, _)| *p < position),
                "decisions are kept in position order"
            );
            self.decisions.push((position, *d));
        }
        results
    }

    fn create_transfer(&mut self, t: &Transfer, ts: u64) -> CreateTransferResult {
        let standalone = !self.chain_open && !t.flags.contains(TransferFlags::LINKED);
        let outcome = self.validate_transfer(t).and_then(|()| {
            if t.flags.contains(TransferFlags::POST_PENDING)
                || t.flags.contains(TransferFlags::VOID_PENDING)
            {
                self.resolve_pending(t, ts)
            } else {
                self.apply_transfer(t, ts)
            }
        });
        match outcome {
            Ok(()) => CreateTransferResult::Ok,
            Err(code) => {
                // Inside a chain the whole chain is the unit; its failure is not remembered.
                if standalone && code.is_transient() {
                    self.failed.insert(t.id, code);
                }
                code
            }
        }
    }

    /// Checks of the event's own fields, then idempotency (codes up to `id_already_failed`).
    fn validate_transfer(&self, t: &Transfer) -> Outcome<()> {
        use CreateTransferResult as R;
        let f = t.flags;
        let resolving =
            f.contains(TransferFlags::POST_PENDING) || f.contains(TransferFlags::VOID_PENDING);
        check(t.timestamp == 0, R::TimestampMustBeZero)?;
        check(!f.has_reserved(), R::ReservedFlag)?;
        check(t.id != 0, R::IdMustNotBeZero)?;
        check(t.id != u128::MAX, R::IdMustNotBeIntMax)?;
        let phases =
            [TransferFlags::PENDING, TransferFlags::POST_PENDING, TransferFlags::VOID_PENDING]
                .iter()
                .filter(|p| f.contains(**p))
                .count();
        let balancing = f.contains(TransferFlags::BALANCING_DEBIT)
            || f.contains(TransferFlags::BALANCING_CREDIT);
        let closing =
            f.contains(TransferFlags::CLOSING_DEBIT) || f.contains(TransferFlags::CLOSING_CREDIT);
        check(phases <= 1 && !(resolving && (balancing || closing)), R::FlagsAreMutuallyExclusive)?;
        // A hold is set on a pending transfer and released by a post or void only.
        let held_ok = !f.contains(TransferFlags::HELD) || f.contains(TransferFlags::PENDING);
        check(held_ok, R::FlagsAreMutuallyExclusive)?;
        check(!f.contains(TransferFlags::RELEASE_HOLD) || resolving, R::FlagsAreMutuallyExclusive)?;
        if !resolving {
            check(t.debit_account_id != 0, R::DebitAccountIdMustNotBeZero)?;
        }
        check(t.debit_account_id != u128::MAX, R::DebitAccountIdMustNotBeIntMax)?;
        if !resolving {
            check(t.credit_account_id != 0, R::CreditAccountIdMustNotBeZero)?;
        }
        check(t.credit_account_id != u128::MAX, R::CreditAccountIdMustNotBeIntMax)?;
        check(
            t.debit_account_id == 0 || t.debit_account_id != t.credit_account_id,
            R::AccountsMustBeDifferent,
        )?;
        if resolving {
            check(t.pending_id != 0, R::PendingIdMustNotBeZero)?;
            check(t.pending_id != u128::MAX, R::PendingIdMustNotBeIntMax)?;
            check(t.pending_id != t.id, R::PendingIdMustBeDifferent)?;
        } else {
            check(t.pending_id == 0, R::PendingIdMustBeZero)?;
        }
        let pending = f.contains(TransferFlags::PENDING);
        check(t.timeout_s == 0 || pending, R::TimeoutReservedForPendingTransfer)?;
        check(!closing || pending, R::ClosingTransferMustBePending)?;
        let amount_optional = balancing || f.contains(TransferFlags::VOID_PENDING);
        check(t.amount != 0 || amount_optional, R::AmountMustNotBeZero)?;
        if !resolving {
            check(t.asset != 0, R::AssetMustNotBeZero)?;
            check(t.code != 0, R::CodeMustNotBeZero)?;
        }
        if let Some(e) = self.transfer(t.id) {
            return Err(transfer_exists(t, e));
        }
        if !self.failed.is_empty() && self.failed.contains_key(&t.id) {
            return Err(R::IdAlreadyFailed);
        }
        Ok(())
    }

    /// A new transfer (plain, pending or balancing): the codes from `debit_account_not_found` on, then the effect.
    fn apply_transfer(&mut self, t: &Transfer, ts: u64) -> Outcome<()> {
        use CreateTransferResult as R;
        let dr = *self.account_index.get(&t.debit_account_id).ok_or(R::DebitAccountNotFound)?;
        let cr = *self.account_index.get(&t.credit_account_id).ok_or(R::CreditAccountNotFound)?;
        let (dr, cr) = (dr as usize, cr as usize);
        let (da, ca) = (&self.accounts[dr], &self.accounts[cr]);
        check(da.asset == ca.asset, R::AccountsMustHaveTheSameAsset)?;
        check(t.asset == da.asset, R::TransferMustHaveTheSameAssetAsAccounts)?;
        check(!da.flags.contains(AccountFlags::CLOSED), R::DebitAccountClosed)?;
        check(!ca.flags.contains(AccountFlags::CLOSED), R::CreditAccountClosed)?;
        let amount = balancing_amount(t, &da.balances, &ca.balances);
        let (db, cb) = (da.balances, ca.balances);
        let pending = t.flags.contains(TransferFlags::PENDING);
        if pending {
            check(db.debits_pending.checked_add(amount).is_some(), R::OverflowsDebitsPending)?;
            check(cb.credits_pending.checked_add(amount).is_some(), R::OverflowsCreditsPending)?;
        } else {
            check(db.debits_posted.checked_add(amount).is_some(), R::OverflowsDebitsPosted)?;
            check(cb.credits_posted.checked_add(amount).is_some(), R::OverflowsCreditsPosted)?;
        }
        let debits =
            db.debits_pending.checked_add(db.debits_posted).and_then(|d| d.checked_add(amount));
        let credits =
            cb.credits_pending.checked_add(cb.credits_posted).and_then(|c| c.checked_add(amount));
        let debits = debits.ok_or(R::OverflowsDebits)?;
        let credits = credits.ok_or(R::OverflowsCredits)?;
        let expires_at = if t.timeout_s == 0 {
            u64::MAX
        } else {
            (t.timeout_s as u64 * NS_PER_S)
                .checked_add(ts)
                .filter(|e| *e < u64::MAX)
                .ok_or(R::OverflowsTimeout)?
        };
        if da.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
            check(debits <= db.credits_posted, R::ExceedsCredits)?;
        }
        if ca.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
            check(credits <= cb.debits_posted, R::ExceedsDebits)?;
        }

        self.record_account(dr);
        self.record_account(cr);
        let index = self.push_transfer(Transfer { amount, timestamp: ts, ..*t }, dr, cr);
        {
            let [d, c] = self.accounts.get_disjoint_mut([dr, cr]).expect("distinct accounts");
            if pending {
                d.balances.debits_pending += amount;
                c.balances.credits_pending += amount;
                if t.flags.contains(TransferFlags::CLOSING_DEBIT) {
                    d.flags.set(AccountFlags::CLOSED, true);
                }
                if t.flags.contains(TransferFlags::CLOSING_CREDIT) {
                    c.flags.set(AccountFlags::CLOSED, true);
                }
            } else {
                d.balances.debits_posted += amount;
                c.balances.credits_posted += amount;
            }
        }
        if pending {
            self.pending.insert(index, PendingState { status: PendingStatus::Pending, expires_at });
            if expires_at != u64::MAX {
                self.expiries.insert((expires_at, index));
            }
        }
        self.record_history(dr, ts);
        self.record_history(cr, ts);
        Ok(())
    }

    /// A post or void of a pending transfer: the pending-transfer codes, then the effect.
    fn resolve_pending(&mut self, t: &Transfer, ts: u64) -> Outcome<()> {
        use CreateTransferResult as R;
        let post = t.flags.contains(TransferFlags::POST_PENDING);
        let p_index = self.transfer_position(t.pending_id).ok_or(R::PendingTransferNotFound)?;
        let p = self.transfers[p_index as usize];
        check(p.flags.contains(TransferFlags::PENDING), R::PendingTransferNotPending)?;
        check(
            matches_or_zero(t.debit_account_id, p.debit_account_id),
            R::PendingTransferHasDifferentDebitAccountId,
        )?;
        check(
            matches_or_zero(t.credit_account_id, p.credit_account_id),
            R::PendingTransferHasDifferentCreditAccountId,
        )?;
        check(t.asset == 0 || t.asset == p.asset, R::PendingTransferHasDifferentAsset)?;
        check(t.code == 0 || t.code == p.code, R::PendingTransferHasDifferentCode)?;
        let amount = if post { resolve_post_amount(t.amount, p.amount) } else { p.amount };
        check(amount <= p.amount, R::ExceedsPendingTransferAmount)?;
        check(
            post || [0, u128::MAX, p.amount].contains(&t.amount),
            R::PendingTransferHasDifferentAmount,
        )?;
        let state = self.pending[&p_index];
        match state.status {
            PendingStatus::Pending => {}
            PendingStatus::Posted => return Err(R::PendingTransferAlreadyPosted),
            PendingStatus::Voided => return Err(R::PendingTransferAlreadyVoided),
            PendingStatus::Expired => return Err(R::PendingTransferExpired),
        }
        check(ts < state.expires_at, R::PendingTransferExpired)?;
        let (dr, cr) = self.account_pair(p.debit_account_id, p.credit_account_id);
        if post {
            self.check_post(&p, dr, cr, amount)?;
        }
        // Last of all, so that the codes keep their order of precedence.
        let held = p.flags.contains(TransferFlags::HELD);
        let releasing = t.flags.contains(TransferFlags::RELEASE_HOLD);
        check(!held || releasing, R::PendingTransferHeld)?;
        check(held || !releasing, R::PendingTransferNotHeld)?;

        self.record_account(dr);
        self.record_account(cr);
        self.record_undo(Undo::PendingChanged { index: p_index, state });
        let stored = Transfer {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            asset: p.asset,
            code: p.code,
            amount,
            timestamp: ts,
            ..*t
        };
        self.push_transfer(stored, dr, cr);
        let [d, c] = self.accounts.get_disjoint_mut([dr, cr]).expect("distinct accounts");
        d.balances.debits_pending -= p.amount;
        c.balances.credits_pending -= p.amount;
        if post {
            d.balances.debits_posted += amount;
            c.balances.credits_posted += amount;
        }
        let status = if post { PendingStatus::Posted } else { PendingStatus::Voided };
        self.pending.insert(p_index, PendingState { status, ..state });
        self.expiries.remove(&(state.expires_at, p_index));
        if !post {
            self.reopen_if_closing(&p, dr, cr);
        }
        self.record_history(dr, ts);
        self.record_history(cr, ts);
        Ok(())
    }

    /// A post moves money, so into or out of a closed account only the closing transfer
    /// itself may post (a void only releases a reservation: always allowed).
    fn check_post(&self, p: &Transfer, dr: usize, cr: usize, amount: u128) -> Outcome<()> {
        use CreateTransferResult as R;
        let (da, ca) = (&self.accounts[dr], &self.accounts[cr]);
        let closed_by_p = |flag| p.flags.contains(flag);
        check(
            !da.flags.contains(AccountFlags::CLOSED) || closed_by_p(TransferFlags::CLOSING_DEBIT),
            R::DebitAccountClosed,
        )?;
        check(
            !ca.flags.contains(AccountFlags::CLOSED) || closed_by_p(TransferFlags::CLOSING_CREDIT),
            R::CreditAccountClosed,
        )?;
        check(da.balances.debits_posted.checked_add(amount).is_some(), R::OverflowsDebitsPosted)?;
        check(ca.balances.credits_posted.checked_add(amount).is_some(), R::OverflowsCreditsPosted)
    }

    // ----- chains and undo -----

    /// Runs events one by one, grouping `linked` runs into all-or-nothing chains: a chain is
    /// a run of linked events closed by the next unlinked one. If any event of a chain fails,
    /// every change of the chain is undone and its other events answer `linked_event_failed`.
    fn run_chains<E, C: Copy + PartialEq>(
        &mut self,
        events: &[E],
        linked: impl Fn(&E) -> bool,
        mut apply: impl FnMut(&mut Self, &[E], usize, u64) -> C,
        codes: Chain<C>,
        timestamp: u64,
    ) -> Vec<C> {
        let n = events.len();
        let mut results = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            if !linked(&events[i]) {
                results.push(apply(self, events, i, timestamp + i as u64));
                i += 1;
                continue;
            }
            let close = (i..n).find(|j| !linked(&events[*j]));
            let (last, open) = match close {
                Some(j) => (j, false),
                None => (n - 1, true),
            };
            self.chain_open = true;
            debug_assert!(self.undo.is_empty());
            let mut failed_at = None;
            for j in i..=last {
                let code = if open && j == last {
                    codes.open
                } else {
                    apply(self, events, j, timestamp + j as u64)
                };
                results.push(code);
                if code != codes.ok {
                    failed_at = Some(j);
                    break;
                }
            }
            if let Some(failed) = failed_at {
                self.rollback();
                results[i..failed].fill(codes.failed);
                for j in failed + 1..=last {
                    results.push(if open && j == last { codes.open } else { codes.failed });
                }
            }
            self.end_chain();
            i = last + 1;
        }
        results
    }

    fn end_chain(&mut self) {
        self.chain_open = false;
        self.undo.clear();
    }

    fn record_undo(&mut self, undo: Undo) {
        if self.chain_open {
            self.undo.push(undo);
        }
    }

    fn record_account(&mut self, index: usize) {
        if self.chain_open {
            let a = &self.accounts[index];
            self.undo.push(Undo::AccountChanged {
                index: index as u32,
                balances: a.balances,
                flags: a.flags,
            });
        }
    }

    /// Reverts every change of the open chain, newest first.
    fn rollback(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::AccountCreated => {
                    let a = self.accounts.pop().expect("undo of missing account");
                    self.account_index.remove(&a.id);
                    self.account_transfers.pop();
                    self.history.remove(&(self.accounts.len() as u32));
                }
                Undo::AccountChanged { index, balances, flags } => {
                    let a = &mut self.accounts[index as usize];
                    a.balances = balances;
                    a.flags = flags;
                }
                Undo::TransferCreated => self.pop_transfer(),
                Undo::PendingChanged { index, state } => {
                    self.pending.insert(index, state);
                    if state.expires_at != u64::MAX {
                        self.expiries.insert((state.expires_at, index));
                    }
                }
            }
        }
    }

    fn push_transfer(&mut self, t: Transfer, dr: usize, cr: usize) -> u32 {
        assert!(self.transfers.len() < TRANSFERS_MAX, "transfer log full");
        let index = self.transfers.len() as u32;
        debug_assert!(self.transfers.last().is_none_or(|l| l.timestamp < t.timestamp));
        self.transfer_index.insert(t.id, index, &self.transfers);
        self.transfers.push(t);
        self.account_transfers[dr].push(index);
        self.account_transfers[cr].push(index);
        self.record_undo(Undo::TransferCreated);
        index
    }

    fn pop_transfer(&mut self) {
        let log = &self.transfers;
        let t = *log.last().expect("undo of missing transfer");
        self.transfer_index.remove(t.id, |p| log[p as usize].id);
        self.transfers.pop();
        let index = self.transfers.len() as u32;
        let (dr, cr) = self.account_pair(t.debit_account_id, t.credit_account_id);
        for a in [dr, cr] {
            assert_eq!(self.account_transfers[a].pop(), Some(index));
            if let Some(h) = self.history.get_mut(&(a as u32)) {
                h.pop();
            }
        }
        if let Some(state) = self.pending.remove(&index) {
            self.expiries.remove(&(state.expires_at, index));
        }
    }

    fn reopen_if_closing(&mut self, p: &Transfer, dr: usize, cr: usize) {
        if p.flags.contains(TransferFlags::CLOSING_DEBIT) {
            self.accounts[dr].flags.set(AccountFlags::CLOSED, false);
        }
        if p.flags.contains(TransferFlags::CLOSING_CREDIT) {
            self.accounts[cr].flags.set(AccountFlags::CLOSED, false);
        }
    }

    fn record_history(&mut self, account: usize, timestamp: u64) {
        if !self.accounts[account].flags.contains(AccountFlags::HISTORY) {
            return;
        }
        if let Some(h) = self.history.get_mut(&(account as u32)) {
            h.push(BalanceAt { timestamp, balances: self.accounts[account].balances });
        }
    }

    /// Indexes of two accounts that must exist (they are named by a committed transfer).
    fn account_pair(&self, debit: u128, credit: u128) -> (usize, usize) {
        let dr = self.account_index[&debit] as usize;
        let cr = self.account_index[&credit] as usize;
        (dr, cr)
    }

    // ----- reads -----

    pub fn asset(&self, id: u32) -> Option<&Asset> {
        self.assets.get(&id)
    }

    pub fn account(&self, id: u128) -> Option<&Account> {
        self.account_index.get(&id).map(|i| &self.accounts[*i as usize])
    }

    pub fn transfer(&self, id: u128) -> Option<&Transfer> {
        self.transfer_position(id).map(|i| &self.transfers[i as usize])
    }

    /// A committed transfer's leaf index in the transparency log (its commit position).
    pub fn transfer_log_index(&self, id: u128) -> Option<u64> {
        self.transfer_position(id).map(u64::from)
    }

    /// Position of a transfer in the log.
    pub(crate) fn transfer_position(&self, id: u128) -> Option<u32> {
        self.transfer_index.get(id, |p| self.transfers[p as usize].id)
    }

    /// Status of a pending transfer by id; `None` if it is not a pending transfer.
    /// The decision kept with a committed transfer, if one was.
    pub fn decision(&self, id: u128) -> Option<&Decision> {
        let position = self.transfer_position(id)?;
        let at = self.decisions.binary_search_by_key(&position, |(p, _)| *p).ok()?;
        Some(&self.decisions[at].1)
    }

    /// Whether a transfer is a pending transfer still held for approval.
    pub fn is_held(&self, id: u128) -> bool {
        self.transfer(id).is_some_and(|t| t.flags.contains(TransferFlags::HELD))
            && self.pending_status(id) == Some(PendingStatus::Pending)
    }

    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        let index = self.transfer_position(id)?;
        self.pending.get(&index).map(|p| p.status)
    }

    /// Every asset, by id.
    pub fn assets(&self) -> Vec<Asset> {
        let mut assets: Vec<Asset> = self.assets.values().copied().collect();
        assets.sort_by_key(|a| a.id);
        assets
    }

    /// Accounts in creation order.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// Transfers in commit order.
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }
}

/// The three codes chain handling needs, per event kind.
#[derive(Clone, Copy)]
struct Chain<C> {
    ok: C,
    failed: C,
    open: C,
}

/// Counts for `inspect` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub assets: u64,
    pub accounts: u64,
    pub transfers: u64,
    pub pending_open: u64,
    pub failed_ids: u64,
}

fn check(ok: bool, code: CreateTransferResult) -> Outcome<()> {
    if ok {
        Ok(())
    } else {
        Err(code)
    }
}

fn matches_or_zero(submitted: u128, stored: u128) -> bool {
    submitted == 0 || submitted == stored
}

/// A post's amount: `u128::MAX` posts everything reserved.
fn resolve_post_amount(submitted: u128, reserved: u128) -> u128 {
    if submitted == u128::MAX {
        reserved
    } else {
        submitted
    }
}

/// The amount a balancing transfer may move: at most what keeps each account within its
/// balance (posted credits for the debit side, posted debits for the credit side).
fn balancing_amount(t: &Transfer, debit: &Balances, credit: &Balances) -> u128 {
    let mut amount = t.amount;
    if t.flags.contains(TransferFlags::BALANCING_DEBIT) {
        let used = debit.debits_posted.saturating_add(debit.debits_pending);
        amount = amount.min(debit.credits_posted.saturating_sub(used));
    }
    if t.flags.contains(TransferFlags::BALANCING_CREDIT) {
        let used = credit.credits_posted.saturating_add(credit.credits_pending);
        amount = amount.min(credit.debits_posted.saturating_sub(used));
    }
    amount
}

fn account_exists(a: &Account, e: &Account) -> CreateAccountResult {
    use CreateAccountResult as R;
    let user_flags = |f: AccountFlags| f.0 & !(AccountFlags::CLOSED.0 | AccountFlags::LINKED.0);
    if user_flags(a.flags) != user_flags(e.flags) {
        R::ExistsWithDifferentFlags
    } else if a.owner_id != e.owner_id {
        R::ExistsWithDifferentOwnerId
    } else if a.user_data_64 != e.user_data_64 {
        R::ExistsWithDifferentUserData64
    } else if a.asset != e.asset {
        R::ExistsWithDifferentAsset
    } else if a.code != e.code {
        R::ExistsWithDifferentCode
    } else {
        R::Exists
    }
}

/// Compares a retried transfer with the stored one. Post/void may leave accounts, asset and
/// code at zero (inherited from the pending transfer); balancing transfers store the amount
/// actually moved, which may be below the submitted upper bound.
fn transfer_exists(t: &Transfer, e: &Transfer) -> CreateTransferResult {
    use CreateTransferResult as R;
    let f = t.flags;
    let resolving =
        f.contains(TransferFlags::POST_PENDING) || f.contains(TransferFlags::VOID_PENDING);
    let balancing =
        f.contains(TransferFlags::BALANCING_DEBIT) || f.contains(TransferFlags::BALANCING_CREDIT);
    let inherited = |submitted: u128, stored: u128| {
        if resolving {
            matches_or_zero(submitted, stored)
        } else {
            submitted == stored
        }
    };
    let same_amount = if f.contains(TransferFlags::VOID_PENDING) {
        t.amount == 0 || t.amount == u128::MAX || t.amount == e.amount
    } else if f.contains(TransferFlags::POST_PENDING) {
        t.amount == u128::MAX || t.amount == e.amount
    } else if balancing {
        t.amount >= e.amount
    } else {
        t.amount == e.amount
    };
    let unlinked = |flags: TransferFlags| flags.0 & !TransferFlags::LINKED.0;
    if unlinked(f) != unlinked(e.flags) {
        R::ExistsWithDifferentFlags
    } else if t.pending_id != e.pending_id {
        R::ExistsWithDifferentPendingId
    } else if t.timeout_s != e.timeout_s {
        R::ExistsWithDifferentTimeout
    } else if !inherited(t.debit_account_id, e.debit_account_id) {
        R::ExistsWithDifferentDebitAccountId
    } else if !inherited(t.credit_account_id, e.credit_account_id) {
        R::ExistsWithDifferentCreditAccountId
    } else if !same_amount {
        R::ExistsWithDifferentAmount
    } else if t.user_data_128 != e.user_data_128 {
        R::ExistsWithDifferentUserData128
    } else if t.user_data_64 != e.user_data_64 {
        R::ExistsWithDifferentUserData64
    } else if t.user_data_32 != e.user_data_32 {
        R::ExistsWithDifferentUserData32
    } else if !inherited(t.asset as u128, e.asset as u128) {
        R::ExistsWithDifferentAsset
    } else if !inherited(t.code as u128, e.code as u128) {
        R::ExistsWithDifferentCode
    } else {
        R::Exists
    }
}
