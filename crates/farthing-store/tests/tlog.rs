//! The transparency log as the engine keeps it: a leaf per committed transfer, signed
//! checkpoints that only ever grow consistently, receipts that verify with the public key
//! alone, and a persisted tree that a restart (or a rebuild from the ledger) reproduces.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use farthing_ledger::leaf::{decode_leaf, encode_leaf};
use farthing_ledger::CreateTransferResult;
use farthing_store::tlog::{log_dir, read_checkpoints, transfer_leaf_hash, verifier_key};
use farthing_store::{Engine, EngineError};
use farthing_tlog::checkpoint::Checkpoint;
use farthing_tlog::note::NoteVerifier;
use farthing_tlog::proof::TlogProof;
use farthing_tlog::{verify_consistency, Tree};

fn key(dir: &std::path::Path) -> NoteVerifier {
    NoteVerifier::parse(&verifier_key(dir).unwrap()).unwrap()
}

#[test]
fn receipts_prove_committed_transfers_and_only_those() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    let results = h
        .create_transfers(vec![
            transfer(100, 1, 2, 5),
            transfer(101, WALLET, 2, 5), // refused: the wallet is empty
            pending(102, 1, 3, 40, 0),
        ])
        .unwrap();
    assert_eq!(results[1].code, CreateTransferResult::ExceedsCredits);
    h.create_transfers(vec![post(103, 102, 30)]).unwrap();

    let key = key(tmp.path());
    for (id, index) in [(100, 0), (102, 1), (103, 2)] {
        let receipt = h.receipt(id).unwrap().expect("committed");
        assert_eq!(receipt.proof.index, index);
        let text = receipt.proof.to_text();
        let parsed = TlogProof::parse(&text).unwrap();
        let (cp, leaf) = parsed.verify(&key).unwrap();
        assert!(cp.size > index);
        let t = decode_leaf(leaf).unwrap();
        assert_eq!(t, receipt.transfer);
        assert_eq!(t.id, id);
    }
    // The post's leaf records the posted amount and its link to the pending transfer.
    let post = h.receipt(103).unwrap().unwrap().transfer;
    assert_eq!((post.amount, post.pending_id), (30, 102));
    assert!(post.timestamp > 0);
    assert_eq!(h.receipt(101).unwrap(), None, "a refused transfer is not a leaf");
    assert_eq!(h.receipt(999).unwrap(), None);
    engine.shutdown().unwrap();
}

#[test]
fn checkpoints_grow_consistently_across_restarts_and_replay_gives_the_same_root() {
    let tmp = tempfile::tempdir().unwrap();
    let mut notes = Vec::new();
    for round in 0..3u128 {
        let engine = Engine::open(config(tmp.path())).unwrap();
        let h = engine.handle();
        if round == 0 {
            setup(&h);
        }
        let batch = (0..50).map(|i| transfer(1000 * (round + 1) + i, 1, 2, 1)).collect();
        h.create_transfers(batch).unwrap();
        notes.push(h.checkpoint().unwrap());
        engine.shutdown().unwrap();
    }
    let key = key(tmp.path());
    let cps: Vec<Checkpoint> = notes.iter().map(|n| Checkpoint::open(n, &key).unwrap()).collect();
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), [50, 100, 150]);

    // Every checkpoint on file verifies, and each is consistent with the next.
    let (stored, _) = read_checkpoints(tmp.path()).unwrap();
    assert!(stored.ends_with(&notes));
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    for pair in cps.windows(2) {
        let proof = h.consistency_proof(pair[0].size, pair[1].size).unwrap();
        verify_consistency(pair[0].size, pair[1].size, &pair[0].root, &pair[1].root, &proof)
            .unwrap();
    }
    assert!(h.consistency_proof(0, 50).is_err(), "a proof from size 0 is refused");
    assert!(h.consistency_proof(50, 151).is_err(), "past the latest checkpoint");

    // Replay (the ledger) rebuilds exactly the root that was signed.
    let transfers = h.read(|sm| sm.transfers().to_vec()).unwrap();
    let mut rebuilt = Tree::new();
    for t in &transfers {
        rebuilt.push(transfer_leaf_hash(t));
    }
    assert_eq!(rebuilt.root(150).unwrap(), cps[2].root);
    engine.shutdown().unwrap();
}

