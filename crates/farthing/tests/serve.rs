//! `farthing serve` as a user runs it: the binary, its first start, and a stop in the middle
//! of traffic that loses nothing it acknowledged.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use farthing_client::Client;
use serde_json::json;

const KEY: &str = "fk_servetestadmin00000000000000000000";

/// Starts the server on a free port; returns it, its URL and the lines it printed first.
fn start(dir: &std::path::Path, admin_key: Option<&str>) -> (Running, String, Vec<String>) {
    start_with(dir, admin_key, &[])
}

fn start_with(
    dir: &std::path::Path,
    admin_key: Option<&str>,
    extra: &[&std::ffi::OsStr],
) -> (Running, String, Vec<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_farthing"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("FARTHING_ADMIN_KEY")
        .stdout(Stdio::piped());
    if let Some(k) = admin_key {
        command.env("FARTHING_ADMIN_KEY", k);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let url = loop {
        let line = lines.next().expect("the server printed its address").unwrap();
        printed.push(line.clone());
        if let Some(url) = line.strip_prefix("farthing: listening on ") {
            break url.to_string();
        }
    };
    // The rest of the banner, then keep draining stdout so the server never blocks on it.
    loop {
        let line = lines.next().expect("the banner ends with ready").unwrap();
        if line == "farthing: ready" {
            break;
        }
        printed.push(line);
    }
    std::thread::spawn(move || for _ in lines {});
    (Running(Some(child)), url, printed)
}

/// The server process; killed if a test fails before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop(mut running: Running) {
    let mut child = running.0.take().unwrap();
    // SAFETY: kill(2) with a pid we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "the server exits cleanly on SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_prints_an_admin_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url, printed) = start(dir.path(), None);
    let key = printed.last().unwrap().trim().to_string();
    assert!(printed.iter().any(|l| l.contains("shown once")), "{printed:?}");
    assert!(key.starts_with("fk_"), "{printed:?}");
    let admin = Client::new(&url, &key);
    admin.create_asset("USD", 2).await.expect("the printed key works");
    stop(child);
    // The second start prints no key, and the first one still works.
    let (child, url, printed) = start(dir.path(), None);
    assert!(!printed.iter().any(|l| l.contains("fk_")), "{printed:?}");
    assert_eq!(Client::new(&url, &key).get("/v1/assets").await.unwrap()["data"][0]["code"], "USD");
    stop(child);
    assert!(std::fs::metadata(dir.path().join("server.redb")).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url, _) = start(dir.path(), Some(KEY));
    let admin = Client::new(&url, KEY);
    admin.create_asset("USD", 6).await.unwrap();
    for id in ["1", "2"] {
        admin.create_account(&json!({"id": id, "owner_id": id, "asset": "USD"})).await.unwrap();
    }
    let mut tasks = Vec::new();
    for task in 0..32u64 {
        let client = admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0.. {
                let id = (task << 32 | n) + 1;
                let body = json!({"id": id.to_string(), "debit_account_id": "1",
                                  "credit_account_id": "2", "amount": "0.000001"});
                match client.post_raw("/v1/transfers", &body, None).await {
                    Ok(a) if a.status == 201 => acknowledged.push(id),
                    _ => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let waiter = std::thread::spawn(move || stop(child));
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    waiter.join().unwrap();
    assert!(acknowledged.len() > 50, "traffic flowed before the stop: {}", acknowledged.len());
    let (child, url, _) = start(dir.path(), None);
    let admin = Client::new(&url, KEY);
    let credited =
        admin.account("2").await.unwrap()["credits_posted"].as_str().unwrap().to_string();
    let credited_minor: u64 = credited.replace('.', "").parse().unwrap();
    assert!(
        credited_minor >= acknowledged.len() as u64,
        "{credited_minor} < {}",
        acknowledged.len()
    );
    for id in acknowledged.iter().step_by(7) {
        admin
            .transfer(&id.to_string())
            .await
            .unwrap_or_else(|e| panic!("acknowledged {id} lost: {e}"));
    }
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_creates_nothing_and_a_lost_admin_key_can_be_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_farthing"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    assert!(!data.exists(), "a start that cannot serve created the data directory");
    drop(busy);
    // The first key is lost: a new one is made offline, with the server stopped.
    let (child, _, _) = start(&data, None);
    stop(child);
    let out = Command::new(env!("CARGO_BIN_EXE_farthing"))
        .args(["admin-key", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_string();
    let (child, url, _) = start(&data, None);
    Client::new(&url, &key).create_asset("USD", 2).await.expect("the new key works");
    // Not while a server runs on the directory.
    let out = Command::new(env!("CARGO_BIN_EXE_farthing"))
        .args(["admin-key", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    stop(child);
}

/// A payment channel's vouchers, acknowledged one after another while the server is killed
/// (SIGKILL, no chance to flush anything): after the restart the channel's best voucher is
/// at least the last one acknowledged, and the lock is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_keeps_the_highest_voucher_acknowledged() {
    use ed25519_dalek::SigningKey;
    use farthing_rails::channel::Voucher;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, _) = start(dir.path(), Some(KEY));
    let admin = Client::new(&url, KEY);
    common::seed_usd(&admin, &["1001", "2001"]).await;
    let key = SigningKey::from_bytes(&[5; 32]);
    let open = json!({"id": "700", "payer_account_id": "1001", "payee_account_id": "2001",
                      "amount": "5", "payer_key": hex(key.verifying_key().as_bytes())});
    admin.post("/v1/channels", &open, None).await.unwrap();
    let sender = tokio::spawn(async move {
        let mut acknowledged = 0u64;
        for n in 1..1_000_000u64 {
            let sv = Voucher {
                channel: 700,
                sequence: n,
                cumulative: u128::from(n),
                expires_at_s: u64::MAX / 2,
            }
            .sign(&key);
            let body = json!({"sequence": n.to_string(), "cumulative": n.to_string(),
                              "expires_at": sv.voucher.expires_at_s, "signature": hex(&sv.signature)});
            match admin.post_raw("/v1/channels/700/vouchers", &body, None).await {
                Ok(a) if a.status == 200 => acknowledged = n,
                _ => break,
            }
        }
        acknowledged
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let mut killed = child.0.take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let acknowledged = sender.await.unwrap();
    assert!(acknowledged > 10, "vouchers flowed before the kill: {acknowledged}");
    let (child, url, _) = start(dir.path(), None);
    let ch = Client::new(&url, KEY).get("/v1/channels/700").await.unwrap();
    let best: u64 = ch["best_voucher"]["sequence"].as_str().unwrap().parse().unwrap();
    assert!(best >= acknowledged, "best {best} < acknowledged {acknowledged}");
    assert_eq!(ch["locked_units"], "5000000");
    assert_eq!(ch["state"], "open");
    stop(child);
}

/// Every payment above 0.50 USD asks for a step-up, so it is held.
const HOLDING_POLICY: &str = r#"
name = "holds"
[scoring]
model = "none"
[[tiers]]
asset = "USD"
step_up_above = "0.50"
"#;

/// The crash: SIGKILL at varied moments while held payments are being made, then a
/// restart, four times over. Every held payment acknowledged (202) is still there, held,
/// with its decision; every pending transfer the ledger holds has its decision; and none
/// can be posted or voided around its approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_never_leaves_a_held_payment_without_its_hold() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, HOLDING_POLICY).unwrap();
    let extra = [std::ffi::OsStr::new("--risk-policy"), policy.as_os_str()];
    let (mut child, mut url, _) = start_with(&data, Some(KEY), &extra);
    let admin = Client::new(&url, KEY);
    common::seed_usd(&admin, &["1001", "2001"]).await;
    let fund = json!({"debit_account_id": "1", "credit_account_id": "1001", "amount": "100000"});
    admin.post("/v1/transfers", &fund, None).await.unwrap();
    for round in 0..4u64 {
        // Eight payers at once, each paying ids of its own one after another: at the kill,
        // up to eight payments are in flight.
        let payers: Vec<_> = (0..8u64)
            .map(|task| {
                let admin = Client::new(&url, KEY);
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    for n in 0..100_000u64 {
                        let id = format!("{}", 1_000_000 * (round + 1) + 10_000 * task + n);
                        let body = json!({"id": id, "debit_account_id": "1001",
                                          "credit_account_id": "2001", "amount": "0.51"});
                        match admin.post_raw("/v1/transfers", &body, None).await {
                            Ok(a) if a.status == 202 => held.push(id),
                            _ => return (held, id),
                        }
                    }
                    unreachable!("the kill comes first")
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(300 + 150 * round)).await;
        let mut killed = child.0.take().unwrap();
        killed.kill().unwrap();
        killed.wait().unwrap();
        let (mut acknowledged, mut in_flight) = (Vec::new(), Vec::new());
        for p in payers {
            let (held, last) = p.await.unwrap();
            acknowledged.extend(held);
            in_flight.push(last);
        }
        assert!(acknowledged.len() > 8, "round {round}: payments were held before the kill");
        (child, url, _) = start_with(&data, None, &extra);
        let admin = Client::new(&url, KEY);
        for id in &acknowledged {
            let t = admin.get(&format!("/v1/transfers/{id}")).await.unwrap();
            let seen = (t["status"].as_str(), &t["risk"]["held"]);
            assert_eq!(seen, (Some("pending"), &json!(true)), "round {round}: {t}");
        }
        // A payment in flight at the kill either was never made, or is held with its
        // decision; and no one can settle a held payment around its approval.
        let mut tried = in_flight.clone();
        tried.extend(acknowledged.iter().rev().take(4).cloned());
        for id in &tried {
            let Ok(t) = admin.get(&format!("/v1/transfers/{id}")).await else { continue };
            assert_eq!(t["status"], "pending", "round {round}: {t}");
            let d = admin.get(&format!("/v1/risk/decisions/{id}")).await.unwrap();
            let seen = (d["action"].as_str(), &d["held"]);
            assert_eq!(seen, (Some("step_up"), &json!(true)), "round {round}: {d}");
            for path in ["post", "void"] {
                let e = admin.post(&format!("/v1/transfers/{id}/{path}"), &json!({}), None).await;
                assert_eq!(e.unwrap_err().code(), Some("held_by_risk"), "{id} {path}");
            }
        }
    }
    stop(child);
}

/// Raises this process's open-files limit to its hard limit; the most it can open.
fn raise_files() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// `GET path` on a fresh connection; the status line, and how long it took.
fn get_fresh(url: &str, path: &str) -> (String, std::time::Duration) {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let addr = url.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    (text.lines().next().unwrap_or("").to_string(), started.elapsed())
}

/// Slowloris: 10,000 connections that each send half a header and then nothing take every
/// connection slot. A fresh client is still answered within a second (the idlest silent
/// connection is closed to make room), and the silent ones are closed once the header
/// timeout passes, not before.
#[test]
fn ten_thousand_silent_connections_do_not_take_the_server_offline() {
    use std::io::{Read, Write};
    const SILENT: usize = 10_000;
    assert!(raise_files() > SILENT as u64 + 100, "this test needs {SILENT} open files");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("farthing.toml");
    std::fs::write(
        &config,
        "connections_max = 10000\nhttp_header_read_timeout_ms = 8000\nhttp_idle_timeout_ms = 8000\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (running, url, _) = start_with(&data, None, &["--config".as_ref(), config.as_os_str()]);
    let addr = url.trim_start_matches("http://").to_string();
    let opened = std::time::Instant::now();
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        silent.push(tcp);
    }
    let took = opened.elapsed();
    // Every slot is taken; the server has accepted them all (or holds them in its backlog).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, waited) = get_fresh(&url, "/healthz");
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    assert!(waited < std::time::Duration::from_secs(1), "/healthz took {waited:?}");
    // Before the timeout, the silent connections (all but the few closed to make room)
    // are open; after it, all are closed.
    let open = |tcp: &std::net::TcpStream| {
        tcp.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let still =
            matches!(tcp.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        tcp.set_nonblocking(false).unwrap();
        still
    };
    if opened.elapsed() < std::time::Duration::from_secs(6) {
        let still = silent.iter().filter(|t| open(t)).count();
        assert!(still >= SILENT - 10, "only {still} of {SILENT} open after {:?}", opened.elapsed());
    }
    // The last was opened at `took`; each has 8 s, and a few more for a loaded machine.
    let deadline = opened + took + std::time::Duration::from_secs(8 + 6);
    for mut tcp in silent {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        tcp.set_read_timeout(Some(left.max(std::time::Duration::from_millis(1)))).unwrap();
        let mut rest = Vec::new();
        // Closed: the read ends (EOF, a reset, or a 408 and EOF), and does not time out.
        match tcp.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "a silent connection is still open"
            ),
        }
    }
    let (status, _) = get_fresh(&url, "/healthz");
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    stop(running);
}

/// A lost log or lost server records stop `farthing serve` with a message that names the
/// way out; `farthing recover` takes it, on purpose, and the server starts again.
#[test]
fn a_damaged_directory_stops_the_server_until_recovered_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let (running, _, printed) = start(dir.path(), None);
    assert!(printed.iter().any(|l| l.contains("fk_")), "a first admin key");
    stop(running);
    std::fs::remove_file(dir.path().join("server.redb")).unwrap();
    let serve = || {
        Command::new(env!("CARGO_BIN_EXE_farthing"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let recover = |what: &str| {
        Command::new(env!("CARGO_BIN_EXE_farthing"))
            .args(["recover", what, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    // A server with no accounts may make its records afresh: not a loss.
    let (running, _, _) = start(dir.path(), None);
    stop(running);
    // Hold an account, then lose the records: refused, with the way out.
    let key = {
        std::fs::remove_file(dir.path().join("server.redb")).unwrap();
        let out = recover("--new-server-records");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().find(|w| w.starts_with("fk_")).unwrap().to_string()
    };
    let (running, url, _) = start(dir.path(), None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = Client::new(&url, &key);
        admin.create_asset("USD", 6).await.unwrap();
        admin.create_account(&json!({"id": "1", "owner_id": "0", "asset": "USD"})).await.unwrap();
        admin.create_account(&json!({"id": "2", "owner_id": "2", "asset": "USD"})).await.unwrap();
        admin.post("/v1/transfers", &json!({"id": "9", "debit_account_id": "1", "credit_account_id": "2", "amount": "1"}), None).await.unwrap();
    });
    stop(running);
    std::fs::remove_file(dir.path().join("server.redb")).unwrap();
    let out = serve();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--new-server-records"), "{said}");
    assert!(!dir.path().join("server.redb").exists(), "a refused start made nothing");
    assert!(recover("--new-server-records").status.success());
    std::fs::remove_dir_all(dir.path().join("tlog")).unwrap();
    let out = serve();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--new-log"), "{said}");
    let out = recover("--new-log");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verifier key"));
    let (running, _, _) = start(dir.path(), None);
    stop(running);
}

/// `log_format = "json"`: the log on standard error is one JSON object a line (here, the
/// warning for an asset the policy has no caps or tiers for).
#[test]
fn the_log_can_be_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_farthing"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("FARTHING_LOG_FORMAT", "json")
        .env("FARTHING_ADMIN_KEY", "fk_logtestadmin000000000000000000000000")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("the banner").unwrap();
        if let Some(url) = line.strip_prefix("farthing: listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let running = Running(Some(child));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = Client::new(&url, "fk_logtestadmin000000000000000000000000");
        admin.create_asset("XYZ", 2).await.unwrap();
    });
    stop(running);
    let log = std::fs::read_to_string(&err_path).unwrap();
    let warning = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|_| panic!("not JSON: {l}"))
        })
        .find(|v| v["level"] == "WARN")
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert_eq!(warning["fields"]["asset"], "XYZ", "{warning}");
    assert!(warning["fields"]["message"].as_str().unwrap().contains("no caps"), "{warning}");
}
