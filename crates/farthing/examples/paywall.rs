//! A pay-per-article site and a pay-per-call API behind Farthing's HTTP 402 paywall.
//!
//! ```sh
//! cargo run --release --example paywall            # the demo, start to finish
//! cargo run --release --example paywall -- --serve # then keep the site up, for a browser
//! ```
//!
//! A publisher serves articles at a tenth of a cent each (`/articles/{n}`) and a quote API
//! at a hundredth of a cent per call (`/api/quote`), each route behind `paywall.layer`. A
//! reader's client, with a budget of five cents, asks for them like any HTTP client: the
//! first answer is `402 Payment Required` with the terms in `PAYMENT-REQUIRED`; the client
//! opens a channel with Farthing (locking a deposit once), then pays each request with the
//! next cumulative voucher in `PAYMENT-SIGNATURE`, and gets the content with a
//! `PAYMENT-RESPONSE`. Vouchers are checked by the publisher's paywall in memory, without
//! Farthing; the best of each channel goes to Farthing in batches, and Farthing settles
//! them on the ledger as one transfer per channel per batch. The demo prints that transfer
//! and checks its receipt offline against the transparency log's key.
//!
//! With `FARTHING_URL` and `FARTHING_KEY` (an admin key) set, it pays through that server;
//! otherwise it starts one of its own in a temporary directory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use common::{text, Farthing};
use ed25519_dalek::SigningKey;
use farthing_paywall::{FarthingOpener, FarthingSource, Paywall, PaywallClient, PaywallConfig};

/// Minor units of USD (scale 6): a tenth of a cent, a hundredth of a cent.
const ARTICLE: u128 = 1_000;
const CALL: u128 = 100;
const BUDGET: u128 = 50_000;

