//! The 402 paywall end to end over real HTTP, against a real Farthing: refusals each with
//! their code (in the 402's `PAYMENT-REQUIRED`), the best vouchers flushed to Farthing
//! and settled on the ledger, and the JavaScript client paying the same paywall.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use farthing_client::Client;
use farthing_paywall::{FarthingSource, Paywall, PaywallConfig};
use farthing_rails::channel::Voucher;
use serde_json::{json, Value};

const ADMIN: &str = "fk_paywalltestadmin0000000000000000000";

use farthing_rails::hex::to_hex as hex;

struct World {
    server: farthing_server::Server,
    admin: Client,
    payer: Client,
    merchant: Client,
    paywall: Paywall,
    site: String,
    _dir: tempfile::TempDir,
}

/// Farthing with USD, payer 1001 (funded), merchant 2001, merchant 2002; a site whose
/// `/article` costs 1,000 minor units, paying 2001.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let config = farthing_server::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        channel_settle_ms: 100,
        channel_dispute_s_min: 1,
        ..farthing_server::Config::default()
    };
    let server = farthing_server::Server::start(config, Some(ADMIN.into())).await.unwrap();
    let admin = Client::new(&server.url, ADMIN);
    common::seed_usd(&admin, &["1001", "2001", "2002"]).await;
    let key = |role: &str, owner: &str| {
        let admin = admin.clone();
        let body = json!({"role": role, "owner_id": owner});
        async move {
            let made = admin.create_key(&body).await.unwrap();
            admin.with_key(made["key"].as_str().unwrap())
        }
    };
    let payer = key("payer", "1001").await;
    let merchant = key("merchant", "2001").await;
    let mut config = PaywallConfig::new("farthing:local", "2001", "USD", 6, &server.url);
    config.flush_interval = Duration::from_secs(60); // flushed by hand here
    config.state_refetch_interval = Duration::ZERO; // every voucher asks for the state
    let paywall = Paywall::new(config, Arc::new(FarthingSource::new(&server.url, merchant.key())));
    let app = Router::new().route(
        "/article",
        get(|| async { "paid content" }).layer(paywall.layer(1_000, "an article")),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    World { server, admin, payer, merchant, paywall, site, _dir: dir }
}

async fn open(w: &World, id: &str, payee: &str, key: &SigningKey) {
    open_with(w, id, payee, key, 3_600).await
}

async fn open_with(w: &World, id: &str, payee: &str, key: &SigningKey, dispute_s: u64) {
    let body = json!({"id": id, "payer_account_id": "1001", "payee_account_id": payee,
                      "amount": "0.01", "payer_key": hex(key.verifying_key().as_bytes()),
                      "dispute_s": dispute_s});
    w.payer.post("/v1/channels", &body, None).await.unwrap();
}

/// A `PAYMENT-SIGNATURE` for the terms `accepted` (an entry of a 402's `accepts`).
fn header(
    accepted: &Value,
    channel: u128,
    sequence: u64,
    cumulative: u128,
    until: u64,
    key: &SigningKey,
) -> String {
    let sv = Voucher { channel, sequence, cumulative, expires_at_s: until }.sign(key);
    let doc = json!({"x402Version": 2,
        "accepted": accepted,
        "payload": {"channelId": channel.to_string(), "maxClaimableAmount": cumulative.to_string(),
                    "sequence": sequence.to_string(), "expiresAt": until, "signature": hex(&sv.signature)}});
    STANDARD.encode(serde_json::to_vec(&doc).unwrap())
}

