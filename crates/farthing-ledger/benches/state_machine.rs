//! The state machine alone: batches of 8,190 transfers between 10,000 accounts.
//! Run: `cargo bench -p farthing-ledger --bench state_machine`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use farthing_ledger::limits::BATCH_EVENTS_MAX;
use farthing_ledger::{Account, Asset, AssetKind, StateMachine, Transfer, TransferFlags};

const ACCOUNTS: u64 = 10_000;
/// Transfers already in the ledger when measuring: the index is large, as in production.
const PRELOAD: u64 = 1_000_000;

fn ledger() -> StateMachine {
    let mut sm = StateMachine::new();
    sm.create_assets(&[Asset::new(1, "USD", 6, AssetKind::Fiat)], 1);
    let accounts: Vec<Account> = (1..=ACCOUNTS)
        .map(|id| Account { id: id as u128, asset: 1, code: 1, ..Default::default() })
        .collect();
    let mut ts = 10;
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        sm.create_accounts(chunk, ts);
        ts += BATCH_EVENTS_MAX as u64;
    }
    sm
}

/// A batch of transfers with pseudo-random account pairs (xorshift, no allocation per event).
fn batch(first_id: u64, pending: bool) -> Vec<Transfer> {
    let mut x = first_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BATCH_EVENTS_MAX as u64)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let debit = 1 + x % ACCOUNTS;
            let credit = 1 + (debit + 1 + (x >> 32) % (ACCOUNTS - 1)) % ACCOUNTS;
            Transfer {
                id: (first_id + i) as u128,
                debit_account_id: debit as u128,
                credit_account_id: credit as u128,
                amount: 1 + (x >> 40) as u128 % 1000,
                asset: 1,
                code: 1,
                flags: if pending { TransferFlags::PENDING } else { TransferFlags::empty() },
                ..Default::default()
            }
        })
        .collect()
}

fn preloaded() -> (StateMachine, u64, u64) {
    let mut sm = ledger();
    let mut ts = 1_000_000;
    let mut next_id = 1;
    while next_id <= PRELOAD {
        sm.create_transfers(&batch(next_id, false), ts);
        ts += BATCH_EVENTS_MAX as u64;
        next_id += BATCH_EVENTS_MAX as u64;
    }
    (sm, ts, next_id)
}

/// Runs `iters` batches on a ledger whose memory was reserved (and touched) beforehand,
/// outside the timed region, as the engine does at start-up with a configured capacity.
fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_machine");
    group.throughput(Throughput::Elements(BATCH_EVENTS_MAX as u64));
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(4));
    let (base, ts0, id0) = preloaded();
    for (name, pending) in [("create_transfers_8190", false), ("create_pending_8190", true)] {
        let mut sm = base.clone();
        let (mut ts, mut id) = (ts0, id0);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let batches: Vec<Vec<Transfer>> =
                    (0..iters).map(|k| batch(id + k * BATCH_EVENTS_MAX as u64, pending)).collect();
                sm.reserve(0, iters as usize * BATCH_EVENTS_MAX);
                let started = Instant::now();
                for events in &batches {
                    black_box(sm.create_transfers(events, ts));
                    ts += BATCH_EVENTS_MAX as u64;
                }
                let elapsed = started.elapsed();
                id += iters * BATCH_EVENTS_MAX as u64;
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
