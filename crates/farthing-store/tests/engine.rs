//! The engine end to end: durability across restarts, deterministic replay across snapshots,
//! group commit, batch bounds, back-pressure, reads, the lock, the format file and expiry.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use farthing_ledger::limits::BATCH_EVENTS_MAX;
use farthing_ledger::{AccountFilter, CreateTransferResult, PendingStatus, StateMachine, Transfer};
use farthing_store::{Engine, EngineConfig, EngineError, EngineHandle, StoreError};

type TR = CreateTransferResult;

/// Blocks the engine thread inside a read until the returned sender is used (or dropped).
/// Returns once the engine is inside the read, with the thread that waits for the read.
fn block_engine(h: &EngineHandle) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let h = h.clone();
    let reader = std::thread::spawn(move || {
        h.read(move |_sm: &StateMachine| {
            entered_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
        .unwrap();
    });
    entered.recv_timeout(Duration::from_secs(10)).expect("the engine runs the read");
    (release, reader)
}

#[test]
fn acknowledged_writes_survive_a_clean_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    for b in 0..10u128 {
        write_ok(&h, plain_batch(1 + b * 100, 100));
    }
    // Failures are part of the state too (remembered failed ids).
    let r =
        h.create_transfers(vec![transfer(5000, WALLET, 1, 10), pending(5001, 1, 2, 7, 0)]).unwrap();
    assert_eq!(r[0].code, TR::ExceedsCredits);
    assert_eq!(r[1].code, TR::Ok);
    let (digest, counts, violations) = state(&h);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(counts.transfers, 1001);
    assert_eq!(counts.accounts, 10);
    assert_eq!(counts.assets, 2);
    assert_eq!(counts.pending_open, 1);
    assert_eq!(counts.failed_ids, 1);
    let sample = h.read(|sm| sm.transfer(555).copied()).unwrap().unwrap();
    engine.shutdown().unwrap();

    let engine = Engine::open(config(tmp.path())).unwrap();
    let rec = engine.recovery().clone();
    assert!(rec.torn_tail.is_none());
    assert_eq!(rec.records_replayed, rec.last_seq, "no snapshot: every record replayed");
    assert_eq!(rec.last_seq, 2 + 10 + 1);
    let h = engine.handle();
    let (digest2, counts2, violations2) = state(&h);
    assert_eq!(digest2, digest);
    assert_eq!(counts2, counts);
    assert!(violations2.is_empty(), "{violations2:?}");
    assert_eq!(h.read(|sm| sm.transfer(555).copied()).unwrap(), Some(sample));
    // A retried event is recognised after the restart.
    let r = h.create_transfers(vec![transfer(5000, WALLET, 1, 10)]).unwrap();
    assert_eq!(r[0].code, TR::IdAlreadyFailed);
    engine.shutdown().unwrap();
}

/// A deterministic mix for round `round`: plain transfers, pending ones (no timeout, a long
/// one, a short one in early rounds), posts and voids of the previous round's pending
/// transfers, failures, the history account and a second asset.
fn mixed_round(round: u128) -> Vec<Transfer> {
    let base = 1_000_000 * (round + 1);
    let prev = 1_000_000 * round;
    let mut batch = plain_batch(base, 40);
    for i in 0..10 {
        batch.push(pending(base + 100 + i, 1 + i % 6, HIST, 10 + i, 0));
        batch.push(pending(base + 200 + i, HIST, 1 + i % 6, 1 + i, 3600));
    }
    if round < 2 {
        for i in 0..5 {
            batch.push(pending(base + 300 + i, 1 + i % 6, 2 + i % 5, 5, 1));
        }
    }
    if round > 0 {
        for i in 0..10 {
            batch.push(match i % 3 {
                0 => post(base + 400 + i, prev + 100 + i, u128::MAX),
                1 => post(base + 400 + i, prev + 100 + i, 3),
                _ => void(base + 400 + i, prev + 100 + i),
            });
        }
        for i in 0..5 {
            batch.push(void(base + 500 + i, prev + 200 + i));
        }
        // Already exists (same fields): a retry.
        batch.push(plain_batch(prev, 1)[0]);
    }
    // Refused: the wallet is empty.
    batch.push(transfer(base + 600, WALLET, HIST, 1));
    // Another asset.
    batch.push(Transfer { asset: EUR, ..transfer(base + 700, E1, E2, 99) });
    batch
}

