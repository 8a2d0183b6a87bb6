//! `farthing load` against a real `farthing serve`: single transfers and batches, no errors,
//! and the report's keys.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

const ADMIN_KEY: &str = "fk_loadtestadmin0000000000000000000";
const LISTENING: &str = "farthing: listening on ";

/// The server, and its stdout (kept open: the server prints as it stops). Killed if a
/// test fails before stopping it.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    url: String,
    stopped: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_server(data_dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_farthing"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("FARTHING_ADMIN_KEY", ADMIN_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn farthing serve");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut server = Server { child, stdout, url: String::new(), stopped: false };
    let mut line = String::new();
    loop {
        line.clear();
        if server.stdout.read_line(&mut line).unwrap() == 0 {
            panic!("farthing serve exited before listening");
        }
        if let Some(url) = line.trim().strip_prefix(LISTENING) {
            server.url = url.to_string();
            return server;
        }
    }
}

fn stop_server(mut server: Server) {
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child this test started and has not yet waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut rest = String::new();
    server.stdout.read_to_string(&mut rest).unwrap();
    let status = server.child.wait().unwrap();
    server.stopped = true;
    assert!(status.success(), "farthing serve exited with {status}; it printed {rest:?}");
}

fn load(url: &str, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_farthing"))
        .args(["load", "--url", url, "--key", ADMIN_KEY, "--connections", "8"])
        .args(["--duration-s", "2", "--accounts", "200", "--json"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run farthing load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "farthing load: {}: {stderr}", output.status);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("farthing load printed {stdout:?}: {e}"))
}

fn check(report: &Value, batch_size: u64) {
    for key in [
        "requests_per_second",
        "transfers_per_second",
        "latency_ms_p50",
        "latency_ms_p99",
        "latency_ms_p999",
        "errors",
        "requests",
        "transfers",
        "connections",
        "batch_size",
        "duration_s",
        "client_cpu_seconds",
        "server_cpu_seconds",
        "cpu_cores",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["batch_size"], batch_size, "{report}");
    assert_eq!(report["connections"], 8, "{report}");
    assert!(report["transfers_per_second"].as_f64().unwrap() > 0.0, "{report}");
    let (requests, transfers) =
        (report["requests"].as_u64().unwrap(), report["transfers"].as_u64().unwrap());
    assert_eq!(transfers, requests * batch_size, "{report}");
    let (p50, p99, p999) = (
        report["latency_ms_p50"].as_f64().unwrap(),
        report["latency_ms_p99"].as_f64().unwrap(),
        report["latency_ms_p999"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{report}");
    assert!(report["client_cpu_seconds"].as_f64().unwrap() > 0.0, "{report}");
    // The server runs on this machine, and its /metrics reports its CPU time.
    assert!(report["server_cpu_seconds"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["cpu_cores"].as_u64().unwrap() >= 1, "{report}");
}

#[test]
fn load_against_a_real_server() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(&tmp.path().join("data"));

    check(&load(&server.url, &[]), 1);
    // A second run on the same server: its own accounts, no collisions.
    check(&load(&server.url, &["--batch-size", "100"]), 100);

    stop_server(server);
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
}

#[test]
fn refuses_bad_flags_and_https() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_farthing"))
            .args(["load", "--key", ADMIN_KEY])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run farthing load");
        assert!(!output.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(&["--url", "https://127.0.0.1:8443"]).contains("https is not supported"));
    assert!(run(&["--connections", "0"]).contains("--connections must be"));
    assert!(run(&["--connections", "4097"]).contains("--connections must be"));
    assert!(run(&["--batch-size", "8191"]).contains("--batch-size must be"));
    assert!(run(&["--duration-s", "0"]).contains("--duration-s must be"));
    assert!(run(&["--duration-s", "3601"]).contains("--duration-s must be"));
}
