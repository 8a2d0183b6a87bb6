//! Decisions kept with the transfers they judge, and holds the ledger itself enforces.

use farthing_ledger::*;

const USD: u32 = 1;
const HOUSE: u128 = 1;
const WALLET: u128 = 2;
const SHOP: u128 = 3;

fn ledger() -> StateMachine {
    let mut sm = StateMachine::new();
    sm.create_assets(&[Asset::new(USD, "USD", 2, AssetKind::Fiat)], 1);
    let acct = |id, flags| Account { id, asset: USD, code: 1, flags, ..Default::default() };
    sm.create_accounts(
        &[
            acct(HOUSE, AccountFlags::empty()),
            acct(WALLET, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            acct(SHOP, AccountFlags::empty()),
        ],
        10,
    );
    sm.create_transfers(&[tr(1, HOUSE, WALLET, 100)], 20);
    sm
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

fn decision(id: u128, tag: u8) -> Decision {
    let mut body = [0u8; DECISION_BODY_BYTES];
    body[0] = tag;
    body[DECISION_BODY_BYTES - 1] = tag;
    Decision { transfer_id: id, body }
}

fn held(id: u128, amount: u128) -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING | TransferFlags::HELD,
        timeout_s: 60,
        ..tr(id, WALLET, SHOP, amount)
    }
}

fn release(id: u128, pending_id: u128, post: bool) -> Transfer {
    let phase = if post { TransferFlags::POST_PENDING } else { TransferFlags::VOID_PENDING };
    Transfer {
        id,
        pending_id,
        amount: if post { u128::MAX } else { 0 },
        flags: phase | TransferFlags::RELEASE_HOLD,
        ..Default::default()
    }
}

fn plain_post(id: u128, pending_id: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        amount: u128::MAX,
        flags: TransferFlags::POST_PENDING,
        ..Default::default()
    }
}

#[test]
fn a_decision_is_kept_exactly_when_its_transfer_is_committed() {
    let mut sm = ledger();
    let events = [tr(10, WALLET, SHOP, 30), tr(11, WALLET, SHOP, 500), tr(12, HOUSE, SHOP, 1)];
    let decisions = [decision(10, 1), decision(11, 2), Decision::NONE];
    let r = sm.create_judged_transfers(&events, &decisions, 100);
    let codes: Vec<_> = r.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [CreateTransferResult::Ok, CreateTransferResult::ExceedsCredits, CreateTransferResult::Ok]
    );
    assert_eq!(sm.decision(10), Some(&decision(10, 1)));
    assert_eq!(sm.decision(11), None, "refused: no transfer, no decision");
    assert_eq!(sm.decision(12), None, "not judged");
    // A retry with another decision changes nothing: the first decision stays.
    let r = sm.create_judged_transfers(&[events[0]], &[decision(10, 9)], 200);
    assert_eq!(r[0].code, CreateTransferResult::Exists);
    assert_eq!(sm.decision(10), Some(&decision(10, 1)));
}

#[test]
fn a_failed_linked_chain_keeps_none_of_its_decisions() {
    let mut sm = ledger();
    let mut first = tr(10, WALLET, SHOP, 30);
    first.flags = TransferFlags::LINKED;
    let events = [first, tr(11, WALLET, SHOP, 500)];
    sm.create_judged_transfers(&events, &[decision(10, 1), decision(11, 2)], 100);
    assert_eq!(sm.decision(10), None);
    assert!(sm.transfer(10).is_none());
}

#[test]
fn only_a_release_settles_a_held_transfer() {
    let mut sm = ledger();
    let r = sm.create_judged_transfers(&[held(10, 40)], &[decision(10, 3)], 100);
    assert_eq!(r[0].code, CreateTransferResult::Ok);
    assert!(sm.is_held(10));
    let void = Transfer { flags: TransferFlags::VOID_PENDING, ..plain_post(20, 10) };
    for (t, ts) in [(plain_post(20, 10), 110), (Transfer { amount: 0, ..void }, 120)] {
        let r = sm.create_transfers(&[t], ts);
        assert_eq!(r[0].code, CreateTransferResult::PendingTransferHeld);
    }
    assert!(sm.is_held(10), "still held after refused attempts");
    assert_eq!(sm.account(WALLET).unwrap().balances.debits_pending, 40);
    let r = sm.create_transfers(&[release(21, 10, true)], 130);
    assert_eq!(r[0].code, CreateTransferResult::Ok);
    assert!(!sm.is_held(10));
    assert_eq!(sm.pending_status(10), Some(PendingStatus::Posted));
    assert_eq!(sm.account(SHOP).unwrap().balances.credits_posted, 40);
    assert!(sm.check_invariants().is_empty());
}

#[test]
fn a_held_transfer_still_expires_by_itself() {
    let mut sm = ledger();
    sm.create_judged_transfers(&[held(10, 40)], &[decision(10, 3)], 100);
    sm.pulse(100 + 61 * limits::NS_PER_S);
    assert!(!sm.is_held(10));
    assert_eq!(sm.pending_status(10), Some(PendingStatus::Expired));
    let r = sm.create_transfers(&[release(21, 10, false)], 200 + 61 * limits::NS_PER_S);
    assert_eq!(r[0].code, CreateTransferResult::PendingTransferExpired);
}

#[test]
fn decisions_survive_a_chain_of_snapshots_with_the_same_digest() {
    let mut sm = ledger();
    sm.create_judged_transfers(&[tr(10, WALLET, SHOP, 5)], &[decision(10, 1)], 100);
    let mut first = Vec::new();
    sm.encode_snapshot(0, &mut first);
    let from = sm.transfers().len();
    sm.create_judged_transfers(
        &[held(11, 5), tr(12, HOUSE, SHOP, 1)],
        &[decision(11, 2), Decision::NONE],
        200,
    );
    let mut second = Vec::new();
    sm.encode_snapshot(from, &mut second);
    let back = StateMachine::decode_snapshot_chain(&[&first, &second]).expect("a valid chain");
    assert_eq!(back.digest(), sm.digest());
    assert_eq!(back.decision(10), Some(&decision(10, 1)));
    assert_eq!(back.decision(11), Some(&decision(11, 2)));
    assert!(back.is_held(11));
    assert_eq!(back.decision(12), None);
}

#[test]
fn a_snapshot_written_before_decisions_is_still_read() {
    let sm = ledger();
    let mut bytes = Vec::new();
    sm.encode_snapshot(0, &mut bytes);
    // The older layout: its own magic, and no decision count after the six others.
    let count_at = 8 + 8 + 6 * 8;
    assert_eq!(&bytes[count_at..count_at + 8], &0u64.to_le_bytes());
    let mut old = b"FSNAPST2".to_vec();
    old.extend_from_slice(&bytes[8..count_at]);
    old.extend_from_slice(&bytes[count_at + 8..]);
    let back = StateMachine::decode_snapshot(&old).expect("the older layout");
    assert_eq!(back.digest(), sm.digest());
}

#[test]
fn a_ledger_without_decisions_keeps_its_digest() {
    // The digest of a ledger with no decision is the one it always had: replaying an older
    // data directory gives the same state digest as before decisions existed.
    let a = ledger();
    let mut b = ledger();
    b.create_judged_transfers(&[tr(10, WALLET, SHOP, 5)], &[Decision::NONE], 100);
    let mut c = ledger();
    c.create_transfers(&[tr(10, WALLET, SHOP, 5)], 100);
    assert_eq!(b.digest(), c.digest());
    assert_ne!(a.digest(), b.digest());
}
