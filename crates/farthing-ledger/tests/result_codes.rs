//! Every result code of the state machine, produced by a scenario; their precedence;
//! idempotency; linked chains; two-phase transfers; closing; balancing; and the queries.
//!
//! The scenario tables at the top (`transfer_codes`, `account_codes`, `asset_codes`) each hold
//! one scenario per code; `every_*_code_has_a_scenario` runs them all and fails when a code of
//! `ALL` was produced by none, so adding a code without a test makes the suite fail.

use std::collections::BTreeSet;
use std::fmt::Debug;

use farthing_ledger::limits::{NS_PER_S, QUERY_LIMIT_MAX};
use farthing_ledger::*;

type TR = CreateTransferResult;
type AR = CreateAccountResult;
type SR = CreateAssetResult;

const USD: u32 = 1;
const EUR: u32 = 2;
const MAX: u128 = u128::MAX;
/// Two of these overflow a u128; one fits.
const HALF: u128 = u128::MAX / 2 + 1;

/// Plain USD accounts.
const A: u128 = 1;
const B: u128 = 2;
const C: u128 = 3;
/// USD, debits_must_not_exceed_credits: a payer's wallet, empty at first.
const WALLET: u128 = 4;
/// USD, credits_must_not_exceed_debits.
const CAPPED: u128 = 5;
/// USD, history.
const HIST: u128 = 6;
/// Plain USD account the closing scenarios close.
const D: u128 = 7;
/// Plain EUR accounts.
const E1: u128 = 20;
const E2: u128 = 21;
/// No account has this id.
const MISSING: u128 = 999;

// ----- builders -----

fn acct(id: u128, asset: u32, flags: AccountFlags) -> Account {
    Account { id, asset, code: 1, flags, ..Default::default() }
}

fn tr(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        asset: USD,
        code: 1,
        ..Default::default()
    }
}

fn flagged(t: Transfer, flags: TransferFlags) -> Transfer {
    Transfer { flags: t.flags | flags, ..t }
}

fn linked(t: Transfer) -> Transfer {
    flagged(t, TransferFlags::LINKED)
}

fn pending(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    flagged(tr(id, debit, credit, amount), TransferFlags::PENDING)
}

fn pending_timeout(id: u128, debit: u128, credit: u128, amount: u128, s: u32) -> Transfer {
    Transfer { timeout_s: s, ..pending(id, debit, credit, amount) }
}

/// A post that inherits accounts, asset and code from the pending transfer.
fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer { id, pending_id, amount, flags: TransferFlags::POST_PENDING, ..Default::default() }
}

fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer { id, pending_id, flags: TransferFlags::VOID_PENDING, ..Default::default() }
}

fn codes<C: Copy>(results: &[EventResult<C>]) -> Vec<C> {
    results.iter().map(|r| r.code).collect()
}

// ----- the test ledger -----

/// A state machine plus the bookkeeping every test needs: the next timestamp, fresh ids, and
/// checks run around each single event (nothing moves on failure, invariants hold).
struct Ledger {
    sm: StateMachine,
    fresh: u128,
}

impl Ledger {
    fn empty() -> Self {
        Self { sm: StateMachine::new(), fresh: 1_000_000 }
    }