#[tokio::main]
async fn main() -> Result<(), String> {
    let serve = std::env::args().any(|a| a == "--serve");
    let farthing = Farthing::start().await?;
    farthing.usd().await?;
    let network = farthing.admin.get("/v1/rails").await.map_err(|e| e.to_string())?;
    let network = text(&network, "network");
    let (reader_account, reader_api) = farthing.party("payer", "10").await?;
    let (publisher_account, publisher_api) = farthing.party("merchant", "0").await?;
    println!(
        "Farthing at {} ({network}); reader {reader_account}, publisher {publisher_account}",
        farthing.url
    );

    // The publisher's site: two priced routes and a free front page.
    let mut config = PaywallConfig::new(&network, &publisher_account, "USD", 6, &farthing.url);
    config.flush_interval = Duration::from_millis(500);
    config.suggested_deposit = 20_000;
    let source = Arc::new(FarthingSource::new(&farthing.url, publisher_api.key()));
    let paywall = Paywall::new(config, source);
    let site =
        Router::new()
            .route(
                "/",
                get(|| async {
                    "The Farthing Gazette: /articles/{n} (0.001 USD), /api/quote (0.0001 USD)\n"
                }),
            )
            .route(
                "/articles/{n}",
                get(|Path(n): Path<u32>| async move {
                    format!("Article {n}: micropayments, at last.\n")
                })
                .layer(paywall.layer(ARTICLE, "One article")),
            )
            .route(
                "/api/quote",
                get(|| async { "{\"pair\":\"EURUSD\",\"bid\":\"1.0841\"}\n" })
                    .layer(paywall.layer(CALL, "One quote")),
            );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let site_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    tokio::spawn(async move { axum::serve(listener, site).await });
    println!("publisher's site at {site_url}");

    // The reader: an Ed25519 key of its own, a Farthing key to open channels, a budget.
    let opener =
        Arc::new(FarthingOpener::new(&farthing.url, reader_api.key(), &reader_account, 3_600));
    let client = PaywallClient::with_opener(
        reqwest::Client::new(),
        SigningKey::from_bytes(&rand::random()),
        BUDGET,
        opener,
    );
    let free = reqwest::get(format!("{site_url}/articles/1")).await.map_err(|e| e.to_string())?;
    println!(
        "without paying: GET /articles/1 -> {} (PAYMENT-REQUIRED: {} bytes)",
        free.status(),
        free.headers().get("payment-required").map_or(0, |h| h.len())
    );
    for n in 1..=5 {
        let paid =
            client.get(&format!("{site_url}/articles/{n}")).await.map_err(|e| e.to_string())?;
        let status = paid.response.status();
        let body = paid.response.text().await.map_err(|e| e.to_string())?;
        println!(
            "paid {} USD: {status} {}",
            farthing_ledger::amount::format_amount(paid.price, 6),
            body.trim()
        );
    }
    for _ in 0..100 {
        let paid = client.get(&format!("{site_url}/api/quote")).await.map_err(|e| e.to_string())?;
        if !paid.response.status().is_success() {
            return Err(format!("a paid call answered {}", paid.response.status()));
        }
    }
    println!("paid 100 API calls at 0.0001 USD each");
    println!(
        "reader spent {} USD of a {} USD budget",
        farthing_ledger::amount::format_amount(client.spent().await, 6),
        farthing_ledger::amount::format_amount(BUDGET, 6)
    );
    // The publisher's vouchers go to Farthing in a batch; Farthing settles each channel in
    // one ledger transfer.
    paywall.flush().await.map_err(|e| e.to_string())?;
    let channels = publisher_api
        .get(&format!("/v1/channels?account_id={publisher_account}"))
        .await
        .map_err(|e| e.to_string())?;
    let channel = channels["data"][0].clone();
    let id = text(&channel, "id");
    let mut settled = channel;
    for _ in 0..100 {
        settled =
            publisher_api.get(&format!("/v1/channels/{id}")).await.map_err(|e| e.to_string())?;
        if settled["settled_units"] == settled["claimable_units"] && settled["settled_units"] != "0"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "channel {id}: {} USD locked, {} USD claimed by vouchers, {} USD settled on the ledger",
        text(&settled, "locked"),
        text(&settled, "claimable"),
        text(&settled, "settled")
    );
    let history = publisher_api
        .get(&format!("/v1/accounts/{publisher_account}/transfers"))
        .await
        .map_err(|e| e.to_string())?;
    let settlements: Vec<String> = history["data"]
        .as_array()
        .map(|d| {
            d.iter().filter(|t| t["user_data_128"] == id.as_str()).map(|t| text(t, "id")).collect()
        })
        .unwrap_or_default();
    println!("105 paid requests settled in {} ledger transfer(s)", settlements.len());
    for t in &settlements {
        println!("{}", common::verify_receipt(&publisher_api, t).await?);
    }
    let balance = publisher_api.account(&publisher_account).await.map_err(|e| e.to_string())?;
    println!("publisher's balance: {} USD", text(&balance, "balance"));
    // The reader reads on until the budget runs out: the client then refuses to pay (and
    // sends nothing). A channel spent out is replaced by a new one, with a new deposit.
    let usd = |units: u128| farthing_ledger::amount::format_amount(units, 6);
    let mut refused = None;
    for n in 6..1_000 {
        if let Err(e) = client.get(&format!("{site_url}/articles/{n}")).await {
            refused = Some((n, e));
            break;
        }
    }
    if let Some((n, e)) = refused {
        println!("read articles 6 to {} as well; article {n}: the client stops ({e})", n - 1);
    }
    paywall.flush().await.map_err(|e| e.to_string())?;
    let channels = publisher_api
        .get(&format!("/v1/channels?account_id={publisher_account}"))
        .await
        .map_err(|e| e.to_string())?;
    let opened = channels["data"].as_array().map_or(0, Vec::len);
    println!(
        "reader spent {} USD of its {} USD budget, through {opened} channel(s); what a deposit \
         holds beyond its vouchers goes back to the reader when its channel closes",
        usd(client.spent().await),
        usd(BUDGET)
    );
    if serve {
        println!("serving {site_url} until Ctrl-C (Farthing at {}; try the JavaScript client in clients/js)", farthing.url);
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    }
    paywall.flush().await.map_err(|e| e.to_string())?;
    farthing.stop().await
}
