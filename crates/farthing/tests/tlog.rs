//! The transparency log as its users meet it: a payer verifies a receipt on another machine
//! with the published key alone; an auditor's `farthing audit` catches each tampering of the
//! stored data and names the first bad leaf; checkpoints prove the log only grew.

use std::path::{Path, PathBuf};
use std::process::Command;

use farthing_ledger::codec::{decode_transfer, encode_transfers};
use farthing_ledger::limits::EVENT_BYTES;
use farthing_ledger::Transfer;
use farthing_store::wal::{self, Op, RecordBuilder};
use farthing_tlog::note::NoteSigner;
use serde_json::Value;

fn farthing(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_farthing")).args(args).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = farthing(args);
    assert!(ok, "farthing {args:?} failed: {err}{out}");
    out
}

/// A data directory with 3,000 committed transfers in three records (ids 1..=3000).
fn ledger(tmp: &Path) -> PathBuf {
    let data = tmp.join("data");
    ok(&[
        "bench",
        "ledger",
        "--transfers",
        "3000",
        "--accounts",
        "20",
        "--batch-size",
        "1000",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    data
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn receipt_index(data: &Path, id: u128) -> u64 {
    let out = ok(&["receipt", "--data-dir", s(data), "--id", &id.to_string(), "--json"]);
    serde_json::from_str::<Value>(&out).unwrap()["index"].as_u64().unwrap()
}

/// Rewrites the WAL record holding transfer `id` as a tamperer who knows the format (and
/// the directory's checksum seed) would: the edited record's checksum is valid.
fn tamper(data: &Path, id: u128, edit: impl FnOnce(&mut Vec<Transfer>)) {
    let seed = farthing_store::datadir::wal_seed(data).unwrap();
    let mut found = None;
    wal::scan(&data.join("wal"), seed, |record, file, offset| {
        let subs = record.sub_batches().unwrap();
        let has = |e: &wal::SubBatch| {
            e.op == Op::CreateTransfers
                && e.events.chunks(EVENT_BYTES).any(|c| decode_transfer(c).id == id)
        };
        if subs.iter().any(has) {
            let owned: Vec<(Op, usize, u64, Vec<u8>)> =
                subs.iter().map(|b| (b.op, b.count, b.timestamp, b.events.to_vec())).collect();
            let len = wal::HEADER_BYTES + record.body.len();
            found = Some((file.to_path_buf(), offset as usize, len, record.seq, owned));
        }
        Ok(())
    })
    .unwrap();
    let (file, offset, len, seq, subs) = found.expect("a record holds the transfer");
    let mut edit = Some(edit);
    let mut builder = RecordBuilder::new();
    for (op, count, ts, events) in subs {
        if op == Op::CreateTransfers {
            let mut transfers: Vec<Transfer> =
                events.chunks(EVENT_BYTES).map(decode_transfer).collect();
            if transfers.iter().any(|t| t.id == id) {
                (edit.take().unwrap())(&mut transfers);
            }
            builder.push(op, transfers.len(), ts, |b| encode_transfers(&transfers, b));
        } else {
            builder.push(op, count, ts, |b| b.extend_from_slice(&events));
        }
    }
    let record = builder.finish(seq, seed);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.splice(offset..offset + len, record);
    std::fs::write(&file, bytes).unwrap();
}

/// Commits `batches` more batches of 64 transfers to `data` (ids set apart by `run`).
fn grow(data: &Path, run: u32, batches: u32) {
    let acks = data.with_extension(format!("acks-{run}"));
    let (run, batches) = (run.to_string(), batches.to_string());
    ok(&["write-load", "--data-dir", s(data), "--ack-file", s(&acks), "--run", &run]
        .into_iter()
        .chain(["--clients", "1", "--batches", &batches])
        .collect::<Vec<_>>());
}

fn audit_json(data: &Path) -> (bool, Value) {
    let (passed, out, err) = farthing(&["audit", "--data-dir", s(data), "--json"]);
    (passed, serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}")))
}

#[test]
fn a_payer_verifies_a_receipt_elsewhere_with_the_published_key_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ledger(tmp.path());
    let key = ok(&["log", "key", "--data-dir", s(&data)]).trim().to_string();
    let text = ok(&["receipt", "--data-dir", s(&data), "--id", "1234"]);
    let json = ok(&["receipt", "--data-dir", s(&data), "--id", "1234", "--json"]);
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");

    // "Another machine": the data directory is gone; the receipt and the key are all.
    std::fs::remove_dir_all(&data).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (r_text, r_json) = (elsewhere.path().join("r.tlog-proof"), elsewhere.path().join("r.json"));
    std::fs::write(&r_text, &text).unwrap();
    std::fs::write(&r_json, &json).unwrap();
    let out = ok(&["verify", "receipt", s(&r_text), "--key", &key]);
    assert!(out.starts_with("OK: transfer 1234 is leaf "), "{out}");
    let out = ok(&["verify", "receipt", s(&r_json), "--key", &key, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["verified"].as_bool(), v["transfer"]["id"].as_str()), (Some(true), Some("1234")));

    // Forgeries: a changed leaf byte (amount), a changed JSON transfer, another key.
    let doc: Value = serde_json::from_str(&json).unwrap();
    let leaf_b64 = doc["leaf"].as_str().unwrap();
    use base64::Engine as _;
    let mut leaf = base64::engine::general_purpose::STANDARD.decode(leaf_b64).unwrap();
    leaf[4 + 48] ^= 1; // the amount
    let forged = base64::engine::general_purpose::STANDARD.encode(&leaf);
    std::fs::write(&r_text, text.replacen(leaf_b64, &forged, 1)).unwrap();
    let (passed, _, err) = farthing(&["verify", "receipt", s(&r_text), "--key", &key]);
    assert!(!passed && err.contains("receipt refused"), "{err}");
    let mut doc2 = doc.clone();
    doc2["transfer"]["amount_minor"] = Value::from("999999");
    std::fs::write(&r_json, doc2.to_string()).unwrap();
    let (passed, _, err) = farthing(&["verify", "receipt", s(&r_json), "--key", &key]);
    assert!(!passed && err.contains("\"transfer\" field"), "{err}");
    std::fs::write(&r_text, &text).unwrap();
    let origin = doc["log"].as_str().unwrap();
    let other = NoteSigner::from_seed(origin, &[7; 32]).unwrap().verifier().encode();
    let (passed, _, err) = farthing(&["verify", "receipt", s(&r_text), "--key", &other]);
    assert!(!passed && err.contains("checkpoint refused"), "{err}");
}

#[test]
fn checkpoints_prove_the_log_only_grew() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ledger(tmp.path());
    let key_file = tmp.path().join("log.pub");
    std::fs::write(&key_file, ok(&["log", "key", "--data-dir", s(&data)])).unwrap();
    let old = tmp.path().join("old.checkpoint");
    std::fs::write(&old, ok(&["log", "checkpoint", "--data-dir", s(&data)])).unwrap();
    grow(&data, 7, 3);
    let new = tmp.path().join("new.checkpoint");
    std::fs::write(&new, ok(&["log", "checkpoint", "--data-dir", s(&data)])).unwrap();
    assert!(std::fs::read_to_string(&new).unwrap().contains("\n3192\n"));
    let proof = tmp.path().join("proof");
    std::fs::write(&proof, ok(&["log", "consistency", "--data-dir", s(&data), "--old", "3000"]))
        .unwrap();
    let verify = |old: &Path, new: &Path| {
        farthing(&[
            "verify",
            "consistency",
            s(old),
            s(new),
            "--proof",
            s(&proof),
            "--key",
            s(&key_file),
        ])
    };
    let (passed, out, err) = verify(&old, &new);
    assert!(passed && out.starts_with("OK: "), "{out}{err}");
    // Swapped, or with a proof for other sizes: refused.
    let (passed, _, err) = verify(&new, &old);
    assert!(!passed, "{err}");
    std::fs::write(&proof, ok(&["log", "consistency", "--data-dir", s(&data), "--old", "2999"]))
        .unwrap();
    let (passed, _, err) = verify(&old, &new);
    assert!(!passed && err.contains("NOT consistent"), "{err}");
}

#[test]
fn audit_passes_an_untouched_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ledger(tmp.path());
    let key = ok(&["log", "key", "--data-dir", s(&data)]);
    let out = ok(&["audit", "--data-dir", s(&data), "--key", key.trim()]);
    assert!(out.contains("3000 leaves recomputed") && out.ends_with("AUDIT PASSED\n"), "{out}");
}

