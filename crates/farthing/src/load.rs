//! `farthing load`: loads a running API server over plain HTTP/1.1 keep-alive connections
//! and reports requests/s, transfers/s, latency percentiles, errors, and how the CPU time
//! split between this process and the server.
//!
//! The run makes its own asset (`LOAD`, scale 6) and accounts, with random ids under one
//! random owner, so that repeated runs against the same server do not collide. The
//! accounts carry no balance limits: any of them may go below zero, so no funding step is
//! needed and no transfer is refused for lack of funds. With `--payments` they are payers'
//! wallets instead (`debits_must_not_exceed_credits`, funded at the start from a house
//! account), so every transfer is a payment the risk engine judges, with a device in its
//! `risk_context`.
//!
//! Each connection is driven by one task that keeps one request in flight: a transfer
//! (`POST /v1/transfers`), or with `--batch-size` above 1 a batch (`POST
//! /v1/transfers/batch`). Requests that complete during the warm-up are not counted.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use farthing_client::raw::Connection;
use farthing_ledger::limits::BATCH_EVENTS_MAX;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::json;

/// The flags of `farthing load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The server's base URL: http://host:port (https is not supported).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin API key: the run creates its own asset and accounts.
    #[arg(long)]
    pub key: String,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Seconds of load before measuring (not counted).
    #[arg(long, default_value_t = 1)]
    pub warmup_s: u64,
    /// Transfers per request: 1 posts single transfers, more posts batches.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Accounts the transfers move money between (created at the start of the run).
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Worker threads of the load generator (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pay between wallets (judged by the risk engine) rather than between house accounts.
    #[arg(long)]
    pub payments: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Bounds of the flags, so that a typo cannot ask for more than the machine can give.
const CONNECTIONS_MAX: usize = 4_096;
const BATCH_TRANSFERS_MAX: usize = BATCH_EVENTS_MAX;
const DURATION_S_MAX: u64 = 3_600;
const WARMUP_S_MAX: u64 = 600;
const ACCOUNTS_MAX: usize = 1_000_000;
const THREADS_MAX: usize = 256;

/// Connections that create the accounts, concurrently, before the run.
const SETUP_CONNECTIONS_MAX: usize = 32;
/// How long a request in flight when the run ends may take to answer before it is
/// counted as an error and abandoned.
const DRAIN_TIMEOUT_S: u64 = 10;
/// How long to wait for the server's `/metrics`.
const METRICS_TIMEOUT_MS: u64 = 5_000;
/// After a connection fails, wait this long before opening another.
const RECONNECT_DELAY_MS: u64 = 100;

/// The asset the run moves: created if missing (the same code and scale answer 200).
const ASSET_CODE: &str = "LOAD";
const ASSET_SCALE: u8 = 6;
/// Each transfer moves one unit (the smallest amount of the asset).
const TRANSFER_AMOUNT: &str = "0.000001";

/// Runs the load and prints its report. Errors: bad flags and failures to set up (connect,
/// create the asset or the accounts); requests that fail during the run are counted.
pub fn run(args: &LoadArgs) -> Result<(), String> {
    validate(args)?;
    let host_port = host_port(&args.url)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.block_on(load(args, host_port))?;
    if args.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(())
}

fn validate(args: &LoadArgs) -> Result<(), String> {
    if !(1..=CONNECTIONS_MAX).contains(&args.connections) {
        return Err(format!("--connections must be 1..={CONNECTIONS_MAX}"));
    }
    if !(1..=BATCH_TRANSFERS_MAX).contains(&args.batch_size) {
        return Err(format!("--batch-size must be 1..={BATCH_TRANSFERS_MAX}"));
    }
    if !(1..=DURATION_S_MAX).contains(&args.duration_s) {
        return Err(format!("--duration-s must be 1..={DURATION_S_MAX}"));
    }
    if args.warmup_s > WARMUP_S_MAX {
        return Err(format!("--warmup-s must be 0..={WARMUP_S_MAX}"));
    }
    if !(2..=ACCOUNTS_MAX).contains(&args.accounts) {
        return Err(format!("--accounts must be 2..={ACCOUNTS_MAX}"));
    }
    if !(1..=THREADS_MAX).contains(&args.threads) {
        return Err(format!("--threads must be 1..={THREADS_MAX}"));
    }
    if args.key.is_empty() {
        return Err("--key must not be empty".into());
    }
    Ok(())
}

/// `host:port` of a plain-HTTP base URL (`http://host[:port][/]`; a bare `host:port` is
/// taken as http too).
fn host_port(url: &str) -> Result<String, String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!(
                "--url {url}: https is not supported by the load generator; \
                 point it at a plain http listener"
            ))
        }
        Some((scheme, _)) => return Err(format!("--url {url}: unsupported scheme {scheme:?}")),
        None => url,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "--url {url}: expected http://host:port, with no path, query or credentials"
        ));
    }
    // A port is there if a colon follows the host (past the brackets of an IPv6 address).
    let host_end = if authority.starts_with('[') {
        authority.find(']').ok_or_else(|| format!("--url {url}: unclosed IPv6 address"))?
    } else {
        0
    };
    match authority[host_end..].rfind(':') {
        Some(i) => {
            let port = &authority[host_end + i + 1..];
            if port.parse::<u16>().is_err() {
                return Err(format!("--url {url}: bad port {port:?}"));
            }
            Ok(authority.to_string())
        }
        None => Ok(format!("{authority}:80")),
    }
}