#[test]
fn the_signing_key_is_private_and_a_damaged_tree_is_rebuilt_from_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    h.create_transfers((0..20).map(|i| transfer(500 + i, 1, 2, 1)).collect()).unwrap();
    let signed = h.checkpoint().unwrap();
    engine.shutdown().unwrap();

    let key_file = log_dir(tmp.path()).join("key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let public = verifier_key(tmp.path()).unwrap();
    assert!(public.starts_with("farthing.local/"), "{public}");
    assert!(!std::fs::read_to_string(&key_file).unwrap().contains(&public));

    // Damage the log's files (a fingerprint, an upper-level hash): they are derived, the
    // ledger still matches what was signed, so they are rewritten and receipts stay right.
    let dir = log_dir(tmp.path());
    let verifier = NoteVerifier::parse(&public).unwrap();
    let flip = |path: &std::path::Path, at: usize| {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at] ^= 1;
        std::fs::write(path, bytes).unwrap();
    };
    let fingerprints = dir.join("leaves.fp");
    let before = std::fs::read(&fingerprints).unwrap();
    assert_eq!(before.len(), 20 * 8);
    flip(&fingerprints, 5 * 8);
    let engine = Engine::open(config(tmp.path())).unwrap();
    let receipt = engine.handle().receipt(504).unwrap().unwrap();
    receipt.proof.verify(&verifier).unwrap();
    assert_eq!(receipt.proof.checkpoint, signed);
    engine.shutdown().unwrap();
    assert_eq!(std::fs::read(&fingerprints).unwrap(), before, "rewritten");

    // A key others can read is refused.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Engine::open(config(tmp.path())).err().expect("refused").to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn with_the_log_off_there_are_no_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.log = false;
    let engine = Engine::open(c).unwrap();
    let h = engine.handle();
    setup(&h);
    h.create_transfers(vec![transfer(1, 1, 2, 1)]).unwrap();
    assert_eq!(h.receipt(1), Err(EngineError::LogOff));
    engine.shutdown().unwrap();
    // Turned back on, the log catches up from the ledger.
    let engine = Engine::open(config(tmp.path())).unwrap();
    let receipt = engine.handle().receipt(1).unwrap().unwrap();
    assert_eq!(receipt.proof.extra.as_deref(), Some(&encode_leaf(&receipt.transfer)[..]));
    engine.shutdown().unwrap();
}

#[test]
fn a_signed_record_cut_off_the_wal_is_refused_not_taken_for_a_torn_write() {
    // The WAL cannot tell damage confined to its last record from a torn write; the log
    // can, once a checkpoint signed that record's transfers.
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    write_ok(&h, plain_batch(1, 10));
    write_ok(&h, plain_batch(100, 10));
    h.checkpoint().unwrap();
    engine.shutdown().unwrap();
    let last = wal_records(tmp.path()).pop().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&last.file).unwrap();
    file.set_len(last.offset + 40).unwrap();
    let err = Engine::open(config(tmp.path())).err().expect("refused").to_string();
    assert!(err.contains("does not match the log's signed checkpoint of size 20"), "{err}");
    let len = std::fs::metadata(&last.file).unwrap().len();
    assert_eq!(len, last.offset + 40, "the evidence is left for the audit");
}

#[test]
fn checkpoints_come_every_n_leaves_and_after_the_interval_without_being_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.checkpoint_leaves = 100;
    c.checkpoint_interval_ms = 3_600_000;
    let engine = Engine::open(c).unwrap();
    let h = engine.handle();
    setup(&h);
    for round in 0..7u128 {
        write_ok(&h, plain_batch(1 + round * 1000, 50));
    }
    engine.shutdown().unwrap();
    let key = key(tmp.path());
    let sizes: Vec<u64> = read_checkpoints(tmp.path())
        .unwrap()
        .0
        .iter()
        .map(|n| Checkpoint::open(n, &key).unwrap().size)
        .collect();
    // Every 100 leaves (batches of 50), and the rest at shutdown.
    assert_eq!(sizes, [100, 200, 300, 350]);

    // With a short interval, a checkpoint covers a write soon after, unasked.
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.checkpoint_interval_ms = 20;
    let engine = Engine::open(c).unwrap();
    let h = engine.handle();
    setup(&h);
    write_ok(&h, plain_batch(1, 10));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let key = self::key(tmp.path());
    loop {
        let (notes, _) = read_checkpoints(tmp.path()).unwrap();
        if notes.last().is_some_and(|n| Checkpoint::open(n, &key).unwrap().size == 10) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint after the interval");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    engine.shutdown().unwrap();
}

#[test]
fn log_files_cut_short_by_a_crash_are_completed_from_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(tmp.path())).unwrap();
    let h = engine.handle();
    setup(&h);
    for round in 0..6u128 {
        write_ok(&h, plain_batch(1 + round * 1000, 100));
    }
    engine.shutdown().unwrap();
    let dir = log_dir(tmp.path());
    let (fp, l8) = (dir.join("leaves.fp"), dir.join("level-08.hashes"));
    let (fp_bytes, l8_bytes) = (std::fs::read(&fp).unwrap(), std::fs::read(&l8).unwrap());
    assert_eq!((fp_bytes.len(), l8_bytes.len()), (600 * 8, 2 * 32));
    // Cut mid-entry, at different places, as a crash between the writes could.
    std::fs::write(&fp, &fp_bytes[..300 * 8 + 3]).unwrap();
    std::fs::write(&l8, &l8_bytes[..32 + 5]).unwrap();
    let stored = farthing_store::tlog::load_stored(tmp.path()).unwrap();
    assert_eq!(stored.size(), 300, "the prefix both files agree on");
    let engine = Engine::open(config(tmp.path())).unwrap();
    let receipt = engine.handle().receipt(5050).unwrap().unwrap();
    receipt.proof.verify(&key(tmp.path())).unwrap();
    engine.shutdown().unwrap();
    assert_eq!(std::fs::read(&fp).unwrap(), fp_bytes, "completed from the ledger");
    assert_eq!(std::fs::read(&l8).unwrap(), l8_bytes);
    let (report, _) =
        farthing_store::audit::audit(tmp.path(), &key(tmp.path()), &mut |_, _| {}).unwrap();
    assert!(report.passed(), "{:?}", report.problems);
    assert_eq!(report.leaves, 600);
}