#[test]
fn audit_names_the_first_bad_leaf_of_a_changed_amount() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ledger(tmp.path());
    let index = receipt_index(&data, 1500);
    tamper(&data, 1500, |ts| ts.iter_mut().find(|t| t.id == 1500).unwrap().amount += 1);
    let (passed, report) = audit_json(&data);
    assert!(!passed);
    assert_eq!(report["first_bad_leaf"].as_u64(), Some(index), "{report}");
    // And the engine will not serve (or sign more of) a ledger the log disowns.
    let (ok, _, err) = farthing(&["log", "checkpoint", "--data-dir", s(&data)]);
    assert!(!ok && err.contains("does not match the log's signed checkpoint"), "{err}");
}

#[test]
fn audit_names_the_first_bad_leaf_of_a_removed_transfer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ledger(tmp.path());
    let index = receipt_index(&data, 2222);
    tamper(&data, 2222, |ts| ts.retain(|t| t.id != 2222));
    let (passed, report) = audit_json(&data);
    assert!(!passed);
    assert_eq!(report["first_bad_leaf"].as_u64(), Some(index), "{report}");
    assert_eq!(report["leaves"].as_u64(), Some(2999));
}

#[test]
fn audit_names_the_first_bad_leaf_of_a_reordered_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ledger(tmp.path());
    let index = receipt_index(&data, 700);
    assert_eq!(receipt_index(&data, 701), index + 1);
    tamper(&data, 700, |ts| {
        let at = ts.iter().position(|t| t.id == 700).unwrap();
        ts.swap(at, at + 1);
    });
    let (passed, report) = audit_json(&data);
    assert!(!passed);
    assert_eq!(report["first_bad_leaf"].as_u64(), Some(index), "{report}");
}