    /// Assets USD and EUR, and the accounts named by the constants above, all empty.
    fn new() -> Self {
        let mut l = Self::empty();
        let r = l.assets(&[
            Asset::new(USD, "USD", 6, AssetKind::Fiat),
            Asset::new(EUR, "EUR", 2, AssetKind::Fiat),
        ]);
        assert!(r.iter().all(|r| r.code == SR::Ok), "{r:?}");
        let r = l.accounts(&[
            acct(A, USD, AccountFlags::empty()),
            acct(B, USD, AccountFlags::empty()),
            acct(C, USD, AccountFlags::empty()),
            acct(WALLET, USD, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            acct(CAPPED, USD, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
            acct(HIST, USD, AccountFlags::HISTORY),
            acct(D, USD, AccountFlags::empty()),
            acct(E1, EUR, AccountFlags::empty()),
            acct(E2, EUR, AccountFlags::empty()),
        ]);
        assert!(r.iter().all(|r| r.code == AR::Ok), "{r:?}");
        l
    }

    fn id(&mut self) -> u128 {
        self.fresh += 1;
        self.fresh
    }

    fn next_ts(&self) -> u64 {
        self.sm.last_timestamp() + 1
    }

    fn assets(&mut self, events: &[Asset]) -> Vec<EventResult<SR>> {
        let ts = self.next_ts();
        self.sm.create_assets(events, ts)
    }

    fn accounts(&mut self, events: &[Account]) -> Vec<EventResult<AR>> {
        let ts = self.next_ts();
        let r = self.sm.create_accounts(events, ts);
        self.assert_invariants();
        r
    }

    fn transfers(&mut self, events: &[Transfer]) -> Vec<EventResult<TR>> {
        let ts = self.next_ts();
        self.transfers_at(ts, events)
    }

    fn transfers_at(&mut self, ts: u64, events: &[Transfer]) -> Vec<EventResult<TR>> {
        let r = self.sm.create_transfers(events, ts);
        assert_eq!(r.len(), events.len());
        self.assert_invariants();
        r
    }

    fn pulse_to(&mut self, ts: u64) -> usize {
        let n = self.sm.pulse(ts);
        self.assert_invariants();
        n
    }

    fn assert_invariants(&self) {
        let errors = self.sm.check_invariants();
        assert!(errors.is_empty(), "invariants broken: {errors:?}");
    }

    fn balances(&self, id: u128) -> Balances {
        self.sm.account(id).expect("account").balances
    }

    /// Applies one transfer alone in its batch and checks what a result code promises: `ok`
    /// commits it at the batch's timestamp; `exists` answers the original timestamp and changes
    /// nothing; any failure changes nothing but, for state-dependent codes, remembers the id.
    /// Time is first pulsed to just before the event so that expiries due by then are applied
    /// and cannot be mistaken for the event's effect.
    fn transfer(&mut self, t: Transfer) -> TR {
        let ts = self.next_ts();
        self.pulse_to(ts);
        let accounts = self.sm.accounts().to_vec();
        let transfers = self.sm.transfers().len();
        let counts = self.sm.counts();
        let previous = self.sm.transfer(t.id).copied();
        let r = self.sm.create_transfers(&[t], ts + 1)[0];
        self.assert_invariants();
        assert_eq!(self.sm.last_timestamp(), ts + 1);
        match r.code {
            TR::Ok => {
                assert_eq!(r.timestamp, ts + 1);
                assert_eq!(self.sm.transfers().len(), transfers + 1);
                let stored = self.sm.transfer(t.id).expect("committed transfer");
                assert_eq!(stored.timestamp, ts + 1);
                assert_eq!(self.sm.transfers().last(), Some(stored));
            }
            code => {
                if code == TR::Exists {
                    let stored = previous.expect("exists names a stored transfer");
                    assert_eq!(r.timestamp, stored.timestamp);
                    assert!(r.timestamp < ts + 1);
                } else {
                    assert_eq!(r.timestamp, 0, "{code}");
                }
                assert_eq!(self.sm.accounts(), &accounts[..], "{code} moved balances");
                assert_eq!(self.sm.transfers().len(), transfers, "{code} stored");
                assert_eq!(self.sm.transfer(t.id).copied(), previous);
                let after = self.sm.counts();
                assert_eq!(after.pending_open, counts.pending_open, "{code}");
                let remembered = code.is_transient() as u64;
                assert_eq!(after.failed_ids, counts.failed_ids + remembered, "{code}");
            }
        }
        r.code
    }

    /// Applies one transfer that must succeed; returns it as stored.
    fn ok(&mut self, t: Transfer) -> Transfer {
        let code = self.transfer(t);
        assert_eq!(code, TR::Ok, "{t:?}");
        *self.sm.transfer(t.id).unwrap()
    }

    /// Posts `amount` of credits to `id` from the plain account A.
    fn fund(&mut self, id: u128, amount: u128) {
        let t = tr(self.id(), A, id, amount);
        self.ok(t);
    }

    /// Posts `amount` of debits to `id` towards the plain account A.
    fn charge(&mut self, id: u128, amount: u128) {
        let t = tr(self.id(), id, A, amount);
        self.ok(t);
    }

    /// Creates one account alone in its batch; checks that only `ok` adds it.
    fn account(&mut self, a: Account) -> AR {
        let before = self.sm.accounts().to_vec();
        let previous = self.sm.account(a.id).copied();
        let ts = self.next_ts();
        let r = self.sm.create_accounts(&[a], ts)[0];
        self.assert_invariants();
        match r.code {
            AR::Ok => {
                assert_eq!(r.timestamp, ts);
                let stored = self.sm.account(a.id).expect("created account");
                assert_eq!(stored.timestamp, ts);
                assert_eq!(stored.balances, Balances::default());
                assert_eq!(self.sm.accounts().len(), before.len() + 1);
            }
            code => {
                let expected_ts = match code {
                    AR::Exists => previous.expect("exists").timestamp,
                    _ => 0,
                };
                assert_eq!(r.timestamp, expected_ts, "{code}");
                assert_eq!(self.sm.accounts(), &before[..], "{code} changed accounts");
            }
        }
        r.code
    }

    /// Creates one asset alone in its batch; checks that only `ok` adds it.
    fn asset(&mut self, a: Asset) -> SR {
        let before = self.sm.assets();
        let previous = self.sm.asset(a.id).copied();
        let ts = self.next_ts();
        let r = self.sm.create_assets(&[a], ts)[0];
        match r.code {
            SR::Ok => {
                assert_eq!(r.timestamp, ts);
                assert_eq!(self.sm.asset(a.id).unwrap().timestamp, ts);
                assert_eq!(self.sm.assets().len(), before.len() + 1);
            }
            code => {
                let expected_ts = match code {
                    SR::Exists => previous.expect("exists").timestamp,
                    _ => 0,
                };
                assert_eq!(r.timestamp, expected_ts, "{code}");
                assert_eq!(self.sm.assets(), before, "{code} changed assets");
            }
        }
        r.code
    }
}

// ----- one scenario per code -----

type Scenario<C> = (&'static str, C, fn() -> C);

/// Defines one `#[test]` per scenario and a `table()` of them all for the coverage test.
macro_rules! scenarios {
    ($ty:ty { $($name:ident => $expected:ident: $body:expr,)* }) => {
        $(
            #[test]
            fn $name() {
                let run: fn() -> $ty = $body;
                assert_eq!(run(), <$ty>::$expected);
            }
        )*

        pub(crate) fn table() -> Vec<Scenario<$ty>> {
            vec![$((stringify!($name), <$ty>::$expected, $body as fn() -> $ty)),*]
        }
    };
}

mod transfer_codes {
    use super::*;

    scenarios!(CreateTransferResult {
        ok => Ok: || Ledger::new().transfer(tr(100, A, B, 10)),
        linked_event_failed => LinkedEventFailed: || {
            let mut l = Ledger::new();
            let r = l.transfers(&[linked(tr(100, A, B, 10)), tr(101, WALLET, B, 1)]);
            assert_eq!(r[1].code, TR::ExceedsCredits);
            assert!(l.sm.transfer(100).is_none());
            r[0].code
        },
        linked_event_chain_open => LinkedEventChainOpen: || {
            Ledger::new().transfer(linked(tr(100, A, B, 10)))
        },
        timestamp_must_be_zero => TimestampMustBeZero: || {
            Ledger::new().transfer(Transfer { timestamp: 1, ..tr(100, A, B, 10) })
        },
        reserved_flag => ReservedFlag: || {
            Ledger::new().transfer(flagged(tr(100, A, B, 10), TransferFlags(1 << 15)))
        },
        id_must_not_be_zero => IdMustNotBeZero: || Ledger::new().transfer(tr(0, A, B, 10)),
        id_must_not_be_int_max => IdMustNotBeIntMax: || Ledger::new().transfer(tr(MAX, A, B, 10)),
        flags_are_mutually_exclusive => FlagsAreMutuallyExclusive: || {
            let both = TransferFlags::PENDING | TransferFlags::VOID_PENDING;
            let t = flagged(tr(100, A, B, 10), both);
            Ledger::new().transfer(t)
        },
        debit_account_id_must_not_be_zero => DebitAccountIdMustNotBeZero: || {
            Ledger::new().transfer(tr(100, 0, B, 10))
        },
        debit_account_id_must_not_be_int_max => DebitAccountIdMustNotBeIntMax: || {
            Ledger::new().transfer(tr(100, MAX, B, 10))
        },
        credit_account_id_must_not_be_zero => CreditAccountIdMustNotBeZero: || {
            Ledger::new().transfer(tr(100, A, 0, 10))
        },
        credit_account_id_must_not_be_int_max => CreditAccountIdMustNotBeIntMax: || {
            Ledger::new().transfer(tr(100, A, MAX, 10))
        },
        accounts_must_be_different => AccountsMustBeDifferent: || {
            Ledger::new().transfer(tr(100, A, A, 10))
        },
        pending_id_must_be_zero => PendingIdMustBeZero: || {
            Ledger::new().transfer(Transfer { pending_id: 5, ..tr(100, A, B, 10) })
        },
        pending_id_must_not_be_zero => PendingIdMustNotBeZero: || {
            Ledger::new().transfer(post(100, 0, 10))
        },
        pending_id_must_not_be_int_max => PendingIdMustNotBeIntMax: || {
            Ledger::new().transfer(post(100, MAX, 10))
        },
        pending_id_must_be_different => PendingIdMustBeDifferent: || {
            Ledger::new().transfer(post(100, 100, 10))
        },
        timeout_reserved_for_pending_transfer => TimeoutReservedForPendingTransfer: || {
            Ledger::new().transfer(Transfer { timeout_s: 1, ..tr(100, A, B, 10) })
        },
        closing_transfer_must_be_pending => ClosingTransferMustBePending: || {
            Ledger::new().transfer(flagged(tr(100, A, B, 10), TransferFlags::CLOSING_DEBIT))
        },
        amount_must_not_be_zero => AmountMustNotBeZero: || Ledger::new().transfer(tr(100, A, B, 0)),
        asset_must_not_be_zero => AssetMustNotBeZero: || {
            Ledger::new().transfer(Transfer { asset: 0, ..tr(100, A, B, 10) })
        },
        code_must_not_be_zero => CodeMustNotBeZero: || {
            Ledger::new().transfer(Transfer { code: 0, ..tr(100, A, B, 10) })
        },
        exists_with_different_flags => ExistsWithDifferentFlags: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(pending(100, A, B, 10))
        },
        exists_with_different_pending_id => ExistsWithDifferentPendingId: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.ok(pending(11, A, B, 10));
            l.ok(post(100, 10, MAX));
            l.transfer(post(100, 11, MAX))
        },
        exists_with_different_timeout => ExistsWithDifferentTimeout: || {
            let mut l = Ledger::new();
            l.ok(pending(100, A, B, 10));
            l.transfer(pending_timeout(100, A, B, 10, 60))
        },
        exists_with_different_debit_account_id => ExistsWithDifferentDebitAccountId: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(tr(100, C, B, 10))
        },
        exists_with_different_credit_account_id => ExistsWithDifferentCreditAccountId: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(tr(100, A, C, 10))
        },
        exists_with_different_amount => ExistsWithDifferentAmount: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(tr(100, A, B, 11))
        },
        exists_with_different_user_data_128 => ExistsWithDifferentUserData128: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(Transfer { user_data_128: 1, ..tr(100, A, B, 10) })
        },
        exists_with_different_user_data_64 => ExistsWithDifferentUserData64: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(Transfer { user_data_64: 1, ..tr(100, A, B, 10) })
        },
        exists_with_different_user_data_32 => ExistsWithDifferentUserData32: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(Transfer { user_data_32: 1, ..tr(100, A, B, 10) })
        },
        exists_with_different_asset => ExistsWithDifferentAsset: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(Transfer { asset: EUR, ..tr(100, A, B, 10) })
        },
        exists_with_different_code => ExistsWithDifferentCode: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(Transfer { code: 2, ..tr(100, A, B, 10) })
        },
        exists => Exists: || {
            let mut l = Ledger::new();
            l.ok(tr(100, A, B, 10));
            l.transfer(tr(100, A, B, 10))
        },
        id_repeated_in_chain => IdRepeatedInChain: || {
            let mut l = Ledger::new();
            l.transfers(&[linked(tr(100, A, B, 10)), tr(100, A, B, 10)])[1].code
        },
        id_already_failed => IdAlreadyFailed: || {
            let mut l = Ledger::new();
            assert_eq!(l.transfer(tr(100, WALLET, B, 10)), TR::ExceedsCredits);
            l.fund(WALLET, 1_000);
            l.transfer(tr(100, WALLET, B, 10))
        },
        debit_account_not_found => DebitAccountNotFound: || {
            Ledger::new().transfer(tr(100, MISSING, B, 10))
        },
        credit_account_not_found => CreditAccountNotFound: || {
            Ledger::new().transfer(tr(100, A, MISSING, 10))
        },
        accounts_must_have_the_same_asset => AccountsMustHaveTheSameAsset: || {
            Ledger::new().transfer(tr(100, A, E1, 10))
        },
        transfer_must_have_the_same_asset_as_accounts =>
            TransferMustHaveTheSameAssetAsAccounts: || {
            Ledger::new().transfer(Transfer { asset: EUR, ..tr(100, A, B, 10) })
        },
        pending_transfer_not_found => PendingTransferNotFound: || {
            Ledger::new().transfer(post(100, 55, 10))
        },
        pending_transfer_not_pending => PendingTransferNotPending: || {
            let mut l = Ledger::new();
            l.ok(tr(10, A, B, 10));
            l.transfer(post(100, 10, MAX))
        },
        pending_transfer_has_different_debit_account_id =>
            PendingTransferHasDifferentDebitAccountId: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.transfer(Transfer { debit_account_id: C, ..post(100, 10, MAX) })
        },
        pending_transfer_has_different_credit_account_id =>
            PendingTransferHasDifferentCreditAccountId: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.transfer(Transfer { credit_account_id: C, ..post(100, 10, MAX) })
        },
        pending_transfer_has_different_asset => PendingTransferHasDifferentAsset: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.transfer(Transfer { asset: EUR, ..void(100, 10) })
        },
        pending_transfer_has_different_code => PendingTransferHasDifferentCode: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.transfer(Transfer { code: 2, ..post(100, 10, MAX) })
        },
        exceeds_pending_transfer_amount => ExceedsPendingTransferAmount: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.transfer(post(100, 10, 11))
        },
        pending_transfer_has_different_amount => PendingTransferHasDifferentAmount: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.transfer(Transfer { amount: 5, ..void(100, 10) })
        },
        pending_transfer_already_posted => PendingTransferAlreadyPosted: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.ok(post(11, 10, 4));
            assert_eq!(l.transfer(void(101, 10)), TR::PendingTransferAlreadyPosted);
            l.transfer(post(100, 10, 1))
        },
        pending_transfer_already_voided => PendingTransferAlreadyVoided: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.ok(void(11, 10));
            assert_eq!(l.transfer(void(101, 10)), TR::PendingTransferAlreadyVoided);
            l.transfer(post(100, 10, MAX))
        },
        pending_transfer_expired => PendingTransferExpired: || {
            // The pending transfer's status is `expired`: a pulse after its deadline released it.
            let mut l = Ledger::new();
            let p = l.ok(pending_timeout(10, A, B, 10, 1));
            assert_eq!(l.pulse_to(p.timestamp + NS_PER_S), 1);
            assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Expired));
            l.transfer(post(100, 10, MAX))
        },
        pending_transfer_expired_within_batch => PendingTransferExpired: || {
            // The deadline passes between the batch's first event and the post: the pending
            // transfer is still `pending` (expiry runs between batches) but may not be posted.
            let mut l = Ledger::new();
            let p = l.ok(pending_timeout(10, A, B, 10, 1));
            let deadline = p.timestamp + NS_PER_S;
            let r = l.transfers_at(deadline - 1, &[tr(101, A, C, 1), post(100, 10, MAX)]);
            assert_eq!(codes(&r), [TR::Ok, TR::PendingTransferExpired]);
            assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Pending));
            assert_eq!(l.balances(A).debits_pending, 10);
            r[1].code
        },
        flags_held_on_a_plain_transfer => FlagsAreMutuallyExclusive: || {
            Ledger::new().transfer(flagged(tr(100, A, B, 10), TransferFlags::HELD))
        },
        flags_release_hold_on_a_new_transfer => FlagsAreMutuallyExclusive: || {
            Ledger::new().transfer(flagged(pending(100, A, B, 10), TransferFlags::RELEASE_HOLD))
        },
        debit_account_closed => DebitAccountClosed: || {
            let mut l = Ledger::new();
            l.ok(flagged(pending(10, D, A, 1), TransferFlags::CLOSING_DEBIT));
            l.transfer(tr(100, D, B, 1))
        },
        credit_account_closed => CreditAccountClosed: || {
            let mut l = Ledger::new();
            l.ok(flagged(pending(10, A, D, 1), TransferFlags::CLOSING_CREDIT));
            l.transfer(tr(100, B, D, 1))
        },
        overflows_debits_pending => OverflowsDebitsPending: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, MAX));
            l.transfer(pending(100, A, C, 1))
        },
        overflows_credits_pending => OverflowsCreditsPending: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, MAX));
            l.transfer(pending(100, C, B, 1))
        },
        overflows_debits_posted => OverflowsDebitsPosted: || {
            let mut l = Ledger::new();
            l.ok(tr(10, A, B, MAX));
            l.transfer(tr(100, A, C, 1))
        },
        overflows_credits_posted => OverflowsCreditsPosted: || {
            let mut l = Ledger::new();
            l.ok(tr(10, A, B, MAX));
            l.transfer(tr(100, C, B, 1))
        },
        overflows_debits => OverflowsDebits: || {
            // Pending and posted debits each fit; their sum does not.
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, HALF));
            l.transfer(tr(100, A, C, HALF))
        },
        overflows_credits => OverflowsCredits: || {
            let mut l = Ledger::new();
            l.ok(tr(10, A, B, HALF));
            l.transfer(pending(100, C, B, HALF))
        },
        overflows_timeout => OverflowsTimeout: || {
            // The event lands at u64::MAX - 1 s: its deadline would be u64::MAX, which means
            // "never" and is refused.
            let mut l = Ledger::new();
            l.pulse_to(u64::MAX - NS_PER_S - 2);
            l.transfer(pending_timeout(100, A, B, 10, 1))
        },
        exceeds_credits => ExceedsCredits: || Ledger::new().transfer(tr(100, WALLET, B, 1)),
        exceeds_debits => ExceedsDebits: || Ledger::new().transfer(tr(100, A, CAPPED, 1)),
        pending_transfer_held => PendingTransferHeld: || {
            // A held pending transfer is settled only by its release: neither side's post
            // or void may take it, and the hold stays.
            let mut l = Ledger::new();
            l.ok(flagged(pending(10, A, B, 10), TransferFlags::HELD));
            assert_eq!(l.transfer(void(101, 10)), TR::PendingTransferHeld);
            assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Pending));
            assert!(l.sm.is_held(10));
            l.transfer(post(100, 10, MAX))
        },
        pending_transfer_not_held => PendingTransferNotHeld: || {
            let mut l = Ledger::new();
            l.ok(pending(10, A, B, 10));
            l.transfer(flagged(post(100, 10, MAX), TransferFlags::RELEASE_HOLD))
        },
    });
}

