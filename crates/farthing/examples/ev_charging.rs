//! Device to device: a car pays a charger per tenth of a kWh, through a hash-chain stream,
//! under a budget — two processes, each with only its own keys.
//!
//! ```sh
//! cargo run --release --example ev_charging
//! ```
//!
//! The car (this process) locks its budget once: it signs a commitment to the root of a
//! hash chain, a unit price and the charger's account, and Farthing locks the funds in the
//! stream's escrow. The charger (a second process, started here) delivers energy a tenth of
//! a kWh at a time; for each, the car reveals the next preimage of its chain, and the
//! charger checks it with one SHA-256, against the commitment it verified with the car's
//! public key — no round trip to Farthing per payment. When the car's budget is spent (or
//! it is full), the charger presents its best tick and closes the stream: Farthing moves
//! what the ticks are worth to the charger in one ledger transfer and the rest back to the
//! car. The car then checks that transfer's receipt offline, against the transparency
//! log's key.
//!
//! With `FARTHING_URL` and `FARTHING_KEY` (an admin key) set, it pays through that server;
//! otherwise it starts one of its own in a temporary directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use common::{hex, text, unhex, Farthing};
use ed25519_dalek::{SigningKey, VerifyingKey};
use farthing_client::Client;
use farthing_rails::payword::{make_chain, Commitment, Stream};
use serde_json::json;

/// Dollars per tenth of a kWh, in millionths: $0.03 (30 cents a kWh).
const PRICE_PER_TENTH: u128 = 30_000;
/// The car's budget for this charge: $1.50, five kWh.
const BUDGET: u128 = 1_500_000;
/// What the charger would deliver if the budget allowed: 8 kWh.
const WANTED_TENTHS: u64 = 80;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("charger") {
        return charger(&args[2], &args[3], &args[4]);
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(car())
}

/// The car: opens the stream, starts the charger, pays tick by tick, checks the receipt.
async fn car() -> Result<(), String> {
    let farthing = Farthing::start().await?;
    farthing.usd().await?;
    let (car_account, car_api) = farthing.party("payer", "20").await?;
    let (charger_account, charger_api) = farthing.party("merchant", "0").await?;
    println!(
        "car: account {car_account}, charger: account {charger_account}, Farthing at {}",
        farthing.url
    );

    // The car's own key, made on the car; Farthing only ever sees its public half.
    let device_key = SigningKey::from_bytes(&rand::random());
    let length = (BUDGET / PRICE_PER_TENTH) as u64;
    let chain = make_chain(rand::random(), length);
    let id: u128 = rand::random::<u64>().into();
    let expires_at = farthing_server::auth::now_unix_s() + 3_600;
    let commitment = Commitment {
        stream: id,
        payee: charger_account.parse().map_err(|_| "account id")?,
        root: chain[0],
        unit_price: PRICE_PER_TENTH,
        length,
        expires_at_s: expires_at,
    };
    let open = json!({
        "id": id.to_string(), "payer_account_id": car_account, "payee_account_id": charger_account,
        "amount": farthing_ledger::amount::format_amount(BUDGET, 6),
        "payer_key": hex(device_key.verifying_key().as_bytes()), "expires_at": expires_at,
        "payword": {"root": hex(&chain[0]), "unit_price": PRICE_PER_TENTH.to_string(),
                    "length": length, "signature": hex(&commitment.sign(&device_key))},
        "risk_context": {"channel": "iot", "device": "car-vin-0001"}
    });
    let stream = car_api.post("/v1/channels", &open, None).await.map_err(|e| e.to_string())?;
    println!(
        "car: stream {id} open, {} USD locked for {length} ticks of {} USD",
        text(&stream, "locked"),
        farthing_ledger::amount::format_amount(PRICE_PER_TENTH, 6)
    );

    // The charger: another process, with its own Farthing key and nothing of the car's.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["charger", &farthing.url, charger_api.key(), &id.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut from_child = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let addr = loop {
        let line = from_child.next().ok_or("the charger stopped")?.map_err(|e| e.to_string())?;
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.to_string();
        }
    };
    let printer = std::thread::spawn(move || {
        for line in from_child.map_while(Result::ok) {
            println!("{line}");
        }
    });

    // Pay as the energy flows: one preimage per tenth of a kWh, while the budget lasts.
    let settlement = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let conn = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        let mut out = conn.try_clone().map_err(|e| e.to_string())?;
        let mut lines = BufReader::new(conn).lines();
        let mut spent = 0u128;
        loop {
            let line = lines.next().ok_or("the charger hung up")?.map_err(|e| e.to_string())?;
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["METER", n] => {
                    let n: u64 = n.parse().map_err(|_| "bad meter reading")?;
                    if spent + PRICE_PER_TENTH > BUDGET || n as usize >= chain.len() {
                        writeln!(out, "STOP budget").map_err(|e| e.to_string())?;
                        continue;
                    }
                    spent += PRICE_PER_TENTH;
                    writeln!(out, "TICK {n} {}", hex(&chain[n as usize]))
                        .map_err(|e| e.to_string())?;
                }
                ["SETTLED", transfer] => return Ok(transfer.to_string()),
                _ => return Err(format!("the charger said {line:?}")),
            }
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    child.wait().map_err(|e| e.to_string())?;
    printer.join().map_err(|_| "printer")?;

    let done = car_api.get(&format!("/v1/channels/{id}")).await.map_err(|e| e.to_string())?;
    println!(
        "car: stream {}: {} USD to the charger, {} USD back to the car",
        text(&done, "state"),
        text(&done, "settled"),
        text(&done, "refunded")
    );
    println!("car: {}", common::verify_receipt(&car_api, &settlement).await?);
    let balance = car_api.account(&car_account).await.map_err(|e| e.to_string())?;
    println!("car: wallet balance now {} USD", text(&balance, "balance"));
    farthing.stop().await
}

