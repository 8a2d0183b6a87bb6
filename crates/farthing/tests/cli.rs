//! The `farthing` command as a user runs it: bench, inspect, query, codes.

use std::process::Command;

use serde_json::Value;

fn farthing(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_farthing")).args(args).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn bench_json_reports_the_documented_keys_and_leaves_a_consistent_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let (ok, out, err) = farthing(&[
        "bench",
        "ledger",
        "--transfers",
        "5000",
        "--accounts",
        "50",
        "--batch-size",
        "100",
        "--clients",
        "3",
        "--distribution",
        "zipfian",
        "--pending-percent",
        "10",
        "--json",
        "--data-dir",
        data,
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    for key in ["transfers_per_second", "batch_latency_ms_p99", "rss_bytes_max", "bytes_on_disk"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key} in {report}");
    }
    assert_eq!(report["failed"], 0);

    let (ok, out, err) = farthing(&["inspect", "--data-dir", data, "--json"]);
    assert!(ok, "{err}");
    let inspect: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(inspect["transfers"], 5000);
    assert_eq!(inspect["accounts"], 50);
    assert_eq!(inspect["invariants"], "ok");
    assert_eq!(inspect["format_version"], 1);
    assert_eq!(inspect["state_digest"].as_str().unwrap().len(), 64);

    // Paging through account 1's history a few rows at a time sees every row exactly once.
    let (ok, out, _) =
        farthing(&["query", "--data-dir", data, "history", "--account", "1", "--limit", "8190"]);
    assert!(ok);
    let all = json_lines(&out);
    let rows: Vec<&Value> = all.iter().filter(|v| v.get("id").is_some()).collect();
    assert!(rows.len() > 7, "zipfian makes account 1 busy");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args =
            vec!["query", "--data-dir", data, "history", "--account", "1", "--limit", "7"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let (ok, out, err) = farthing(&args);
        assert!(ok, "{err}");
        let lines = json_lines(&out);
        paged.extend(lines.iter().filter(|v| v.get("id").is_some()).cloned());
        match lines.last().unwrap()["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged.len(), rows.len());
    assert!(paged.iter().zip(&rows).all(|(a, b)| a == *b));

    // Lookups by id, with amounts as strings in the asset's units.
    let id = rows[0]["id"].as_str().unwrap();
    let (ok, out, _) = farthing(&["query", "--data-dir", data, "transfers", id, "424242424242"]);
    assert!(ok);
    let found = json_lines(&out);
    assert_eq!(found[0], *rows[0]);
    assert!(found[0]["amount"].as_str().unwrap().contains('.'));
    assert_eq!(found[1]["error"], "not_found");
    assert!(found[0]["flags"].is_array(), "flags are names: {}", found[0]);
    let (ok, _, err) = farthing(&["query", "--data-dir", data, "accounts"]);
    assert!(!ok && err.contains("at least one id"), "{err}");
    let (ok, out, _) = farthing(&["query", "--data-dir", data, "accounts", "1"]);
    assert!(ok);
    assert_eq!(json_lines(&out)[0]["asset"], "USD");
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let (ok, _, err) = farthing(&["inspect", "--data-dir", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not a Farthing data directory"), "{err}");
    assert!(!missing.exists(), "inspect must not create a directory");
    let (ok, _, err) = farthing(&["bench", "ledger", "--batch-size", "8191"]);
    assert!(!ok);
    assert!(err.contains("--batch-size"), "{err}");
    let (ok, _, err) = farthing(&["bench", "ledger", "--transfers", "0"]);
    assert!(!ok && err.contains("--transfers"), "{err}");
}

#[test]
fn codes_lists_every_result_code_in_order() {
    let (ok, out, _) = farthing(&["codes"]);
    assert!(ok);
    for c in farthing_ledger::CreateTransferResult::ALL {
        assert!(out.contains(c.code()), "{}", c.code());
    }
    let exists = out.find(" exists ").unwrap();
    assert!(out.find("exceeds_credits").unwrap() > exists);
}
