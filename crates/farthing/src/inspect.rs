//! `farthing inspect` and `farthing codes`.

use std::path::Path;

use farthing_ledger::{CreateAccountResult, CreateAssetResult, CreateTransferResult};
use farthing_store::datadir::FORMAT_VERSION;
use farthing_store::{recover, DataDir};
use serde_json::json;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn run(data_dir: &Path, as_json: bool) -> Result<(), String> {
    if !data_dir.join("FORMAT").exists() {
        return Err(format!("{} is not a Farthing data directory", data_dir.display()));
    }
    let dir = DataDir::open(data_dir).map_err(|e| e.to_string())?;
    let (sm, rec) = recover(&dir, false).map_err(|e| e.to_string())?;
    let counts = sm.counts();
    let violations = sm.check_invariants();
    let memory = sm.memory_estimate();
    let per = |bytes: u64, n: u64| bytes.checked_div(n).unwrap_or(0);
    let torn = rec.torn_tail.as_ref().map(|(file, offset, bytes)| {
        json!({ "file": file.display().to_string(), "offset": offset, "bytes": bytes })
    });
    let report = json!({
        "data_dir": data_dir.display().to_string(),
        "format_version": FORMAT_VERSION,
        "assets": counts.assets,
        "accounts": counts.accounts,
        "transfers": counts.transfers,
        "pending_open": counts.pending_open,
        "failed_ids": counts.failed_ids,
        "last_timestamp": sm.last_timestamp(),
        "state_digest": hex(&sm.digest()),
        "invariants": if violations.is_empty() { json!("ok") } else { json!(violations) },
        "wal_records": rec.last_seq,
        "wal_segments": rec.wal_segments,
        "wal_bytes": rec.wal_bytes,
        "snapshot_seq": rec.snapshot_seq,
        "records_replayed": rec.records_replayed,
        "recovery_ms": rec.duration.as_millis() as u64,
        "torn_tail": torn,
        "bytes_on_disk": dir.bytes_on_disk(),
        "memory_bytes_per_account": per(memory.accounts_bytes, counts.accounts),
        "memory_bytes_per_transfer": per(memory.transfers_bytes, counts.transfers),
        "memory_bytes_other": memory.other_bytes,
    });
    if as_json {
        println!("{report}");
    } else {
        for (key, value) in report.as_object().expect("object") {
            println!("{key:<26} {}", value.to_string().trim_matches('"'));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(format!("{} invariant violations", violations.len()))
    }
}

pub fn print_codes() {
    println!("Checks run in this order; an event gets the first code that applies.\n");
    println!("create_assets:");
    for c in CreateAssetResult::ALL {
        println!("  {:>3} {:<46} {}", *c as u8, c.code(), c.message());
    }
    println!("\ncreate_accounts:");
    for c in CreateAccountResult::ALL {
        println!("  {:>3} {:<46} {}", *c as u8, c.code(), c.message());
    }
    println!("\ncreate_transfers:");
    for c in CreateTransferResult::ALL {
        println!("  {:>3} {:<46} {}", *c as u8, c.code(), c.message());
    }
}