/// Everything a reader could ask about the ledger, beyond the digest (which leaves out
/// balance history).
fn observable(sm: &StateMachine) -> String {
    let hist = sm.get_account_balances(&AccountFilter::new(HIST, 8190)).unwrap();
    let transfers = sm.get_account_transfers(&AccountFilter::new(HIST, 8190)).unwrap();
    let accounts: Vec<_> = sm.accounts().to_vec();
    format!("{:?}|{:?}|{:?}|{:?}|{:?}", sm.digest(), sm.counts(), hist, transfers, accounts)
}

#[test]
fn replay_is_deterministic_across_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.snapshot_wal_bytes = 64 << 10;
    cfg.segment_bytes_max = 48 << 10;
    let engine = Engine::open(cfg.clone()).unwrap();
    let h = engine.handle();
    setup(&h);
    let mut expected_ok = 0;
    for round in 0..8u128 {
        let batch = mixed_round(round);
        let results = h.create_transfers(batch).unwrap();
        expected_ok += results.iter().filter(|r| r.code == TR::Ok).count();
        // Several small writes between: automatic snapshots fall in between them.
        for k in 0..6 {
            write_ok(&h, plain_batch(1_000_000 * (round + 1) + 10_000 + k * 50, 50));
        }
        if round == 1 {
            // Let the short pending transfers of rounds 0 and 1 pass their deadline: the
            // next batch expires them (idle pulses are off in this test).
            std::thread::sleep(Duration::from_millis(1100));
        }
        if [1, 3, 4, 6].contains(&round) {
            let seq = h.snapshot().unwrap();
            assert!(seq > 0);
        }
    }
    let expired = h.read(|sm| sm.pending_status(1_000_000 + 300)).unwrap();
    assert_eq!(expired, Some(PendingStatus::Expired));
    let posted = h.read(|sm| sm.pending_status(2_000_000 + 100)).unwrap();
    assert_eq!(posted, Some(PendingStatus::Posted));
    let voided = h.read(|sm| sm.pending_status(2_000_000 + 200)).unwrap();
    assert_eq!(voided, Some(PendingStatus::Voided));
    let before = h.read(observable).unwrap();
    let (digest, counts, violations) = state(&h);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(counts.transfers as usize, expected_ok + 8 * 6 * 50);
    engine.shutdown().unwrap();
    assert!(snapshots(tmp.path()).len() >= 4, "explicit and automatic snapshots");
    assert!(segments(tmp.path()).len() > 2, "segments rotated");

    for _ in 0..2 {
        let engine = Engine::open(cfg.clone()).unwrap();
        let rec = engine.recovery().clone();
        assert!(rec.snapshot_seq > 0, "recovery starts from a snapshot");
        assert!(rec.records_replayed < rec.last_seq, "and replays only the WAL after it");
        let h = engine.handle();
        assert_eq!(state(&h).0, digest);
        assert_eq!(h.read(observable).unwrap(), before);
        assert!(state(&h).2.is_empty());
        engine.shutdown().unwrap();
    }

    // The WAL alone (no snapshot) rebuilds the same state.
    let wal_only = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), wal_only.path());
    for snap in snapshots(wal_only.path()) {
        std::fs::remove_file(snap).unwrap();
    }
    let engine = Engine::open(config(wal_only.path())).unwrap();
    assert_eq!(engine.recovery().snapshot_seq, 0);
    assert_eq!(engine.handle().read(observable).unwrap(), before);
    engine.shutdown().unwrap();
}

