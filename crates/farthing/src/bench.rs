//! `farthing bench ledger`: durable transfers, end to end through the engine.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use farthing_ledger::limits::BATCH_EVENTS_MAX;
use farthing_ledger::{
    Account, Asset, AssetKind, CreateAccountResult, CreateAssetResult, CreateTransferResult,
    Transfer, TransferFlags,
};
use farthing_store::{Engine, EngineConfig, EngineHandle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::Distribution;

#[derive(Args, Debug)]
pub struct LedgerArgs {
    /// Transfers to commit in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub transfers: u64,
    /// Accounts the transfers move money between.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// Transfers per request (1..=8190).
    #[arg(long, default_value_t = 8190)]
    pub batch_size: usize,
    /// Concurrent submitters, each waiting for its answer before sending again.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// How accounts are picked: uniform, or zipfian (a few hot accounts).
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Percentage of transfers created as pending (two-phase) instead of posted.
    #[arg(long, default_value_t = 0)]
    pub pending_percent: u8,
    /// Data directory to write (kept afterwards). Default: a fresh temporary one, removed.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The transparency log: on, off, or both (alternating runs, each on a fresh
    /// directory, then the ratio of their medians).
    #[arg(long, value_enum, default_value_t = LogMode::On)]
    pub log: LogMode,
    /// Runs per mode with `--log both`.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// The log signs a checkpoint at least this often while it grows...
    #[arg(long, default_value_t = 1_000)]
    pub checkpoint_interval_ms: u64,
    /// ...and whenever this many leaves were added since the last one.
    #[arg(long, default_value_t = 1_000_000)]
    pub checkpoint_leaves: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogMode {
    On,
    Off,
    Both,
}

const ASSET_ID: u32 = 1;
/// Bounds of the workload, so a typo cannot ask for more memory than the machine has.
const ACCOUNTS_MAX: u64 = 10_000_000;
const TRANSFERS_MAX: u64 = 1_000_000_000;
const CLIENTS_MAX: usize = 4_096;

pub fn run_ledger(args: &LedgerArgs) -> Result<(), String> {
    if args.batch_size == 0 || args.batch_size > BATCH_EVENTS_MAX {
        return Err(format!("--batch-size must be 1..={BATCH_EVENTS_MAX}"));
    }
    if !(2..=ACCOUNTS_MAX).contains(&args.accounts) {
        return Err(format!("--accounts must be 2..={ACCOUNTS_MAX}"));
    }
    if !(1..=TRANSFERS_MAX).contains(&args.transfers) {
        return Err(format!("--transfers must be 1..={TRANSFERS_MAX}"));
    }
    if !(1..=CLIENTS_MAX).contains(&args.clients) || args.pending_percent > 100 {
        return Err(format!("--clients must be 1..={CLIENTS_MAX}, --pending-percent 0..=100"));
    }
    if !(1..=REPEAT_MAX).contains(&args.repeat) {
        return Err(format!("--repeat must be 1..={REPEAT_MAX}"));
    }
    if !(1..=CHECKPOINT_INTERVAL_MS_MAX).contains(&args.checkpoint_interval_ms)
        || args.checkpoint_leaves == 0
    {
        return Err(format!(
            "--checkpoint-interval-ms must be 1..={CHECKPOINT_INTERVAL_MS_MAX}, \
             --checkpoint-leaves at least 1"
        ));
    }
    let temporary = args.data_dir.is_none();
    let dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("farthing-bench-{}", std::process::id()))
    });
    if dir.exists() && std::fs::read_dir(&dir).map_err(|e| e.to_string())?.next().is_some() {
        return Err(format!(
            "{} is not empty: the benchmark needs a fresh directory",
            dir.display()
        ));
    }
    let runs: Vec<(bool, std::path::PathBuf)> = match args.log {
        LogMode::On => vec![(true, dir.clone())],
        LogMode::Off => vec![(false, dir.clone())],
        LogMode::Both => (1..=args.repeat)
            .flat_map(|k| {
                [false, true]
                    .map(|on| (on, dir.join(format!("log-{}-{k}", if on { "on" } else { "off" }))))
            })
            .collect(),
    };
    // The temporary directory goes even if the run panics.
    let result = std::panic::catch_unwind(|| {
        let mut reports = Vec::new();
        for (on, run_dir) in &runs {
            let report = bench_in(run_dir, args, *on)?;
            if args.log != LogMode::Both {
                print_report(&report, args.json);
            } else if !args.json {
                println!(
                    "log {}: {:.0} transfers/s",
                    if *on { "on " } else { "off" },
                    report["transfers_per_second"].as_f64().unwrap_or(0.0)
                );
            }
            if args.log == LogMode::Both && temporary {
                let _ = std::fs::remove_dir_all(run_dir);
            }
            reports.push(report);
        }
        if args.log == LogMode::Both {
            compare_log(&reports, args.json);
        }
        Ok(())
    })
    .unwrap_or_else(|_| Err("the benchmark failed (see the panic above)".into()));
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

