//! The transparency log's leaf: the canonical bytes of one committed transfer.
//!
//! Version 1: a 4-byte head, then the transfer's non-zero fields.
//!
//! | offset | bytes | field                                                           |
//! |-------:|------:|-----------------------------------------------------------------|
//! | 0      | 1     | version, `1`                                                    |
//! | 1      | 1     | kind: `1` = transfer committed (result `ok`)                    |
//! | 2      | 2     | `present`, little-endian: bit *i* set ⇔ field *i* is not zero     |
//! | 4      | …     | each present field, in field order, little-endian, full width   |
//!
//! Fields: 0 `id` (16 bytes), 1 `debit_account_id` (16), 2 `credit_account_id` (16),
//! 3 `amount` (16), 4 `pending_id` (16), 5 `user_data_128` (16), 6 `user_data_64` (8),
//! 7 `user_data_32` (4), 8 `timeout_s` (4), 9 `asset` (4), 10 `code` (2), 11 `flags` (2),
//! 12 `timestamp` (8). Bits 13–15 are zero. A zero field is never written, so every
//! transfer has exactly one encoding (a decoder refuses a present field that is zero). A
//! typical payment is 82 bytes, two SHA-256 blocks with the leaf prefix; at most 132.
//!
//! "As committed" means after the engine acted on it: `timestamp` is the engine's, `amount`
//! is the amount that moved (a balancing transfer's actual amount, a post's posted amount),
//! `pending_id` links a post or void to its pending transfer, and `flags` say which it is. A
//! pending transfer's fate is its own later leaf (a post or a void); one that expired has
//! none, and expired once the log's timestamps pass its `timeout_s`. Refused events are
//! never leaves.

use crate::{Transfer, TransferFlags};

pub const LEAF_VERSION: u8 = 1;
pub const LEAF_KIND_TRANSFER: u8 = 1;
const HEAD_BYTES: usize = 4;
const FIELD_BYTES: [usize; 13] = [16, 16, 16, 16, 16, 16, 8, 4, 4, 4, 2, 2, 8];
pub const LEAF_BYTES_MAX: usize = HEAD_BYTES + 128;

/// A leaf's bytes.
#[derive(Clone, Copy)]
pub struct Leaf {
    bytes: [u8; LEAF_BYTES_MAX],
    len: usize,
}

impl std::ops::Deref for Leaf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The fields of a transfer in leaf order, as little-endian integers widened to u128.
fn fields(t: &Transfer) -> [u128; 13] {
    [
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        t.amount,
        t.pending_id,
        t.user_data_128,
        t.user_data_64.into(),
        t.user_data_32.into(),
        t.timeout_s.into(),
        t.asset.into(),
        t.code.into(),
        t.flags.0.into(),
        t.timestamp.into(),
    ]
}

/// The leaf of a committed transfer.
pub fn encode_leaf(t: &Transfer) -> Leaf {
    let mut bytes = [0u8; LEAF_BYTES_MAX];
    bytes[0] = LEAF_VERSION;
    bytes[1] = LEAF_KIND_TRANSFER;
    let mut present = 0u16;
    let mut at = HEAD_BYTES;
    for (i, (value, width)) in fields(t).into_iter().zip(FIELD_BYTES).enumerate() {
        if value != 0 {
            present |= 1 << i;
            bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            at += width;
        }
    }
    bytes[2..4].copy_from_slice(&present.to_le_bytes());
    Leaf { bytes, len: at }
}

/// Appends the leaf of a committed transfer to `out` (the same bytes as [`encode_leaf`]),
/// for callers that encode a whole batch into one buffer.
pub fn encode_leaf_into(t: &Transfer, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[LEAF_VERSION, LEAF_KIND_TRANSFER, 0, 0]);
    let mut present = 0u16;
    for (i, (value, width)) in fields(t).into_iter().zip(FIELD_BYTES).enumerate() {
        if value != 0 {
            present |= 1 << i;
            out.extend_from_slice(&value.to_le_bytes()[..width]);
        }
    }
    out[start + 2..start + 4].copy_from_slice(&present.to_le_bytes());
}