#[test]
fn writes_after_a_recovery_from_snapshots_replay_too() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.snapshot_wal_bytes = 0;
    let engine = Engine::open(cfg.clone()).unwrap();
    let h = engine.handle();
    setup(&h);
    write_ok(&h, plain_batch(1, 100));
    h.snapshot().unwrap();
    engine.shutdown().unwrap();
    // Three generations, each recovering from the snapshots of the ones before.
    for generation in 1..=3u128 {
        let engine = Engine::open(cfg.clone()).unwrap();
        let h = engine.handle();
        write_ok(&h, plain_batch(generation * 1000, 100));
        let r = h.create_transfers(vec![pending(generation * 1000 + 500, 1, 2, 5, 0)]).unwrap();
        assert_eq!(r[0].code, TR::Ok);
        if generation > 1 {
            let r = h
                .create_transfers(vec![post(
                    generation * 1000 + 501,
                    (generation - 1) * 1000 + 500,
                    2,
                )])
                .unwrap();
            assert_eq!(r[0].code, TR::Ok);
        }
        h.snapshot().unwrap();
        write_ok(&h, plain_batch(generation * 1000 + 600, 10));
        let (digest, counts, _) = state(&h);
        engine.shutdown().unwrap();
        let engine = Engine::open(cfg.clone()).unwrap();
        let (digest2, counts2, violations) = state(&engine.handle());
        assert_eq!((digest2, counts2), (digest, counts), "generation {generation}");
        assert!(violations.is_empty(), "{violations:?}");
        engine.shutdown().unwrap();
    }
}

#[test]
fn group_commit_merges_concurrent_requests() {
    const THREADS: usize = 64;
    const PER_THREAD: usize = 16;
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    let syncs_before = h.stats().syncs.load(Ordering::Relaxed);
    let records_before = h.stats().records_durable.load(Ordering::Relaxed);
    // Hold the engine while the threads queue up, so that at least the first group merges
    // many requests however fast the disk is.
    let (release, reader) = block_engine(&h);
    let start = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (h, start) = (h.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..PER_THREAD {
                    let id = 1 + (t * PER_THREAD + i) as u128;
                    let results =
                        h.create_transfers(vec![transfer(id, 1 + id % 6, 1 + (id + 1) % 6, 1)]);
                    assert_eq!(results.unwrap()[0].code, TR::Ok, "transfer {id}");
                }
            })
        })
        .collect();
    start.wait();
    std::thread::sleep(Duration::from_millis(100));
    release.send(()).unwrap();
    reader.join().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    let requests = (THREADS * PER_THREAD) as u64;
    let syncs = h.stats().syncs.load(Ordering::Relaxed) - syncs_before;
    let records = h.stats().records_durable.load(Ordering::Relaxed) - records_before;
    assert!(syncs < requests, "{syncs} syncs for {requests} requests: nothing was merged");
    assert!(records < requests, "{records} records for {requests} requests");
    assert!(syncs <= records);
    let (_, counts, violations) = state(&h);
    assert_eq!(counts.transfers, requests);
    assert!(violations.is_empty(), "{violations:?}");
    eprintln!("group commit: {requests} requests, {records} records, {syncs} syncs");
    engine.shutdown().unwrap();
}

#[test]
fn batches_must_hold_1_to_8190_events() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    let (digest, _, _) = state(&h);
    let records = h.stats().records_durable.load(Ordering::Relaxed);
    let max = BATCH_EVENTS_MAX;
    assert_eq!(max, 8190);

    let empty = EngineError::BatchSize { events: 0, max };
    let over = EngineError::BatchSize { events: max + 1, max };
    assert_eq!(h.create_transfers(vec![]).unwrap_err(), empty);
    assert_eq!(h.try_create_transfers(vec![]).unwrap_err(), empty);
    assert_eq!(h.create_accounts(vec![]).unwrap_err(), empty);
    assert_eq!(h.create_assets(vec![]).unwrap_err(), empty);
    assert_eq!(h.create_transfers(plain_batch(1, max + 1)).unwrap_err(), over);
    assert_eq!(h.try_create_transfers(plain_batch(1, max + 1)).unwrap_err(), over);
    let accounts =
        (100..100 + max as u128 + 1).map(|id| account(id, USD, Default::default())).collect();
    assert_eq!(h.create_accounts(accounts).unwrap_err(), over);

    // Nothing changed, nothing was written.
    assert_eq!(state(&h).0, digest);
    assert_eq!(h.stats().records_durable.load(Ordering::Relaxed), records);
    assert!(h.read(|sm| sm.transfer(1).is_none()).unwrap());

    // The largest batch is accepted, as one record, and survives a restart.
    write_ok(&h, plain_batch(1, max));
    assert_eq!(h.stats().records_durable.load(Ordering::Relaxed), records + 1);
    let (digest, counts, _) = state(&h);
    assert_eq!(counts.transfers, max as u64);
    engine.shutdown().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    assert_eq!(state(&engine.handle()).0, digest);
    engine.shutdown().unwrap();
}