mod account_codes {
    use super::*;

    fn new(id: u128) -> Account {
        acct(id, USD, AccountFlags::empty())
    }

    fn with_balances(b: Balances) -> AR {
        Ledger::new().account(Account { balances: b, ..new(30) })
    }

    scenarios!(CreateAccountResult {
        account_ok => Ok: || Ledger::new().account(new(30)),
        account_linked_event_failed => LinkedEventFailed: || {
            let mut l = Ledger::new();
            let mut first = new(30);
            first.flags = AccountFlags::LINKED;
            let r = l.accounts(&[first, Account { code: 0, ..new(31) }]);
            assert_eq!(r[1].code, AR::CodeMustNotBeZero);
            assert!(l.sm.account(30).is_none());
            r[0].code
        },
        account_id_repeated_in_chain => IdRepeatedInChain: || {
            let mut l = Ledger::new();
            let r = l.accounts(&[acct(30, USD, AccountFlags::LINKED), new(30)]);
            r[1].code
        },
        account_linked_event_chain_open => LinkedEventChainOpen: || {
            Ledger::new().account(acct(30, USD, AccountFlags::LINKED))
        },
        account_timestamp_must_be_zero => TimestampMustBeZero: || {
            Ledger::new().account(Account { timestamp: 1, ..new(30) })
        },
        account_reserved_flag => ReservedFlag: || {
            Ledger::new().account(acct(30, USD, AccountFlags(1 << 5)))
        },
        account_id_must_not_be_zero => IdMustNotBeZero: || Ledger::new().account(new(0)),
        account_id_must_not_be_int_max => IdMustNotBeIntMax: || Ledger::new().account(new(MAX)),
        account_flags_are_mutually_exclusive => FlagsAreMutuallyExclusive: || {
            let f = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
            Ledger::new().account(acct(30, USD, f))
        },
        account_debits_pending_must_be_zero => DebitsPendingMustBeZero: || {
            with_balances(Balances { debits_pending: 1, ..Default::default() })
        },
        account_debits_posted_must_be_zero => DebitsPostedMustBeZero: || {
            with_balances(Balances { debits_posted: 1, ..Default::default() })
        },
        account_credits_pending_must_be_zero => CreditsPendingMustBeZero: || {
            with_balances(Balances { credits_pending: 1, ..Default::default() })
        },
        account_credits_posted_must_be_zero => CreditsPostedMustBeZero: || {
            with_balances(Balances { credits_posted: MAX, ..Default::default() })
        },
        account_asset_must_not_be_zero => AssetMustNotBeZero: || {
            Ledger::new().account(acct(30, 0, AccountFlags::empty()))
        },
        account_code_must_not_be_zero => CodeMustNotBeZero: || {
            Ledger::new().account(Account { code: 0, ..new(30) })
        },
        account_exists_with_different_flags => ExistsWithDifferentFlags: || {
            Ledger::new().account(acct(A, USD, AccountFlags::HISTORY))
        },
        account_exists_with_different_owner_id => ExistsWithDifferentOwnerId: || {
            Ledger::new().account(Account { owner_id: 9, ..new(A) })
        },
        account_exists_with_different_user_data_64 => ExistsWithDifferentUserData64: || {
            Ledger::new().account(Account { user_data_64: 9, ..new(A) })
        },
        account_exists_with_different_asset => ExistsWithDifferentAsset: || {
            Ledger::new().account(acct(A, EUR, AccountFlags::empty()))
        },
        account_exists_with_different_code => ExistsWithDifferentCode: || {
            Ledger::new().account(Account { code: 2, ..new(A) })
        },
        account_exists => Exists: || Ledger::new().account(new(A)),
        account_asset_not_found => AssetNotFound: || {
            Ledger::new().account(acct(30, 77, AccountFlags::empty()))
        },
    });
}

mod asset_codes {
    use super::*;

    fn usd() -> Asset {
        Asset::new(USD, "USD", 6, AssetKind::Fiat)
    }

    scenarios!(CreateAssetResult {
        asset_ok => Ok: || Ledger::new().asset(Asset::new(3, "USDC", 6, AssetKind::Stablecoin)),
        asset_timestamp_must_be_zero => TimestampMustBeZero: || {
            Ledger::new().asset(Asset { timestamp: 1, ..Asset::new(3, "GBP", 2, AssetKind::Fiat) })
        },
        asset_id_must_not_be_zero => IdMustNotBeZero: || {
            Ledger::new().asset(Asset::new(0, "GBP", 2, AssetKind::Fiat))
        },
        asset_code_invalid => CodeInvalid: || {
            let mut l = Ledger::new();
            for bad in ["", "gbp", "G BP", "ABCDEFGHIJKLM", "GB$"] {
                let code = l.asset(Asset::new(3, bad, 2, AssetKind::Fiat));
                assert_eq!(code, SR::CodeInvalid, "{bad:?}");
            }
            // A zero byte inside the code: bytes after the end must all be zero.
            let mut a = Asset::new(3, "GBP", 2, AssetKind::Fiat);
            a.code[5] = b'X';
            l.asset(a)
        },
        asset_scale_exceeds_max => ScaleExceedsMax: || {
            let mut l = Ledger::new();
            assert_eq!(l.asset(Asset::new(3, "BTC", 18, AssetKind::Token)), SR::Ok);
            l.asset(Asset::new(4, "XYZ", 19, AssetKind::Token))
        },
        asset_kind_invalid => KindInvalid: || {
            let mut l = Ledger::new();
            let gbp = Asset::new(3, "GBP", 2, AssetKind::Fiat);
            assert_eq!(l.asset(Asset { kind: 0, ..gbp }), SR::KindInvalid);
            l.asset(Asset { kind: 5, ..gbp })
        },
        asset_exists_with_different_code => ExistsWithDifferentCode: || {
            Ledger::new().asset(Asset::new(USD, "GBP", 6, AssetKind::Fiat))
        },
        asset_exists_with_different_scale => ExistsWithDifferentScale: || {
            Ledger::new().asset(Asset { scale: 2, ..usd() })
        },
        asset_exists_with_different_kind => ExistsWithDifferentKind: || {
            Ledger::new().asset(Asset { kind: AssetKind::Cbdc as u8, ..usd() })
        },
        asset_exists => Exists: || Ledger::new().asset(usd()),
        asset_code_already_used => CodeAlreadyUsed: || {
            Ledger::new().asset(Asset::new(3, "USD", 6, AssetKind::Fiat))
        },
        assets_full => AssetsFull: || {
            let mut l = Ledger::new();
            let have = l.sm.assets().len();
            let limit = farthing_ledger::limits::ASSETS_MAX;
            let fill: Vec<Asset> = (0..(limit - have) as u32)
                .map(|i| Asset::new(1_000 + i, &format!("T{i}"), 2, AssetKind::Token))
                .collect();
            let r = l.assets(&fill);
            assert!(r.iter().all(|r| r.code == CreateAssetResult::Ok));
            let r = l.assets(&[Asset::new(999_999, "ONE-MORE", 2, AssetKind::Token)]);
            assert!(l.sm.asset(999_999).is_none());
            r[0].code
        },
    });
}

/// Runs every scenario of a table, checks each produced its code, and that together they
/// produced every code of `all`.
fn assert_coverage<C: Copy + Ord + Debug>(table: Vec<Scenario<C>>, all: &[C]) {
    let mut produced = BTreeSet::new();
    for (name, expected, run) in table {
        let got = run();
        assert_eq!(got, expected, "scenario {name}");
        produced.insert(got);
    }
    let missing: Vec<C> = all.iter().copied().filter(|c| !produced.contains(c)).collect();
    assert!(missing.is_empty(), "codes no scenario produces: {missing:?}");
    assert_eq!(produced.len(), all.len());
}

#[test]
fn every_transfer_code_has_a_scenario() {
    assert_coverage(transfer_codes::table(), TR::ALL);
}

#[test]
fn every_account_code_has_a_scenario() {
    assert_coverage(account_codes::table(), AR::ALL);
}

#[test]
fn every_asset_code_has_a_scenario() {
    assert_coverage(asset_codes::table(), SR::ALL);
}

/// Numbers are the precedence, so `ALL` must list 0, 1, 2... without gaps; names are unique
/// and parse back.
fn assert_numbered(numbers: Vec<u8>, names: Vec<&'static str>) {
    assert_eq!(numbers, (0..numbers.len() as u8).collect::<Vec<_>>());
    let unique: BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}

#[test]
fn codes_are_numbered_in_order_with_unique_names() {
    assert_numbered(
        TR::ALL.iter().map(|c| *c as u8).collect(),
        TR::ALL.iter().map(|c| c.code()).collect(),
    );
    assert_numbered(
        AR::ALL.iter().map(|c| *c as u8).collect(),
        AR::ALL.iter().map(|c| c.code()).collect(),
    );
    assert_numbered(
        SR::ALL.iter().map(|c| *c as u8).collect(),
        SR::ALL.iter().map(|c| c.code()).collect(),
    );
    for c in TR::ALL {
        assert_eq!(TR::from_code(c.code()), Some(*c));
        assert_eq!(TR::from_u8(*c as u8), Some(*c));
    }
    for c in AR::ALL {
        assert_eq!(AR::from_code(c.code()), Some(*c));
    }
    for c in SR::ALL {
        assert_eq!(SR::from_code(c.code()), Some(*c));
    }
}

// ----- precedence -----

