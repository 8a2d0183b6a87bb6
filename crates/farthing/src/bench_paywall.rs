//! `farthing bench paywall`: paid HTTP requests per second through the 402 paywall
//! (`farthing-paywall`) over loopback, all in one process, and their settlement.
//!
//! The run starts an embedded Farthing (temporary directory, risk engine on with the shipped
//! policy), makes a USD asset, a merchant account with a merchant key, and one funded payer
//! per channel; opens the channels through the API (10 USD locked each); and serves one
//! route, `GET /call`, behind `paywall.layer(100, "one API call")`, the paywall settling
//! with the embedded Farthing every second through `FarthingSource`.
//!
//! The vouchers are signed before the timed part and kept as ready `PAYMENT-SIGNATURE`
//! values: voucher i of a channel has sequence i and cumulative i × 100. Each connection owns
//! its channels (one by default) and keeps one request in flight over a keep-alive
//! connection; an answer is good if it is 200 with a `PAYMENT-RESPONSE`. Afterwards the
//! paywall flushes, and the run waits until Farthing has settled every channel's last
//! voucher on the ledger, then counts the settlement transfers (code 0x7203) of the
//! merchant's account.
//!
//! Three runtimes, each its threads named, so that the CPU time splits by role: the load
//! generator (`bench-load`), the resource server with the paywall (`paywall-http`, and the
//! paywall's own `paywall-verify` threads), and Farthing (everything else).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue};
use axum::routing::get;
use axum::Router;
use clap::Args;
use ed25519_dalek::SigningKey;
use farthing_client::raw::Connection;
use farthing_client::Client;
use farthing_paywall::x402::{
    to_hex, PaymentPayload, PaymentRequirements, VoucherPayload, HEADER_RESPONSE, HEADER_SIGNATURE,
    X402_VERSION,
};
use farthing_paywall::{FarthingSource, Paywall, PaywallConfig};
use farthing_rails::channel::Voucher;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct PaywallArgs {
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of load before measuring (not counted; its vouchers settle too).
    #[arg(long, default_value_t = 1)]
    pub warmup_s: u64,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Channels (at least one per connection; default: one per connection). A connection
    /// pays through its own channels in turn.
    #[arg(long)]
    pub channels: Option<usize>,
    /// Paid requests per second the vouchers signed in advance last for: each connection
    /// gets (warm-up + seconds) × this / connections of them. A connection that runs out
    /// stops early (reported as `vouchers_exhausted`).
    #[arg(long, default_value_t = 40_000)]
    pub rate_max: u64,
    /// The paywall's signature verifier threads (default: the paywall's own default).
    #[arg(long)]
    pub verifier_threads: Option<usize>,
    /// Worker threads of the load generator (it shares the machine with the servers).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What a paid request costs, minor units of USD (scale 6): $0.0001.
const PRICE: u128 = 100;
/// What each channel locks: 10 USD (the shipped policy's cap per USD channel is 50).
const LOCK: &str = "10.000000";
const LOCK_UNITS: u128 = 10_000_000;
const CONNECTIONS_MAX: usize = 4_096;
const SECONDS_MAX: u64 = 3_600;
/// How often the paywall settles with Farthing, and Farthing on its ledger.
const FLUSH_INTERVAL_MS: u64 = 1_000;
const CHANNEL_SETTLE_MS: u64 = 1_000;
/// How long to wait for every channel to be settled after the run.
const SETTLE_TIMEOUT_S: u64 = 60;
/// A request in flight at the end may take this long before it is an error.
const DRAIN_TIMEOUT_S: u64 = 10;
/// The settlement transfers' code (farthing-server's `CODE_SETTLE`).
const CODE_SETTLE: u64 = 0x7203;

pub fn run(args: &PaywallArgs) -> Result<(), String> {
    let channels = args.channels.unwrap_or(args.connections);
    if !(1..=CONNECTIONS_MAX).contains(&args.connections) {
        return Err(format!("--connections must be 1..={CONNECTIONS_MAX}"));
    }
    if channels < args.connections || channels > 16 * CONNECTIONS_MAX {
        return Err("--channels must be at least --connections (each connection owns its \
                    channels), and at most 16 times the most connections"
            .into());
    }
    if !(1..=SECONDS_MAX).contains(&args.seconds) || args.warmup_s > SECONDS_MAX {
        return Err(format!("--seconds must be 1..={SECONDS_MAX}, --warmup-s 0..={SECONDS_MAX}"));
    }
    if args.verifier_threads.is_some_and(|t| !(1..=256).contains(&t)) {
        return Err("--verifier-threads must be 1..=256".into());
    }
    if !(1..=64).contains(&args.client_threads) {
        return Err("--client-threads must be 1..=64".into());
    }
    let per_channel = vouchers_per_channel(args, channels);
    if per_channel == 0 {
        return Err("--rate-max leaves no voucher for some channel".into());
    }
    if per_channel as u128 * PRICE > LOCK_UNITS {
        return Err(format!(
            "--rate-max asks for {per_channel} vouchers per channel, more than {LOCK} USD \
             covers at {PRICE} units each: use more channels"
        ));
    }
    let runtime = |name: &str, threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let farthing_rt = runtime("farthing-api", cores)?;
    let paywall_rt = runtime("paywall-http", cores)?;
    let load_rt = runtime("bench-load", args.client_threads)?;
    let report = paywall_rt.block_on(bench(args, channels, &farthing_rt, &load_rt))?;
    drop(load_rt);
    drop(paywall_rt);
    drop(farthing_rt);
    if args.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Vouchers signed for each channel.
fn vouchers_per_channel(args: &PaywallArgs, channels: usize) -> u64 {
    let total = (args.warmup_s + args.seconds).saturating_mul(args.rate_max);
    total / channels as u64
}

/// The embedded Farthing and what the run made in it.
struct Setup {
    admin: Client,
    url: String,
    network: String,
    merchant_id: String,
    merchant_key: String,
    /// Each channel's id, with the key that signs its vouchers.
    channels: Vec<(u128, SigningKey)>,
}

async fn bench(
    args: &PaywallArgs,
    channel_count: usize,
    farthing_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = farthing_server::Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().expect("an address"),
        channel_settle_ms: CHANNEL_SETTLE_MS,
        ..farthing_server::Config::default()
    };
    let admin_key = format!("fk_bench{}", to_hex(&rand::random::<[u8; 16]>()));
    let server = farthing_rt
        .spawn(farthing_server::Server::start(config, Some(admin_key.clone())))
        .await
        .map_err(|e| e.to_string())??;
    let result = bench_with(args, channel_count, load_rt, &server.url, &admin_key).await;
    farthing_rt.spawn(server.shutdown()).await.map_err(|e| e.to_string())??;
    result
}

async fn bench_with(
    args: &PaywallArgs,
    channel_count: usize,
    load_rt: &tokio::runtime::Runtime,
    url: &str,
    admin_key: &str,
) -> Result<Value, String> {
    let setup = setup(url, admin_key, channel_count).await?;

    // The resource server.
    let mut config = PaywallConfig::new(&setup.network, &setup.merchant_id, "USD", 6, &setup.url);
    config.flush_interval = Duration::from_millis(FLUSH_INTERVAL_MS);
    if let Some(threads) = args.verifier_threads {
        config.verifier_threads = threads;
    }
    let verifier_threads = config.verifier_threads;
    let source = Arc::new(FarthingSource::new(&setup.url, &setup.merchant_key));
    let paywall = Paywall::new(config, source);
    let app = Router::new()
        .route("/call", get(|| async { "paid" }).layer(paywall.layer(PRICE, "one API call")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    // Every voucher, signed and encoded before the clock starts.
    let accepted =
        paywall.required("/call", "one API call", "text/html", PRICE, "").accepts[0].clone();
    let connections = args.connections;
    let per_channel = vouchers_per_channel(args, channel_count);
    let signing = Instant::now();
    let lanes = presign(&setup.channels, connections, per_channel, &accepted);
    let presign_s = signing.elapsed().as_secs_f64();

    // The timed part.
    let host_port = addr.to_string();
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let h = host_port.clone();
        let c = load_rt
            .spawn(async move { Connection::connect(&h, "").await })
            .await
            .map_err(|e| e.to_string())??;
        conns.push(c);
    }
    let start = Instant::now() + Duration::from_secs(args.warmup_s);
    let end = start + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(lanes)
        .map(|(connection, lane)| load_rt.spawn(drive(connection, lane, start, end)))
        .collect();
    tokio::time::sleep_until(start.into()).await;
    let cpu_before = cpu_by_role();
    tokio::time::sleep_until(end.into()).await;
    let cpu_after = cpu_by_role();
    let mut tally = Tally::default();
    let mut last = vec![0u128; channel_count];
    for task in tasks {
        let (t, lane_last) = task.await.map_err(|e| format!("a connection's task failed: {e}"))?;
        for (i, cumulative) in lane_last {
            last[i] = cumulative;
        }
        tally.merge(t);
    }

    // Settlement.
    let flushed = paywall.flush().await.map_err(|e| format!("flushing the paywall: {e}"))?;
    if let Some((id, code)) = flushed.refused.first() {
        return Err(format!("Farthing refused the voucher of channel {id}: {code}"));
    }
    let settling = Instant::now();
    let settled = wait_settled(&setup, &last).await?;
    let settle_s = settling.elapsed().as_secs_f64();
    let settlement_transfers = count_settlements(&setup).await?;
    serving.abort();

    tally.latencies_us.sort_unstable();
    let percentile = |p: f64| -> Option<u32> {
        let n = tally.latencies_us.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        tally.latencies_us.get(rank - 1).copied()
    };
    let seconds = args.seconds as f64;
    let expected: u128 = last.iter().sum();
    let cpu = |role: usize| cpu_after[role] - cpu_before[role];
    Ok(json!({
        "paid_requests_per_second": tally.requests_ok as f64 / seconds,
        "requests": tally.requests,
        "errors": tally.errors,
        "latency_p50_us": percentile(0.50),
        "latency_p99_us": percentile(0.99),
        "latency_p999_us": percentile(0.999),
        "connections": connections,
        "channels": channel_count,
        "verifier_threads": verifier_threads,
        "seconds": args.seconds,
        "warmup_s": args.warmup_s,
        "price_units": PRICE.to_string(),
        "vouchers_signed": per_channel * channel_count as u64,
        "presign_s": presign_s,
        "vouchers_exhausted": tally.exhausted,
        "settled_units": settled.to_string(),
        "expected_units": expected.to_string(),
        "settlement_transfers": settlement_transfers,
        "settle_wait_s": settle_s,
        "cpu_load_generator_s": cpu(0),
        "cpu_paywall_s": cpu(1),
        "cpu_farthing_s": cpu(2),
        "cpu_cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "first_error": tally.first_error,
    }))
}

/// Creates the asset, the merchant (account and key), a funded payer per channel, and
/// opens the channels.
async fn setup(url: &str, admin_key: &str, channels: usize) -> Result<Setup, String> {
    let e = |what: &'static str| move |e: farthing_client::Error| format!("{what}: {e}");
    let admin = Client::new(url, admin_key);
    admin.create_asset("USD", 6).await.map_err(e("creating USD"))?;
    let rails = admin.get("/v1/rails").await.map_err(e("GET /v1/rails"))?;
    let network = rails["network"].as_str().ok_or("/v1/rails has no network")?.to_string();
    let new_id = || (rand::random::<u64>() >> 1).to_string();
    let house = new_id();
    admin
        .create_account(&json!({"id": house, "owner_id": "0", "asset": "USD"}))
        .await
        .map_err(e("creating the house account"))?;
    let merchant_id = new_id();
    admin
        .create_account(&json!({"id": merchant_id, "owner_id": merchant_id, "asset": "USD"}))
        .await
        .map_err(e("creating the merchant's account"))?;
    let made = admin
        .create_key(&json!({"role": "merchant", "owner_id": merchant_id}))
        .await
        .map_err(e("making the merchant's key"))?;
    let merchant_key = made["key"].as_str().ok_or("no merchant key")?.to_string();

    // Channels open a few at a time: each is a payer, a funding transfer and an open.
    const OPENERS: usize = 8;
    let openers: Vec<_> = (0..OPENERS.min(channels))
        .map(|o| {
            let (admin, house, merchant_id) = (admin.clone(), house.clone(), merchant_id.clone());
            tokio::spawn(async move {
                let mut opened = Vec::new();
                for c in (o..channels).step_by(OPENERS) {
                    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
                    let id = open_channel(&admin, &house, &merchant_id, &key).await?;
                    opened.push((c, id, key));
                }
                Ok::<_, String>(opened)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(channels);
    for opener in openers {
        all.extend(opener.await.map_err(|e| e.to_string())??);
    }
    all.sort_by_key(|(c, _, _)| *c);
    let channels = all.into_iter().map(|(_, id, key)| (id, key)).collect();
    Ok(Setup { admin, url: url.into(), network, merchant_id, merchant_key, channels })
}

/// A payer with its own wallet, funded, and a channel from it to the merchant.
async fn open_channel(
    admin: &Client,
    house: &str,
    merchant_id: &str,
    key: &SigningKey,
) -> Result<u128, String> {
    let e = |what: &'static str| move |e: farthing_client::Error| format!("{what}: {e}");
    let payer = (rand::random::<u64>() >> 1).to_string();
    let account = json!({"id": payer, "owner_id": payer, "asset": "USD",
                         "flags": ["debits_must_not_exceed_credits"]});
    admin.create_account(&account).await.map_err(e("creating a payer"))?;
    let fund = json!({"debit_account_id": house, "credit_account_id": payer, "amount": LOCK});
    admin.post("/v1/transfers", &fund, None).await.map_err(e("funding a payer"))?;
    let open = json!({
        "payer_account_id": payer,
        "payee_account_id": merchant_id,
        "amount": LOCK,
        "payer_key": to_hex(key.verifying_key().as_bytes()),
        "expires_in_s": 3_600,
    });
    let channel = admin.post("/v1/channels", &open, None).await.map_err(e("opening a channel"))?;
    let id = channel["id"].as_str().ok_or("an opened channel without an id")?;
    id.parse().map_err(|_| format!("channel id {id:?}"))
}

/// What one connection sends, in order: (its channel's index, the voucher's cumulative,
/// the `PAYMENT-SIGNATURE` value).
type Lane = Vec<(usize, u128, HeaderValue)>;

/// Signs every voucher, on every core: connection c pays through channels c, c + C, ...
/// in turn.
fn presign(
    channels: &[(u128, SigningKey)],
    connections: usize,
    per_channel: u64,
    accepted: &PaymentRequirements,
) -> Vec<Lane> {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires_at_s = now_s + 3_000;
    let lane = |c: usize| -> Lane {
        let mine: Vec<usize> = (c..channels.len()).step_by(connections).collect();
        let mut lane = Vec::with_capacity(mine.len() * per_channel as usize);
        for n in 1..=per_channel {
            for &i in &mine {
                let (id, key) = &channels[i];
                let cumulative = u128::from(n) * PRICE;
                let sv = Voucher { channel: *id, sequence: n, cumulative, expires_at_s }.sign(key);
                let header = PaymentPayload {
                    x402_version: X402_VERSION,
                    accepted: accepted.clone(),
                    payload: VoucherPayload::from_signed(&sv),
                }
                .to_header();
                let value = HeaderValue::try_from(header).expect("base64 is a header value");
                lane.push((i, cumulative, value));
            }
        }
        lane
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(connections);
    let mut lanes: Vec<Option<Lane>> = (0..connections).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..connections).step_by(threads).map(|c| (c, lane(c))).collect::<Vec<_>>()
                })
            })
            .collect();
        for w in workers {
            for (c, l) in w.join().expect("a signing thread") {
                lanes[c] = Some(l);
            }
        }
    });
    lanes.into_iter().map(|l| l.expect("every lane signed")).collect()
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    /// Latency of each counted answer, microseconds.
    latencies_us: Vec<u32>,
    /// Answered within the measured window.
    requests: u64,
    /// Of those, 200 with a `PAYMENT-RESPONSE`.
    requests_ok: u64,
    errors: u64,
    /// A connection ran out of vouchers before the end.
    exhausted: bool,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.requests += other.requests;
        self.requests_ok += other.requests_ok;
        self.errors += other.errors;
        self.exhausted |= other.exhausted;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Sends the lane's vouchers one after another until `end`; returns the tally and the last
/// cumulative paid (answered 200) on each of its channels.
async fn drive(
    mut connection: Connection,
    lane: Lane,
    start: Instant,
    end: Instant,
) -> (Tally, Vec<(usize, u128)>) {
    let name = HeaderName::from_static(HEADER_SIGNATURE);
    let mut tally = Tally { latencies_us: Vec::with_capacity(64 * 1024), ..Tally::default() };
    let mut last: Vec<(usize, u128)> = Vec::new();
    let mut vouchers = lane.into_iter();
    let drain = end + Duration::from_secs(DRAIN_TIMEOUT_S);
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let Some((channel, cumulative, header)) = vouchers.next() else {
            tally.exhausted = true;
            break;
        };
        let headers = [(name.clone(), header)];
        let answer = tokio::time::timeout_at(drain.into(), connection.get("/call", &headers)).await;
        let done = Instant::now();
        let counted = done >= start && done < end;
        let why = match answer {
            Ok(Ok((200, h, _))) if h.contains_key(HEADER_RESPONSE) => None,
            Ok(Ok((status, _, body))) => Some(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).chars().take(300).collect::<String>()
            )),
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {DRAIN_TIMEOUT_S} s of the end")),
        };
        match why {
            None => {
                match last.iter_mut().find(|(c, _)| *c == channel) {
                    Some(l) => l.1 = cumulative,
                    None => last.push((channel, cumulative)),
                }
                if counted {
                    tally.requests_ok += 1;
                }
            }
            Some(why) => {
                if counted {
                    tally.errors += 1;
                }
                tally.first_error.get_or_insert(why);
            }
        }
        if counted {
            tally.requests += 1;
            let us = done.duration_since(sent).as_micros();
            tally.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
    (tally, last)
}