const REPEAT_MAX: u32 = 100;
const CHECKPOINT_INTERVAL_MS_MAX: u64 = 3_600_000;

fn print_report(report: &serde_json::Value, as_json: bool) {
    if as_json {
        println!("{report}");
    } else {
        print_text(report);
    }
}

/// The medians of the log-on and log-off runs, and what the log costs.
fn compare_log(reports: &[serde_json::Value], as_json: bool) {
    let median = |on: bool| {
        let mut v: Vec<f64> = reports
            .iter()
            .filter(|r| r["log"] == on)
            .map(|r| r["transfers_per_second"].as_f64().unwrap_or(0.0))
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (off, on) = (median(false), median(true));
    let loss = 100.0 * (1.0 - on / off);
    // Each log-on run against the log-off run just before it: the machine's mood drifts
    // slower than one pair, so the median of these ratios is the steadier figure.
    let rate = |r: &serde_json::Value| r["transfers_per_second"].as_f64().unwrap_or(0.0);
    let mut pairs: Vec<f64> = reports
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| 1.0 - rate(&p[1]) / rate(&p[0]))
        .collect();
    pairs.sort_by(|a, b| a.total_cmp(b));
    let paired = 100.0 * pairs[pairs.len() / 2];
    if as_json {
        println!(
            "{}",
            json!({
                "log_off_transfers_per_second_median": off,
                "log_on_transfers_per_second_median": on,
                "log_cost_percent": loss,
                "log_cost_percent_paired_median": paired,
                "runs": reports,
            })
        );
    } else {
        println!(
            "median: log off {off:.0}/s, log on {on:.0}/s: the log costs {loss:.1}% \
             (median of the {} paired runs: {paired:.1}%)",
            pairs.len()
        );
    }
}