#[test]
fn the_lowest_numbered_fault_wins_examples() {
    let mut l = Ledger::new();
    // Field checks in number order.
    let t = Transfer { timestamp: 9, ..tr(0, 0, 0, 0) };
    assert_eq!(l.transfer(t), TR::TimestampMustBeZero);
    assert_eq!(l.transfer(tr(0, 0, 0, 0)), TR::IdMustNotBeZero);
    assert_eq!(l.transfer(tr(100, 0, 0, 0)), TR::DebitAccountIdMustNotBeZero);
    assert_eq!(l.transfer(tr(100, A, 0, 0)), TR::CreditAccountIdMustNotBeZero);
    let t = Transfer { asset: 0, code: 0, ..tr(100, A, B, 0) };
    assert_eq!(l.transfer(t), TR::AmountMustNotBeZero);
    // Reserved flags before the flag combinations they would make invalid.
    let t = flagged(
        tr(100, A, B, 1),
        TransferFlags(1 << 15) | TransferFlags::PENDING | TransferFlags::POST_PENDING,
    );
    assert_eq!(l.transfer(t), TR::ReservedFlag);
    // Balance-dependent checks in number order.
    assert_eq!(l.transfer(tr(100, MISSING, MISSING + 1, 1)), TR::DebitAccountNotFound);
    assert_eq!(l.transfer(tr(101, WALLET, E1, 1)), TR::AccountsMustHaveTheSameAsset);
    l.ok(flagged(pending(10, D, C, 1), TransferFlags::CLOSING_DEBIT));
    // Debit account closed (50) before the credit account's limit (60).
    assert_eq!(l.transfer(tr(102, D, CAPPED, 1)), TR::DebitAccountClosed);
    // Overflow (54) before insufficient funds (59).
    l.ok(tr(11, C, B, MAX));
    l.fund(WALLET, 5);
    let over = l.transfer(tr(103, WALLET, B, MAX - 1));
    assert_eq!(over, TR::OverflowsCreditsPosted);
    // An exists code before any check that depends on balances: the wallet could not pay 10
    // now, but the retry of a committed transfer is recognised.
    l.ok(tr(12, WALLET, C, 5));
    assert_eq!(l.balances(WALLET).credits_posted, 5);
    assert_eq!(l.transfer(tr(12, WALLET, C, 5)), TR::Exists);
    assert_eq!(l.transfer(tr(12, WALLET, C, 6)), TR::ExistsWithDifferentAmount);
    // ...and the event's own fields before exists.
    assert_eq!(l.transfer(tr(12, WALLET, C, 0)), TR::AmountMustNotBeZero);
    // Several differences: the lowest-numbered one is reported.
    let t = Transfer { user_data_32: 1, code: 9, ..pending(12, WALLET, B, 7) };
    assert_eq!(l.transfer(t), TR::ExistsWithDifferentFlags);
    let t = Transfer { user_data_32: 1, code: 9, ..tr(12, WALLET, B, 7) };
    assert_eq!(l.transfer(t), TR::ExistsWithDifferentCreditAccountId);
    // Post/void: the pending checks in order.
    l.ok(pending(20, A, HIST, 10));
    let t = Transfer { credit_account_id: C, code: 3, ..post(104, 20, 11) };
    assert_eq!(l.transfer(t), TR::PendingTransferHasDifferentCreditAccountId);
    assert_eq!(l.transfer(void(105, 20)), TR::Ok);
    // Already voided (48) comes after exceeding the amount (45).
    assert_eq!(l.transfer(post(106, 20, 11)), TR::ExceedsPendingTransferAmount);
    assert_eq!(l.transfer(post(107, 20, 10)), TR::PendingTransferAlreadyVoided);

    // Accounts: the event's fields, then exists, then the asset lookup.
    let t = Account { timestamp: 1, ..acct(0, 0, AccountFlags(1 << 9)) };
    assert_eq!(l.account(t), AR::TimestampMustBeZero);
    assert_eq!(l.account(acct(0, 0, AccountFlags(1 << 9))), AR::ReservedFlag);
    let both =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    let t = Account {
        balances: Balances { credits_posted: 1, ..Default::default() },
        ..acct(30, 0, both)
    };
    assert_eq!(l.account(t), AR::FlagsAreMutuallyExclusive);
    assert_eq!(l.account(acct(A, 77, AccountFlags::empty())), AR::ExistsWithDifferentAsset);
    let t = Account { owner_id: 3, code: 4, ..acct(A, 77, AccountFlags::HISTORY) };
    assert_eq!(l.account(t), AR::ExistsWithDifferentFlags);

    // Assets.
    let t = Asset { kind: 0, ..Asset::new(0, "bad code", 40, AssetKind::Fiat) };
    assert_eq!(l.asset(t), SR::IdMustNotBeZero);
    let t = Asset { kind: 0, ..Asset::new(3, "bad code", 40, AssetKind::Fiat) };
    assert_eq!(l.asset(t), SR::CodeInvalid);
    let t = Asset { kind: 0, ..Asset::new(USD, "USD", 40, AssetKind::Fiat) };
    assert_eq!(l.asset(t), SR::ScaleExceedsMax);
    assert_eq!(l.asset(Asset::new(USD, "EUR", 2, AssetKind::Cbdc)), SR::ExistsWithDifferentCode);
}

/// A tiny deterministic generator for sampling fault combinations.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Subsets of `n` faults to try: every subset of at most two, then random ones.
fn fault_subsets(n: usize, random: usize) -> Vec<u64> {
    let mut subsets = vec![0u64];
    for i in 0..n {
        subsets.push(1 << i);
        for j in i + 1..n {
            subsets.push(1 << i | 1 << j);
        }
    }
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mask = (1u64 << n) - 1;
    for _ in 0..random {
        // About a third of the faults each time.
        subsets.push(rng.next() & rng.next() & mask | rng.next() & rng.next() & rng.next() & mask);
    }
    subsets
}

#[test]
fn transfer_with_several_faults_gets_the_lowest_code() {
    const CLOSED_DEBIT: u128 = 40;
    const CLOSED_CREDIT: u128 = 41;
    const EXISTING: u128 = 50;
    const FAILED: u128 = 51;
    let mut l = Ledger::new();
    let closable = [
        acct(CLOSED_DEBIT, USD, AccountFlags::empty()),
        acct(CLOSED_CREDIT, USD, AccountFlags::empty()),
    ];
    assert!(l.accounts(&closable).iter().all(|r| r.code == AR::Ok));
    l.ok(flagged(pending(60, CLOSED_DEBIT, C, 1), TransferFlags::CLOSING_DEBIT));
    l.ok(flagged(pending(61, C, CLOSED_CREDIT, 1), TransferFlags::CLOSING_CREDIT));
    l.ok(pending(EXISTING, A, B, 10));
    assert_eq!(l.transfer(tr(FAILED, WALLET, B, 1)), TR::ExceedsCredits);

    // Each fault alone gives its code. They are applied highest code first, so that when two
    // touch the same field the lower one (which must win anyway) is the one left in place.
    type Fault = (TR, fn(&mut Transfer));
    let faults: &[Fault] = &[
        (TR::ExceedsDebits, |t| t.credit_account_id = CAPPED),
        (TR::ExceedsCredits, |t| t.debit_account_id = WALLET),
        (TR::CreditAccountClosed, |t| t.credit_account_id = CLOSED_CREDIT),
        (TR::DebitAccountClosed, |t| t.debit_account_id = CLOSED_DEBIT),
        (TR::TransferMustHaveTheSameAssetAsAccounts, |t| t.asset = EUR),
        (TR::AccountsMustHaveTheSameAsset, |t| t.credit_account_id = E1),
        (TR::CreditAccountNotFound, |t| t.credit_account_id = MISSING + 1),
        (TR::DebitAccountNotFound, |t| t.debit_account_id = MISSING),
        (TR::IdAlreadyFailed, |t| t.id = FAILED),
        (TR::ExistsWithDifferentFlags, |t| t.id = EXISTING),
        (TR::CodeMustNotBeZero, |t| t.code = 0),
        (TR::AssetMustNotBeZero, |t| t.asset = 0),
        (TR::AmountMustNotBeZero, |t| t.amount = 0),
        (TR::ClosingTransferMustBePending, |t| t.flags = t.flags | TransferFlags::CLOSING_CREDIT),
        (TR::TimeoutReservedForPendingTransfer, |t| t.timeout_s = 1),
        (TR::PendingIdMustBeZero, |t| t.pending_id = 7),
        (TR::AccountsMustBeDifferent, |t| t.credit_account_id = t.debit_account_id),
        (TR::CreditAccountIdMustNotBeIntMax, |t| t.credit_account_id = MAX),
        (TR::CreditAccountIdMustNotBeZero, |t| t.credit_account_id = 0),
        (TR::DebitAccountIdMustNotBeIntMax, |t| t.debit_account_id = MAX),
        (TR::DebitAccountIdMustNotBeZero, |t| t.debit_account_id = 0),
        (TR::IdMustNotBeIntMax, |t| t.id = MAX),
        (TR::IdMustNotBeZero, |t| t.id = 0),
        (TR::ReservedFlag, |t| t.flags = t.flags | TransferFlags(1 << 12)),
        (TR::TimestampMustBeZero, |t| t.timestamp = 77),
    ];
    assert!(faults.windows(2).all(|w| w[0].0 > w[1].0));
    let ts = l.next_ts();
    let subsets = fault_subsets(faults.len(), 3_000);
    let mut seen = BTreeSet::new();
    for (n, subset) in subsets.iter().enumerate() {
        let mut t = tr(10_000 + n as u128, A, B, 10);
        let mut expected = TR::Ok;
        for (i, (code, apply)) in faults.iter().enumerate() {
            if subset & 1 << i != 0 {
                apply(&mut t);
                expected = *code;
            }
        }
        let r = l.transfers_at(ts + n as u64, &[t]);
        assert_eq!(r[0].code, expected, "faults {subset:#b}: {t:?}");
        seen.insert(expected);
    }
    assert_eq!(seen.len(), faults.len() + 1);
}

#[test]
fn account_with_several_faults_gets_the_lowest_code() {
    let mut l = Ledger::new();
    type Fault = (AR, fn(&mut Account));
    let faults: &[Fault] = &[
        (AR::AssetNotFound, |a| a.asset = 77),
        (AR::ExistsWithDifferentFlags, |a| a.id = HIST),
        (AR::CodeMustNotBeZero, |a| a.code = 0),
        (AR::AssetMustNotBeZero, |a| a.asset = 0),
        (AR::CreditsPostedMustBeZero, |a| a.balances.credits_posted = 1),
        (AR::CreditsPendingMustBeZero, |a| a.balances.credits_pending = 2),
        (AR::DebitsPostedMustBeZero, |a| a.balances.debits_posted = 3),
        (AR::DebitsPendingMustBeZero, |a| a.balances.debits_pending = 4),
        (AR::FlagsAreMutuallyExclusive, |a| {
            a.flags = a.flags
                | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS
        }),
        (AR::IdMustNotBeIntMax, |a| a.id = MAX),
        (AR::IdMustNotBeZero, |a| a.id = 0),
        (AR::ReservedFlag, |a| a.flags = a.flags | AccountFlags(1 << 14)),
        (AR::TimestampMustBeZero, |a| a.timestamp = 5),
    ];
    assert!(faults.windows(2).all(|w| w[0].0 > w[1].0));
    let first_ts = l.next_ts();
    for subset in 0u64..1 << faults.len() {
        let ts = first_ts + subset;
        let mut a = acct(10_000 + subset as u128, USD, AccountFlags::empty());
        let mut expected = AR::Ok;
        for (i, (code, apply)) in faults.iter().enumerate() {
            if subset & 1 << i != 0 {
                apply(&mut a);
                expected = *code;
            }
        }
        let r = l.sm.create_accounts(&[a], ts);
        assert_eq!(r[0].code, expected, "faults {subset:#b}: {a:?}");
    }
    l.assert_invariants();
}

#[test]
fn asset_with_several_faults_gets_the_lowest_code() {
    let mut l = Ledger::new();
    type Fault = (SR, fn(&mut Asset));
    let faults: &[Fault] = &[
        (SR::CodeAlreadyUsed, |a| a.code = Asset::new(0, "USD", 0, AssetKind::Fiat).code),
        (SR::ExistsWithDifferentCode, |a| a.id = EUR),
        (SR::KindInvalid, |a| a.kind = 9),
        (SR::ScaleExceedsMax, |a| a.scale = 200),
        (SR::CodeInvalid, |a| a.code[0] = b'a'),
        (SR::IdMustNotBeZero, |a| a.id = 0),
        (SR::TimestampMustBeZero, |a| a.timestamp = 5),
    ];
    let first_ts = l.next_ts();
    for subset in 0u64..1 << faults.len() {
        let ts = first_ts + subset;
        let mut a = Asset::new(100 + subset as u32, &format!("X{subset}"), 2, AssetKind::Token);
        let mut expected = SR::Ok;
        for (i, (code, apply)) in faults.iter().enumerate() {
            if subset & 1 << i != 0 {
                apply(&mut a);
                expected = *code;
            }
        }
        let r = l.sm.create_assets(&[a], ts);
        assert_eq!(r[0].code, expected, "faults {subset:#b}: {a:?}");
    }
}

// ----- idempotency -----