/// Waits until Farthing has settled each channel's last voucher; the units settled in all.
async fn wait_settled(setup: &Setup, last: &[u128]) -> Result<u128, String> {
    let deadline = Instant::now() + Duration::from_secs(SETTLE_TIMEOUT_S);
    let merchant = setup.admin.with_key(&setup.merchant_key);
    let mut settled = vec![0u128; last.len()];
    loop {
        for (i, (id, _)) in setup.channels.iter().enumerate() {
            if settled[i] == last[i] {
                continue;
            }
            let channel = merchant
                .get(&format!("/v1/channels/{id}"))
                .await
                .map_err(|e| format!("GET /v1/channels/{id}: {e}"))?;
            let units = channel["settled_units"].as_str().unwrap_or("0");
            settled[i] = units.parse().map_err(|_| format!("settled_units {units:?}"))?;
        }
        if settled == last || Instant::now() >= deadline {
            return Ok(settled.iter().sum());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The merchant's settlement transfers (code 0x7203), every page.
async fn count_settlements(setup: &Setup) -> Result<u64, String> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/accounts/{}/transfers?limit=1000", setup.merchant_id);
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = setup.admin.get(&path).await.map_err(|e| format!("GET {path}: {e}"))?;
        let data = page["data"].as_array().ok_or("a page without data")?;
        count += data.iter().filter(|t| t["code"].as_u64() == Some(CODE_SETTLE)).count() as u64;
        match page["next_cursor"].as_str() {
            Some(c) if !data.is_empty() => cursor = Some(c.to_string()),
            _ => return Ok(count),
        }
    }
}

/// CPU seconds so far: [load generator, resource server and paywall, Farthing and the
/// rest], the first two by their threads' names, the last the process's total less them
/// (so that threads which came and went, like a blocking pool's, count too).
fn cpu_by_role() -> [f64; 3] {
    let mut out = [0.0; 3];
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let name = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // After the name: state is field 3 of stat(5); utime and stime are 14 and 15.
            let time = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
            let seconds = (time(11) + time(12)) / ticks;
            if name.starts_with("bench-load") {
                out[0] += seconds;
            } else if name.starts_with("paywall-") {
                out[1] += seconds;
            }
        }
    }
    out[2] = farthing_server::metrics::process_cpu_seconds() - out[0] - out[1];
    out
}

