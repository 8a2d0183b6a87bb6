//! SIGKILL under load: every transfer `farthing write-load` acknowledged (wrote to its ack
//! file) is in the state recovered afterwards, the ledger's invariants hold, and recovery is
//! deterministic. Six rounds on the same directory, so later rounds recover from what the
//! earlier ones left (torn tails, snapshots, many segments).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use farthing_store::{recover, DataDir};

const ROUNDS: u32 = 6;

/// The ids in the ack file; a last line the kill cut short is left out.
fn acked_ids(path: &Path) -> BTreeSet<u128> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .map(|l| l.parse::<u128>().unwrap_or_else(|_| panic!("ack line {l:?}")))
        .collect()
}

/// How long to let the load run in `round`: 100 to 600 ms, varied but reproducible.
fn run_time(round: u32) -> Duration {
    Duration::from_millis(100 + u64::from((round * 211 + 57) % 500))
}

#[test]
fn acknowledged_transfers_survive_sigkill() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let acks = tmp.path().join("acks.txt");
    let bin = env!("CARGO_BIN_EXE_farthing");
    let mut acked_before = 0;

    for round in 0..ROUNDS {
        let mut child = Command::new(bin)
            .arg("write-load")
            .arg("--data-dir")
            .arg(&data)
            .arg("--ack-file")
            .arg(&acks)
            .args(["--run", &(round + 1).to_string(), "--clients", "4", "--batch-size", "32"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn farthing write-load");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let status = child.wait().unwrap();
            panic!("round {round}: write-load printed {line:?} and exited with {status}");
        }
        std::thread::sleep(run_time(round));
        assert!(child.try_wait().unwrap().is_none(), "round {round}: write-load stopped by itself");
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "round {round}: {status}");

        let acked = acked_ids(&acks);
        assert!(acked.len() > acked_before, "round {round}: no transfer was acknowledged");
        acked_before = acked.len();

        let dir = DataDir::open(&data).unwrap();
        let (sm, rec) = recover(&dir, false).unwrap();
        let missing: Vec<u128> =
            acked.iter().copied().filter(|id| sm.transfer(*id).is_none()).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged transfers lost, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        let violations = sm.check_invariants();
        assert!(violations.is_empty(), "round {round}: {violations:?}");
        let (again, _) = recover(&dir, false).unwrap();
        assert_eq!(again.digest(), sm.digest(), "round {round}: recovery is not deterministic");
        assert_eq!(again.counts(), sm.counts());
        eprintln!(
            "round {round}: {} acked, {} transfers, {} records in {} segments, snapshot after {}, torn tail {:?}",
            acked.len(),
            sm.counts().transfers,
            rec.last_seq,
            rec.wal_segments,
            rec.snapshot_seq,
            rec.torn_tail.as_ref().map(|(_, offset, bytes)| (offset, bytes)),
        );
        drop(dir); // the next round's process takes the lock
    }

    let output = Command::new(bin)
        .arg("inspect")
        .arg("--data-dir")
        .arg(&data)
        .arg("--json")
        .output()
        .expect("run farthing inspect");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "inspect failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("inspect prints JSON");
    assert_eq!(report["invariants"], "ok", "{report}");
    let transfers = report["transfers"].as_u64().expect("a transfer count");
    assert!(transfers >= acked_before as u64, "{report}");
    eprintln!("kill test: {ROUNDS} rounds in {:?}", started.elapsed());
}