/// What one connection's task did during the measured window.
#[derive(Default)]
struct Tally {
    /// Latency of each counted request that got an answer, microseconds.
    latencies_us: Vec<u32>,
    requests: u64,
    transfers: u64,
    /// Requests that failed: another status than expected, refused transfers in a batch,
    /// or no answer at all.
    errors: u64,
    /// Transfers a batch answer listed as refused.
    transfers_failed: u64,
    /// The first failure seen (warm-up included), to say what went wrong.
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.requests += other.requests;
        self.transfers += other.transfers;
        self.errors += other.errors;
        self.transfers_failed += other.transfers_failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The part of a batch answer the load generator checks.
#[derive(Deserialize)]
struct BatchAnswer {
    failed: Vec<IgnoredAny>,
}

async fn load(args: &LoadArgs, host_port: String) -> Result<serde_json::Value, String> {
    let accounts = setup(args, &host_port).await?;
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        connections.push(connect(&host_port, &args.key).await?);
    }
    let metrics = farthing_client::Client::new(&format!("http://{host_port}"), &args.key);
    let start = Instant::now() + Duration::from_secs(args.warmup_s);
    let end = start + Duration::from_secs(args.duration_s);
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|connection| {
            let driver = Driver {
                host_port: host_port.clone(),
                key: args.key.clone(),
                accounts: accounts.clone(),
                batch_size: args.batch_size,
                payments: args.payments,
                start,
                end,
            };
            tokio::spawn(driver.drive(connection))
        })
        .collect();

    tokio::time::sleep_until(start.into()).await;
    let client_cpu_before = farthing_server::metrics::process_cpu_seconds();
    let server_cpu_before = server_cpu_seconds(&metrics).await;
    tokio::time::sleep_until(end.into()).await;
    let client_cpu_after = farthing_server::metrics::process_cpu_seconds();
    let server_cpu_after = server_cpu_seconds(&metrics).await;

    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.map_err(|e| format!("a connection's task failed: {e}"))?);
    }
    tally.latencies_us.sort_unstable();
    let percentile_ms = |p: f64| -> Option<f64> {
        let n = tally.latencies_us.len();
        // Nearest rank: the smallest value at or above a fraction p of the samples.
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        tally.latencies_us.get(rank - 1).map(|us| f64::from(*us) / 1e3)
    };
    let seconds = args.duration_s as f64;
    let server_cpu = match (server_cpu_before, server_cpu_after) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    Ok(json!({
        "url": args.url,
        "connections": args.connections,
        "batch_size": args.batch_size,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "accounts": args.accounts,
        "payments": args.payments,
        "threads": args.threads,
        "requests": tally.requests,
        "transfers": tally.transfers,
        "errors": tally.errors,
        "transfers_failed": tally.transfers_failed,
        "requests_per_second": tally.requests as f64 / seconds,
        "transfers_per_second": tally.transfers as f64 / seconds,
        "latency_ms_p50": percentile_ms(0.50),
        "latency_ms_p99": percentile_ms(0.99),
        "latency_ms_p999": percentile_ms(0.999),
        "latency_ms_max": percentile_ms(1.0),
        "client_cpu_seconds": client_cpu_after - client_cpu_before,
        "server_cpu_seconds": server_cpu,
        "cpu_cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "first_error": tally.first_error,
    }))
}