fn print_text(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "farthing bench paywall: {} connections, {} channels, {} s measured after {} s warm-up",
        r["connections"], r["channels"], r["seconds"], r["warmup_s"]
    );
    println!(
        "  paid requests  {:>10.0}/s  ({} requests, {} errors)",
        f("paid_requests_per_second"),
        r["requests"],
        r["errors"]
    );
    println!(
        "  latency        p50 {} µs  p99 {} µs  p99.9 {} µs",
        r["latency_p50_us"], r["latency_p99_us"], r["latency_p999_us"]
    );
    println!(
        "  settled        {} of {} units expected, in {} settlement transfers ({:.1} s after the run)",
        r["settled_units"].as_str().unwrap_or("?"),
        r["expected_units"].as_str().unwrap_or("?"),
        r["settlement_transfers"],
        f("settle_wait_s")
    );
    let available = f("cpu_cores") * f("seconds");
    let share = |k: &str| 100.0 * f(k) / available;
    println!(
        "  CPU            load generator {:.2} s ({:.0}%), resource server + paywall {:.2} s \
         ({:.0}%), Farthing {:.2} s ({:.0}%), of {available:.0} s",
        f("cpu_load_generator_s"),
        share("cpu_load_generator_s"),
        f("cpu_paywall_s"),
        share("cpu_paywall_s"),
        f("cpu_farthing_s"),
        share("cpu_farthing_s"),
    );
    println!(
        "  vouchers       {} signed in advance in {:.1} s{}",
        r["vouchers_signed"],
        f("presign_s"),
        if r["vouchers_exhausted"] == true { " — ran out: raise --rate-max" } else { "" }
    );
    if let Some(e) = r["first_error"].as_str() {
        println!("  first error: {e}");
    }
}
