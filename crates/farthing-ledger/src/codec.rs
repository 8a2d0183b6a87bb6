//! Fixed-size little-endian encoding of events, shared by the WAL and snapshots.
//!
//! Layouts (byte offsets) are part of the data-directory format: change them only with a new
//! format version.
//! - `Transfer` (128): id 0, debit_account_id 16, credit_account_id 32, amount 48,
//!   pending_id 64, user_data_128 80, user_data_64 96, user_data_32 104, timeout_s 108,
//!   asset 112, code 116, flags 118, timestamp 120.
//! - `Account` (128): id 0, debits_pending 16, debits_posted 32, credits_pending 48,
//!   credits_posted 64, owner_id 80, user_data_64 96, asset 104, code 108, flags 110,
//!   timestamp 112, zero 120..128.
//! - `Asset` (32): id 0, code 4..16, scale 16, kind 17, zero 18..24, timestamp 24.
//! - `Decision` (128): transfer_id 0, body 16..128.

use crate::limits::{ASSET_BYTES, EVENT_BYTES};
use crate::types::{
    Account, AccountFlags, Asset, Balances, Decision, Transfer, TransferFlags, DECISION_BODY_BYTES,
};

/// Reads little-endian integers at fixed offsets of a slice that is known to be long enough.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u128(&self, at: usize) -> u128 {
        u128::from_le_bytes(self.0[at..at + 16].try_into().unwrap())
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap())
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap())
    }
    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.0[at..at + 2].try_into().unwrap())
    }
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

pub fn encode_transfer(t: &Transfer, out: &mut [u8; EVENT_BYTES]) {
    put(out, 0, &t.id.to_le_bytes());
    put(out, 16, &t.debit_account_id.to_le_bytes());
    put(out, 32, &t.credit_account_id.to_le_bytes());
    put(out, 48, &t.amount.to_le_bytes());
    put(out, 64, &t.pending_id.to_le_bytes());
    put(out, 80, &t.user_data_128.to_le_bytes());
    put(out, 96, &t.user_data_64.to_le_bytes());
    put(out, 104, &t.user_data_32.to_le_bytes());
    put(out, 108, &t.timeout_s.to_le_bytes());
    put(out, 112, &t.asset.to_le_bytes());
    put(out, 116, &t.code.to_le_bytes());
    put(out, 118, &t.flags.0.to_le_bytes());
    put(out, 120, &t.timestamp.to_le_bytes());
}

pub fn decode_transfer(bytes: &[u8]) -> Transfer {
    let r = Reader(&bytes[..EVENT_BYTES]);
    Transfer {
        id: r.u128(0),
        debit_account_id: r.u128(16),
        credit_account_id: r.u128(32),
        amount: r.u128(48),
        pending_id: r.u128(64),
        user_data_128: r.u128(80),
        user_data_64: r.u64(96),
        user_data_32: r.u32(104),
        timeout_s: r.u32(108),
        asset: r.u32(112),
        code: r.u16(116),
        flags: TransferFlags(r.u16(118)),
        timestamp: r.u64(120),
    }
}

pub fn encode_account(a: &Account, out: &mut [u8; EVENT_BYTES]) {
    put(out, 0, &a.id.to_le_bytes());
    put(out, 16, &a.balances.debits_pending.to_le_bytes());
    put(out, 32, &a.balances.debits_posted.to_le_bytes());
    put(out, 48, &a.balances.credits_pending.to_le_bytes());
    put(out, 64, &a.balances.credits_posted.to_le_bytes());
    put(out, 80, &a.owner_id.to_le_bytes());
    put(out, 96, &a.user_data_64.to_le_bytes());
    put(out, 104, &a.asset.to_le_bytes());
    put(out, 108, &a.code.to_le_bytes());
    put(out, 110, &a.flags.0.to_le_bytes());
    put(out, 112, &a.timestamp.to_le_bytes());
    put(out, 120, &[0u8; 8]);
}

pub fn decode_account(bytes: &[u8]) -> Account {
    let r = Reader(&bytes[..EVENT_BYTES]);
    Account {
        id: r.u128(0),
        balances: Balances {
            debits_pending: r.u128(16),
            debits_posted: r.u128(32),
            credits_pending: r.u128(48),
            credits_posted: r.u128(64),
        },
        owner_id: r.u128(80),
        user_data_64: r.u64(96),
        asset: r.u32(104),
        code: r.u16(108),
        flags: AccountFlags(r.u16(110)),
        timestamp: r.u64(112),
    }
}

pub fn encode_asset(a: &Asset, out: &mut [u8; ASSET_BYTES]) {
    put(out, 0, &a.id.to_le_bytes());
    put(out, 4, &a.code);
    out[16] = a.scale;
    out[17] = a.kind;
    put(out, 18, &[0u8; 6]);
    put(out, 24, &a.timestamp.to_le_bytes());
}

