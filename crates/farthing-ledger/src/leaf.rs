//! The transparency log's leaf: the canonical bytes of one committed transfer.
//!
//! Version 1, 130 bytes:
//!
//! | offset | bytes | field                                                            |
//! |-------:|------:|------------------------------------------------------------------|
//! | 0      | 1     | version, `1`                                                     |
//! | 1      | 1     | kind: `1` = transfer committed (result `ok`)                     |
//! | 2      | 128   | the transfer as committed, in the event layout of [`crate::codec`] |
//!
//! "As committed" means after the engine acted on it: `timestamp` is the engine's, `amount`
//! is the amount that moved (a balancing transfer's actual amount, a post's posted amount),
//! `pending_id` links a post or void to its pending transfer, and `flags` say which it is. A
//! pending transfer's fate is its own later leaf (a post or a void); one that expired has
//! none, and expired once the log's timestamps pass its `timeout_s`. Refused events are
//! never leaves. All integers are little-endian.

use crate::codec::{decode_transfer, encode_transfer};
use crate::limits::EVENT_BYTES;
use crate::Transfer;

pub const LEAF_VERSION: u8 = 1;
pub const LEAF_KIND_TRANSFER: u8 = 1;
pub const LEAF_BYTES: usize = 2 + EVENT_BYTES;

/// The leaf of a committed transfer.
pub fn encode_leaf(t: &Transfer) -> [u8; LEAF_BYTES] {
    let mut leaf = [0u8; LEAF_BYTES];
    leaf[0] = LEAF_VERSION;
    leaf[1] = LEAF_KIND_TRANSFER;
    let body: &mut [u8; EVENT_BYTES] = (&mut leaf[2..]).try_into().expect("leaf body");
    encode_transfer(t, body);
    leaf
}

/// The transfer a leaf records, or why the bytes are not a leaf this version knows.
pub fn decode_leaf(bytes: &[u8]) -> Result<Transfer, String> {
    if bytes.len() != LEAF_BYTES {
        return Err(format!("a leaf is {LEAF_BYTES} bytes, not {}", bytes.len()));
    }
    if bytes[0] != LEAF_VERSION {
        return Err(format!("leaf version {} is not known (this build reads 1)", bytes[0]));
    }
    if bytes[1] != LEAF_KIND_TRANSFER {
        return Err(format!("leaf kind {} is not known", bytes[1]));
    }
    Ok(decode_transfer(&bytes[2..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransferFlags;

    #[test]
    fn a_leaf_round_trips_and_has_the_documented_layout() {
        let t = Transfer {
            id: 0x0102,
            debit_account_id: 7,
            credit_account_id: 8,
            amount: 250,
            pending_id: 9,
            flags: TransferFlags::POST_PENDING,
            timestamp: 1_700_000_000_000_000_000,
            ..Default::default()
        };
        let leaf = encode_leaf(&t);
        assert_eq!(&leaf[..4], &[1, 1, 0x02, 0x01]);
        assert_eq!(leaf[2 + 48], 250);
        assert_eq!(leaf[2 + 64], 9);
        assert_eq!(decode_leaf(&leaf), Ok(t));
        let mut other = leaf;
        other[0] = 2;
        assert!(decode_leaf(&other).unwrap_err().contains("version 2"));
        assert!(decode_leaf(&leaf[..129]).is_err());
    }
}