#[test]
fn a_full_queue_pushes_back_with_overloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.queue_requests_max = 1;
    cfg.submit_timeout_ms = 50;
    let engine = Engine::open(cfg).unwrap();
    let h = engine.handle();
    setup(&h);

    // The engine thread is busy with a slow read; its queue (one slot) is empty.
    let (release, reader) = block_engine(&h);
    let (results_tx, results) = mpsc::channel();
    let clients: Vec<_> = (1..=4u128)
        .map(|id| {
            let (h, results_tx) = (h.clone(), results_tx.clone());
            std::thread::spawn(move || {
                let r = h.try_create_transfers(vec![transfer(id, 1, 2, 1)]);
                results_tx.send((id, r)).unwrap();
            })
        })
        .collect();
    // One request takes the slot (and waits for its answer); the three others are pushed
    // back at once, while the engine is still blocked.
    let mut refused = Vec::new();
    for _ in 0..3 {
        let (id, r) = results.recv_timeout(Duration::from_secs(10)).expect("an immediate answer");
        assert_eq!(r.unwrap_err(), EngineError::Overloaded, "transfer {id}");
        refused.push(id);
    }
    // A blocking submit gives up after the submit timeout.
    let started = Instant::now();
    assert_eq!(
        h.create_transfers(vec![transfer(9, 1, 2, 1)]).unwrap_err(),
        EngineError::Overloaded
    );
    assert!(started.elapsed() >= Duration::from_millis(40));

    release.send(()).unwrap();
    reader.join().unwrap();
    let (accepted, r) = results.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(r.unwrap()[0].code, TR::Ok);
    assert!(!refused.contains(&accepted));
    for c in clients {
        c.join().unwrap();
    }
    // Refused requests were never applied.
    let present = h
        .read(|sm| (1..=9u128).filter(|id| sm.transfer(*id).is_some()).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(present, vec![accepted]);
    // And the engine takes work again.
    assert_eq!(h.try_create_transfers(vec![transfer(10, 1, 2, 1)]).unwrap()[0].code, TR::Ok);
    engine.shutdown().unwrap();
}

