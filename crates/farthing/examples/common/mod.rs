//! What the examples share: a Farthing to pay through (the one at `FARTHING_URL` with the
//! admin key in `FARTHING_KEY`, or one started here, in a temporary directory), the
//! parties' accounts and keys, and the offline check of a settlement's receipt.
#![allow(dead_code)]

use farthing_client::Client;
use farthing_ledger::leaf::decode_leaf;
use farthing_tlog::note::NoteVerifier;
use farthing_tlog::proof::TlogProof;
use serde_json::{json, Value};

pub struct Farthing {
    pub admin: Client,
    pub url: String,
    /// The server, when started here (stopped at the end).
    pub server: Option<farthing_server::Server>,
    _dir: Option<tempfile::TempDir>,
}

impl Farthing {
    pub async fn start() -> Result<Self, String> {
        if let (Ok(url), Ok(key)) = (std::env::var("FARTHING_URL"), std::env::var("FARTHING_KEY")) {
            return Ok(Self { admin: Client::new(&url, &key), url, server: None, _dir: None });
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = farthing_server::Config {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().expect("address"),
            channel_settle_ms: 500,
            ..farthing_server::Config::default()
        };
        let key = format!("fk_example{}", hex(&rand::random::<[u8; 16]>()));
        let server = farthing_server::Server::start(config, Some(key.clone())).await?;
        let url = server.url.clone();
        Ok(Self { admin: Client::new(&url, &key), url, server: Some(server), _dir: Some(dir) })
    }

    pub async fn stop(self) -> Result<(), String> {
        match self.server {
            Some(s) => s.shutdown().await,
            None => Ok(()),
        }
    }

    /// The USD asset (to the millionth of a dollar), made if it is not there yet.
    pub async fn usd(&self) -> Result<(), String> {
        if self.admin.get("/v1/assets/USD").await.is_err() {
            self.admin.create_asset("USD", 6).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A new account of a new owner (a wallet that cannot go below zero), funded with
    /// `funds` dollars from a house account, and a key of `role` for it.
    pub async fn party(&self, role: &str, funds: &str) -> Result<(String, Client), String> {
        let e = |e: farthing_client::Error| e.to_string();
        let id = (rand::random::<u64>() >> 1).to_string();
        let account = json!({"id": id, "owner_id": id, "asset": "USD",
                             "flags": ["debits_must_not_exceed_credits"]});
        self.admin.create_account(&account).await.map_err(e)?;
        if funds != "0" {
            let house = format!("{}", 0x7E57_0000_0001u64);
            let h = json!({"id": house, "owner_id": "0", "asset": "USD"});
            let _ = self.admin.create_account(&h).await;
            let t = json!({"debit_account_id": house, "credit_account_id": id, "amount": funds});
            self.admin.post("/v1/transfers", &t, None).await.map_err(e)?;
        }
        let made =
            self.admin.create_key(&json!({"role": role, "owner_id": id})).await.map_err(e)?;
        let key = made["key"].as_str().ok_or("no key")?;
        Ok((id, self.admin.with_key(key)))
    }
}

/// Checks a transfer's receipt offline, with nothing but the log's published key: the
/// Merkle inclusion proof against a signed checkpoint, and that the leaf is this transfer.
/// Returns a line to print.
pub async fn verify_receipt(client: &Client, transfer_id: &str) -> Result<String, String> {
    let e = |e: farthing_client::Error| e.to_string();
    let key = client.log_key().await.map_err(e)?;
    let mut text = None;
    // The log takes in a transfer within a moment of its commit.
    for _ in 0..100 {
        match client
            .get_text(&format!("/v1/transfers/{transfer_id}/receipt?format=tlog-proof"))
            .await
        {
            Ok(t) => {
                text = Some(t);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let text = text.ok_or("no receipt")?;
    let verifier = NoteVerifier::parse(key.trim()).map_err(|e| e.to_string())?;
    let proof = TlogProof::parse(&text).map_err(|e| e.to_string())?;
    let (checkpoint, leaf) =
        proof.verify(&verifier).map_err(|e| format!("receipt refused: {e}"))?;
    let t = decode_leaf(leaf)?;
    if t.id.to_string() != transfer_id {
        return Err("the receipt proves another transfer".into());
    }
    Ok(format!(
        "receipt verified offline: transfer {transfer_id} ({} minor units) is leaf {} of {} in log {:?}",
        t.amount, proof.index, checkpoint.size, checkpoint.origin
    ))
}

pub use farthing_rails::hex::to_hex as hex;

/// Exactly `N` bytes of hex, or why not.
pub fn unhex<const N: usize>(t: &str) -> Result<[u8; N], String> {
    farthing_rails::hex::from_hex::<N>(t)
        .ok_or_else(|| format!("{} hexadecimal characters expected", 2 * N))
}

pub fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}
