//! The rails' examples, run as a new user runs them (`cargo run --example ...`): each must
//! finish, pay, settle on the ledger and verify the settlement's receipt offline.

use std::path::PathBuf;
use std::process::Command;

/// An example's binary: `cargo test` builds the package's examples beside its tests.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let path = deps.parent().unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: `cargo test -p farthing` builds the examples",
        path.display()
    );
    // `cargo test --test examples` alone does not rebuild them: say so, not a false failure.
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    assert!(
        modified(&path) >= modified(&source),
        "{} is older than its source: `cargo test -p farthing` (or `cargo build --examples`) rebuilds it",
        path.display()
    );
    path
}

fn run(name: &str) -> String {
    let out = Command::new(example(name))
        .env_remove("FARTHING_URL")
        .env_remove("FARTHING_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{name}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_paywall_example_pays_articles_and_calls_and_settles_in_one_transfer() {
    let out = run("paywall");
    assert!(out.contains("GET /articles/1 -> 402 Payment Required"), "{out}");
    assert_eq!(out.matches("paid 0.001000 USD: 200 OK").count(), 5, "{out}");
    assert!(out.contains("paid 100 API calls"), "{out}");
    assert!(out.contains("0.015000 USD settled on the ledger"), "{out}");
    assert!(out.contains("105 paid requests settled in 1 ledger transfer(s)"), "{out}");
    assert!(out.contains("receipt verified offline: transfer"), "{out}");
    assert!(out.contains("the client stops (over budget"), "{out}");
    assert!(out.contains("reader spent 0.050000 USD of its 0.050000 USD budget"), "{out}");
}

#[test]
fn the_ev_charging_example_streams_ticks_between_two_processes() {
    let out = run("ev_charging");
    assert!(out.contains("charger: 5.0 kWh delivered and paid"), "{out}");
    assert!(out.contains("charger: the car stops at 5.0 kWh (budget)"), "{out}");
    assert!(out.contains("50 ticks settled in one ledger transfer"), "{out}");
    assert!(out.contains("1.500000 USD to the charger"), "{out}");
    assert!(out.contains("receipt verified offline"), "{out}");
}