#[test]
fn retried_transfer_answers_exists_with_the_original_timestamp_and_moves_money_once() {
    let mut l = Ledger::new();
    l.fund(WALLET, 100);
    let t =
        Transfer { user_data_128: 7, user_data_64: 8, user_data_32: 9, ..tr(100, WALLET, B, 60) };
    let first = l.ok(t);
    let wallet = l.balances(WALLET);
    let b = l.balances(B);
    for _ in 0..3 {
        assert_eq!(l.transfer(t), TR::Exists);
        let r = l.transfers(&[t]);
        assert_eq!(r[0], EventResult { code: TR::Exists, timestamp: first.timestamp });
    }
    assert_eq!(l.balances(WALLET), wallet);
    assert_eq!(l.balances(B), b);
    // Were it applied again, the wallet (40 left) could not pay: the retry is not re-run.
    assert_eq!(wallet.credits_posted - wallet.debits_posted, 40);
    // Same id, different fields: the specific code, still nothing moves.
    let differences: [(Transfer, TR); 11] = [
        (flagged(t, TransferFlags::PENDING), TR::ExistsWithDifferentFlags),
        (Transfer { timeout_s: 0, ..t }, TR::Exists),
        (Transfer { debit_account_id: A, ..t }, TR::ExistsWithDifferentDebitAccountId),
        (Transfer { credit_account_id: C, ..t }, TR::ExistsWithDifferentCreditAccountId),
        (Transfer { amount: 59, ..t }, TR::ExistsWithDifferentAmount),
        (Transfer { user_data_128: 0, ..t }, TR::ExistsWithDifferentUserData128),
        (Transfer { user_data_64: 0, ..t }, TR::ExistsWithDifferentUserData64),
        (Transfer { user_data_32: 0, ..t }, TR::ExistsWithDifferentUserData32),
        (Transfer { asset: EUR, ..t }, TR::ExistsWithDifferentAsset),
        (Transfer { code: 2, ..t }, TR::ExistsWithDifferentCode),
        (Transfer { amount: MAX, ..t }, TR::ExistsWithDifferentAmount),
    ];
    for (retry, code) in differences {
        assert_eq!(l.transfer(retry), code, "{retry:?}");
    }
    assert_eq!(l.balances(WALLET), wallet);
    assert_eq!(l.balances(B), b);
}

#[test]
fn duplicate_id_within_one_batch_applies_once() {
    let mut l = Ledger::new();
    let t = tr(100, A, B, 10);
    let ts = l.next_ts();
    let r = l.transfers(&[t, t, tr(100, A, B, 11)]);
    assert_eq!(r[0], EventResult { code: TR::Ok, timestamp: ts });
    assert_eq!(r[1], EventResult { code: TR::Exists, timestamp: ts });
    assert_eq!(r[2].code, TR::ExistsWithDifferentAmount);
    assert_eq!(l.balances(B).credits_posted, 10);
}

#[test]
fn retried_two_phase_and_balancing_transfers_are_recognised() {
    let mut l = Ledger::new();
    l.fund(WALLET, 50);
    let p = pending_timeout(10, A, B, 100, 3600);
    let p_ts = l.ok(p).timestamp;
    let posted = l.ok(post(11, 10, 40));
    let p2 = pending(12, A, B, 100);
    let p2_ts = l.ok(p2).timestamp;
    let voided = l.ok(void(13, 12));
    let balancing = flagged(tr(14, WALLET, C, 1_000), TransferFlags::BALANCING_DEBIT);
    let b = l.ok(balancing);
    assert_eq!(b.amount, 50);
    let before: Vec<Account> = l.sm.accounts().to_vec();

    assert_eq!(l.transfer(pending_timeout(10, A, B, 100, 3600)), TR::Exists);
    // A post may be retried with the accounts, asset and code spelled out or inherited.
    assert_eq!(l.transfer(post(11, 10, 40)), TR::Exists);
    let explicit = Transfer {
        debit_account_id: A,
        credit_account_id: B,
        asset: USD,
        code: 1,
        ..post(11, 10, 40)
    };
    assert_eq!(l.transfer(explicit), TR::Exists);
    assert_eq!(l.transfer(post(11, 10, MAX)), TR::Exists);
    assert_eq!(l.transfer(post(11, 10, 41)), TR::ExistsWithDifferentAmount);
    assert_eq!(l.transfer(post(11, 12, 40)), TR::ExistsWithDifferentPendingId);
    assert_eq!(
        l.transfer(Transfer { debit_account_id: C, ..post(11, 10, 40) }),
        TR::ExistsWithDifferentDebitAccountId
    );
    assert_eq!(l.transfer(void(11, 10)), TR::ExistsWithDifferentFlags);
    // A void may be retried with amount 0, the whole amount or u128::MAX.
    for amount in [0, 100, MAX] {
        assert_eq!(l.transfer(Transfer { amount, ..void(13, 12) }), TR::Exists);
    }
    assert_eq!(l.transfer(Transfer { amount: 99, ..void(13, 12) }), TR::ExistsWithDifferentAmount);
    // A balancing transfer stores what it moved; a retry with the same bound (or any bound at
    // least what moved) is recognised even though the wallet is now empty.
    assert_eq!(l.transfer(balancing), TR::Exists);
    assert_eq!(l.transfer(Transfer { amount: 50, ..balancing }), TR::Exists);
    assert_eq!(l.transfer(Transfer { amount: 49, ..balancing }), TR::ExistsWithDifferentAmount);

    assert_eq!(l.sm.accounts(), &before[..]);
    let r = l.transfers(&[post(11, 10, 40), void(13, 12), balancing, p, p2]);
    let stamps: Vec<u64> = r.iter().map(|r| r.timestamp).collect();
    assert_eq!(stamps, [posted.timestamp, voided.timestamp, b.timestamp, p_ts, p2_ts]);
}

#[test]
fn retried_account_and_asset_answer_exists_with_the_original_timestamp() {
    let mut l = Ledger::new();
    let original = *l.sm.account(A).unwrap();
    let r = l.accounts(&[acct(A, USD, AccountFlags::empty())]);
    assert_eq!(r[0], EventResult { code: AR::Exists, timestamp: original.timestamp });
    // Closing changes the account's flags, but a retry of its creation is still `exists`.
    l.ok(flagged(pending(10, A, B, 1), TransferFlags::CLOSING_DEBIT));
    assert!(l.sm.account(A).unwrap().flags.contains(AccountFlags::CLOSED));
    assert_eq!(l.account(acct(A, USD, AccountFlags::empty())), AR::Exists);
    assert_eq!(l.account(acct(A, USD, AccountFlags::CLOSED)), AR::Exists);

    let usd = *l.sm.asset(USD).unwrap();
    let r = l.assets(&[Asset::new(USD, "USD", 6, AssetKind::Fiat)]);
    assert_eq!(r[0], EventResult { code: SR::Exists, timestamp: usd.timestamp });
    // Within one batch too.
    let ts = l.next_ts();
    let gbp = Asset::new(3, "GBP", 2, AssetKind::Fiat);
    let r = l.assets(&[gbp, gbp]);
    assert_eq!(
        r,
        [
            EventResult { code: SR::Ok, timestamp: ts },
            EventResult { code: SR::Exists, timestamp: ts }
        ]
    );
}

#[test]
fn state_dependent_failures_are_remembered_but_field_errors_are_not() {
    let mut l = Ledger::new();
    // Field errors are not remembered: the corrected event with the same id goes through.
    assert_eq!(l.transfer(Transfer { code: 0, ..tr(100, A, B, 1) }), TR::CodeMustNotBeZero);
    assert_eq!(l.transfer(tr(100, A, B, 1)), TR::Ok);
    // State-dependent failures are: even once the state allows it, the id stays refused.
    assert_eq!(l.transfer(tr(101, A, MISSING, 1)), TR::CreditAccountNotFound);
    assert_eq!(l.account(acct(MISSING, USD, AccountFlags::empty())), AR::Ok);
    assert_eq!(l.transfer(tr(101, A, MISSING, 1)), TR::IdAlreadyFailed);
    // Whatever the retry's fields.
    assert_eq!(l.transfer(tr(101, C, B, 1)), TR::IdAlreadyFailed);
    assert_eq!(l.sm.counts().failed_ids, 1);
    // A failure inside a linked chain is not remembered: the chain is the unit.
    let r = l.transfers(&[linked(tr(102, A, B, 1)), tr(103, WALLET, B, 1)]);
    assert_eq!(codes(&r), [TR::LinkedEventFailed, TR::ExceedsCredits]);
    l.fund(WALLET, 1);
    assert_eq!(l.transfer(tr(103, WALLET, B, 1)), TR::Ok);
    assert_eq!(l.sm.counts().failed_ids, 1);
}

// ----- linked chains -----

/// Every query answer about the history account, for comparing whole states.
fn history_rows(l: &Ledger, id: u128) -> Vec<BalanceAt> {
    l.sm.get_account_balances(&AccountFilter::new(id, QUERY_LIMIT_MAX)).unwrap().items
}

#[test]
fn failing_chain_rolls_back_everything_and_later_events_still_apply() {
    let mut l = Ledger::new();
    l.fund(WALLET, 100);
    l.ok(pending_timeout(10, A, HIST, 50, 5)); // to be posted in the chain
    l.ok(flagged(pending(11, D, C, 7), TransferFlags::CLOSING_DEBIT)); // to be voided in it
    assert!(l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    let deadline = l.sm.transfer(10).unwrap().timestamp + 5 * NS_PER_S;

    let chain = [
        linked(tr(100, WALLET, HIST, 60)),
        linked(pending_timeout(101, HIST, B, 30, 1)),
        linked(post(102, 10, 20)),
        linked(void(103, 11)),
        linked(tr(104, D, A, 1)), // D was reopened by the void just before
        linked(flagged(pending(105, B, C, 2), TransferFlags::CLOSING_CREDIT)),
        tr(106, WALLET, B, 41), // 40 left in the wallet: fails
    ];
    let after = tr(107, A, B, 3);
    let mut batch = chain.to_vec();
    batch.push(after);

    // The same batch on a copy, with the chain replaced by events refused on their fields
    // alone (nothing changes, nothing is remembered): the states must end identical.
    let mut control = Ledger { sm: l.sm.clone(), fresh: l.fresh };
    let mut control_batch = vec![tr(0, A, B, 1); chain.len()];
    control_batch.push(after);

    let ts = l.next_ts();
    let r = l.transfers_at(ts, &batch);
    let mut expected = vec![TR::LinkedEventFailed; chain.len() - 1];
    expected.push(TR::ExceedsCredits);
    expected.push(TR::Ok);
    assert_eq!(codes(&r), expected);
    assert_eq!(r[chain.len()].timestamp, ts + chain.len() as u64);
    assert!(r[..chain.len()].iter().all(|r| r.timestamp == 0));

    let rc = control.transfers_at(ts, &control_batch);
    assert_eq!(rc[chain.len()], r[chain.len()]);
    assert_eq!(l.sm.digest(), control.sm.digest());
    assert_eq!(l.sm.accounts(), control.sm.accounts());
    assert_eq!(history_rows(&l, HIST), history_rows(&control, HIST));
    assert_eq!(l.sm.counts(), control.sm.counts());

    for id in 100..=106 {
        assert!(l.sm.transfer(id).is_none(), "{id}");
    }
    assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Pending));
    assert_eq!(l.sm.pending_status(11), Some(PendingStatus::Pending));
    assert!(l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    assert!(!l.sm.account(C).unwrap().flags.contains(AccountFlags::CLOSED));
    assert_eq!(l.balances(HIST).credits_pending, 50);

    // The rolled-back pending 101 is gone from the expiry queue; pending 10 is back in it.
    assert_eq!(l.pulse_to(deadline), 1);
    assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Expired));
    assert_eq!(l.balances(HIST), Balances::default());
    // The chain's failure was not remembered: its ids are free.
    assert_eq!(l.transfer(tr(106, WALLET, B, 40)), TR::Ok);
    assert_eq!(l.transfer(tr(100, A, B, 1)), TR::Ok);
}

#[test]
fn chain_that_succeeds_applies_every_event() {
    let mut l = Ledger::new();
    l.ok(pending(10, A, B, 50));
    let ts = l.next_ts();
    let r = l.transfers(&[
        linked(tr(100, A, WALLET, 5)),
        linked(tr(101, WALLET, B, 5)), // funded by the event before, same chain
        linked(post(102, 10, MAX)),
        tr(103, B, A, 1),
    ]);
    assert_eq!(codes(&r), [TR::Ok; 4]);
    let stamps: Vec<u64> = r.iter().map(|r| r.timestamp).collect();
    assert_eq!(stamps, [ts, ts + 1, ts + 2, ts + 3]);
    assert_eq!(l.balances(WALLET).debits_posted, 5);
    assert_eq!(l.balances(B).credits_posted, 55);
    assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Posted));
}

