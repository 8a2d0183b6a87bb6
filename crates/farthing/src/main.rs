//! `farthing`: the command line. A thin layer of argument parsing over the library crates.

mod bench;
mod bench_paywall;
mod bench_rails;
mod bench_risk;
mod bench_tlog;
mod inspect;
mod load;
mod loadgen;
mod query;
mod risk;
mod serve;
mod tlog;
mod webhooks_listen;
mod witness;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The server allocates small objects on many threads at once (requests, answers, events);
/// the system allocator's arena locks showed up as contention under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "farthing", version, about = "Farthing: a secure micropayment engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the payment API server (REST, events, webhooks) on the embedded store.
    Serve(serve::ServeArgs),
    /// Load an API server over HTTP: requests/s, transfers/s, latency percentiles.
    Load(load::LoadArgs),
    /// Make a new admin API key for a data directory no server is running on (when the
    /// admin key was lost).
    AdminKey(serve::AdminKeyArgs),
    /// Start afresh what a data directory lost, on purpose: a new transparency log
    /// (`--new-log`) or new server records (`--new-server-records`). The server refuses to
    /// start over such a loss by itself.
    Recover(serve::RecoverArgs),
    /// Webhook tools: a local endpoint that prints and checks deliveries.
    Webhooks {
        #[command(subcommand)]
        what: WebhooksWhat,
    },
    /// Measure Farthing end to end.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Recover a data directory read-only and report what it holds.
    Inspect {
        #[arg(long, default_value = "./farthing-data")]
        data_dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Read accounts, transfers, account history or balance history from a data directory.
    Query(query::QueryArgs),
    /// List every ledger result code, in order of precedence, with its meaning.
    Codes,
    /// The transparency log: its verifier key, checkpoints, consistency proofs.
    Log {
        #[command(subcommand)]
        what: tlog::LogCommand,
    },
    /// Print a receipt for a committed transfer: its proof of inclusion in the signed log.
    Receipt(tlog::ReceiptArgs),
    /// Check receipts and checkpoints offline, with the log's verifier key alone.
    Verify {
        #[command(subcommand)]
        what: tlog::VerifyCommand,
    },
    /// Recompute the whole log from a data directory and hold it to every signed checkpoint.
    /// Exits 1 if anything does not match.
    Audit(tlog::AuditArgs),
    /// A witness: checks that each checkpoint of a log extends the last it cosigned, and
    /// cosigns it (C2SP tlog-cosignature).
    Witness {
        #[command(subcommand)]
        what: witness::WitnessCommand,
    },
    /// The risk engine's models: evaluate, train, list the features.
    Risk {
        #[command(subcommand)]
        what: risk::RiskCommand,
    },
    /// Write labelled synthetic micropayment traffic (honest habits with named fraud
    /// patterns mixed in) as CSV, for `farthing risk eval` and `train`.
    Simulate(risk::SimulateArgs),
    /// Test support: write transfers under load and log each acknowledged id (kill tests).
    #[command(hide = true)]
    WriteLoad(loadgen::WriteLoadArgs),
}

#[derive(Subcommand)]
enum WebhooksWhat {
    /// Receive webhooks on a local port, print them, and check their signatures.
    Listen(webhooks_listen::ListenArgs),
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Durable transfers through the engine: throughput, batch latency, memory, disk.
    Ledger(bench::LedgerArgs),
    /// The transparency log alone: appending leaves, rebuilding, inclusion proofs.
    Tlog(bench_tlog::TlogArgs),
    /// The risk engine alone: the cost of judging one payment (p50/p99/p99.9).
    Risk(bench_risk::RiskBenchArgs),
    /// The micropayment rails' checks: voucher verifications and hash-chain ticks per core.
    Rails(bench_rails::RailsArgs),
    /// Paid HTTP requests per second through the 402 paywall over loopback, with an
    /// embedded Farthing settling the channels: throughput, latency, settlement.
    Paywall(bench_paywall::PaywallArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Load(_) | Command::Webhooks { .. }) {
        // A command whose output is cut short (`| head`) ends quietly, as Unix tools do.
        // Not for the network commands: there a closed socket must be an error, not death.
        // SAFETY: setting a signal's disposition to the default, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::AdminKey(args) => serve::run_admin_key(&args),
        Command::Recover(args) => serve::run_recover(&args),
        Command::Webhooks { what: WebhooksWhat::Listen(args) } => webhooks_listen::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Bench { what: BenchWhat::Ledger(args) } => bench::run_ledger(&args),
        Command::Bench { what: BenchWhat::Tlog(args) } => bench_tlog::run(&args),
        Command::Bench { what: BenchWhat::Risk(args) } => bench_risk::run(&args),
        Command::Bench { what: BenchWhat::Rails(args) } => bench_rails::run(&args),
        Command::Bench { what: BenchWhat::Paywall(args) } => bench_paywall::run(&args),
        Command::Inspect { data_dir, json } => inspect::run(&data_dir, json),
        Command::Query(args) => query::run(&args),
        Command::Codes => {
            inspect::print_codes();
            Ok(())
        }
        Command::Log { what } => tlog::run_log(&what),
        Command::Receipt(args) => tlog::run_receipt(&args),
        Command::Verify { what } => tlog::run_verify(&what),
        Command::Audit(args) => match tlog::run_audit(&args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Witness { what } => witness::run(&what),
        Command::WriteLoad(args) => loadgen::run(&args),
        Command::Risk { what } => risk::run(&what),
        Command::Simulate(args) => risk::run_simulate(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("farthing: {message}");
            ExitCode::FAILURE
        }
    }
}