/// GET /article with a payment header: (status, the 402's error code or the receipt).
async fn pay(site: &str, payment: Option<String>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{site}/article"));
    if let Some(p) = payment {
        request = request.header("PAYMENT-SIGNATURE", p);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let name = if status == 200 { "payment-response" } else { "payment-required" };
    let doc = response
        .headers()
        .get(name)
        .map(|h| serde_json::from_slice(&STANDARD.decode(h.as_bytes()).unwrap()).unwrap())
        .unwrap_or(Value::Null);
    (status, doc)
}

const FAR: u64 = 4_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_paywall_refuses_each_bad_payment_with_its_code_and_settles_the_good_ones() {
    let w = world().await;
    let k = SigningKey::from_bytes(&[11; 32]);
    open(&w, "100", "2001", &k).await;
    open(&w, "101", "2002", &k).await;

    let (status, required) = pay(&w.site, None).await;
    assert_eq!(status, 402);
    assert_eq!(required["x402Version"], 2);
    assert_eq!(required["accepts"][0]["scheme"], "batch-settlement");
    assert_eq!(required["accepts"][0]["network"], "farthing:local");
    assert_eq!(required["accepts"][0]["amount"], "1000");
    assert_eq!(required["accepts"][0]["payTo"], "2001");
    let terms = required["accepts"][0].clone();

    let (status, receipt) = pay(&w.site, Some(header(&terms, 100, 1, 1_000, FAR, &k))).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["success"], true);
    assert_eq!(receipt["network"], "farthing:local");
    let (status, _) = pay(&w.site, Some(header(&terms, 100, 2, 2_000, FAR, &k))).await;
    assert_eq!(status, 200);

    let stranger = SigningKey::from_bytes(&[12; 32]);
    for (payment, code) in [
        (header(&terms, 100, 3, 3_000, FAR, &stranger), "voucher_bad_signature"),
        (header(&terms, 100, 2, 2_000, FAR, &k), "voucher_not_higher"),
        (header(&terms, 100, 3, 2_500, FAR, &k), "voucher_below_price"),
        (header(&terms, 100, 3, 20_000, FAR, &k), "voucher_over_locked"),
        (header(&terms, 100, 3, 3_000, 1_000, &k), "voucher_expired"),
        // Another merchant's channel: this one's key cannot see it, as if there were none.
        (header(&terms, 101, 1, 1_000, FAR, &k), "voucher_wrong_channel"),
        (header(&terms, 999, 1, 1_000, FAR, &k), "voucher_wrong_channel"),
        ("not base64!".into(), "payment_invalid"),
    ] {
        let (status, doc) = pay(&w.site, Some(payment)).await;
        assert_eq!((status, doc["error"].as_str().unwrap_or("")), (402, code), "{doc}");
    }

    // The best voucher goes to Farthing; Farthing settles it in one transfer.
    w.paywall.flush().await.unwrap();
    let mut ch = Value::Null;
    for _ in 0..200 {
        ch = w.merchant.get("/v1/channels/100").await.unwrap();
        if ch["settled_units"] == "2000" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ch["settled_units"], "2000", "{ch}");
    assert_eq!(ch["best_voucher"]["sequence"], "2");
    assert_eq!(w.admin.account("2001").await.unwrap()["balance"], "0.002000");
    w.server.shutdown().await.unwrap();
}

/// A payer cannot close its channel and go on spending through the paywall: a dispute
/// window shorter than the paywall's cycle is refused, and a close is seen before the next
/// voucher is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_cannot_close_and_spend_on() {
    let w = world().await;
    let k = SigningKey::from_bytes(&[13; 32]);
    let (_, required) = pay(&w.site, None).await;
    let terms = required["accepts"][0].clone();
    open_with(&w, "300", "2001", &k, 1).await;
    let (status, doc) = pay(&w.site, Some(header(&terms, 300, 1, 1_000, FAR, &k))).await;
    assert_eq!((status, doc["error"].as_str().unwrap()), (402, "channel_dispute_too_short"));
    open(&w, "301", "2001", &k).await;
    let (status, _) = pay(&w.site, Some(header(&terms, 301, 1, 1_000, FAR, &k))).await;
    assert_eq!(status, 200);
    w.payer.post("/v1/channels/301/close", &json!({}), None).await.unwrap();
    let (status, doc) = pay(&w.site, Some(header(&terms, 301, 2, 2_000, FAR, &k))).await;
    assert_eq!((status, doc["error"].as_str().unwrap()), (402, "channel_closed"), "{doc}");
    // What was served before the close reaches Farthing within the window.
    w.paywall.flush().await.unwrap();
    let ch = w.merchant.get("/v1/channels/301").await.unwrap();
    assert_eq!(
        (ch["state"].as_str().unwrap(), ch["claimable_units"].as_str().unwrap()),
        ("closing", "1000")
    );
    w.server.shutdown().await.unwrap();
}

/// The JavaScript client (clients/js), run by Node, pays the same paywall: it opens its
/// channel with Farthing itself and pays two articles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_pays_the_paywall() {
    let w = world().await;
    let module =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js/farthing-pay.mjs");
    let script = format!(
        r#"
import {{ generateKeyPair, FarthingPay, farthingOpener }} from {module:?};
const keys = await generateKeyPair();
const pay = new FarthingPay({{ ...keys, budget: '5000',
  openChannel: farthingOpener({{ farthingUrl: {farthing:?}, apiKey: {key:?}, payerAccountId: '1001', expiresInS: 3600 }}) }});
for (let i = 0; i < 2; i++) {{
  const res = await pay.fetch({url:?});
  console.log(res.status, await res.text(), res.payment.success, res.payment.extra.channelId);
}}
console.log('spent', pay.spent.toString());
"#,
        module = module.canonicalize().unwrap().display().to_string(),
        key = w.payer.key(),
        farthing = w.server.url,
        url = format!("{}/article", w.site),
    );
    let out = tokio::process::Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .output()
        .await
        .expect("node (./test installs Node.js if missing)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("200 paid content true "), "{stdout}");
    assert!(lines[1].starts_with("200 paid content true "), "{stdout}");
    assert_eq!(lines[2], "spent 2000");
    let channel = lines[0].rsplit(' ').next().unwrap();
    w.paywall.flush().await.unwrap();
    let ch = w.merchant.get(&format!("/v1/channels/{channel}")).await.unwrap();
    assert_eq!(ch["claimable_units"], "2000", "{ch}");
    w.server.shutdown().await.unwrap();
}
