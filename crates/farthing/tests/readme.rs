//! The README's first-payment walk-through, run as written (with this server's address, key
//! and a free port) against a fresh server: a payment made with curl arrives on the event
//! stream and at a webhook, and its receipt verifies offline. Then docs/RAILS.md's channel
//! by hand: opened with curl, a voucher signed by Node, settled.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const KEY: &str = "fk_readmetestadmin0000000000000000000";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn walkthrough(doc: &str, name: &str) -> String {
    let start = doc.find(&format!("<!-- {name}:start -->")).expect("the walk-through's start");
    let end = doc.find(&format!("<!-- {name}:end -->")).expect("the walk-through's end");
    let block = &doc[start..end];
    let body = block.split_once("```sh\n").expect("a sh block").1;
    body.rsplit_once("```").expect("the block's end").0.to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed (the README's walk-through uses it); .ci/run installs it");
    }
    let work = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_farthing");
    let mut server = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(work.path().join("farthing-data"))
        .env("FARTHING_ADMIN_KEY", KEY)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let server = Running(server);
    let url = loop {
        let line = lines.next().expect("the server's banner").unwrap();
        if let Some(url) = line.strip_prefix("farthing: listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let both = walkthrough(include_str!("../../../README.md"), "walkthrough")
        + &walkthrough(include_str!("../../../docs/RAILS.md"), "rails-walkthrough");
    let script: String = both
        .lines()
        .map(|line| match line.starts_with("export FARTHING_KEY=") {
            true => format!("export FARTHING_KEY={KEY}"),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("http://127.0.0.1:8080", &url)
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{}", free_port()))
        .replace("./target/release/farthing", bin);
    // Output to files, not pipes: a background job left running cannot hold the test up,
    // and the whole walk-through gets two minutes.
    let (out_path, err_path) = (work.path().join("stdout"), work.path().join("stderr"));
    let status = Command::new("timeout")
        .args(["120", "bash", "-euo", "pipefail", "-c", &script])
        .current_dir(work.path())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(status.success(), "the walk-through failed ({status}):\n{stdout}\n{stderr}");
    let events = std::fs::read_to_string(work.path().join("events.txt")).unwrap();
    let webhooks = std::fs::read_to_string(work.path().join("webhooks.txt")).unwrap();
    assert!(events.contains(r#""id":"42""#), "the payment on the event stream: {events}");
    assert!(events.contains("event: transfer.created"), "{events}");
    assert!(webhooks.contains("signature verified"), "a checked webhook: {webhooks}");
    assert!(webhooks.contains(r#""id":"42""#), "{webhooks}");
    assert!(!webhooks.contains("REFUSED"), "{webhooks}");
    assert!(stdout.contains(r#""available":"4.999000""#), "the wallet after paying: {stdout}");
    assert!(stdout.contains("OK"), "the receipt verified: {stdout}");
    assert!(stdout.contains(r#""id":"43""#), "the refund: {stdout}");
    assert!(
        stdout.contains(r#""credits_posted":"0.001000""#)
            && stdout.contains(r#""debits_posted":"0.001000""#),
        "the merchant's balance history, paid then refunded: {stdout}"
    );
    assert!(stdout.contains(r#""increment_units":"1000""#), "the voucher taken: {stdout}");
    assert!(stdout.contains(r#""settled_units":"1000""#), "the channel settled: {stdout}");
    drop(server);
}