#[test]
fn reads_see_prior_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    let results = h.create_transfers(vec![transfer(42, 1, 2, 250)]).unwrap();
    assert_eq!(results[0].code, TR::Ok);
    let stored = h.read(|sm| sm.transfer(42).copied()).unwrap().expect("the transfer");
    assert_eq!(stored.amount, 250);
    assert_eq!(stored.timestamp, results[0].timestamp);
    let balances =
        h.read(|sm| (sm.account(1).unwrap().balances, sm.account(2).unwrap().balances)).unwrap();
    assert_eq!(balances.0.debits_posted, 250);
    assert_eq!(balances.1.credits_posted, 250);

    // From other threads, each read sees that thread's own writes.
    let threads: Vec<_> = (0..8u128)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..20u128 {
                    let id = 1000 + t * 100 + i;
                    assert_eq!(
                        h.create_transfers(vec![transfer(id, 3, 4, 1)]).unwrap()[0].code,
                        TR::Ok
                    );
                    assert!(h.read(move |sm| sm.transfer(id).is_some()).unwrap(), "transfer {id}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(state(&h).1.transfers, 1 + 160);
    engine.shutdown().unwrap();
}

#[test]
fn a_second_open_of_a_running_directory_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    setup(&engine.handle());
    match Engine::open(config(tmp.path())) {
        Err(StoreError::Locked { path }) => assert_eq!(path, tmp.path()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second engine opened a directory in use"),
    }
    // Read-only recovery is refused too.
    assert!(matches!(farthing_store::DataDir::open(tmp.path()), Err(StoreError::Locked { .. })));
    // The first engine is unharmed, and the lock is released by shutdown.
    write_ok(&engine.handle(), plain_batch(1, 10));
    engine.shutdown().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    assert_eq!(state(&engine.handle()).1.transfers, 10);
    drop(engine);
    // Dropping an engine stops it and releases the lock too.
    Engine::open(config(tmp.path())).unwrap().shutdown().unwrap();
}

#[test]
fn another_format_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    Engine::open(config(tmp.path())).unwrap().shutdown().unwrap();
    let format = tmp.path().join("FORMAT");
    let text = std::fs::read_to_string(&format).unwrap();
    assert_eq!(text.lines().next(), Some("farthing-data 1"));
    assert!(text.lines().nth(1).unwrap().starts_with("wal-checksum-seed "));

    std::fs::write(&format, "farthing-data 2\n").unwrap();
    match Engine::open(config(tmp.path())) {
        Err(StoreError::Format { path, reason }) => {
            assert_eq!(path, format);
            assert!(reason.contains('2'), "{reason}");
        }
        Err(e) => panic!("expected Format, got {e}"),
        Ok(_) => panic!("opened a directory of format version 2"),
    }
    std::fs::write(&format, "something else\n").unwrap();
    assert!(matches!(Engine::open(config(tmp.path())), Err(StoreError::Format { .. })));
    // The file was left as it was.
    assert_eq!(std::fs::read_to_string(&format).unwrap(), "something else\n");

    // A directory with files but no FORMAT is not taken over.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("notes.txt"), "mine").unwrap();
    assert!(matches!(Engine::open(config(other.path())), Err(StoreError::Format { .. })));
    assert!(!other.path().join("FORMAT").exists());
}

#[test]
fn pending_transfers_expire_on_an_idle_engine_and_stay_expired() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.pulse_interval_ms = 10;
    let engine = Engine::open(cfg).unwrap();
    let h = engine.handle();
    setup(&h);
    let results = h
        .create_transfers(vec![
            pending(1, 1, 2, 100, 1),
            pending(2, 3, 4, 50, 1),
            pending(3, 5, 6, 7, 0),
            pending(4, 1, 3, 9, 1),
            post(5, 4, u128::MAX),
        ])
        .unwrap();
    assert!(results.iter().all(|r| r.code == TR::Ok), "{results:?}");
    let created = Instant::now();
    let records = h.stats().records_durable.load(Ordering::Relaxed);

    // No writes from here on: only the engine's own pulse can expire them.
    let expired = |sm: &StateMachine| [1, 2, 3, 4].map(|id| sm.pending_status(id).unwrap());
    loop {
        let status = h.read(expired).unwrap();
        if status[0] == PendingStatus::Expired && status[1] == PendingStatus::Expired {
            assert_eq!(status[2], PendingStatus::Pending, "no timeout: never expires");
            assert_eq!(status[3], PendingStatus::Posted);
            break;
        }
        assert_eq!(status[0], PendingStatus::Pending);
        assert!(created.elapsed() < Duration::from_secs(5), "not expired after 5 s: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(created.elapsed() >= Duration::from_millis(900), "expired early");
    assert!(h.stats().records_durable.load(Ordering::Relaxed) > records, "a pulse was logged");
    let released = h.read(|sm| sm.account(1).unwrap().balances).unwrap();
    assert_eq!(released.debits_pending, 0);
    assert_eq!(released.debits_posted, 9);
    let (digest, counts, violations) = state(&h);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(counts.pending_open, 1);
    engine.shutdown().unwrap();

    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    assert_eq!(state(&h).0, digest);
    assert_eq!(h.read(expired).unwrap()[..2], [PendingStatus::Expired; 2]);
    // An expired transfer can no longer be posted.
    let r = h.create_transfers(vec![post(6, 1, u128::MAX)]).unwrap();
    assert_eq!(r[0].code, TR::PendingTransferExpired);
    engine.shutdown().unwrap();
}

#[test]
fn two_snapshots_with_no_write_between_keep_the_directory_openable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.snapshot_wal_bytes = 0;
    let engine = Engine::open(cfg.clone()).unwrap();
    let h = engine.handle();
    setup(&h);
    write_ok(&h, plain_batch(1, 100));
    let first = h.snapshot().unwrap();
    // Nothing written since: this snapshot is taken after the same record.
    let second = h.snapshot().unwrap();
    assert_eq!(first, second);
    let (digest, _, _) = state(&h);
    engine.shutdown().unwrap();
    assert_reopens_to(cfg, digest).shutdown().unwrap();
}