async fn connect(host_port: &str, key: &str) -> Result<Connection, String> {
    Connection::connect(host_port, key).await.map_err(|e| format!("connecting to {e}"))
}

/// Creates the asset and the accounts; returns the accounts' ids as decimal text.
async fn setup(args: &LoadArgs, host_port: &str) -> Result<Arc<Vec<String>>, String> {
    let mut first = connect(host_port, &args.key).await?;
    let asset = json!({"code": ASSET_CODE, "scale": ASSET_SCALE}).to_string();
    let (status, body) = first
        .post_json("/v1/assets", asset.into())
        .await
        .map_err(|e| format!("creating asset {ASSET_CODE}: {e}"))?;
    if status != 200 && status != 201 {
        let body = String::from_utf8_lossy(&body);
        let hint = match status {
            401 | 403 => " (the load generator needs an admin key)",
            409 => " (an asset LOAD exists with another scale)",
            _ => "",
        };
        return Err(format!("creating asset {ASSET_CODE}: {status}{hint}: {body}"));
    }
    let mut rng = SmallRng::from_os_rng();
    let owner: u128 = rng.random_range(1..u128::MAX);
    let ids: Arc<Vec<String>> =
        Arc::new((0..args.accounts).map(|_| rng.random_range(1..u128::MAX).to_string()).collect());
    let setup_connections = args.accounts.min(SETUP_CONNECTIONS_MAX);
    let creators: Vec<_> = (0..setup_connections)
        .map(|c| {
            let (ids, host_port, key) = (ids.clone(), host_port.to_string(), args.key.clone());
            let owner = owner.to_string();
            let payments = args.payments;
            tokio::spawn(async move {
                let mut connection = connect(&host_port, &key).await?;
                for id in ids.iter().skip(c).step_by(setup_connections) {
                    let mut account = json!({"id": id, "owner_id": owner, "asset": ASSET_CODE});
                    if payments {
                        account["flags"] = json!(["debits_must_not_exceed_credits"]);
                    }
                    let account = account.to_string();
                    let (status, body) = connection
                        .post_json("/v1/accounts", account.into())
                        .await
                        .map_err(|e| format!("creating account {id}: {e}"))?;
                    if status != 201 {
                        let body = String::from_utf8_lossy(&body);
                        return Err(format!("creating account {id}: {status}: {body}"));
                    }
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for creator in creators {
        creator.await.map_err(|e| format!("creating accounts: {e}"))??;
    }
    if args.payments {
        fund(&mut first, &mut rng, owner, &ids).await?;
    }
    Ok(ids)
}

/// Funds every wallet from a new house account (in batches), so payments between wallets
/// never run short during a run.
async fn fund(
    first: &mut Connection,
    rng: &mut SmallRng,
    owner: u128,
    ids: &[String],
) -> Result<(), String> {
    let house: u128 = rng.random_range(1..u128::MAX);
    let account =
        json!({"id": house.to_string(), "owner_id": owner.to_string(), "asset": ASSET_CODE})
            .to_string();
    let (status, body) = first
        .post_json("/v1/accounts", account.into())
        .await
        .map_err(|e| format!("creating the house account: {e}"))?;
    if status != 201 {
        return Err(format!(
            "creating the house account: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    // A batch the risk engine judges holds at most half the engine's bound (each transfer
    // travels with its decision): funding batches fit either way.
    for chunk in ids.chunks(BATCH_EVENTS_MAX / 2) {
        let transfers: Vec<_> = chunk
            .iter()
            .map(|id| json!({"debit_account_id": house.to_string(), "credit_account_id": id, "amount": "1000000"}))
            .collect();
        let batch = json!({ "transfers": transfers }).to_string();
        let (status, body) = first
            .post_json("/v1/transfers/batch", batch.into())
            .await
            .map_err(|e| format!("funding wallets: {e}"))?;
        let failed =
            serde_json::from_slice::<serde_json::Value>(&body).ok().map(|b| b["failed"].clone());
        if status != 200 || failed.as_ref().and_then(|f| f.as_array()).is_none_or(|f| !f.is_empty())
        {
            return Err(format!(
                "funding wallets: {status}: {}",
                clip(&String::from_utf8_lossy(&body))
            ));
        }
    }
    Ok(())
}

/// The server's `process_cpu_seconds_total`, if its `/metrics` answers in time.
async fn server_cpu_seconds(client: &farthing_client::Client) -> Option<f64> {
    let timeout = Duration::from_millis(METRICS_TIMEOUT_MS);
    let text = tokio::time::timeout(timeout, client.get_text("/metrics")).await.ok()?.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// One connection's load: one request in flight, from now until `end`.
struct Driver {
    host_port: String,
    key: String,
    accounts: Arc<Vec<String>>,
    batch_size: usize,
    payments: bool,
    /// Requests that complete from `start` to `end` are counted.
    start: Instant,
    end: Instant,
}

impl Driver {
    async fn drive(self, connection: Connection) -> Tally {
        let mut rng = SmallRng::from_os_rng();
        let mut tally = Tally::default();
        let mut connection = Some(connection);
        let (path, expected) = if self.batch_size == 1 {
            ("/v1/transfers", 201)
        } else {
            ("/v1/transfers/batch", 200)
        };
        let deadline =
            tokio::time::Instant::from_std(self.end + Duration::from_secs(DRAIN_TIMEOUT_S));
        while Instant::now() < self.end {
            let Some(conn) = connection.as_mut() else {
                tokio::time::sleep(Duration::from_millis(RECONNECT_DELAY_MS)).await;
                match Connection::connect(&self.host_port, &self.key).await {
                    Ok(c) => connection = Some(c),
                    Err(e) => self.failed(&mut tally, Instant::now(), format!("reconnecting: {e}")),
                }
                continue;
            };
            let body = self.body(&mut rng);
            let sent = Instant::now();
            let answer = tokio::time::timeout_at(deadline, conn.post_json(path, body.into())).await;
            let done = Instant::now();
            let (status, body) = match answer {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    // The connection is likely gone: open another.
                    connection = None;
                    self.failed(&mut tally, done, e);
                    continue;
                }
                Err(_) => {
                    self.failed(
                        &mut tally,
                        done,
                        format!("no answer within {DRAIN_TIMEOUT_S} s of the end"),
                    );
                    break;
                }
            };
            // How many transfers the server refused, or why the whole request failed.
            // A payment the risk engine holds for a step-up or review (202) is accepted too.
            let held = self.payments && self.batch_size == 1 && status == 202;
            let refused = if status != expected && !held {
                Err(status.to_string())
            } else if self.batch_size == 1 {
                Ok(0)
            } else {
                serde_json::from_slice::<BatchAnswer>(&body)
                    .map(|a| a.failed.len())
                    .map_err(|e| format!("{status} with an unreadable answer ({e})"))
            };
            let counted = done >= self.start && done < self.end;
            match refused {
                Ok(0) => {
                    if counted {
                        tally.requests += 1;
                        tally.transfers += self.batch_size as u64;
                    }
                }
                Ok(n) => {
                    if counted {
                        tally.requests += 1;
                        tally.transfers += self.batch_size.saturating_sub(n) as u64;
                        tally.transfers_failed += n as u64;
                        tally.errors += 1;
                    }
                    if tally.first_error.is_none() {
                        let body = String::from_utf8_lossy(&body);
                        tally.first_error = Some(format!("{n} transfers refused: {}", clip(&body)));
                    }
                }
                Err(why) => {
                    if counted {
                        tally.requests += 1;
                        tally.errors += 1;
                    }
                    if tally.first_error.is_none() {
                        let body = String::from_utf8_lossy(&body);
                        tally.first_error = Some(format!("{why}: {}", clip(&body)));
                    }
                }
            }
            if counted {
                let us = done.duration_since(sent).as_micros();
                tally.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
        tally
    }

    /// Counts a request that got no answer.
    fn failed(&self, tally: &mut Tally, at: Instant, error: String) {
        if at >= self.start && at < self.end {
            tally.errors += 1;
        }
        tally.first_error.get_or_insert(error);
    }

    /// The JSON of one request: a transfer, or a batch of them, between random accounts.
    fn body(&self, rng: &mut SmallRng) -> String {
        let mut body = String::with_capacity(200 * self.batch_size + 16);
        if self.batch_size > 1 {
            body.push_str(r#"{"transfers":["#);
        }
        for i in 0..self.batch_size {
            if i > 0 {
                body.push(',');
            }
            let n = self.accounts.len();
            let debit = rng.random_range(0..n);
            let credit = (debit + rng.random_range(1..n)) % n;
            let id: u128 = rng.random_range(1..u128::MAX);
            let _ = write!(
                body,
                r#"{{"id":"{id}","debit_account_id":"{}","credit_account_id":"{}","amount":"{TRANSFER_AMOUNT}""#,
                self.accounts[debit], self.accounts[credit]
            );
            if self.payments {
                let _ =
                    write!(body, r#","risk_context":{{"device":"load-{debit}","channel":"api"}}"#);
            }
            body.push('}');
        }
        if self.batch_size > 1 {
            body.push_str("]}");
        }
        body
    }
}

/// The start of a long answer, for an error message.
fn clip(text: &str) -> &str {
    const SHOWN_CHARS_MAX: usize = 300;
    match text.char_indices().nth(SHOWN_CHARS_MAX) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn print_text(r: &serde_json::Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let ms = |k: &str| r[k].as_f64().map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
    println!(
        "farthing load {}: {} connections, batch {}, {} s measured after {} s warm-up, \
         client threads: {}",
        r["url"].as_str().unwrap_or(""),
        r["connections"],
        r["batch_size"],
        r["duration_s"],
        r["warmup_s"],
        r["threads"]
    );
    println!("  requests    {:>12}  {:>12.0}/s", r["requests"], f("requests_per_second"));
    println!("  transfers   {:>12}  {:>12.0}/s", r["transfers"], f("transfers_per_second"));
    println!("  errors      {:>12}  ({} transfers refused)", r["errors"], r["transfers_failed"]);
    println!(
        "  latency ms  p50 {}  p99 {}  p99.9 {}  max {}",
        ms("latency_ms_p50"),
        ms("latency_ms_p99"),
        ms("latency_ms_p999"),
        ms("latency_ms_max")
    );
    let cores = r["cpu_cores"].as_u64().unwrap_or(1) as f64;
    let available = cores * f("duration_s");
    let share = |seconds: f64| 100.0 * seconds / available;
    let client = f("client_cpu_seconds");
    let server = match r["server_cpu_seconds"].as_f64() {
        Some(s) => format!("{s:.2} s ({:.0}%)", share(s)),
        None => "unknown (no process_cpu_seconds_total at /metrics)".to_string(),
    };
    println!(
        "  CPU         client {client:.2} s ({:.0}%), server {server}, of {available:.0} s on {cores} cores",
        share(client)
    );
    if let Some(e) = r["first_error"].as_str() {
        println!("  first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn urls() {
        assert_eq!(host_port("http://127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(host_port("http://127.0.0.1:8080/").unwrap(), "127.0.0.1:8080");
        assert_eq!(host_port("HTTP://localhost").unwrap(), "localhost:80");
        assert_eq!(host_port("localhost:9000").unwrap(), "localhost:9000");
        assert_eq!(host_port("http://[::1]:8080").unwrap(), "[::1]:8080");
        assert_eq!(host_port("http://[::1]").unwrap(), "[::1]:80");
        assert!(host_port("https://127.0.0.1:8443")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(host_port("ftp://x").is_err());
        assert!(host_port("http://127.0.0.1:8080/v1").is_err());
        assert!(host_port("http://127.0.0.1:80x").is_err());
        assert!(host_port("http://").is_err());
    }
}