/// The charger: learns the stream's terms, checks the car's signature on them itself,
/// then checks each tick with one hash, and at the end settles once.
fn charger(url: &str, key: &str, stream_id: &str) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let api = Client::new(url, key);
    let terms =
        rt.block_on(api.get(&format!("/v1/channels/{stream_id}"))).map_err(|e| e.to_string())?;
    let pw = &terms["payword"];
    let car_key = VerifyingKey::from_bytes(&unhex::<32>(&text(&terms, "payer_key"))?)
        .map_err(|e| e.to_string())?;
    let commitment = Commitment {
        stream: stream_id.parse().map_err(|_| "stream id")?,
        payee: text(&terms, "payee_account_id").parse().map_err(|_| "payee")?,
        root: unhex::<32>(&text(pw, "root"))?,
        unit_price: text(pw, "unit_price").parse().map_err(|_| "price")?,
        length: pw["length"].as_u64().ok_or("length")?,
        expires_at_s: terms["expires_at"].as_u64().ok_or("expires_at")?,
    };
    let mut stream = Stream::open(commitment, &unhex::<64>(&text(pw, "signature"))?, &car_key)
        .map_err(|e| format!("the car's commitment does not check out: {e}"))?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    println!("listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
    let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut out = conn.try_clone().map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(conn).lines();
    let mut best = None;
    for n in 1..=WANTED_TENTHS {
        // Deliver a tenth of a kWh, then ask for its payment.
        writeln!(out, "METER {n}").map_err(|e| e.to_string())?;
        let line = lines.next().ok_or("the car hung up")?.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["TICK", t, w] => {
                let t: u64 = t.parse().map_err(|_| "bad tick")?;
                let w = unhex::<32>(w)?;
                let now = farthing_server::auth::now_unix_s();
                stream
                    .tick(t, &w, now, 1)
                    .map_err(|e| format!("charger: refused tick {t}: {e}"))?;
                best = Some((t, w));
                if n % 10 == 0 {
                    println!("charger: {}.0 kWh delivered and paid", n / 10);
                }
            }
            ["STOP", why] => {
                println!("charger: the car stops at {}.{} kWh ({why})", (n - 1) / 10, (n - 1) % 10);
                break;
            }
            _ => return Err(format!("the car said {line:?}")),
        }
    }
    let (t, w) = best.ok_or("nothing was paid")?;
    let transfer = rt.block_on(async {
        let e = |e: farthing_client::Error| e.to_string();
        api.post(
            &format!("/v1/channels/{stream_id}/ticks"),
            &json!({"tick": t, "preimage": hex(&w)}),
            None,
        )
        .await
        .map_err(e)?;
        api.post(&format!("/v1/channels/{stream_id}/close"), &json!({}), None).await.map_err(e)?;
        // The close settled what the ticks are worth: the transfer is on the ledger.
        let history = api
            .get(&format!("/v1/accounts/{}/transfers", text(&terms, "payee_account_id")))
            .await
            .map_err(e)?;
        history["data"]
            .as_array()
            .and_then(|d| d.iter().find(|t| t["user_data_128"] == stream_id))
            .map(|t| text(t, "id"))
            .ok_or_else(|| "no settlement transfer".to_string())
    })?;
    println!("charger: {t} ticks settled in one ledger transfer, {transfer}");
    writeln!(out, "SETTLED {transfer}").map_err(|e| e.to_string())?;
    Ok(())
}
