//! Payment channels and hash-chain streams over real HTTP: open (locking funds in an
//! escrow account), vouchers checked without the ledger, settlement as one ledger transfer
//! each batch with a receipt in the transparency log, cooperative and disputed closes,
//! top-ups under the risk policy's cap, every refusal with its code, and the best voucher
//! kept across a restart.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use farthing_client::Client;
use farthing_rails::channel::Voucher;
use farthing_rails::payword::{make_chain, Commitment};
use serde_json::{json, Value};

use farthing_rails::hex::to_hex as hex;

fn payer_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

const FAR: u64 = 4_000_000_000;

fn voucher(channel: &str, sequence: u64, cumulative: u128, key: &SigningKey) -> Value {
    voucher_until(channel, sequence, cumulative, FAR, key)
}

fn voucher_until(
    channel: &str,
    sequence: u64,
    cumulative: u128,
    until: u64,
    key: &SigningKey,
) -> Value {
    let sv =
        Voucher { channel: channel.parse().unwrap(), sequence, cumulative, expires_at_s: until }
            .sign(key);
    json!({"channel_id": channel, "sequence": sequence.to_string(), "cumulative": cumulative.to_string(),
           "expires_at": until, "signature": hex(&sv.signature)})
}

async fn open(
    client: &Client,
    id: &str,
    amount: &str,
    extra: Value,
) -> Result<Value, farthing_client::Error> {
    let mut body = json!({"id": id, "payer_account_id": "1001", "payee_account_id": "2001",
                          "amount": amount, "payer_key": hex(payer_key().verifying_key().as_bytes())});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    client.post("/v1/channels", &body, None).await
}

async fn balance(client: &Client, id: &str) -> String {
    client.account(id).await.unwrap()["balance"].as_str().unwrap().to_string()
}

fn code(r: Result<Value, farthing_client::Error>) -> String {
    r.expect_err("refused").code().unwrap().to_string()
}

#[tokio::test]
async fn a_channel_pays_by_vouchers_settles_in_one_transfer_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.channel_settle_ms = 3_600_000; // settled by hand here
    let (server, admin) = start(config).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    let merchant = key(&admin, "merchant", Some("2001")).await;

    let ch = open(&payer, "77", "1.00", json!({})).await.unwrap();
    assert_eq!(ch["locked_units"], "1000000");
    assert_eq!(ch["state"], "open");
    assert_eq!(ch["network"], "farthing:local");
    assert_eq!(balance(&admin, "1001").await, "99.000000");
    // A retry of the same open is the same channel; another channel under its id is not.
    let again = open(&payer, "77", "1.00", json!({})).await.unwrap();
    assert_eq!(again["lock_transfer_id"], ch["lock_transfer_id"]);
    assert_eq!(code(open(&payer, "77", "2.00", json!({})).await), "id_in_use");

    // A hundred tenth-of-a-cent payments: one voucher each, the total running.
    let k = payer_key();
    for i in 1..=100u64 {
        let v = voucher("77", i, u128::from(i) * 1_000, &k);
        let r = merchant.post("/v1/channels/77/vouchers", &v, None).await.unwrap();
        assert_eq!(r["increment_units"], "1000");
    }
    // The best again is a retry, answered the same.
    let best = voucher("77", 100, 100_000, &k);
    let r = merchant.post("/v1/channels/77/vouchers", &best, None).await.unwrap();
    assert_eq!(r["increment_units"], "0");
    assert_eq!(balance(&admin, "2001").await, "0.000000", "vouchers never touch the ledger");

    // Settle: one transfer for the hundred payments, with a receipt in the log.
    let s = merchant.post("/v1/channels/77/settle", &json!({}), None).await.unwrap();
    let t = s["transfer_id"].as_str().unwrap().to_string();
    assert_eq!(s["channel"]["settled_units"], "100000");
    assert_eq!(balance(&admin, "2001").await, "0.100000");
    let transfer = merchant.transfer(&t).await.unwrap();
    assert_eq!(transfer["amount"], "0.100000");
    assert_eq!(transfer["user_data_128"], "77");
    let nothing = merchant.post("/v1/channels/77/settle", &json!({}), None).await.unwrap();
    assert!(nothing["transfer_id"].is_null(), "nothing more is due");
    let receipt = eventually_receipt(&merchant, &t).await;
    assert_eq!(receipt["transfer"]["id"], t.as_str());

    // More vouchers, then the payee closes: final at once, the rest back to the payer.
    let v = voucher("77", 101, 250_000, &k);
    merchant.post("/v1/channels/77/vouchers", &v, None).await.unwrap();
    let closed = merchant.post("/v1/channels/77/close", &json!({}), None).await.unwrap();
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["settled_units"], "250000");
    assert_eq!(closed["refunded_units"], "750000");
    assert_eq!(balance(&admin, "2001").await, "0.250000");
    assert_eq!(balance(&admin, "1001").await, "99.750000");
    let late = voucher("77", 102, 260_000, &k);
    assert_eq!(
        code(merchant.post("/v1/channels/77/vouchers", &late, None).await),
        "channel_closed"
    );

    // The escrow account moves only by the channel's rules.
    let escrow = ch["escrow_account_id"].as_str().unwrap();
    let raid = json!({"debit_account_id": escrow, "credit_account_id": "1", "amount": "0.01"});
    assert_eq!(admin.post("/v1/transfers", &raid, None).await.unwrap_err().status(), Some(403));
    server.shutdown().await.unwrap();
}