/// The transfer a leaf records, or why the bytes are not a canonical leaf of this version.
pub fn decode_leaf(bytes: &[u8]) -> Result<Transfer, String> {
    if bytes.len() < HEAD_BYTES {
        return Err(format!("a leaf is at least {HEAD_BYTES} bytes, not {}", bytes.len()));
    }
    if bytes[0] != LEAF_VERSION {
        return Err(format!("leaf version {} is not known (this build reads 1)", bytes[0]));
    }
    if bytes[1] != LEAF_KIND_TRANSFER {
        return Err(format!("leaf kind {} is not known", bytes[1]));
    }
    let present = u16::from_le_bytes([bytes[2], bytes[3]]);
    if present >> FIELD_BYTES.len() != 0 {
        return Err("the leaf marks fields this version does not have".into());
    }
    let mut values = [0u128; 13];
    let mut at = HEAD_BYTES;
    for (i, width) in FIELD_BYTES.into_iter().enumerate() {
        if present & (1 << i) == 0 {
            continue;
        }
        let field = bytes.get(at..at + width).ok_or("the leaf ends inside a field")?;
        let mut wide = [0u8; 16];
        wide[..width].copy_from_slice(field);
        values[i] = u128::from_le_bytes(wide);
        if values[i] == 0 {
            return Err(format!("field {i} is marked present but is zero: not canonical"));
        }
        at += width;
    }
    if at != bytes.len() {
        return Err(format!("{} bytes follow the leaf's last field", bytes.len() - at));
    }
    let v = values;
    Ok(Transfer {
        id: v[0],
        debit_account_id: v[1],
        credit_account_id: v[2],
        amount: v[3],
        pending_id: v[4],
        user_data_128: v[5],
        user_data_64: v[6] as u64,
        user_data_32: v[7] as u32,
        timeout_s: v[8] as u32,
        asset: v[9] as u32,
        code: v[10] as u16,
        flags: TransferFlags(v[11] as u16),
        timestamp: v[12] as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment() -> Transfer {
        Transfer {
            id: 0x0102,
            debit_account_id: 7,
            credit_account_id: 8,
            amount: 250,
            asset: 1,
            code: 1,
            timestamp: 1_700_000_000_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_payment_has_the_documented_layout() {
        let leaf = encode_leaf(&payment());
        assert_eq!(leaf.len(), 82);
        assert_eq!(&leaf[..6], &[1, 1, 0b0000_1111, 0b0001_0110, 0x02, 0x01]);
        assert_eq!(leaf[4 + 48], 250, "amount after three ids");
        assert_eq!(decode_leaf(&leaf), Ok(payment()));
    }

    #[test]
    fn every_field_round_trips_at_its_extremes() {
        let full = Transfer {
            id: u128::MAX,
            debit_account_id: 1,
            credit_account_id: u128::MAX - 1,
            amount: 1 << 100,
            pending_id: 9,
            user_data_128: 5,
            user_data_64: u64::MAX,
            user_data_32: u32::MAX,
            timeout_s: 60,
            asset: u32::MAX,
            code: u16::MAX,
            flags: TransferFlags::POST_PENDING,
            timestamp: u64::MAX,
        };
        let leaf = encode_leaf(&full);
        assert_eq!(leaf.len(), LEAF_BYTES_MAX);
        let mut buffer = vec![9u8];
        encode_leaf_into(&full, &mut buffer);
        encode_leaf_into(&payment(), &mut buffer);
        assert_eq!(&buffer[1..1 + LEAF_BYTES_MAX], &leaf[..]);
        assert_eq!(&buffer[1 + LEAF_BYTES_MAX..], &encode_leaf(&payment())[..]);
        assert_eq!(decode_leaf(&leaf), Ok(full));
        let empty = Transfer::default();
        assert_eq!(encode_leaf(&empty).len(), 4);
        assert_eq!(decode_leaf(&encode_leaf(&empty)), Ok(empty));
    }

    #[test]
    fn non_canonical_or_unknown_leaves_are_refused() {
        let leaf = encode_leaf(&payment()).to_vec();
        let mut other = leaf.clone();
        other[0] = 2;
        assert!(decode_leaf(&other).unwrap_err().contains("version 2"));
        assert!(decode_leaf(&leaf[..81]).is_err(), "truncated");
        let mut longer = leaf.clone();
        longer.push(0);
        assert!(decode_leaf(&longer).is_err(), "trailing byte");
        let mut zero = leaf.clone();
        zero[4..20].fill(0);
        assert!(decode_leaf(&zero).unwrap_err().contains("not canonical"));
        let mut high = leaf;
        high[3] |= 0x80;
        assert!(decode_leaf(&high).is_err());
    }
}
