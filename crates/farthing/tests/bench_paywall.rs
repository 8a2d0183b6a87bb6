//! `farthing bench paywall` end to end: a short run through the paywall, no errors, every
//! paid voucher settled on the ledger, and the report's keys. No timing is asserted.

use std::process::{Command, Stdio};

use serde_json::Value;

#[test]
fn a_short_paywall_bench_settles_everything_it_served() {
    let output = Command::new(env!("CARGO_BIN_EXE_farthing"))
        .args(["bench", "paywall", "--seconds", "1", "--connections", "4", "--json"])
        // Few vouchers to sign in advance: enough for a slow debug build.
        .args(["--rate-max", "20000"])
        .stdin(Stdio::null())
        .output()
        .expect("run farthing bench paywall");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "farthing bench paywall: {}: {stderr}", output.status);
    let r: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("farthing bench paywall printed {stdout:?}: {e}"));
    for key in [
        "paid_requests_per_second",
        "requests",
        "errors",
        "latency_p50_us",
        "latency_p99_us",
        "settled_units",
        "expected_units",
        "settlement_transfers",
        "connections",
        "channels",
    ] {
        assert!(r.get(key).is_some(), "no {key} in {r}");
    }
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["connections"], 4, "{r}");
    assert_eq!(r["channels"], 4, "{r}");
    let expected = r["expected_units"].as_str().unwrap().parse::<u128>().unwrap();
    assert!(expected > 0, "{r}");
    assert_eq!(r["settled_units"], r["expected_units"], "{r}");
    assert!(r["settlement_transfers"].as_u64().unwrap() >= 4, "{r}");
}
