//! Receipts in JSON and the small text helpers shared by the server and the CLI.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use farthing_ledger::{Transfer, TransferFlags};
use farthing_store::Receipt;
use farthing_tlog::checkpoint::Checkpoint;
use farthing_tlog::leaf_hash;
use serde_json::{json, Value};

/// The `format` of a JSON receipt; `farthing verify receipt` reads this form and tlog-proof.
pub const RECEIPT_JSON_FORMAT: &str = "farthing-receipt/v1";

/// A receipt as JSON: the tlog-proof's parts, base64, plus the transfer the leaf proves.
pub fn receipt_json(receipt: &Receipt) -> Result<Value, String> {
    let cp = checkpoint_body(&receipt.proof.checkpoint)?;
    let leaf = receipt.proof.extra.clone().unwrap_or_default();
    Ok(json!({
        "format": RECEIPT_JSON_FORMAT,
        "log": cp.origin,
        "index": receipt.proof.index,
        "tree_size": cp.size,
        "root": STANDARD.encode(cp.root),
        "leaf": STANDARD.encode(&leaf),
        "leaf_hash": STANDARD.encode(leaf_hash(&leaf)),
        "inclusion_proof": receipt.proof.proof.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
        "checkpoint": receipt.proof.checkpoint,
        "transfer": transfer_json(&receipt.transfer),
    }))
}

/// The checkpoint inside a signed note, unverified (for display; verifying opens it again).
pub fn checkpoint_body(note: &str) -> Result<Checkpoint, String> {
    let body = note.split_once("\n\n").map(|(b, _)| format!("{b}\n")).unwrap_or_default();
    Checkpoint::parse(&body).map_err(|e| e.to_string())
}

/// Names of the flags set in `bits`.
pub fn flag_names<F: Copy + Into<u16>>(named: &[(&str, F)], bits: u16) -> Vec<String> {
    named.iter().filter(|(_, f)| bits & (*f).into() != 0).map(|(n, _)| n.to_string()).collect()
}

/// A transfer as a leaf records it: amounts in minor units (a leaf carries no asset scale).
pub fn transfer_json(t: &Transfer) -> Value {
    json!({
        "id": t.id.to_string(),
        "debit_account_id": t.debit_account_id.to_string(),
        "credit_account_id": t.credit_account_id.to_string(),
        "amount_minor": t.amount.to_string(),
        "asset": t.asset,
        "pending_id": t.pending_id.to_string(),
        "user_data_128": t.user_data_128.to_string(),
        "user_data_64": t.user_data_64.to_string(),
        "user_data_32": t.user_data_32,
        "code": t.code,
        "flags": flag_names(TransferFlags::NAMED, t.flags.0),
        "timeout_s": t.timeout_s,
        "timestamp": t.timestamp.to_string(),
        "time_utc": utc(t.timestamp),
    })
}

/// Nanoseconds since the epoch as an RFC 3339 UTC time (to the microsecond).
pub fn utc(ns: u64) -> String {
    Utc(ns).to_string()
}

/// Nanoseconds since the epoch, displayed as an RFC 3339 UTC time (to the microsecond).
#[derive(Clone, Copy, Debug)]
pub struct Utc(pub u64);

impl std::fmt::Display for Utc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0;
        let secs = ns / 1_000_000_000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (proleptic Gregorian, era-based).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            rem / 3_600,
            rem % 3_600 / 60,
            rem % 60,
            ns % 1_000_000_000 / 1_000
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_times_are_calendar_dates() {
        assert_eq!(super::Utc(0).to_string(), super::utc(0));
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(super::utc(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(super::utc(1_795_552_819_415_132_165), "2026-11-24T20:40:19.415132Z");
        assert_eq!(super::utc(4_107_542_399_999_999_999), "2100-02-28T23:59:59.999999Z");
    }
}