async fn eventually_receipt(client: &Client, id: &str) -> Value {
    for _ in 0..200 {
        if let Ok(r) = client.receipt(id).await {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no receipt for {id}")
}

#[tokio::test]
async fn every_refusal_has_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    let other_payer = key(&admin, "payer", Some("1002")).await;
    let merchant = key(&admin, "merchant", Some("2001")).await;
    open(&payer, "5", "0.01", json!({})).await.unwrap();
    open(&payer, "6", "0.01", json!({})).await.unwrap();
    let k = payer_key();
    let post = |v: Value| {
        let m = merchant.clone();
        async move { code(m.post("/v1/channels/5/vouchers", &v, None).await) }
    };
    merchant.post("/v1/channels/5/vouchers", &voucher("5", 10, 5_000, &k), None).await.unwrap();

    let stranger = SigningKey::from_bytes(&[9; 32]);
    assert_eq!(post(voucher("5", 11, 6_000, &stranger)).await, "voucher_bad_signature");
    assert_eq!(post(voucher("6", 11, 6_000, &k)).await, "voucher_wrong_channel");
    assert_eq!(post(voucher("5", 10, 6_000, &k)).await, "voucher_not_higher");
    assert_eq!(post(voucher("5", 9, 4_000, &k)).await, "voucher_not_higher");
    assert_eq!(post(voucher("5", 11, 5_000, &k)).await, "voucher_not_higher");
    assert_eq!(post(voucher("5", 11, 10_001, &k)).await, "voucher_over_locked");
    assert_eq!(post(voucher_until("5", 11, 6_000, 1_000, &k)).await, "voucher_expired");
    let mut tampered = voucher("5", 11, 6_000, &k);
    tampered["cumulative"] = "7000".into();
    assert_eq!(post(tampered).await, "voucher_bad_signature");
    let mut junk = voucher("5", 11, 6_000, &k);
    junk["signature"] = "zz".into();
    assert_eq!(post(junk).await, "invalid_field");
    // Nothing of that changed the channel.
    let ch = merchant.get("/v1/channels/5").await.unwrap();
    assert_eq!(ch["claimable_units"], "5000");
    assert_eq!(ch["best_voucher"]["sequence"], "10");

    // The batch route: a result per voucher, in order.
    let batch = json!({"vouchers": [voucher("5", 12, 7_000, &k), voucher("5", 13, 8_000, &stranger),
                                    voucher("404", 1, 1, &k)]});
    let r = merchant.post("/v1/channels/vouchers", &batch, None).await.unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["code"], "voucher_bad_signature");
    assert_eq!(results[2]["code"], "not_found");

    // Opening: others' accounts, other keys, bad amounts and keys.
    assert_eq!(code(open(&other_payer, "8", "1", json!({})).await), "not_found");
    assert_eq!(code(open(&payer, "8", "0", json!({})).await), "invalid_field");
    assert_eq!(code(open(&payer, "8", "1", json!({"payer_key": "00"})).await), "invalid_field");
    assert_eq!(code(open(&payer, "8", "1", json!({"expires_in_s": 0})).await), "invalid_field");
    assert_eq!(
        code(open(&payer, "8", "1", json!({"expires_in_s": 999_999_999})).await),
        "invalid_field"
    );
    // Locking more than the wallet holds: the ledger's code; no channel is left behind.
    let poor = key(&admin, "payer", Some("1002")).await;
    let body = json!({"id": "9", "payer_account_id": "1002", "payee_account_id": "2001", "amount": "6",
                      "payer_key": hex(k.verifying_key().as_bytes())});
    assert_eq!(code(poor.post("/v1/channels", &body, None).await), "exceeds_credits");
    assert_eq!(admin.get("/v1/channels/9").await.unwrap_err().status(), Some(404));
    // An escrow account is never a channel's payer or payee (the payer would drain it).
    let ch5 = admin.get("/v1/channels/5").await.unwrap();
    let escrow = ch5["escrow_account_id"].as_str().unwrap();
    for (from, to) in [(escrow, "1001"), ("1001", escrow)] {
        let body = json!({"payer_account_id": from, "payee_account_id": to, "amount": "0.01",
                          "payer_key": hex(k.verifying_key().as_bytes())});
        assert_eq!(code(payer.post("/v1/channels", &body, None).await), "forbidden");
    }
    // A weak (small-order) key proves nothing: refused.
    let weak = format!("01{}", "00".repeat(31));
    assert_eq!(code(open(&payer, "8", "1", json!({"payer_key": weak})).await), "invalid_field");
    // Only the payer tops up; another payer cannot even see the channel.
    let up = json!({"amount": "0.01"});
    assert_eq!(code(merchant.post("/v1/channels/5/top-up", &up, None).await), "forbidden");
    assert_eq!(code(other_payer.post("/v1/channels/5/close", &json!({}), None).await), "not_found");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_payers_close_waits_out_the_dispute_window_and_the_higher_voucher_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.channel_settle_ms = 50;
    config.channel_dispute_s_min = 1;
    let (server, admin) = start(config).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    let merchant = key(&admin, "merchant", Some("2001")).await;
    let k = payer_key();
    open(&payer, "31", "1.00", json!({"dispute_s": 2})).await.unwrap();
    merchant.post("/v1/channels/31/vouchers", &voucher("31", 1, 100_000, &k), None).await.unwrap();
    // The payer closes: the channel is closing, not closed.
    let closing = payer.post("/v1/channels/31/close", &json!({}), None).await.unwrap();
    assert_eq!(closing["state"], "closing");
    assert!(closing["dispute_until"].as_u64().is_some());
    // Within the window, the payee shows a higher voucher: it wins.
    merchant.post("/v1/channels/31/vouchers", &voucher("31", 2, 300_000, &k), None).await.unwrap();
    // After it, the channel finalizes by itself.
    let mut done = Value::Null;
    for _ in 0..200 {
        done = merchant.get("/v1/channels/31").await.unwrap();
        if done["state"] == "closed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(done["state"], "closed", "{done}");
    assert_eq!(done["settled_units"], "300000");
    assert_eq!(done["refunded_units"], "700000");
    assert_eq!(balance(&admin, "2001").await, "0.300000");
    assert_eq!(balance(&admin, "1001").await, "99.700000");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn claims_settle_by_themselves_in_batches_and_the_best_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.channel_settle_ms = 100;
    let (server, admin) = start(cfg.clone()).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    let k = payer_key();
    for id in ["41", "42"] {
        open(&payer, id, "0.50", json!({})).await.unwrap();
    }
    let batch: Vec<Value> = (1..=50u64)
        .flat_map(|i| {
            [voucher("41", i, u128::from(i) * 100, &k), voucher("42", i, u128::from(i) * 10, &k)]
        })
        .collect();
    let r = admin.post("/v1/channels/vouchers", &json!({"vouchers": batch}), None).await.unwrap();
    assert!(r["results"].as_array().unwrap().iter().all(|x| x["ok"] == true));
    // Settled by the background task: one transfer per channel for all 50 vouchers.
    let mut settled = false;
    for _ in 0..200 {
        let a = admin.get("/v1/channels/41").await.unwrap();
        let b = admin.get("/v1/channels/42").await.unwrap();
        if a["settled_units"] == "5000" && b["settled_units"] == "500" {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(settled, "auto-settlement");
    let history = admin.get("/v1/accounts/2001/transfers").await.unwrap();
    let settlements: Vec<&Value> =
        history["data"].as_array().unwrap().iter().filter(|t| t["code"] == 0x7203).collect();
    assert_eq!(settlements.len(), 2, "{history}");
    let metrics = admin.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("farthing_channel_settlements_total 2"), "{metrics}");
    assert!(metrics.contains("farthing_vouchers_accepted_total 100"), "{metrics}");
    // A newer voucher, acknowledged, then a restart: it is still the best.
    admin.post("/v1/channels/41/vouchers", &voucher("41", 60, 6_500, &k), None).await.unwrap();
    server.shutdown().await.unwrap();
    let (server, admin) = start(cfg).await;
    let ch = admin.get("/v1/channels/41").await.unwrap();
    assert_eq!(ch["best_voucher"]["sequence"], "60");
    assert_eq!(ch["claimable_units"], "6500");
    assert_eq!(ch["locked_units"], "500000");
    // A replay of an older voucher is still refused after the restart.
    let old = admin.post("/v1/channels/41/vouchers", &voucher("41", 50, 5_000, &k), None).await;
    assert_eq!(code(old), "voucher_not_higher");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_pays_per_tick_with_one_hash_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.channel_settle_ms = 3_600_000;
    cfg.stream_ticks_skip_max = 5;
    let (server, admin) = start(cfg).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    let merchant = key(&admin, "merchant", Some("2001")).await;
    let k = payer_key();
    let chain = make_chain([3; 32], 20);
    let expires_at = farthing_server::auth::now_unix_s() + 3_600;
    let c = Commitment {
        stream: 500,
        payee: 2001,
        root: chain[0],
        unit_price: 250,
        length: 20,
        expires_at_s: expires_at,
    };
    let payword = json!({"root": hex(&chain[0]), "unit_price": "250", "length": 20, "signature": hex(&c.sign(&k))});
    let mut forged = payword.clone();
    forged["unit_price"] = "1".into();
    assert_eq!(
        code(
            open(&payer, "500", "0.005", json!({"payword": forged, "expires_at": expires_at}))
                .await
        ),
        "commitment_bad_signature"
    );
    let ch = open(&payer, "500", "0.005", json!({"payword": payword, "expires_at": expires_at}))
        .await
        .unwrap();
    assert_eq!(ch["payword"]["length"], 20);
    let tick = |n: usize, w: [u8; 32]| json!({"tick": n, "preimage": hex(&w)});
    let post = |body: Value| {
        let m = merchant.clone();
        async move { m.post("/v1/channels/500/ticks", &body, None).await }
    };
    for (n, w) in chain.iter().enumerate().take(4).skip(1) {
        post(tick(n, *w)).await.unwrap();
    }
    // Skipped ticks are hashed forward, within the bound.
    let r = post(tick(6, chain[6])).await.unwrap();
    assert_eq!(r["claimable_units"], "1500");
    assert_eq!(code(post(tick(7, [0; 32])).await), "tick_not_on_chain");
    assert_eq!(code(post(tick(12, chain[12])).await), "tick_too_far_ahead");
    // A tick at or below the best: a replay.
    assert_eq!(code(post(tick(5, chain[5])).await), "voucher_not_higher");
    assert_eq!(code(post(tick(21, [0; 32])).await), "stream_exhausted");
    // A voucher on a stream is the wrong kind of claim.
    assert_eq!(
        code(merchant.post("/v1/channels/500/vouchers", &voucher("500", 1, 1, &k), None).await),
        "voucher_wrong_channel"
    );
    let s = merchant.post("/v1/channels/500/settle", &json!({}), None).await.unwrap();
    assert_eq!(s["channel"]["settled_units"], "1500");
    assert_eq!(balance(&admin, "2001").await, "0.001500");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn opening_and_topping_up_go_through_the_risk_policy_and_the_payers_limits() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().with_extension("policy.toml");
    std::fs::write(
        &policy,
        "[scoring]\nmodel = \"none\"\n[[channels]]\nasset = \"USD\"\nlocked_max = \"2.00\"\n",
    )
    .unwrap();
    let mut cfg = config(dir.path());
    cfg.risk_policy = Some(policy);
    let (server, admin) = start(cfg).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    open(&payer, "61", "1.50", json!({})).await.unwrap();
    let up = |amount: &str| json!({"amount": amount});
    assert_eq!(
        code(payer.post("/v1/channels/61/top-up", &up("1.00"), None).await),
        "channel_cap_exceeded"
    );
    let ch = payer.post("/v1/channels/61/top-up", &up("0.50"), None).await.unwrap();
    assert_eq!(ch["locked_units"], "2000000");
    assert_eq!(balance(&admin, "1001").await, "98.000000");
    // The payer's own daily limit applies to locking funds, as to any payment.
    payer.put("/v1/accounts/1001/limits", &json!({"daily": "2.50"})).await.unwrap();
    let refused = open(&payer, "62", "1.00", json!({})).await.unwrap_err();
    assert_eq!(refused.code(), Some("risk_declined"));
    assert_eq!(refused.status(), Some(402));
    assert_eq!(balance(&admin, "1001").await, "98.000000", "a declined open locks nothing");
    let decision = admin
        .get(&format!("/v1/risk/decisions/{}", ch["lock_transfer_id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(decision["action"], "approve");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_payers_part_comes_back_even_when_the_payee_cannot_be_paid() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.channel_settle_ms = 3_600_000;
    let (server, admin) = start(cfg).await;
    seed(&admin).await;
    // A payee account that refuses credits beyond its debits: no settlement can reach it.
    admin
        .create_account(&json!({"id": "2009", "owner_id": "2009", "asset": "USD",
                                "flags": ["credits_must_not_exceed_debits"]}))
        .await
        .unwrap();
    let payer = key(&admin, "payer", Some("1001")).await;
    let k = payer_key();
    let body = json!({"id": "90", "payer_account_id": "1001", "payee_account_id": "2009", "amount": "1.00",
                      "payer_key": hex(k.verifying_key().as_bytes())});
    payer.post("/v1/channels", &body, None).await.unwrap();
    admin.post("/v1/channels/90/vouchers", &voucher("90", 1, 400_000, &k), None).await.unwrap();
    // The payee side closes; the settlement fails, the refund of the unclaimed part does not.
    let r = admin.post("/v1/channels/90/close", &json!({}), None).await;
    assert!(r.is_err(), "the settlement cannot be made");
    let ch = admin.get("/v1/channels/90").await.unwrap();
    assert_eq!(ch["refunded_units"], "600000", "{ch}");
    assert_eq!(ch["settled_units"], "0");
    assert_eq!(ch["state"], "closing", "closed for claims, the claimed part still held");
    assert_eq!(balance(&admin, "1001").await, "99.600000");
    let late = voucher("90", 2, 500_000, &k);
    assert_eq!(code(admin.post("/v1/channels/90/vouchers", &late, None).await), "channel_closed");
    server.shutdown().await.unwrap();
}

/// Two opens of one channel race: the loser is told `channel_busy`, a transient conflict.
/// Its Idempotency-Key must not keep that answer: the retry runs and finds the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_channel_is_not_kept_as_an_idempotent_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let mut busy_seen = 0;
    for round in 0..40 {
        let id = (500 + round).to_string();
        let body = json!({"id": id, "payer_account_id": "1001", "payee_account_id": "2001",
                          "amount": "0.01", "payer_key": hex(payer_key().verifying_key().as_bytes())});
        let keys: Vec<String> = (0..8).map(|n| format!("open-{round}-{n}")).collect();
        let answers = futures_util::future::join_all(
            keys.iter().map(|k| admin.post_raw("/v1/channels", &body, Some(k))),
        )
        .await;
        for (k, answer) in keys.iter().zip(answers) {
            let answer = answer.unwrap();
            if answer.body["code"] != "channel_busy" {
                continue;
            }
            busy_seen += 1;
            let again = admin.post_raw("/v1/channels", &body, Some(k)).await.unwrap();
            assert_ne!(
                again.body["code"], "channel_busy",
                "the busy answer was kept: {}",
                again.body
            );
        }
        if busy_seen >= 3 {
            break;
        }
    }
    assert!(busy_seen > 0, "no open was ever busy: the race was not made");
    server.shutdown().await.unwrap();
}

/// Channel lists page like every list: `{"data", "next_cursor"}`, newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_lists_page_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    for id in ["61", "62", "63"] {
        open(&admin, id, "0.01", json!({})).await.unwrap();
    }
    let first = admin.get("/v1/channels?account_id=1001&limit=2").await.unwrap();
    let ids: Vec<&str> =
        first["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let rest =
        admin.get(&format!("/v1/channels?account_id=1001&limit=2&cursor={cursor}")).await.unwrap();
    let mut all: Vec<&str> = ids.clone();
    all.extend(rest["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()));
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(sorted, ["61", "62", "63"], "each once");
    // The payee's list holds them too; an account with none has an empty page.
    let payee = admin.get("/v1/channels?account_id=2001").await.unwrap();
    assert_eq!(payee["data"].as_array().unwrap().len(), 3);
    let none = admin.get("/v1/channels?account_id=1002").await.unwrap();
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        admin.get("/v1/channels?account_id=1001&cursor=junk").await.unwrap_err().status(),
        Some(400)
    );
    server.shutdown().await.unwrap();
}