#[test]
fn an_explicit_snapshot_right_after_an_automatic_one_keeps_the_directory_openable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    // Every write record starts an automatic snapshot.
    cfg.snapshot_wal_bytes = 1;
    let engine = Engine::open(cfg.clone()).unwrap();
    let h = engine.handle();
    setup(&h);
    write_ok(&h, plain_batch(1, 100));
    // Taken after the same record as the automatic snapshot the write above started.
    h.snapshot().unwrap();
    let (digest, _, _) = state(&h);
    engine.shutdown().unwrap();
    assert_reopens_to(cfg, digest).shutdown().unwrap();
}

/// Reopens a directory, which must open, and checks it holds the acknowledged state.
fn assert_reopens_to(cfg: EngineConfig, digest: [u8; 32]) -> Engine {
    let engine = match Engine::open(cfg) {
        Ok(engine) => engine,
        Err(e) => panic!("acknowledged state can no longer be opened: {e}"),
    };
    assert_eq!(state(&engine.handle()).0, digest);
    engine
}

/// The path a snapshot taken after record `seq` is first written to.
fn snapshot_tmp(data_dir: &std::path::Path, seq: u64) -> std::path::PathBuf {
    data_dir.join("snapshots").join(format!("{seq:020}.snap.tmp"))
}

#[test]
fn a_failed_snapshot_loses_nothing_and_the_next_one_starts_a_new_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.snapshot_wal_bytes = 0;
    let engine = Engine::open(cfg.clone()).unwrap();
    let h = engine.handle();
    setup(&h); // records 1 and 2
    write_ok(&h, plain_batch(1, 100)); // 3
    assert_eq!(h.snapshot().unwrap(), 3);
    write_ok(&h, plain_batch(1000, 100)); // 4
                                          // A directory where the snapshot file would be written: the write fails.
    std::fs::create_dir(snapshot_tmp(tmp.path(), 4)).unwrap();
    assert!(matches!(h.snapshot(), Err(EngineError::SnapshotFailed(_))));
    // The engine goes on.
    write_ok(&h, plain_batch(2000, 100)); // 5
    assert_eq!(h.snapshot().unwrap(), 5);
    write_ok(&h, plain_batch(3000, 10)); // 6
    let (digest, counts, _) = state(&h);
    engine.shutdown().unwrap();
    let engine = Engine::open(cfg).unwrap();
    assert_eq!(engine.recovery().snapshot_seq, 5);
    assert_eq!(engine.recovery().snapshot_transfers, 300);
    let (digest2, counts2, violations) = state(&engine.handle());
    assert_eq!((digest2, counts2), (digest, counts));
    assert!(violations.is_empty(), "{violations:?}");
    engine.shutdown().unwrap();
}

