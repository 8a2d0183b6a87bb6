//! A server the test starts on a free port, over a fresh data directory, and a client.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use farthing_client::Client;
use farthing_server::{Config, Server};
use serde_json::{json, Value};

pub const ADMIN_KEY: &str = "fk_testadmin000000000000000000000000000";

/// The tests of the API's mechanics judge payments by rules alone (no caps, no model):
/// what the model makes of test traffic is `risk.rs`'s business.
pub fn config(dir: &Path) -> Config {
    // Beside the data directory (which must hold only Farthing's files), one per process,
    // written once.
    static POLICY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let policy = POLICY
        .get_or_init(|| {
            let path = std::env::temp_dir()
                .join(format!("farthing-rules-only-{}.toml", std::process::id()));
            std::fs::write(&path, "name = \"rules only\"\n[scoring]\nmodel = \"none\"\n").unwrap();
            path
        })
        .clone();
    Config {
        risk_policy: Some(policy),
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        transfers_capacity: 10_000,
        accounts_capacity: 1_000,
        webhook_retry_base_ms: 50,
        webhook_retry_max_ms: 200,
        ..Config::default()
    }
}

pub async fn start(config: Config) -> (Server, Client) {
    let server = Server::start(config, Some(ADMIN_KEY.to_string())).await.expect("server starts");
    let client = Client::new(&server.url, ADMIN_KEY);
    (server, client)
}

/// The USD asset (scale 6), a house account 1, payer 1001 (owner 1001, a wallet that
/// cannot go below zero, funded with 100 USD), merchant 2001 (owner 2001), and payer 1002
/// (owner 1002, funded with 5 USD).
pub async fn seed(admin: &Client) {
    admin.create_asset("USD", 6).await.unwrap();
    admin.create_account(&json!({"id": "1", "owner_id": "0", "asset": "USD"})).await.unwrap();
    for (id, owner, flags) in [
        ("1001", "1001", json!(["debits_must_not_exceed_credits", "history"])),
        ("1002", "1002", json!(["debits_must_not_exceed_credits"])),
        ("2001", "2001", json!(["debits_must_not_exceed_credits"])),
    ] {
        admin
            .create_account(&json!({"id": id, "owner_id": owner, "asset": "USD", "flags": flags}))
            .await
            .unwrap();
    }
    pay(admin, "9001", "1", "1001", "100").await;
    pay(admin, "9002", "1", "1002", "5").await;
}

pub async fn pay(client: &Client, id: &str, from: &str, to: &str, amount: &str) -> Value {
    client
        .create_transfer(
            &json!({"id": id, "debit_account_id": from, "credit_account_id": to, "amount": amount}),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("transfer {id}: {e}"))
}

/// A new key of `role` bound to `owner`; returns a client using it.
pub async fn key(admin: &Client, role: &str, owner: Option<&str>) -> Client {
    let mut body = json!({ "role": role });
    if let Some(o) = owner {
        body["owner_id"] = o.into();
    }
    let made = admin.create_key(&body).await.unwrap();
    admin.with_key(made["key"].as_str().unwrap())
}

/// What a webhook receiver saw: headers and body of each POST.
#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<(HeaderMap, String)>>>);

/// A webhook receiver on a free port that answers 500 to its first `fail_first` requests
/// and 200 after. Returns its URL.
pub async fn receiver(fail_first: usize) -> (String, Received, Arc<Mutex<usize>>) {
    let received = Received::default();
    let seen = received.clone();
    let failures = Arc::new(Mutex::new(fail_first));
    let handle = failures.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            let failures = failures.clone();
            async move {
                seen.0.lock().unwrap().push((headers, body));
                let mut f = failures.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received, handle)
}

/// Waits up to `seconds` for `done` to hold.
pub async fn eventually(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    done()
}