#[test]
fn chains_fail_and_succeed_independently_within_a_batch() {
    let mut l = Ledger::new();
    let r = l.transfers(&[
        linked(tr(100, A, B, 1)),
        tr(101, A, B, 0), // fails: chain 1 fails
        tr(102, A, B, 2), // alone
        linked(tr(103, A, B, 3)),
        tr(104, A, B, 4),              // chain 2 succeeds
        linked(tr(105, WALLET, B, 5)), // fails first: the rest of chain 3 is not run
        linked(tr(106, A, B, 6)),
        tr(107, A, B, 7),
        linked(tr(108, A, B, 8)), // chain 4 never closes
        linked(tr(109, A, B, 9)),
    ]);
    use CreateTransferResult::*;
    assert_eq!(
        codes(&r),
        [
            LinkedEventFailed,
            AmountMustNotBeZero,
            Ok,
            Ok,
            Ok,
            ExceedsCredits,
            LinkedEventFailed,
            LinkedEventFailed,
            LinkedEventFailed,
            LinkedEventChainOpen,
        ]
    );
    assert_eq!(l.balances(B).credits_posted, 2 + 3 + 4);
    let ids: Vec<u128> = l.sm.transfers().iter().map(|t| t.id).collect();
    assert_eq!(ids, [102, 103, 104]);
    // Chain 3's failing event was inside a chain: not remembered.
    assert_eq!(l.sm.counts().failed_ids, 0);
}

#[test]
fn exists_inside_a_chain_fails_the_chain() {
    let mut l = Ledger::new();
    l.ok(tr(100, A, B, 1));
    let r = l.transfers(&[linked(tr(101, A, B, 1)), tr(100, A, B, 1)]);
    assert_eq!(codes(&r), [TR::LinkedEventFailed, TR::Exists]);
    assert!(l.sm.transfer(101).is_none());
    assert_eq!(r[1].timestamp, l.sm.transfer(100).unwrap().timestamp);
}

/// An id repeated inside one chain: the second event finds the first (applied a moment
/// before), so the chain fails and is rolled back. Nothing with the id exists afterwards, the
/// id stays free, and the repeated event says `id_repeated_in_chain`, never `exists`.
#[test]
fn id_repeated_inside_a_failed_chain_stays_free() {
    let mut l = Ledger::new();
    let r = l.transfers(&[linked(tr(100, A, B, 1)), tr(100, A, B, 1)]);
    assert_eq!(r[0].code, TR::LinkedEventFailed);
    assert_eq!(r[1].code, TR::IdRepeatedInChain);
    assert_eq!(r[1].timestamp, 0);
    assert!(l.sm.transfer(100).is_none());
    assert_eq!(l.balances(B), Balances::default());
    assert_eq!(l.transfer(tr(100, A, B, 1)), TR::Ok);

    let r =
        l.accounts(&[acct(30, USD, AccountFlags::LINKED), acct(30, USD, AccountFlags::empty())]);
    assert_eq!(r[0].code, AR::LinkedEventFailed);
    assert_eq!(r[1].code, AR::IdRepeatedInChain);
    assert_eq!(r[1].timestamp, 0);
    assert!(l.sm.account(30).is_none());
    assert_eq!(l.account(acct(30, USD, AccountFlags::empty())), AR::Ok);
}

#[test]
fn failing_account_chain_rolls_back_created_accounts() {
    let mut l = Ledger::new();
    let control = l.sm.clone();
    let hist = AccountFlags::HISTORY | AccountFlags::LINKED;
    let r = l.accounts(&[
        acct(30, USD, hist),
        acct(31, USD, AccountFlags::LINKED),
        acct(32, 77, AccountFlags::empty()), // asset not found
        acct(33, USD, AccountFlags::LINKED),
        acct(A, USD, AccountFlags::empty()), // exists: fails its chain too
        acct(34, EUR, AccountFlags::empty()),
        acct(35, EUR, AccountFlags::LINKED), // never closes
    ]);
    use CreateAccountResult::*;
    assert_eq!(
        codes(&r),
        [
            LinkedEventFailed,
            LinkedEventFailed,
            AssetNotFound,
            LinkedEventFailed,
            Exists,
            Ok,
            LinkedEventChainOpen
        ]
    );
    for id in [30, 31, 32, 33, 35] {
        assert!(l.sm.account(id).is_none(), "{id}");
    }
    assert_eq!(l.sm.accounts().len(), control.accounts().len() + 1);
    assert_eq!(l.sm.accounts().last().unwrap().id, 34);
    // Account 34 took the slot the rolled-back history account 30 had: no history for it.
    assert_eq!(
        l.sm.get_account_balances(&AccountFilter::new(34, 10)),
        Err(QueryError::HistoryNotEnabled)
    );
    l.ok(Transfer { asset: EUR, ..tr(100, E1, 34, 5) });
    assert_eq!(l.balances(34).credits_posted, 5);
    // The rolled-back ids can be created afresh.
    assert_eq!(l.account(acct(30, USD, AccountFlags::HISTORY)), AR::Ok);
    l.ok(tr(101, A, 30, 9));
    assert_eq!(history_rows(&l, 30).len(), 1);
}

// ----- two-phase transfers -----

#[test]
fn partial_post_moves_part_and_releases_the_rest() {
    let mut l = Ledger::new();
    l.fund(WALLET, 100);
    l.ok(pending(10, WALLET, B, 80));
    assert_eq!(
        l.balances(WALLET),
        Balances { debits_pending: 80, debits_posted: 0, credits_pending: 0, credits_posted: 100 }
    );
    // Reserved: only 20 can still be spent.
    assert_eq!(l.transfer(tr(100, WALLET, C, 21)), TR::ExceedsCredits);
    let posted = l.ok(post(11, 10, 30));
    assert_eq!(posted.amount, 30);
    assert_eq!((posted.debit_account_id, posted.credit_account_id), (WALLET, B));
    assert_eq!((posted.asset, posted.code, posted.pending_id), (USD, 1, 10));
    assert_eq!(
        l.balances(WALLET),
        Balances { debits_pending: 0, debits_posted: 30, credits_pending: 0, credits_posted: 100 }
    );
    assert_eq!(l.balances(B).credits_posted, 30);
    assert_eq!(l.balances(B).credits_pending, 0);
    assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Posted));
    // The 50 not posted are free again.
    assert_eq!(l.transfer(tr(101, WALLET, C, 70)), TR::Ok);
}

#[test]
fn post_with_amount_max_posts_everything_reserved() {
    let mut l = Ledger::new();
    l.ok(pending(10, A, B, 80));
    let posted = l.ok(post(11, 10, MAX));
    assert_eq!(posted.amount, 80);
    assert_eq!(l.balances(A).debits_posted, 80);
    assert_eq!(l.balances(B).credits_posted, 80);
    assert_eq!(l.balances(A).debits_pending, 0);
    // Posting exactly the amount, with the fields spelled out, works too.
    l.ok(pending(12, A, B, 5));
    let explicit = Transfer {
        debit_account_id: A,
        credit_account_id: B,
        asset: USD,
        code: 1,
        ..post(13, 12, 5)
    };
    assert_eq!(l.ok(explicit).amount, 5);
    // A pending transfer of u128::MAX can be posted whole.
    l.ok(pending(14, C, D, MAX));
    assert_eq!(l.ok(post(15, 14, MAX)).amount, MAX);
    assert_eq!(l.balances(D).credits_posted, MAX);
}

#[test]
fn void_releases_the_whole_amount() {
    let mut l = Ledger::new();
    l.fund(WALLET, 10);
    for (i, amount) in [0, 10, MAX].into_iter().enumerate() {
        let p = 10 + 2 * i as u128;
        l.ok(pending(p, WALLET, B, 10));
        assert_eq!(l.transfer(tr(100 + p, WALLET, B, 1)), TR::ExceedsCredits);
        let v = l.ok(Transfer { amount, ..void(p + 1, p) });
        assert_eq!(v.amount, 10);
        assert_eq!(l.sm.pending_status(p), Some(PendingStatus::Voided));
        assert_eq!(l.balances(WALLET), Balances { credits_posted: 10, ..Default::default() });
        assert_eq!(l.balances(B), Balances::default());
    }
}

#[test]
fn pending_transfers_expire_at_their_deadline() {
    let mut l = Ledger::new();
    l.fund(WALLET, 10);
    let p = l.ok(pending_timeout(10, WALLET, HIST, 10, 2));
    let deadline = p.timestamp + 2 * NS_PER_S;
    assert_eq!(l.sm.next_expiry(), Some(deadline));
    // Just before the deadline, still reserved; a post at deadline - 1 would still work.
    assert_eq!(l.pulse_to(deadline - 3), 0);
    assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Pending));
    assert_eq!(l.balances(WALLET).debits_pending, 10);
    // A batch starting at the deadline expires it first: its events see the released amount.
    let r = l.transfers_at(deadline, &[tr(100, WALLET, B, 10), post(101, 10, MAX)]);
    assert_eq!(codes(&r), [TR::Ok, TR::PendingTransferExpired]);
    assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Expired));
    assert_eq!(l.balances(HIST), Balances::default());
    assert_eq!(l.sm.next_expiry(), None);
    assert_eq!(l.transfer(void(102, 10)), TR::PendingTransferExpired);
    // Expired is state-dependent: remembered.
    assert_eq!(l.transfer(post(101, 10, MAX)), TR::IdAlreadyFailed);
}

#[test]
fn post_just_before_the_deadline_succeeds() {
    let mut l = Ledger::new();
    let p = l.ok(pending_timeout(10, A, B, 10, 1));
    let deadline = p.timestamp + NS_PER_S;
    let r = l.transfers_at(deadline - 1, &[post(11, 10, MAX)]);
    assert_eq!(r[0].code, TR::Ok);
    // It is no longer due: nothing expires later.
    assert_eq!(l.pulse_to(deadline + 1), 0);
    assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Posted));
    assert_eq!(l.balances(B).credits_posted, 10);
}

#[test]
fn timeouts_near_the_end_of_time() {
    let mut l = Ledger::new();
    // A deadline of u64::MAX - 1 is fine.
    l.pulse_to(u64::MAX - NS_PER_S - 3);
    assert_eq!(l.transfer(pending_timeout(10, A, B, 1, 1)), TR::Ok);
    assert_eq!(l.sm.next_expiry(), Some(u64::MAX - 1));
    // The largest timeout overflows much earlier.
    assert_eq!(l.transfer(pending_timeout(11, A, B, 1, u32::MAX)), TR::OverflowsTimeout);
    // No timeout never overflows.
    assert_eq!(l.transfer(pending_timeout(12, A, B, 1, 0)), TR::Ok);
    assert_eq!(l.pulse_to(u64::MAX - 1), 1);
    assert_eq!(l.sm.pending_status(10), Some(PendingStatus::Expired));
    assert_eq!(l.sm.pending_status(12), Some(PendingStatus::Pending));
}

#[test]
fn pulse_expires_everything_due_in_deadline_order() {
    let mut l = Ledger::new();
    let t0 = l.ok(pending_timeout(10, A, B, 1, 3)).timestamp;
    l.ok(pending_timeout(11, A, B, 2, 1));
    l.ok(pending_timeout(12, A, B, 4, 2));
    l.ok(pending(13, A, B, 8));
    assert_eq!(l.balances(A).debits_pending, 15);
    assert_eq!(l.pulse_to(t0 + 2 * NS_PER_S + 10), 2);
    assert_eq!(l.balances(A).debits_pending, 9);
    assert_eq!(l.pulse_to(u64::MAX / 2), 1);
    assert_eq!(l.balances(A).debits_pending, 8);
    assert_eq!(l.sm.counts().pending_open, 1);
}