fn bench_in(
    dir: &std::path::Path,
    args: &LedgerArgs,
    log: bool,
) -> Result<serde_json::Value, String> {
    let mut config = EngineConfig::new(dir);
    config.log = log;
    config.checkpoint_interval_ms = args.checkpoint_interval_ms;
    config.checkpoint_leaves = args.checkpoint_leaves;
    config.accounts_capacity = args.accounts as usize;
    config.transfers_capacity = args.transfers as usize;
    let opened = Instant::now();
    let engine = Engine::open(config).map_err(|e| e.to_string())?;
    let open_s = opened.elapsed().as_secs_f64();
    let ledger = engine.handle();
    setup(&ledger, args.accounts)?;
    let sampler = Arc::new(Sampler::new(args.accounts, args.distribution));
    let stats_before = (
        ledger.stats().syncs.load(Ordering::Relaxed),
        ledger.stats().records_durable.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|c| {
            let share = args.transfers / args.clients as u64
                + u64::from((c as u64) < args.transfers % args.clients as u64);
            let (ledger, sampler) = (ledger.clone(), sampler.clone());
            let (batch, pending, seed) = (args.batch_size, args.pending_percent, args.seed);
            std::thread::spawn(move || {
                client(c as u64, share, batch, pending, seed, &ledger, &sampler)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0u64;
    for w in workers {
        let (lat, f) = w.join().map_err(|_| "a client thread panicked".to_string())??;
        latencies.extend(lat);
        failed += f;
    }
    // With the log on, the run ends when a signed checkpoint covers every transfer: the
    // log may not lag its way to a better figure.
    if log {
        ledger.checkpoint().map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed();
    let syncs = ledger.stats().syncs.load(Ordering::Relaxed) - stats_before.0;
    let records = ledger.stats().records_durable.load(Ordering::Relaxed) - stats_before.1;
    let bytes_on_disk = engine.bytes_on_disk();
    engine.shutdown().map_err(|e| e.to_string())?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let report = json!({
        "log": log,
        "transfers": args.transfers,
        "accounts": args.accounts,
        "batch_size": args.batch_size,
        "clients": args.clients,
        "distribution": format!("{:?}", args.distribution).to_lowercase(),
        "pending_percent": args.pending_percent,
        "failed": failed,
        "elapsed_s": elapsed.as_secs_f64(),
        "open_and_reserve_s": open_s,
        "transfers_per_second": args.transfers as f64 / elapsed.as_secs_f64(),
        "batch_latency_ms_p50": pct(0.50),
        "batch_latency_ms_p99": pct(0.99),
        "batch_latency_ms_max": pct(1.0),
        "fsyncs": syncs,
        "wal_records": records,
        "transfers_per_fsync": args.transfers as f64 / syncs.max(1) as f64,
        "rss_bytes_max": peak_rss_bytes(),
        "bytes_on_disk": bytes_on_disk,
    });
    Ok(report)
}

fn print_text(r: &serde_json::Value) {
    println!(
        "{} transfers in {:.2} s: {:.0} transfers/s ({} failed; log {})",
        r["transfers"],
        r["elapsed_s"].as_f64().unwrap(),
        r["transfers_per_second"].as_f64().unwrap(),
        r["failed"],
        if r["log"] == true { "on" } else { "off" }
    );
    println!(
        "batch latency ms: p50 {:.3}  p99 {:.3}  max {:.3}",
        r["batch_latency_ms_p50"].as_f64().unwrap(),
        r["batch_latency_ms_p99"].as_f64().unwrap(),
        r["batch_latency_ms_max"].as_f64().unwrap()
    );
    println!(
        "group commit: {} fsyncs, {} WAL records, {:.1} transfers per fsync",
        r["fsyncs"],
        r["wal_records"],
        r["transfers_per_fsync"].as_f64().unwrap()
    );
    println!(
        "peak RSS {:.1} MiB, on disk {:.1} MiB",
        r["rss_bytes_max"].as_u64().unwrap() as f64 / 1048576.0,
        r["bytes_on_disk"].as_u64().unwrap() as f64 / 1048576.0
    );
}

/// One asset and `accounts` plain accounts (ids 1..=accounts).
fn setup(ledger: &EngineHandle, accounts: u64) -> Result<(), String> {
    let asset = Asset::new(ASSET_ID, "USD", 6, AssetKind::Fiat);
    let r = ledger.create_assets(vec![asset]).map_err(|e| e.to_string())?;
    if r[0].code != CreateAssetResult::Ok {
        return Err(format!("creating the asset: {}", r[0].code));
    }
    let ids: Vec<u64> = (1..=accounts).collect();
    for chunk in ids.chunks(BATCH_EVENTS_MAX) {
        let batch = chunk
            .iter()
            .map(|id| Account { id: *id as u128, asset: ASSET_ID, code: 1, ..Default::default() })
            .collect();
        let r = ledger.create_accounts(batch).map_err(|e| e.to_string())?;
        if let Some(bad) = r.iter().find(|r| r.code != CreateAccountResult::Ok) {
            return Err(format!("creating accounts: {}", bad.code));
        }
    }
    Ok(())
}

type ClientResult = Result<(Vec<f64>, u64), String>;

/// One submitter: sends `share` transfers in batches, one request in flight at a time.
fn client(
    c: u64,
    share: u64,
    batch: usize,
    pending: u8,
    seed: u64,
    ledger: &EngineHandle,
    sampler: &Sampler,
) -> ClientResult {
    let mut rng = SmallRng::seed_from_u64(seed ^ (c + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut latencies = Vec::with_capacity((share as usize).div_ceil(batch));
    let mut failed = 0;
    let mut sent = 0u64;
    while sent < share {
        let n = (share - sent).min(batch as u64);
        let transfers: Vec<Transfer> = (0..n)
            .map(|i| {
                let (debit, credit) = sampler.pair(&mut rng);
                let flags = if rng.random_range(0..100) < pending {
                    TransferFlags::PENDING
                } else {
                    TransferFlags::empty()
                };
                Transfer {
                    id: ((c as u128) << 64) | (sent + i + 1) as u128,
                    debit_account_id: debit as u128,
                    credit_account_id: credit as u128,
                    amount: rng.random_range(1..=1_000),
                    asset: ASSET_ID,
                    code: 1,
                    flags,
                    ..Default::default()
                }
            })
            .collect();
        let t0 = Instant::now();
        let results = ledger.create_transfers(transfers).map_err(|e| e.to_string())?;
        latencies.push(ms(t0.elapsed()));
        failed += results.iter().filter(|r| r.code != CreateTransferResult::Ok).count() as u64;
        sent += n;
    }
    Ok((latencies, failed))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Picks distinct account pairs, uniformly or by a Zipf law (s = 0.99, as YCSB).
struct Sampler {
    accounts: u64,
    cumulative: Option<Vec<f64>>,
}

impl Sampler {
    fn new(accounts: u64, distribution: Distribution) -> Self {
        let cumulative = matches!(distribution, Distribution::Zipfian).then(|| {
            let mut total = 0.0;
            (1..=accounts)
                .map(|k| {
                    total += 1.0 / (k as f64).powf(0.99);
                    total
                })
                .collect()
        });
        Self { accounts, cumulative }
    }

    fn one(&self, rng: &mut SmallRng) -> u64 {
        match &self.cumulative {
            None => rng.random_range(1..=self.accounts),
            Some(c) => {
                let x = rng.random::<f64>() * c[c.len() - 1];
                c.partition_point(|v| *v < x) as u64 + 1
            }
        }
    }

    fn pair(&self, rng: &mut SmallRng) -> (u64, u64) {
        let debit = self.one(rng);
        loop {
            let credit = self.one(rng);
            if credit != debit {
                return (debit, credit);
            }
        }
    }
}

/// The process's peak resident set size (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