#[test]
fn audit_catches_a_rewritten_ledger_even_with_the_logs_files_removed() {
    // The tamperer also removes the log's own files: only the signed checkpoints remain,
    // and they bound the damage.
    let tmp = tempfile::tempdir().unwrap();
    let data = ledger(tmp.path());
    tamper(&data, 10, |ts| ts.iter_mut().find(|t| t.id == 10).unwrap().amount += 1);
    for entry in std::fs::read_dir(data.join("tlog")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hashes" || e == "fp") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let (passed, report) = audit_json(&data);
    assert!(!passed);
    assert_eq!(report["bad_range"], serde_json::json!([0, 3000]), "{report}");
}

#[test]
fn audit_and_verify_refuse_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let (passed, _, err) = farthing(&["audit", "--data-dir", s(tmp.path())]);
    assert!(!passed && !err.is_empty());
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, "hello\n").unwrap();
    let key = NoteSigner::from_seed("farthing.local/x", &[1; 32]).unwrap().verifier().encode();
    let (passed, _, err) = farthing(&["verify", "receipt", s(&junk), "--key", &key]);
    assert!(!passed && err.contains("malformed tlog-proof"), "{err}");
    let (passed, _, err) = farthing(&["verify", "receipt", s(&junk), "--key", "nonsense"]);
    assert!(!passed && err.contains("--key"), "{err}");
    let bad = "farthing.local/x+12345678+AT6vtEAtwuEEn6TP6GLJ4m2hxnecMAuPjZhgiD7JzFqa";
    let (passed, _, err) = farthing(&["verify", "receipt", s(&junk), "--key", bad]);
    assert!(!passed && err.contains("not a verifier key"), "{err}");
}