// ----- closing -----

#[test]
fn closing_debit_closes_and_void_reopens() {
    let mut l = Ledger::new();
    l.ok(tr(9, A, D, 50));
    l.ok(flagged(pending(10, D, B, 50), TransferFlags::CLOSING_DEBIT));
    assert!(l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    assert!(!l.sm.account(B).unwrap().flags.contains(AccountFlags::CLOSED));
    assert_eq!(l.transfer(tr(100, D, C, 1)), TR::DebitAccountClosed);
    assert_eq!(l.transfer(tr(101, C, D, 1)), TR::CreditAccountClosed);
    assert_eq!(l.transfer(pending(102, C, D, 1)), TR::CreditAccountClosed);
    // B is not closed.
    assert_eq!(l.transfer(tr(103, C, B, 1)), TR::Ok);
    // A second closing transfer cannot close it again.
    assert_eq!(
        l.transfer(flagged(pending(104, D, C, 1), TransferFlags::CLOSING_DEBIT)),
        TR::DebitAccountClosed
    );
    l.ok(void(11, 10));
    assert!(!l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    assert_eq!(l.transfer(tr(105, D, C, 1)), TR::Ok);
    assert_eq!(l.transfer(tr(106, C, D, 1)), TR::Ok);
}

#[test]
fn closing_credit_closes_and_void_reopens_and_post_keeps_closed() {
    let mut l = Ledger::new();
    l.ok(flagged(pending(10, A, D, 5), TransferFlags::CLOSING_CREDIT));
    assert!(l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    assert!(!l.sm.account(A).unwrap().flags.contains(AccountFlags::CLOSED));
    assert_eq!(l.transfer(tr(100, B, D, 1)), TR::CreditAccountClosed);
    assert_eq!(l.transfer(tr(101, D, B, 1)), TR::DebitAccountClosed);
    l.ok(void(11, 10));
    assert_eq!(l.transfer(tr(102, B, D, 1)), TR::Ok);

    // Both sides at once; posting keeps them closed.
    let both = TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT;
    l.ok(flagged(pending(12, B, D, 1), both));
    assert!(l.sm.account(B).unwrap().flags.contains(AccountFlags::CLOSED));
    assert!(l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    l.ok(post(13, 12, MAX));
    assert!(l.sm.account(B).unwrap().flags.contains(AccountFlags::CLOSED));
    assert!(l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    assert_eq!(l.transfer(tr(103, B, A, 1)), TR::DebitAccountClosed);
    assert_eq!(l.transfer(tr(104, A, D, 1)), TR::CreditAccountClosed);
}

#[test]
fn expiry_of_a_closing_transfer_reopens() {
    let mut l = Ledger::new();
    let t = flagged(pending_timeout(10, D, A, 5, 1), TransferFlags::CLOSING_DEBIT);
    let p = l.ok(t);
    assert!(l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    assert_eq!(l.pulse_to(p.timestamp + NS_PER_S), 1);
    assert!(!l.sm.account(D).unwrap().flags.contains(AccountFlags::CLOSED));
    assert_eq!(l.transfer(tr(100, D, A, 1)), TR::Ok);
}

#[test]
fn other_pending_transfers_of_a_closed_account_can_be_voided_not_posted() {
    let mut l = Ledger::new();
    l.ok(pending(10, D, A, 5));
    l.ok(flagged(pending(11, D, A, 1), TransferFlags::CLOSING_DEBIT));
    assert_eq!(l.transfer(post(100, 10, MAX)), TR::DebitAccountClosed);
    // A void only releases the reservation: never stuck behind a closed account.
    assert_eq!(l.transfer(void(103, 10)), TR::Ok);
    assert_eq!(l.balances(D).debits_pending, 1);
    l.ok(pending(12, C, B, 5));
    l.ok(flagged(pending(13, A, B, 1), TransferFlags::CLOSING_CREDIT));
    assert_eq!(l.transfer(post(101, 12, MAX)), TR::CreditAccountClosed);
    assert_eq!(l.transfer(void(104, 12)), TR::Ok);
    // The closing transfer itself can be posted.
    assert_eq!(l.transfer(post(102, 11, MAX)), TR::Ok);
}

// ----- balancing -----

#[test]
fn balancing_debit_moves_at_most_what_the_debit_account_has() {
    let mut l = Ledger::new();
    l.fund(WALLET, 100);
    l.charge(WALLET, 30);
    let t = flagged(tr(10, WALLET, B, 1_000), TransferFlags::BALANCING_DEBIT);
    assert_eq!(l.ok(t).amount, 70);
    assert_eq!(l.balances(WALLET).debits_posted, 100);
    assert_eq!(l.balances(B).credits_posted, 70);
    // An upper bound below the balance is moved whole.
    l.fund(WALLET, 50);
    let t = flagged(tr(11, WALLET, B, 20), TransferFlags::BALANCING_DEBIT);
    assert_eq!(l.ok(t).amount, 20);
    // Pending debits count as used.
    l.ok(pending(12, WALLET, C, 25));
    let t = flagged(tr(13, WALLET, B, MAX), TransferFlags::BALANCING_DEBIT);
    assert_eq!(l.ok(t).amount, 5);
    // Nothing left: a balancing transfer of zero is committed.
    let t = flagged(tr(14, WALLET, B, MAX), TransferFlags::BALANCING_DEBIT);
    assert_eq!(l.ok(t).amount, 0);
    assert_eq!(l.balances(WALLET).credits_posted, 150);
    assert_eq!(l.balances(WALLET).debits_posted + l.balances(WALLET).debits_pending, 150);
    // Also on an account without a limit flag: bounded by its net credit balance.
    l.fund(C, 8);
    let t = flagged(tr(15, C, B, 100), TransferFlags::BALANCING_DEBIT);
    assert_eq!(l.ok(t).amount, 8);
}

#[test]
fn balancing_credit_moves_at_most_what_the_credit_account_may_take() {
    let mut l = Ledger::new();
    l.charge(CAPPED, 40);
    assert_eq!(l.transfer(tr(100, A, CAPPED, 41)), TR::ExceedsDebits);
    let t = flagged(tr(10, A, CAPPED, 1_000), TransferFlags::BALANCING_CREDIT);
    assert_eq!(l.ok(t).amount, 40);
    assert_eq!(l.balances(CAPPED).credits_posted, 40);
    // Both bounds at once: the smaller wins.
    l.charge(CAPPED, 10);
    l.fund(WALLET, 7);
    let both = TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT;
    let t = flagged(tr(11, WALLET, CAPPED, MAX), both);
    assert_eq!(l.ok(t).amount, 7);
    // A pending balancing transfer reserves what it may.
    let t = flagged(pending(12, A, CAPPED, MAX), TransferFlags::BALANCING_CREDIT);
    assert_eq!(l.ok(t).amount, 3);
    assert_eq!(l.balances(CAPPED).credits_pending, 3);
    assert_eq!(l.ok(post(13, 12, MAX)).amount, 3);
}

// ----- queries -----

/// A ledger where account A took part in many transfers, across batches with gaps in time,
/// among transfers that do not concern it. Returns the ids of A's transfers in time order.
fn busy_ledger() -> (Ledger, Vec<u128>) {
    let mut l = Ledger::new();
    let mut mine = Vec::new();
    let mut id = 100;
    for batch in 0..12u128 {
        let mut events = Vec::new();
        for k in 0..5u128 {
            id += 1;
            let t = match (batch + k) % 4 {
                0 => tr(id, A, B, 1 + k),
                1 => tr(id, C, A, 1 + k),
                2 => tr(id, B, C, 1 + k),
                _ => pending(id, HIST, A, 1 + k),
            };
            if t.debit_account_id == A || t.credit_account_id == A {
                mine.push(id);
            }
            events.push(t);
        }
        let ts = l.next_ts() + 1_000 * batch as u64;
        let r = l.transfers_at(ts, &events);
        assert!(r.iter().all(|r| r.code == TR::Ok));
    }
    (l, mine)
}

fn ids(page: &Page<Transfer>) -> Vec<u128> {
    page.items.iter().map(|t| t.id).collect()
}

/// Reads every page of a query, checking each page's size.
fn all_pages(l: &Ledger, filter: AccountFilter) -> Vec<Transfer> {
    let mut rows = Vec::new();
    let mut f = filter;
    for _ in 0..1_000 {
        let page = l.sm.get_account_transfers(&f).unwrap();
        assert!(page.items.len() <= f.limit as usize);
        rows.extend(page.items.iter().copied());
        match page.next_cursor {
            Some(cursor) => {
                assert_eq!(page.items.len(), f.limit as usize, "short page before the end");
                f = f.after(cursor);
            }
            None => return rows,
        }
    }
    panic!("pagination does not end");
}

#[test]
fn account_transfers_in_time_order_with_side_filters() {
    let (l, mine) = busy_ledger();
    let all = l.sm.get_account_transfers(&AccountFilter::new(A, QUERY_LIMIT_MAX)).unwrap();
    assert_eq!(ids(&all), mine);
    assert_eq!(all.next_cursor, None);
    assert!(all.items.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    for t in &all.items {
        assert_eq!(l.sm.transfer(t.id), Some(t));
    }

    let debits = AccountFilter { debits: true, ..AccountFilter::new(A, QUERY_LIMIT_MAX) };
    let got = l.sm.get_account_transfers(&debits).unwrap();
    let expected: Vec<u128> =
        all.items.iter().filter(|t| t.debit_account_id == A).map(|t| t.id).collect();
    assert!(!expected.is_empty());
    assert_eq!(ids(&got), expected);

    let credits = AccountFilter { credits: true, ..AccountFilter::new(A, QUERY_LIMIT_MAX) };
    let got = l.sm.get_account_transfers(&credits).unwrap();
    let expected: Vec<u128> =
        all.items.iter().filter(|t| t.credit_account_id == A).map(|t| t.id).collect();
    assert!(!expected.is_empty());
    assert_eq!(ids(&got), expected);

    let both =
        AccountFilter { debits: true, credits: true, ..AccountFilter::new(A, QUERY_LIMIT_MAX) };
    assert_eq!(l.sm.get_account_transfers(&both).unwrap(), all);

    let reverse = AccountFilter { reverse: true, ..AccountFilter::new(A, QUERY_LIMIT_MAX) };
    let mut backwards = mine.clone();
    backwards.reverse();
    assert_eq!(ids(&l.sm.get_account_transfers(&reverse).unwrap()), backwards);

    // An account without transfers: an empty page.
    let empty = l.sm.get_account_transfers(&AccountFilter::new(E2, 10)).unwrap();
    assert_eq!(empty, Page { items: vec![], next_cursor: None });
}

#[test]
fn account_transfers_within_a_time_range() {
    let (l, _) = busy_ledger();
    let all = l.sm.get_account_transfers(&AccountFilter::new(A, QUERY_LIMIT_MAX)).unwrap().items;
    let n = all.len();
    let (lo, hi) = (all[3].timestamp, all[n - 4].timestamp);
    let range = |min, max| AccountFilter {
        timestamp_min: min,
        timestamp_max: max,
        ..AccountFilter::new(A, QUERY_LIMIT_MAX)
    };
    // Bounds are inclusive.
    let got = l.sm.get_account_transfers(&range(lo, hi)).unwrap().items;
    assert_eq!(got, all[3..n - 3]);
    let got = l.sm.get_account_transfers(&range(lo + 1, hi - 1)).unwrap().items;
    assert_eq!(got, all[4..n - 4]);
    // Zero means unbounded on either side.
    assert_eq!(l.sm.get_account_transfers(&range(lo, 0)).unwrap().items, all[3..]);
    assert_eq!(l.sm.get_account_transfers(&range(0, hi)).unwrap().items, all[..n - 3]);
    // A single instant.
    assert_eq!(l.sm.get_account_transfers(&range(lo, lo)).unwrap().items, all[3..4]);
    // A range with nothing in it (between two batches).
    let gap = all.windows(2).find(|w| w[1].timestamp - w[0].timestamp > 2).unwrap();
    let empty = range(gap[0].timestamp + 1, gap[1].timestamp - 1);
    assert!(l.sm.get_account_transfers(&empty).unwrap().items.is_empty());
    // Reverse within a range.
    let reverse = AccountFilter { reverse: true, ..range(lo, hi) };
    let mut expected = all[3..n - 3].to_vec();
    expected.reverse();
    assert_eq!(l.sm.get_account_transfers(&reverse).unwrap().items, expected);
    // Debits within a range, reverse.
    let debits = AccountFilter { debits: true, ..reverse };
    let expected: Vec<Transfer> =
        expected.iter().filter(|t| t.debit_account_id == A).copied().collect();
    assert_eq!(l.sm.get_account_transfers(&debits).unwrap().items, expected);
}

#[test]
fn cursor_pagination_returns_every_row_exactly_once() {
    let (l, mine) = busy_ledger();
    let n = mine.len() as u32;
    for limit in 1..=n + 1 {
        for reverse in [false, true] {
            for (debits, credits) in [(false, false), (true, false), (false, true)] {
                let f = AccountFilter { reverse, debits, credits, ..AccountFilter::new(A, limit) };
                let whole = AccountFilter { limit: QUERY_LIMIT_MAX, ..f };
                let expected = l.sm.get_account_transfers(&whole).unwrap().items;
                let got = all_pages(&l, f);
                assert_eq!(got, expected, "limit {limit} reverse {reverse} {debits}/{credits}");
                let unique: BTreeSet<u128> = got.iter().map(|t| t.id).collect();
                assert_eq!(unique.len(), got.len());
            }
        }
    }
    // Within a range too: the cursor keeps the other bound.
    let all = l.sm.get_account_transfers(&AccountFilter::new(A, QUERY_LIMIT_MAX)).unwrap().items;
    let (lo, hi) = (all[2].timestamp, all[all.len() - 3].timestamp);
    for reverse in [false, true] {
        let f = AccountFilter {
            timestamp_min: lo,
            timestamp_max: hi,
            reverse,
            ..AccountFilter::new(A, 4)
        };
        let mut expected = all[2..all.len() - 2].to_vec();
        if reverse {
            expected.reverse();
        }
        assert_eq!(all_pages(&l, f), expected);
    }
    // A full page at the very end has no cursor.
    let exact = l.sm.get_account_transfers(&AccountFilter::new(A, n)).unwrap();
    assert_eq!(exact.items.len(), n as usize);
    assert_eq!(exact.next_cursor, None);
}

#[test]
fn query_limits_and_errors() {
    let (l, mine) = busy_ledger();
    let f = |limit| AccountFilter::new(A, limit);
    assert_eq!(l.sm.get_account_transfers(&f(0)), Err(QueryError::LimitOutOfRange));
    assert_eq!(
        l.sm.get_account_transfers(&f(QUERY_LIMIT_MAX + 1)),
        Err(QueryError::LimitOutOfRange)
    );
    assert_eq!(l.sm.get_account_transfers(&f(u32::MAX)), Err(QueryError::LimitOutOfRange));
    assert_eq!(l.sm.get_account_transfers(&f(QUERY_LIMIT_MAX)).unwrap().items.len(), mine.len());
    assert_eq!(l.sm.get_account_transfers(&f(1)).unwrap().items.len(), 1);
    assert_eq!(
        l.sm.get_account_transfers(&AccountFilter::new(MISSING, 10)),
        Err(QueryError::AccountNotFound)
    );
    let inverted = AccountFilter { timestamp_min: 10, timestamp_max: 9, ..f(10) };
    assert_eq!(l.sm.get_account_transfers(&inverted), Err(QueryError::TimestampRangeInvalid));
    assert_eq!(l.sm.get_account_balances(&inverted), Err(QueryError::TimestampRangeInvalid));
    let h = |limit| AccountFilter::new(HIST, limit);
    assert_eq!(l.sm.get_account_balances(&h(0)), Err(QueryError::LimitOutOfRange));
    assert_eq!(
        l.sm.get_account_balances(&h(QUERY_LIMIT_MAX + 1)),
        Err(QueryError::LimitOutOfRange)
    );
    assert_eq!(
        l.sm.get_account_balances(&AccountFilter::new(MISSING, 10)),
        Err(QueryError::AccountNotFound)
    );
    for plain in [A, B, WALLET, E1] {
        assert_eq!(
            l.sm.get_account_balances(&AccountFilter::new(plain, 10)),
            Err(QueryError::HistoryNotEnabled),
            "{plain}"
        );
    }
    for e in [
        QueryError::AccountNotFound,
        QueryError::LimitOutOfRange,
        QueryError::TimestampRangeInvalid,
        QueryError::HistoryNotEnabled,
    ] {
        assert!(e.to_string().starts_with(e.code()));
    }
}

#[test]
fn account_balances_follow_every_change_of_a_history_account() {
    let mut l = Ledger::new();
    let mut expected = Vec::new();
    let mut record = |l: &Ledger, ts: u64| {
        expected.push(BalanceAt { timestamp: ts, balances: l.balances(HIST) });
    };
    // Transfers of several kinds touching HIST; others not touching it in between.
    let ts = l.ok(tr(10, A, HIST, 100)).timestamp;
    record(&l, ts);
    l.ok(tr(11, A, B, 1));
    let ts = l.ok(pending(12, HIST, B, 30)).timestamp;
    record(&l, ts);
    let ts = l.ok(post(13, 12, 20)).timestamp;
    record(&l, ts);
    let ts = l.ok(pending(14, C, HIST, 7)).timestamp;
    record(&l, ts);
    let ts = l.ok(void(15, 14)).timestamp;
    record(&l, ts);
    assert_eq!(l.transfer(tr(16, HIST, A, 0)), TR::AmountMustNotBeZero); // no row
    let p = l.ok(pending_timeout(17, HIST, C, 5, 1));
    record(&l, p.timestamp);
    let deadline = p.timestamp + NS_PER_S;
    assert_eq!(l.pulse_to(deadline + 10), 1);
    record(&l, deadline); // the expiry
    let r = l.transfers(&[tr(18, HIST, A, 1), tr(19, B, HIST, 2)]);
    record(&l, r[1].timestamp); // after both: patch the first below
    let after_first = Balances {
        debits_posted: expected.last().unwrap().balances.debits_posted,
        credits_posted: expected.last().unwrap().balances.credits_posted - 2,
        ..expected.last().unwrap().balances
    };
    let last = expected.pop().unwrap();
    expected.push(BalanceAt { timestamp: r[0].timestamp, balances: after_first });
    expected.push(last);

    assert_eq!(history_rows(&l, HIST), expected);
    assert_eq!(expected.last().unwrap().balances, l.balances(HIST));
    assert!(expected.windows(2).all(|w| w[0].timestamp < w[1].timestamp));

    // Reverse, ranges and pages, as for transfers.
    let f = AccountFilter::new(HIST, QUERY_LIMIT_MAX);
    let mut backwards = expected.clone();
    backwards.reverse();
    let got = l.sm.get_account_balances(&AccountFilter { reverse: true, ..f }).unwrap();
    assert_eq!(got.items, backwards);
    let range = AccountFilter {
        timestamp_min: expected[2].timestamp,
        timestamp_max: expected[5].timestamp,
        ..f
    };
    assert_eq!(l.sm.get_account_balances(&range).unwrap().items, expected[2..=5]);
    for limit in 1..=expected.len() as u32 + 1 {
        for reverse in [false, true] {
            let mut f = AccountFilter { reverse, ..AccountFilter::new(HIST, limit) };
            let mut rows = Vec::new();
            loop {
                let page = l.sm.get_account_balances(&f).unwrap();
                assert!(page.items.len() <= limit as usize);
                rows.extend(page.items);
                match page.next_cursor {
                    Some(c) => f = f.after(c),
                    None => break,
                }
            }
            let want = if reverse { &backwards } else { &expected };
            assert_eq!(&rows, want, "limit {limit} reverse {reverse}");
        }
    }
}

/// A pending transfer's deadline can fall inside the time span of a batch (events get
/// `timestamp + i`); it expires at the start of the next batch or pulse, after that batch's
/// events. The history row of the expiry must not go back in time before rows already
/// recorded, or time-range queries and cursor pagination (which assume time order) go wrong.
#[test]
fn expiry_inside_a_batch_span_keeps_history_in_time_order() {
    let mut l = Ledger::new();
    l.fund(HIST, 100);
    let p = l.ok(pending_timeout(10, HIST, A, 5, 1));
    let deadline = p.timestamp + NS_PER_S;
    // A batch from deadline - 10 to deadline + 9; HIST is credited at deadline + 5.
    let mut events: Vec<Transfer> = (0..20).map(|i| tr(100 + i, B, C, 1)).collect();
    events[15] = tr(200, B, HIST, 3);
    let r = l.transfers_at(deadline - 10, &events);
    assert!(r.iter().all(|r| r.code == TR::Ok));
    assert_eq!(r[15].timestamp, deadline + 5);
    // Still reserved after the deadline, until time moves on.
    assert_eq!(l.balances(HIST).debits_pending, 5);
    assert_eq!(l.pulse_to(deadline + 100), 1);
    assert_eq!(l.balances(HIST).debits_pending, 0);

    let rows = history_rows(&l, HIST);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows.last().unwrap().balances, l.balances(HIST), "{rows:?}");
    assert!(
        rows.windows(2).all(|w| w[0].timestamp < w[1].timestamp),
        "history out of time order: {rows:?}"
    );
    // The credit at deadline + 5 saw the reservation still in place.
    assert_eq!(rows[2].timestamp, deadline + 5);
    assert_eq!(rows[2].balances.debits_pending, 5);
    // The expiry is dated just after the batch that spanned its deadline.
    assert_eq!(rows[3].timestamp, deadline + 10);
    // Every row once, by pages of one, both ways; and the rows after deadline + 5.
    for reverse in [false, true] {
        let mut f = AccountFilter { reverse, ..AccountFilter::new(HIST, 1) };
        let mut paged = Vec::new();
        while let Some(c) = {
            let page = l.sm.get_account_balances(&f).unwrap();
            paged.extend(page.items);
            page.next_cursor
        } {
            f = f.after(c);
        }
        if reverse {
            paged.reverse();
        }
        assert_eq!(paged, rows, "reverse {reverse}");
    }
    let later = AccountFilter { timestamp_min: deadline + 5, ..AccountFilter::new(HIST, 10) };
    assert_eq!(l.sm.get_account_balances(&later).unwrap().items, rows[2..]);
}

/// Two balance-history rows of one account can share a timestamp (here two pending transfers
/// with the same deadline expire together); a page never ends between them, so the timestamp
/// cursor never skips one.
#[test]
fn history_rows_sharing_a_timestamp_are_all_paged() {
    let mut l = Ledger::new();
    let t0 = l.ok(pending_timeout(10, HIST, A, 1, 2)).timestamp;
    let r = l.transfers_at(t0 + NS_PER_S, &[pending_timeout(11, HIST, A, 2, 1)]);
    assert_eq!(r[0].code, TR::Ok);
    assert_eq!(l.pulse_to(t0 + 3 * NS_PER_S), 2);
    let rows = history_rows(&l, HIST);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2].timestamp, rows[3].timestamp);
    let mut f = AccountFilter::new(HIST, 1);
    let mut paged = Vec::new();
    loop {
        let page = l.sm.get_account_balances(&f).unwrap();
        paged.extend(page.items);
        match page.next_cursor {
            Some(c) => f = f.after(c),
            None => break,
        }
    }
    assert_eq!(paged, rows);
}
