//! `farthing write-load` (hidden): writes transfers from several threads and appends the id of
//! every acknowledged transfer to a file, for tests that kill the process and then check that
//! every acknowledged transfer survived.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use farthing_ledger::{Account, Asset, AssetKind, CreateTransferResult, Transfer, TransferFlags};
use farthing_store::{Engine, EngineConfig};

#[derive(Args, Debug)]
pub struct WriteLoadArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// File that receives one line per acknowledged transfer id.
    #[arg(long)]
    pub ack_file: PathBuf,
    /// Distinguishes the ids of successive runs on the same directory.
    #[arg(long)]
    pub run: u32,
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    #[arg(long, default_value_t = 64)]
    pub batch_size: u32,
    /// Stop after this many batches per client (0: until killed).
    #[arg(long, default_value_t = 0)]
    pub batches: u64,
}

const ACCOUNTS: u128 = 16;

pub fn run(args: &WriteLoadArgs) -> Result<(), String> {
    let mut config = EngineConfig::new(&args.data_dir);
    config.segment_bytes_max = 256 << 10; // many segment rotations under test
    config.snapshot_wal_bytes = 1 << 20; // and snapshots
    let engine = Engine::open(config).map_err(|e| e.to_string())?;
    let ledger = engine.handle();
    ledger
        .create_assets(vec![Asset::new(1, "USD", 6, AssetKind::Fiat)])
        .map_err(|e| e.to_string())?;
    let accounts =
        (1..=ACCOUNTS).map(|id| Account { id, asset: 1, code: 1, ..Default::default() }).collect();
    ledger.create_accounts(accounts).map_err(|e| e.to_string())?;
    let acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.ack_file)
        .map_err(|e| e.to_string())?;
    let acks = Arc::new(Mutex::new(acks));
    println!("ready");
    let threads: Vec<_> = (0..args.clients)
        .map(|c| {
            let (ledger, acks) = (ledger.clone(), acks.clone());
            let (run, batch, batches) = (args.run, args.batch_size, args.batches);
            std::thread::spawn(move || -> Result<(), String> {
                let mut n = 0u64;
                while batches == 0 || n < batches {
                    let transfers: Vec<Transfer> = (0..batch as u64)
                        .map(|i| {
                            let seq = n * batch as u64 + i;
                            let debit = 1 + (seq as u128 * 7 + c as u128) % ACCOUNTS;
                            let credit = 1 + (debit % ACCOUNTS);
                            Transfer {
                                id: ((run as u128) << 96) | ((c as u128) << 64) | (seq as u128 + 1),
                                debit_account_id: debit,
                                credit_account_id: credit,
                                amount: 1 + (seq as u128 % 97),
                                asset: 1,
                                code: 1,
                                flags: if seq.is_multiple_of(5) {
                                    TransferFlags::PENDING
                                } else {
                                    TransferFlags::empty()
                                },
                                timeout_s: if seq.is_multiple_of(10) { 1 } else { 0 },
                                ..Default::default()
                            }
                        })
                        .collect();
                    let ids: Vec<u128> = transfers.iter().map(|t| t.id).collect();
                    let results = ledger.create_transfers(transfers).map_err(|e| e.to_string())?;
                    let mut lines = String::new();
                    for (id, r) in ids.iter().zip(&results) {
                        if r.code == CreateTransferResult::Ok {
                            lines.push_str(&format!("{id}\n"));
                        }
                    }
                    acks.lock().unwrap().write_all(lines.as_bytes()).map_err(|e| e.to_string())?;
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "writer panicked".to_string())??;
    }
    engine.shutdown().map_err(|e| e.to_string())
}
