//! The paywall end to end over loopback HTTP: a fake Farthing (in memory, checking
//! vouchers with farthing-rails), a paid route behind the layer, and the client paying.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ed25519_dalek::{SigningKey, VerifyingKey};
use farthing_paywall::source::wire::{
    ChannelJson, ResultJson, ResultsJson, VoucherJson, VouchersJson,
};
use farthing_paywall::x402::{
    to_hex, PaymentPayload, PaymentRequired, SettlementResponse, VoucherPayload, HEADER_REQUIRED,
    HEADER_RESPONSE, HEADER_SIGNATURE,
};
use farthing_paywall::{
    ClientError, FarthingOpener, FarthingSource, Paywall, PaywallClient, PaywallConfig,
};
use farthing_rails::channel::{Channel, SignedVoucher, Voucher};
use serde_json::Value;

const PRICE: u128 = 100;
const NETWORK: &str = "farthing:local";
const MERCHANT: &str = "2001";

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

struct FakeChannel {
    channel: Channel,
    payer_account_id: String,
    payee_account_id: String,
}

/// Farthing's channel API, in memory.
#[derive(Default)]
struct Fake {
    channels: Mutex<HashMap<u128, FakeChannel>>,
    next_id: AtomicUsize,
    /// Each `POST /v1/channels/vouchers` body.
    submits: Mutex<Vec<Vec<VoucherJson>>>,
    /// `GET /v1/channels/{id}` calls.
    fetches: AtomicUsize,
}

impl Fake {
    fn open(&self, payer: VerifyingKey, payee: &str, locked: u128) -> u128 {
        let id = 77 + self.next_id.fetch_add(1, Ordering::SeqCst) as u128;
        let channel = Channel::open(id, payer, locked, now_s() + 3_600);
        let fc = FakeChannel {
            channel,
            payer_account_id: "1001".into(),
            payee_account_id: payee.into(),
        };
        self.channels.lock().unwrap().insert(id, fc);
        id
    }

    fn json(&self, id: u128) -> Option<ChannelJson> {
        let channels = self.channels.lock().unwrap();
        let fc = channels.get(&id)?;
        let c = &fc.channel;
        Some(ChannelJson {
            id: id.to_string(),
            payer_account_id: fc.payer_account_id.clone(),
            payee_account_id: fc.payee_account_id.clone(),
            asset: "USD".into(),
            asset_scale: 6,
            payer_key: to_hex(c.payer_key().as_bytes()),
            locked_units: c.locked.to_string(),
            state: "open".into(),
            expires_at: c.expires_at_s,
            dispute_s: 3_600,
            best_voucher: c.best.as_ref().map(VoucherJson::from_signed),
            network: Some(NETWORK.into()),
        })
    }
}

async fn get_channel(
    State(fake): State<Arc<Fake>>,
    Path(id): Path<u128>,
) -> Result<Json<ChannelJson>, StatusCode> {
    fake.fetches.fetch_add(1, Ordering::SeqCst);
    fake.json(id).map(Json).ok_or(StatusCode::NOT_FOUND)
}

async fn open_channel(State(fake): State<Arc<Fake>>, Json(body): Json<Value>) -> Json<ChannelJson> {
    // "0.010000" at scale 6 is 10000 minor units.
    let amount = body["amount"].as_str().unwrap();
    let (whole, fraction) = amount.split_once('.').unwrap();
    assert_eq!(fraction.len(), 6, "the deposit is sent at the asset's scale");
    let units: u128 = format!("{whole}{fraction}").parse().unwrap();
    let key: [u8; 32] = farthing_paywall::x402::from_hex(body["payer_key"].as_str().unwrap())
        .expect("payer_key is 64 hex");
    let payee = body["payee_account_id"].as_str().unwrap();
    let id = fake.open(VerifyingKey::from_bytes(&key).unwrap(), payee, units);
    Json(fake.json(id).unwrap())
}