#[test]
fn a_snapshot_failing_after_the_next_one_started_keeps_the_directory_openable() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.snapshot_wal_bytes = 0; // only the snapshots asked for below
    std::fs::create_dir_all(tmp.path().join("snapshots")).unwrap();
    std::fs::create_dir_all(tmp.path().join("wal")).unwrap();
    std::fs::write(tmp.path().join("FORMAT"), "farthing-data 1\nwal-checksum-seed 7\n").unwrap();
    // The snapshot after record 3 is written to a FIFO: the snapshot thread waits in open()
    // until this test opens it to read, and then fails (a FIFO cannot be fsynced).
    let fifo = snapshot_tmp(tmp.path(), 3);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let engine = Engine::open(cfg.clone()).unwrap();
    let h = engine.handle();
    setup(&h); // records 1 and 2
    write_ok(&h, plain_batch(1, 100)); // record 3
    let first = {
        let h = h.clone();
        std::thread::spawn(move || h.snapshot()) // waits at the FIFO
    };
    std::thread::sleep(Duration::from_millis(100));
    write_ok(&h, plain_batch(1000, 100)); // record 4
    let second = {
        let h = h.clone();
        std::thread::spawn(move || h.snapshot()) // chains after record 3's, queued behind it
    };
    std::thread::sleep(Duration::from_millis(100));
    let mut written = Vec::new();
    std::fs::File::open(&fifo).unwrap().read_to_end(&mut written).unwrap();
    assert!(matches!(first.join().unwrap(), Err(EngineError::SnapshotFailed(_))));
    // Snapshot 4 would continue a chain whose previous part was never written: refused.
    assert!(matches!(second.join().unwrap(), Err(EngineError::SnapshotFailed(_))));
    write_ok(&h, plain_batch(2000, 10)); // record 5
    assert_eq!(h.snapshot().unwrap(), 5); // self-contained
    let (digest, _, _) = state(&h);
    engine.shutdown().unwrap();
    let names: Vec<_> =
        snapshots(tmp.path()).iter().map(|p| p.file_name().unwrap().to_owned()).collect();
    assert_eq!(names, ["00000000000000000005.snap"]);
    let engine = assert_reopens_to(cfg, digest);
    assert_eq!(engine.recovery().snapshot_transfers, 210);
    engine.shutdown().unwrap();
}

#[test]
fn a_stopped_engine_answers_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    engine.shutdown().unwrap();
    assert_eq!(h.create_transfers(plain_batch(1, 1)).unwrap_err(), EngineError::Stopped);
    assert_eq!(h.try_create_transfers(plain_batch(1, 1)).unwrap_err(), EngineError::Stopped);
    assert_eq!(h.read(|sm| sm.counts()).unwrap_err(), EngineError::Stopped);
    assert_eq!(h.snapshot().unwrap_err(), EngineError::Stopped);
}

#[test]
fn a_panicking_read_is_answered_and_the_engine_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    write_ok(&h, plain_batch(1, 50));
    let r = h.read(|sm| -> u64 {
        panic!("a read that panics, with {} transfers", sm.counts().transfers)
    });
    match r.unwrap_err() {
        EngineError::ReadPanicked(reason) => assert!(reason.contains("50 transfers"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // A read cannot change the ledger: the engine serves on.
    write_ok(&h, plain_batch(100, 1));
    let (digest, counts, _) = state(&h);
    assert_eq!(counts.transfers, 51);
    engine.shutdown().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    assert_eq!(state(&engine.handle()).0, digest);
    engine.shutdown().unwrap();
}

#[test]
fn requests_queued_behind_shutdown_are_answered_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    let (release, reader) = block_engine(&h);
    let stopper = std::thread::spawn(move || engine.shutdown());
    std::thread::sleep(Duration::from_millis(200)); // Stop is queued...
    let (answer_tx, answers) = mpsc::channel();
    for id in 1..=3u128 {
        let (h, answer_tx) = (h.clone(), answer_tx.clone());
        std::thread::spawn(move || answer_tx.send(h.create_transfers(vec![transfer(id, 1, 2, 1)])));
    }
    std::thread::sleep(Duration::from_millis(200)); // ...and three transfers behind it.
    release.send(()).unwrap();
    reader.join().unwrap();
    stopper.join().unwrap().unwrap();
    for n in 0..3 {
        match answers.recv_timeout(Duration::from_secs(5)) {
            // Stopped; or Ok, had it been queued before the Stop after all.
            Ok(r) => assert!(matches!(r, Err(EngineError::Stopped) | Ok(_)), "{r:?}"),
            Err(_) => panic!("{} of 3 requests submitted during shutdown never answered", 3 - n),
        }
    }
}