pub fn decode_asset(bytes: &[u8]) -> Asset {
    let r = Reader(&bytes[..ASSET_BYTES]);
    Asset {
        id: r.u32(0),
        code: bytes[4..16].try_into().unwrap(),
        scale: bytes[16],
        kind: bytes[17],
        timestamp: r.u64(24),
    }
}

pub fn encode_decision(d: &Decision, out: &mut [u8; EVENT_BYTES]) {
    put(out, 0, &d.transfer_id.to_le_bytes());
    put(out, 16, &d.body);
}

pub fn decode_decision(bytes: &[u8]) -> Decision {
    let r = Reader(&bytes[..EVENT_BYTES]);
    let mut body = [0u8; DECISION_BODY_BYTES];
    body.copy_from_slice(&bytes[16..EVENT_BYTES]);
    Decision { transfer_id: r.u128(0), body }
}

/// Appends judged transfers: each transfer (128 bytes) followed by its decision (128).
pub fn encode_judged_transfers(events: &[Transfer], decisions: &[Decision], out: &mut Vec<u8>) {
    assert_eq!(events.len(), decisions.len(), "one decision (or none) per transfer");
    let mut buf = [0u8; EVENT_BYTES];
    out.reserve(events.len() * 2 * EVENT_BYTES);
    for (t, d) in events.iter().zip(decisions) {
        encode_transfer(t, &mut buf);
        out.extend_from_slice(&buf);
        encode_decision(d, &mut buf);
        out.extend_from_slice(&buf);
    }
}

/// Decodes what [`encode_judged_transfers`] wrote.
pub fn decode_judged_transfers(bytes: &[u8]) -> (Vec<Transfer>, Vec<Decision>) {
    let pairs = bytes.chunks_exact(2 * EVENT_BYTES);
    let (mut events, mut decisions) = (Vec::with_capacity(pairs.len()), Vec::new());
    decisions.reserve(pairs.len());
    for pair in pairs {
        events.push(decode_transfer(&pair[..EVENT_BYTES]));
        decisions.push(decode_decision(&pair[EVENT_BYTES..]));
    }
    (events, decisions)
}

pub fn encode_decisions(decisions: &[Decision], out: &mut Vec<u8>) {
    let mut buf = [0u8; EVENT_BYTES];
    out.reserve(decisions.len() * EVENT_BYTES);
    for d in decisions {
        encode_decision(d, &mut buf);
        out.extend_from_slice(&buf);
    }
}

/// Appends events of a fixed-size kind to a byte buffer.
pub fn encode_transfers(events: &[Transfer], out: &mut Vec<u8>) {
    let mut buf = [0u8; EVENT_BYTES];
    out.reserve(events.len() * EVENT_BYTES);
    for t in events {
        encode_transfer(t, &mut buf);
        out.extend_from_slice(&buf);
    }
}

pub fn encode_accounts(events: &[Account], out: &mut Vec<u8>) {
    let mut buf = [0u8; EVENT_BYTES];
    out.reserve(events.len() * EVENT_BYTES);
    for a in events {
        encode_account(a, &mut buf);
        out.extend_from_slice(&buf);
    }
}

pub fn encode_assets(events: &[Asset], out: &mut Vec<u8>) {
    let mut buf = [0u8; ASSET_BYTES];
    for a in events {
        encode_asset(a, &mut buf);
        out.extend_from_slice(&buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::AssetKind;

    #[test]
    fn events_round_trip_through_their_fixed_layouts() {
        let t = Transfer {
            id: u128::MAX - 1,
            debit_account_id: 2,
            credit_account_id: 3,
            amount: 1 << 100,
            pending_id: 5,
            user_data_128: 6,
            user_data_64: 7,
            user_data_32: 8,
            timeout_s: 9,
            asset: 10,
            code: 11,
            flags: TransferFlags::PENDING | TransferFlags::LINKED,
            timestamp: 12,
        };
        let mut buf = [0u8; EVENT_BYTES];
        encode_transfer(&t, &mut buf);
        assert_eq!(decode_transfer(&buf), t);

        let a = Account {
            id: 1,
            balances: Balances {
                debits_pending: 2,
                debits_posted: 3,
                credits_pending: 4,
                credits_posted: 5,
            },
            owner_id: 6,
            user_data_64: 7,
            asset: 8,
            code: 9,
            flags: AccountFlags::HISTORY,
            timestamp: 10,
        };
        encode_account(&a, &mut buf);
        assert_eq!(decode_account(&buf), a);

        let mut small = [0u8; ASSET_BYTES];
        let asset = Asset { timestamp: 77, ..Asset::new(3, "USDC", 6, AssetKind::Stablecoin) };
        encode_asset(&asset, &mut small);
        assert_eq!(decode_asset(&small), asset);
    }
}