async fn submit(
    State(fake): State<Arc<Fake>>,
    Json(body): Json<VouchersJson>,
) -> Json<ResultsJson> {
    fake.submits.lock().unwrap().push(body.vouchers.clone());
    let mut channels = fake.channels.lock().unwrap();
    let results = body
        .vouchers
        .iter()
        .map(|v| {
            let sv = v.to_signed().unwrap();
            let refused = |code: &str| ResultJson {
                channel_id: v.channel_id.clone(),
                code: Some(code.into()),
                ..ResultJson::default()
            };
            let Some(fc) = channels.get_mut(&sv.voucher.channel) else {
                return refused("voucher_wrong_channel");
            };
            if fc.channel.best != Some(sv) {
                if let Err(e) = fc.channel.accept(&sv, now_s()) {
                    return refused(e.code());
                }
            }
            ResultJson {
                channel_id: v.channel_id.clone(),
                ok: true,
                claimable_units: Some(fc.channel.claimable().to_string()),
                ..ResultJson::default()
            }
        })
        .collect();
    Json(ResultsJson { results })
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Env {
    fake: Arc<Fake>,
    paywall: Paywall,
    /// The paid app's base URL.
    app: String,
    /// Requests that reached the paid app.
    hits: Arc<AtomicUsize>,
    /// The (fake) Farthing's base URL.
    farthing: String,
}

async fn env() -> Env {
    let fake = Arc::new(Fake::default());
    let farthing = serve(
        Router::new()
            .route("/v1/channels", post(open_channel))
            .route("/v1/channels/vouchers", post(submit))
            .route("/v1/channels/{id}", get(get_channel))
            .with_state(fake.clone()),
    )
    .await;
    let mut config = PaywallConfig::new(NETWORK, MERCHANT, "USD", 6, &farthing);
    // Flushed by hand in the tests; the interval still sets the safety rules' bounds.
    config.flush_interval = Duration::from_secs(60);
    config.refetch_interval = Duration::ZERO;
    config.suggested_deposit = 1_000_000;
    let paywall = Paywall::new(config, Arc::new(FarthingSource::new(&farthing, "fk_merchant")));
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = serve(
        Router::new()
            .route(
                "/articles/{n}",
                get(|Path(n): Path<u32>| async move { format!("article {n}") })
                    .layer(paywall.layer(PRICE, "Article")),
            )
            .layer(tower::util::MapRequestLayer::new(move |r| {
                counted.fetch_add(1, Ordering::SeqCst);
                r
            })),
    )
    .await;
    Env { fake, paywall, app, hits, farthing }
}

fn payer() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn client(env: &Env, budget: u128) -> PaywallClient {
    let opener = Arc::new(FarthingOpener::new(&env.farthing, "fk_payer", "1001", 3_600));
    PaywallClient::with_opener(reqwest::Client::new(), payer(), budget, opener)
}

#[tokio::test]
async fn the_client_pays_after_a_402_then_in_one_round_trip() {
    let env = env().await;
    let client = client(&env, 10_000);
    let url = format!("{}/articles/7", env.app);

    let paid = client.get(&url).await.unwrap();
    assert_eq!(paid.price, PRICE);
    let receipt = paid.receipt.clone().expect("a PAYMENT-RESPONSE");
    assert_eq!(paid.response.text().await.unwrap(), "article 7");
    assert_eq!(env.hits.load(Ordering::SeqCst), 2, "the 402, then the paid retry");
    assert!(receipt.success);
    assert_eq!(receipt.network, NETWORK);
    assert_eq!(receipt.payer, "1001");
    assert_eq!(receipt.extra.claimed, "100");
    // The deposit: the budget left, under the suggested deposit.
    assert_eq!(receipt.extra.remaining, "9900");
    let channel: u128 = receipt.extra.channel_id.parse().unwrap();
    assert_eq!(receipt.transaction, format!("{channel}/1"));

    let paid = client.get(&url).await.unwrap();
    assert_eq!(env.hits.load(Ordering::SeqCst), 3, "one round trip once the price is known");
    assert_eq!(paid.receipt.unwrap().extra.claimed, "200");
    assert_eq!(client.spent().await, 200);
    assert_eq!(client.remaining().await, 9_800);
    assert_eq!(env.paywall.best(channel).unwrap().voucher.sequence, 2);
}

#[tokio::test]
async fn over_budget_is_a_typed_error_and_no_voucher_is_sent() {
    let env = env().await;
    let client = client(&env, 150);
    let url = format!("{}/articles/1", env.app);
    client.get(&url).await.unwrap();
    assert_eq!(env.hits.load(Ordering::SeqCst), 2);
    match client.get(&url).await {
        Err(ClientError::OverBudget { price: 100, spent: 100, budget: 150 }) => {}
        other => panic!("expected OverBudget, got {other:?}"),
    }
    assert_eq!(env.hits.load(Ordering::SeqCst), 2, "nothing sent");
    assert_eq!(client.spent().await, 100);
}

/// Presents a voucher by hand: (status, the 402's error code or "").
async fn present(env: &Env, path: &str, header: Option<String>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", env.app));
    if let Some(header) = header {
        request = request.header(HEADER_SIGNATURE, header);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if let Some(h) = response.headers().get(HEADER_RESPONSE) {
        SettlementResponse::from_header(h.to_str().unwrap()).unwrap();
        return (status, String::new());
    }
    let required = response.headers().get(HEADER_REQUIRED).expect("a PAYMENT-REQUIRED");
    let required = PaymentRequired::from_header(required.to_str().unwrap()).unwrap();
    let body: PaymentRequired = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body.accepts, required.accepts, "the body says what the header says");
    (status, required.error)
}

fn header(env: &Env, sv: &SignedVoucher) -> String {
    let required = env.paywall.required("/", "", "text/html", PRICE, "payment_required");
    PaymentPayload {
        x402_version: 2,
        accepted: required.accepts[0].clone(),
        payload: VoucherPayload::from_signed(sv),
    }
    .to_header()
}

fn voucher(channel: u128, sequence: u64, cumulative: u128) -> Voucher {
    Voucher { channel, sequence, cumulative, expires_at_s: now_s() + 600 }
}

#[tokio::test]
async fn each_refusal_answers_402_with_its_code() {
    let env = env().await;
    let payer = payer();
    let id = env.fake.open(payer.verifying_key(), MERCHANT, 1_000);
    let elsewhere = env.fake.open(payer.verifying_key(), "3001", 1_000);
    let pay = |sv: SignedVoucher| Some(header(&env, &sv));

    assert_eq!(present(&env, "/articles/1", None).await, (402, "payment_required".into()));
    let first = voucher(id, 1, 100).sign(&payer);
    assert_eq!(present(&env, "/articles/1", pay(first)).await, (200, String::new()));

    let other_key = SigningKey::from_bytes(&[6; 32]);
    let cases = [
        (voucher(id, 2, 200).sign(&other_key), "voucher_bad_signature"),
        (first, "voucher_not_higher"),
        (voucher(id, 2, 1_100).sign(&payer), "voucher_over_locked"),
        (voucher(999, 2, 200).sign(&payer), "voucher_wrong_channel"),
        (voucher(elsewhere, 1, 100).sign(&payer), "voucher_wrong_payee"),
        (Voucher { expires_at_s: 1, ..voucher(id, 2, 200) }.sign(&payer), "voucher_expired"),
        (voucher(id, 2, 150).sign(&payer), "voucher_below_price"),
    ];
    for (sv, code) in cases {
        assert_eq!(present(&env, "/articles/1", pay(sv)).await, (402, code.into()), "{code}");
    }
    let garbage = Some("not base64!".to_string());
    assert_eq!(present(&env, "/articles/1", garbage).await, (402, "payment_invalid".into()));
    assert_eq!(env.paywall.best(id).unwrap().voucher.cumulative, 100, "nothing refused counted");
    let next = voucher(id, 2, 200).sign(&payer);
    assert_eq!(present(&env, "/articles/1", pay(next)).await, (200, String::new()));
}

#[tokio::test]
async fn flush_submits_only_the_highest_voucher_per_channel_in_one_call() {
    let env = env().await;
    let payer = payer();
    let a = env.fake.open(payer.verifying_key(), MERCHANT, 10_000);
    let b = env.fake.open(payer.verifying_key(), MERCHANT, 10_000);
    for (channel, n) in [(a, 3u64), (b, 2)] {
        for seq in 1..=n {
            let sv = voucher(channel, seq, u128::from(seq) * PRICE).sign(&payer);
            let (status, _) = present(&env, "/articles/2", Some(header(&env, &sv))).await;
            assert_eq!(status, 200);
        }
    }
    assert!(env.fake.submits.lock().unwrap().is_empty(), "nothing before the flush");
    let report = env.paywall.flush().await.unwrap();
    assert_eq!(report.submitted, 2);
    assert!(report.refused.is_empty());
    let submits = env.fake.submits.lock().unwrap().clone();
    assert_eq!(submits.len(), 1, "one call");
    let mut sent: Vec<(String, String)> =
        submits[0].iter().map(|v| (v.channel_id.clone(), v.sequence.clone())).collect();
    sent.sort();
    assert_eq!(sent, vec![(a.to_string(), "3".into()), (b.to_string(), "2".into())]);
    assert_eq!(env.fake.json(a).unwrap().best_voucher.unwrap().cumulative, "300");

    assert_eq!(env.paywall.flush().await.unwrap().submitted, 0, "nothing new");
    assert_eq!(env.fake.submits.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_top_up_is_learned_when_a_voucher_is_over_the_locked_amount() {
    let env = env().await;
    let payer = payer();
    let id = env.fake.open(payer.verifying_key(), MERCHANT, 150);
    let first = voucher(id, 1, 100).sign(&payer);
    assert_eq!(present(&env, "/articles/3", Some(header(&env, &first))).await.0, 200);
    let second = voucher(id, 2, 200).sign(&payer);
    let (status, code) = present(&env, "/articles/3", Some(header(&env, &second))).await;
    assert_eq!((status, code.as_str()), (402, "voucher_over_locked"));
    env.fake.channels.lock().unwrap().get_mut(&id).unwrap().channel.top_up(1_000, 0).unwrap();
    assert_eq!(present(&env, "/articles/3", Some(header(&env, &second))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_on_many_channels_share_verifier_batches() {
    let env = Arc::new(env().await);
    let payer = payer();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let id = env.fake.open(payer.verifying_key(), MERCHANT, 1_000);
        let good = voucher(id, 1, PRICE).sign(&payer);
        let forged = voucher(id, 1, PRICE).sign(&SigningKey::from_bytes(&[6; 32]));
        for (sv, want) in [(good, 200), (forged, 402)] {
            let env = env.clone();
            tasks.spawn(async move {
                (present(&env, "/articles/4", Some(header(&env, &sv))).await.0, want, id)
            });
        }
    }
    let mut paid = 0;
    while let Some(done) = tasks.join_next().await {
        let (status, want, id) = done.unwrap();
        // Whatever the order and the batches, a refusal changes nothing.
        if want == 402 {
            assert_eq!(status, 402, "channel {id}");
        } else {
            assert_eq!(status, 200, "channel {id}");
            paid += 1;
        }
    }
    assert_eq!(paid, 40);
}

/// A channel whose dispute window is shorter than this paywall's flush and refetch cycle
/// could be closed, spent and refunded before its vouchers arrive: refused. So is a
/// channel that expires before a voucher taken now would be flushed.
#[tokio::test]
async fn channels_that_could_outrun_the_flush_are_refused() {
    let env = env().await;
    let id = env.fake.open(payer().verifying_key(), MERCHANT, 10_000);
    // A paywall that flushes hourly needs more than the channel's hour-long window.
    let mut config = PaywallConfig::new(NETWORK, MERCHANT, "USD", 6, &env.farthing);
    config.flush_interval = Duration::from_secs(3_600);
    assert!(config.dispute_s_min() > 3_600);
    let slow = Paywall::new(config, Arc::new(FarthingSource::new(&env.farthing, "fk_merchant")));
    let sv = voucher(id, 1, PRICE).sign(&payer());
    let refused = slow.take(&sv, PRICE, now_s()).await.unwrap_err();
    assert_eq!(refused.code, "channel_dispute_too_short");
    // The usual paywall takes it; an hour on, the channel is too close to its expiry.
    env.paywall.take(&sv, PRICE, now_s()).await.unwrap();
    let later =
        Voucher { expires_at_s: now_s() + 100_000, ..voucher(id, 2, 2 * PRICE) }.sign(&payer());
    let refused = env.paywall.take(&later, PRICE, now_s() + 3_590).await.unwrap_err();
    assert_eq!(refused.code, "channel_closed");
    // A voucher that would expire before it reaches Farthing pays for nothing: refused.
    let brief = Voucher { expires_at_s: now_s() + 5, ..voucher(id, 2, 2 * PRICE) }.sign(&payer());
    let refused = env.paywall.take(&brief, PRICE, now_s()).await.unwrap_err();
    assert_eq!(refused.code, "voucher_expires_too_soon");
}

/// Vouchers for a channel Farthing does not know cost one call, not one each.
#[tokio::test]
async fn unknown_channels_are_remembered() {
    let env = env().await;
    let mut config = PaywallConfig::new(NETWORK, MERCHANT, "USD", 6, &env.farthing);
    config.refetch_interval = Duration::from_secs(60);
    let paywall = Paywall::new(config, Arc::new(FarthingSource::new(&env.farthing, "fk_merchant")));
    let before = env.fake.fetches.load(Ordering::SeqCst);
    for n in 1..=5 {
        let sv = voucher(999, n, u128::from(n) * PRICE).sign(&payer());
        let refused = paywall.take(&sv, PRICE, now_s()).await.unwrap_err();
        assert_eq!(refused.code, "voucher_wrong_channel");
    }
    assert_eq!(env.fake.fetches.load(Ordering::SeqCst) - before, 1);
}

/// Concurrent requests on one channel: the client signs vouchers in order, but they
/// overtake each other on the wire. A late voucher that a higher one already pays for is
/// served (each sequence once), so what was served is exactly what is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_one_channel_are_charged_exactly_what_was_served() {
    let env = Arc::new(env().await);
    let client = Arc::new(client(&env, 1_000_000));
    // The first request learns the terms and opens the channel.
    let first = client.get(&format!("{}/articles/1", env.app)).await.unwrap();
    assert_eq!(first.response.status(), 200);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32 {
        let (env, client) = (env.clone(), client.clone());
        tasks.spawn(async move {
            let mut served = 0u128;
            for n in 0..8 {
                let paid = client.get(&format!("{}/articles/{}", env.app, t * 8 + n)).await;
                match paid {
                    Ok(paid) if paid.response.status() == 200 => {
                        assert_eq!(paid.price, PRICE);
                        served += 1;
                    }
                    Ok(paid) => panic!("status {}", paid.response.status()),
                    Err(e) => panic!("refused: {e}"),
                }
            }
            served
        });
    }
    let mut served = 1;
    while let Some(done) = tasks.join_next().await {
        served += done.unwrap();
    }
    assert_eq!(served, 257, "every request is served");
    env.paywall.flush().await.unwrap();
    let settled: u128 =
        env.fake.channels.lock().unwrap().values().map(|fc| fc.channel.claimable()).sum();
    assert_eq!(settled, served * PRICE, "served × price = settled");
    assert_eq!(client.spent().await, served * PRICE, "the client counts the same");
}

/// A voucher sent again after it was served, late or not, is refused; so is a late voucher
/// no credit pays for.
#[tokio::test]
async fn a_late_voucher_is_served_once_and_only_when_paid_for() {
    let env = env().await;
    let payer = payer();
    let id = env.fake.open(payer.verifying_key(), MERCHANT, 10_000);
    let pay =
        |seq: u64, cumulative: u128| Some(header(&env, &voucher(id, seq, cumulative).sign(&payer)));
    assert_eq!(present(&env, "/articles/1", pay(3, 300)).await, (200, String::new()));
    assert_eq!(present(&env, "/articles/1", pay(1, 100)).await, (200, String::new()));
    assert_eq!(present(&env, "/articles/1", pay(1, 100)).await, (402, "voucher_not_higher".into()));
    assert_eq!(present(&env, "/articles/1", pay(3, 300)).await, (402, "voucher_not_higher".into()));
    assert_eq!(present(&env, "/articles/1", pay(2, 200)).await, (200, String::new()));
    // The credit is spent: a late voucher 4 below a best 5 that paid only its own price.
    assert_eq!(present(&env, "/articles/1", pay(6, 400)).await, (200, String::new()));
    assert_eq!(
        present(&env, "/articles/1", pay(5, 400)).await,
        (402, "voucher_below_price".into())
    );
    assert_eq!(env.paywall.best(id).unwrap().voucher.cumulative, 400);
}
