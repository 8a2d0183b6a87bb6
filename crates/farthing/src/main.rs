//! `farthing`: the command line. A thin layer of argument parsing over the library crates.

mod bench;
mod inspect;
mod loadgen;
mod query;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "farthing", version, about = "Farthing: a secure micropayment engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Test support: write transfers under load and log each acknowledged id (kill tests).
    #[command(hide = true)]
    WriteLoad(loadgen::WriteLoadArgs),
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Durable transfers through the engine: throughput, batch latency, memory, disk.
    Ledger(bench::LedgerArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { what: BenchWhat::Ledger(args) } => bench::run_ledger(&args),
        Command::Inspect { data_dir, json } => inspect::run(&data_dir, json),
        Command::Query(args) => query::run(&args),
        Command::Codes => {
            inspect::print_codes();
            Ok(())
        }
        Command::WriteLoad(args) => loadgen::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("farthing: {message}");
            ExitCode::FAILURE
        }
    }
}
