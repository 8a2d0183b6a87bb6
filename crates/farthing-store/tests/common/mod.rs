//! Helpers shared by the store's integration tests: a small ledger to write, and readers of
//! the on-disk layout (segments, record boundaries, every file's bytes).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use farthing_ledger::codec::decode_transfer;
use farthing_ledger::limits::EVENT_BYTES;
use farthing_ledger::{
    Account, AccountFlags, Asset, AssetKind, CreateAccountResult, CreateAssetResult,
    CreateTransferResult, Transfer, TransferFlags,
};
use farthing_store::wal::{self, Op};
use farthing_store::{EngineConfig, EngineHandle};

pub const USD: u32 = 1;
pub const EUR: u32 = 2;
/// Plain USD accounts are 1..=6.
pub const PLAIN: std::ops::RangeInclusive<u128> = 1..=6;
/// USD, debits must not exceed credits: transfers from it fail until it is funded.
pub const WALLET: u128 = 7;
/// USD, with balance history.
pub const HIST: u128 = 8;
/// EUR accounts.
pub const E1: u128 = 20;
pub const E2: u128 = 21;

/// A configuration for tests: small preallocation (fast open) and no idle pulses unless a
/// test asks for them, so that nothing changes the state behind a test's back.
pub fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.accounts_capacity = 64;
    c.transfers_capacity = 4096;
    c.pulse_interval_ms = 3_600_000;
    c
}

pub fn account(id: u128, asset: u32, flags: AccountFlags) -> Account {
    Account { id, asset, code: 1, flags, ..Default::default() }
}

pub fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        asset: USD,
        code: 1,
        ..Default::default()
    }
}

pub fn pending(id: u128, debit: u128, credit: u128, amount: u128, timeout_s: u32) -> Transfer {
    Transfer { flags: TransferFlags::PENDING, timeout_s, ..transfer(id, debit, credit, amount) }
}

pub fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer { id, pending_id, amount, flags: TransferFlags::POST_PENDING, ..Default::default() }
}

pub fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer { id, pending_id, flags: TransferFlags::VOID_PENDING, ..Default::default() }
}

/// Registers USD and EUR and the accounts named above; every event must succeed.
pub fn setup(h: &EngineHandle) {
    let assets = vec![
        Asset::new(USD, "USD", 6, AssetKind::Fiat),
        Asset::new(EUR, "EUR", 2, AssetKind::Fiat),
    ];
    for r in h.create_assets(assets).unwrap() {
        assert_eq!(r.code, CreateAssetResult::Ok);
    }
    let mut accounts: Vec<Account> =
        PLAIN.map(|id| account(id, USD, AccountFlags::empty())).collect();
    accounts.push(account(WALLET, USD, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS));
    accounts.push(account(HIST, USD, AccountFlags::HISTORY));
    accounts.push(account(E1, EUR, AccountFlags::empty()));
    accounts.push(account(E2, EUR, AccountFlags::empty()));
    for r in h.create_accounts(accounts).unwrap() {
        assert_eq!(r.code, CreateAccountResult::Ok);
    }
}

/// `n` plain USD transfers with ids `first..first + n`, all of which succeed.
pub fn plain_batch(first: u128, n: usize) -> Vec<Transfer> {
    (0..n as u128)
        .map(|i| {
            let id = first + i;
            let debit = 1 + id % 6;
            let credit = 1 + (debit % 6);
            transfer(id, debit, credit, 1 + id % 1000)
        })
        .collect()
}

/// Submits a batch and asserts every event was applied.
pub fn write_ok(h: &EngineHandle, batch: Vec<Transfer>) {
    let ids: Vec<u128> = batch.iter().map(|t| t.id).collect();
    let results = h.create_transfers(batch).unwrap();
    for (id, r) in ids.iter().zip(&results) {
        assert_eq!(r.code, CreateTransferResult::Ok, "transfer {id}");
    }
}

/// The state's digest, counts and invariant violations, as seen through the engine.
pub fn state(h: &EngineHandle) -> ([u8; 32], farthing_ledger::Counts, Vec<String>) {
    h.read(|sm| (sm.digest(), sm.counts(), sm.check_invariants())).unwrap()
}

/// One WAL record as found on disk.
#[derive(Clone, Debug)]
pub struct RecordInfo {
    pub seq: u64,
    pub file: PathBuf,
    pub offset: u64,
    /// Header and body.
    pub len: u64,
    pub transfer_ids: Vec<u128>,
}

/// Every record of a data directory's WAL, in order, with the transfers it holds.
pub fn wal_records(data_dir: &Path) -> Vec<RecordInfo> {
    let mut out = Vec::new();
    let seed = farthing_store::datadir::wal_seed(data_dir).unwrap();
    wal::scan(&data_dir.join("wal"), seed, |record, file, offset| {
        let mut transfer_ids = Vec::new();
        for b in record.sub_batches().unwrap() {
            if b.op == Op::CreateTransfers {
                transfer_ids
                    .extend(b.events.chunks_exact(EVENT_BYTES).map(|e| decode_transfer(e).id));
            }
        }
        out.push(RecordInfo {
            seq: record.seq,
            file: file.to_path_buf(),
            offset,
            len: (wal::HEADER_BYTES + record.body.len()) as u64,
            transfer_ids,
        });
        Ok(())
    })
    .unwrap();
    out
}

/// Record boundaries `(offset, length)` of a segment's bytes, read from the headers alone
/// (bytes 8..12 of a header are the little-endian body length).
pub fn record_boundaries(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + wal::HEADER_BYTES <= bytes.len() {
        let body = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let len = wal::HEADER_BYTES + body;
        assert!(at + len <= bytes.len(), "record at {at} runs past the end");
        out.push((at, len));
        at += len;
    }
    assert_eq!(at, bytes.len(), "bytes after the last record");
    out
}

/// WAL segment files, in order.
pub fn segments(data_dir: &Path) -> Vec<PathBuf> {
    wal::list_segments(&data_dir.join("wal")).unwrap().into_iter().map(|(_, p)| p).collect()
}

/// Snapshot files, in name order.
pub fn snapshots(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    files.sort();
    files
}

/// Every file under `dir` (recursively) with its bytes.
pub fn dir_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Copies a closed data directory (its lock file too: a lock is held, not written).
pub fn copy_dir(from: &Path, to: &Path) {
    for (path, bytes) in dir_bytes(from) {
        let target = to.join(path.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, bytes).unwrap();
        // Keep modes: the log's private key must stay 0600.
        let mode = std::fs::metadata(&path).unwrap().permissions();
        std::fs::set_permissions(&target, mode).unwrap();
    }
    for sub in ["wal", "snapshots"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
    }
}

/// Flips every bit of one byte of a file.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}