#[test]
fn a_witness_cosigns_only_a_log_that_grew_consistently_and_catches_a_fork() {
    let tmp = tempfile::tempdir().unwrap();
    let data = ledger(tmp.path());
    let state = tmp.path().join("witness");
    let wkey = ok(&["witness", "init", "--state", s(&state), "--name", "witness.example/w1"]);
    assert!(wkey.starts_with("witness.example/w1+"), "{wkey}");
    let wkey = wkey.trim().to_string();
    let mode = std::fs::metadata(state.join("key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    let log_key = tmp.path().join("log.pub");
    std::fs::write(&log_key, ok(&["log", "key", "--data-dir", s(&data)])).unwrap();
    let file = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cosign = |cp: &Path, proof: Option<&Path>| {
        let mut args = vec!["witness", "cosign", "--state", s(&state)];
        args.extend(["--log-key", s(&log_key), "--checkpoint", s(cp)]);
        if let Some(p) = proof {
            args.extend(["--proof", s(p)]);
        }
        farthing(&args)
    };

    // A fork in the making: a copy of the directory (same key) that will diverge.
    let twin = tmp.path().join("twin");
    copy_dir(&data, &twin);

    let cp1 = file("cp1", &ok(&["log", "checkpoint", "--data-dir", s(&data)]));
    let (passed, cosigned1, err) = cosign(&cp1, None);
    assert!(passed, "{err}");
    let out = ok(&["verify", "checkpoint", s(&file("c1", &cosigned1)), "--key", s(&log_key)]);
    assert!(out.starts_with("OK: "), "{out}");
    let out = ok(&[
        "verify",
        "checkpoint",
        s(&file("c1", &cosigned1)),
        "--key",
        s(&log_key),
        "--witness",
        &wkey,
    ]);
    assert!(out.contains("cosigned by witness.example/w1 at "), "{out}");

    // A receipt whose checkpoint carries the witness's cosignature verifies with it.
    let receipt = ok(&["receipt", "--data-dir", s(&data), "--id", "77"]);
    let (head, checkpoint) = receipt.split_once("\n\n").unwrap();
    assert_eq!(checkpoint, std::fs::read_to_string(&cp1).unwrap());
    let with = file("r.tlog-proof", &format!("{head}\n\n{cosigned1}"));
    let out = ok(&["verify", "receipt", s(&with), "--key", s(&log_key), "--witness", &wkey]);
    assert!(out.contains("cosigned by witness.example/w1"), "{out}");
    let bare = file("bare.tlog-proof", &receipt);
    let (passed, _, err) =
        farthing(&["verify", "receipt", s(&bare), "--key", s(&log_key), "--witness", &wkey]);
    assert!(!passed && err.contains("no valid cosignature"), "{err}");

    // The log grows; the witness needs, checks and accepts the consistency proof.
    grow(&data, 5, 2);
    let cp2 = file("cp2", &ok(&["log", "checkpoint", "--data-dir", s(&data)]));
    let (passed, _, err) = cosign(&cp2, None);
    assert!(!passed && err.contains("consistency proof from size 3000"), "{err}");
    let proof = file("p2", &ok(&["log", "consistency", "--data-dir", s(&data), "--old", "3000"]));
    let (passed, _, err) = cosign(&cp2, Some(&proof));
    assert!(passed, "{err}");
    // Going back is a rollback.
    let (passed, _, err) = cosign(&cp1, None);
    assert!(!passed && err.contains("rollback"), "{err}");

    // The twin (same key, other history) shows the witness a fork at the same size...
    grow(&twin, 6, 2);
    let fork = file("fork", &ok(&["log", "checkpoint", "--data-dir", s(&twin)]));
    let (passed, _, err) = cosign(&fork, None);
    assert!(!passed && err.contains("FORK"), "{err}");
    // ...and no proof from its own history makes it extend what the witness cosigned.
    grow(&twin, 8, 2);
    let fork2 = file("fork2", &ok(&["log", "checkpoint", "--data-dir", s(&twin)]));
    let size2 = std::fs::read_to_string(&cp2).unwrap().lines().nth(1).unwrap().to_string();
    let proof = file("p3", &ok(&["log", "consistency", "--data-dir", s(&twin), "--old", &size2]));
    let (passed, _, err) = cosign(&fork2, Some(&proof));
    assert!(!passed && err.contains("REFUSED"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
