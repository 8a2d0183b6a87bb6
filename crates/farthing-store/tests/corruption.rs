//! Damaged data directories: a torn tail is cut off and forgotten (it was never
//! acknowledged); anything else is corruption, reported with its file and offset, and the
//! failed open leaves every file as it was.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use farthing_ledger::Transfer;
use farthing_store::{recover, DataDir, Engine, StoreError};
use tempfile::TempDir;

/// WAL segments of this size hold about a dozen 10-transfer records.
const SEGMENT_BYTES: u64 = 16 << 10;
const BATCHES: u128 = 40;
const PER_BATCH: usize = 10;

/// The WAL alone, without the transparency log. These tests cut durable records to stand in
/// for torn writes; with the log on, a cut record that a checkpoint signed is refused as
/// lost data (tests/tlog.rs), which is the point of the log but not of these tests.
fn wal_only(dir: &Path) -> farthing_store::EngineConfig {
    let mut cfg = config(dir);
    cfg.log = false;
    cfg
}

/// A closed data directory: the setup records, then `BATCHES` records of `PER_BATCH`
/// transfers each, in several segments. Returns it with the digest of its state.
fn written_dir(segment_bytes_max: u64) -> (TempDir, [u8; 32]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = wal_only(tmp.path());
    cfg.segment_bytes_max = segment_bytes_max;
    cfg.snapshot_wal_bytes = 0;
    let engine = Engine::open(cfg).unwrap();
    let h = engine.handle();
    setup(&h);
    for b in 0..BATCHES {
        write_ok(&h, plain_batch(1 + b * 100, PER_BATCH));
    }
    let digest = state(&h).0;
    engine.shutdown().unwrap();
    (tmp, digest)
}

fn open(dir: &Path) -> Result<Engine, StoreError> {
    let mut cfg = wal_only(dir);
    cfg.segment_bytes_max = SEGMENT_BYTES;
    Engine::open(cfg)
}

/// Opens a damaged directory, expecting corruption; checks that neither the engine nor a
/// read-only recovery changed a byte. Returns the file, offset and reason.
fn expect_corrupt(dir: &Path) -> (std::path::PathBuf, u64, String) {
    let before = dir_bytes(dir);
    let err = match open(dir) {
        Err(e) => e,
        Ok(_) => panic!("a corrupt directory opened"),
    };
    let read_only = {
        let d = DataDir::open(dir).unwrap();
        recover(&d, false).map(|_| ()).expect_err("read-only recovery fails too").to_string()
    };
    assert_eq!(read_only, err.to_string());
    let after = dir_bytes(dir);
    let names = |m: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>| {
        m.keys().cloned().collect::<Vec<_>>()
    };
    assert_eq!(names(&after), names(&before), "a failed open added or removed files");
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "a failed open changed {}", path.display());
    }
    match err {
        StoreError::Corrupt { file, offset, reason } => (file, offset, reason),
        e => panic!("expected Corrupt, got {e}"),
    }
}

/// The ids every record but the last holds, and those of the last.
fn ids_split(records: &[RecordInfo]) -> (Vec<u128>, Vec<u128>) {
    let (last, earlier) = records.split_last().unwrap();
    (earlier.iter().flat_map(|r| r.transfer_ids.clone()).collect(), last.transfer_ids.clone())
}

/// After a torn tail was cut: every earlier record is there, the torn one is not, and the
/// directory takes new writes that survive another restart.
fn check_cut_and_append(dir: &Path, records: &[RecordInfo], cut: u64) {
    let last = records.last().unwrap();
    let (kept, torn) = ids_split(records);
    let engine = open(dir).unwrap();
    let rec = engine.recovery().clone();
    assert_eq!(rec.torn_tail, Some((last.file.clone(), last.offset, cut)));
    assert_eq!(rec.last_seq, last.seq - 1);
    assert_eq!(std::fs::metadata(&last.file).unwrap().len(), last.offset, "the tail was cut off");
    let h = engine.handle();
    let (missing, present) = h
        .read(move |sm| {
            let missing: Vec<u128> =
                kept.iter().copied().filter(|id| sm.transfer(*id).is_none()).collect();
            let present: Vec<u128> =
                torn.iter().copied().filter(|id| sm.transfer(*id).is_some()).collect();
            (missing, present)
        })
        .unwrap();
    assert!(missing.is_empty(), "transfers of intact records lost: {missing:?}");
    assert!(present.is_empty(), "transfers of the torn record applied: {present:?}");
    assert!(state(&h).2.is_empty());

    write_ok(&h, plain_batch(900_000, 25));
    let (digest, counts, _) = state(&h);
    engine.shutdown().unwrap();
    let engine = open(dir).unwrap();
    assert_eq!(engine.recovery().torn_tail, None);
    assert_eq!(engine.recovery().last_seq, last.seq, "the new record took the torn one's number");
    let h = engine.handle();
    assert_eq!(state(&h).0, digest);
    assert_eq!(state(&h).1, counts);
    assert!(h.read(|sm| sm.transfer(900_000).is_some()).unwrap());
    engine.shutdown().unwrap();
}

#[test]
fn record_boundaries_match_the_scan() {
    let (tmp, _) = written_dir(SEGMENT_BYTES);
    let records = wal_records(tmp.path());
    assert_eq!(records.len() as u128, 2 + BATCHES);
    let segs = segments(tmp.path());
    assert!(segs.len() >= 3, "several segments: {}", segs.len());
    for seg in &segs {
        let from_headers = record_boundaries(&std::fs::read(seg).unwrap());
        let from_scan: Vec<(usize, usize)> = records
            .iter()
            .filter(|r| r.file == *seg)
            .map(|r| (r.offset as usize, r.len as usize))
            .collect();
        assert_eq!(from_headers, from_scan, "{}", seg.display());
    }
    for r in &records[2..] {
        assert_eq!(r.len, (32 + 16 + PER_BATCH * 128) as u64);
        assert_eq!(r.transfer_ids.len(), PER_BATCH);
    }
}

#[test]
fn a_truncated_tail_is_cut_off_and_appending_resumes() {
    let record_len = (32 + 16 + PER_BATCH * 128) as u64;
    // In the header, in the body, and all but the last byte.
    for cut in [10, 32 + record_len / 2, record_len - 1] {
        let (tmp, _) = written_dir(SEGMENT_BYTES);
        let records = wal_records(tmp.path());
        let last = records.last().unwrap().clone();
        assert_eq!(&last.file, segments(tmp.path()).last().unwrap());
        assert!(last.offset > 0, "the last segment holds earlier records too");
        let file = std::fs::OpenOptions::new().write(true).open(&last.file).unwrap();
        file.set_len(last.offset + cut).unwrap();
        drop(file);
        check_cut_and_append(tmp.path(), &records, cut);
    }
}

#[test]
fn a_torn_first_record_of_a_segment_leaves_an_empty_segment_to_append_to() {
    // Segments smaller than a record: every record has a segment of its own.
    let (tmp, _) = written_dir(1024);
    let records = wal_records(tmp.path());
    assert_eq!(segments(tmp.path()).len(), records.len());
    let last = records.last().unwrap();
    assert_eq!(last.offset, 0);
    let file = std::fs::OpenOptions::new().write(true).open(&last.file).unwrap();
    file.set_len(100).unwrap();
    drop(file);
    check_cut_and_append(tmp.path(), &records, 100);
}

#[test]
fn bytes_appended_after_the_last_record_are_a_torn_tail() {
    let (pristine, digest) = written_dir(SEGMENT_BYTES);
    let records = wal_records(pristine.path());
    let last_segment = segments(pristine.path()).last().unwrap().clone();
    let mut noise = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..1000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        noise.push((x >> 56) as u8);
    }
    let last_bytes = std::fs::read(&records.last().unwrap().file).unwrap();
    let last_off = records.last().unwrap().offset as usize;
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("a page of zeros", vec![0; 4096]),
        ("a few zeros", vec![0; 7]),
        ("noise", noise),
        // The start of a record whose rest never reached the disk.
        ("a partial record", last_bytes[last_off..last_off + 600].to_vec()),
    ];
    for (what, tail) in tails {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), tmp.path());
        let seg = tmp.path().join(last_segment.strip_prefix(pristine.path()).unwrap());
        let len = std::fs::metadata(&seg).unwrap().len();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.extend_from_slice(&tail);
        std::fs::write(&seg, bytes).unwrap();

        let engine = open(tmp.path()).unwrap();
        assert_eq!(
            engine.recovery().torn_tail,
            Some((seg.clone(), len, tail.len() as u64)),
            "{what}"
        );
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len, "{what}: truncated");
        let h = engine.handle();
        assert_eq!(state(&h).0, digest, "{what}: nothing acknowledged was lost");
        write_ok(&h, plain_batch(900_000, 5));
        let after = state(&h).0;
        engine.shutdown().unwrap();
        let engine = open(tmp.path()).unwrap();
        assert_eq!(engine.recovery().torn_tail, None, "{what}");
        assert_eq!(state(&engine.handle()).0, after, "{what}");
        engine.shutdown().unwrap();
    }
}

#[test]
fn a_flipped_byte_before_valid_records_is_corruption_at_that_record() {
    let (pristine, _) = written_dir(SEGMENT_BYTES);
    let records = wal_records(pristine.path());
    let segs = segments(pristine.path());
    let in_segment = |seg: &Path| -> Vec<RecordInfo> {
        records.iter().filter(|r| r.file == seg).cloned().collect()
    };
    let first = in_segment(&segs[0]);
    let last = in_segment(segs.last().unwrap());
    assert!(first.len() >= 3 && last.len() >= 3, "segments hold several records");
    let targets = [
        ("a middle record of the first segment", first[1].clone()),
        ("the last record of a sealed segment", first.last().unwrap().clone()),
        // Valid records follow in the same, last, segment: not a torn tail.
        ("a middle record of the last segment", last[last.len() - 2].clone()),
    ];
    for (what, target) in targets {
        let len = target.len;
        // Checksum, magic, body length (low and high byte), sequence number, timestamp,
        // sub-batch header, an event, the last byte.
        for at in [0, 5, 8, 9, 16, 24, 32, 32 + 16 + 5, len - 1] {
            let tmp = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), tmp.path());
            let file = tmp.path().join(target.file.strip_prefix(pristine.path()).unwrap());
            // The damaged record's offset, from the layout: records are a 32-byte header
            // and the body length the header gives.
            let boundaries = record_boundaries(&std::fs::read(&file).unwrap());
            let (offset, record_len) = boundaries
                [in_segment(&target.file).iter().position(|r| r.seq == target.seq).unwrap()];
            assert_eq!((offset as u64, record_len as u64), (target.offset, target.len));
            flip_byte(&file, offset as u64 + at);
            let (bad_file, bad_offset, reason) = expect_corrupt(tmp.path());
            assert_eq!(bad_file, file, "{what}, byte {at}: {reason}");
            assert_eq!(bad_offset, offset as u64, "{what}, byte {at}: {reason}");
        }
    }
}

#[test]
fn a_flipped_byte_in_a_snapshot_is_corruption_of_that_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = wal_only(tmp.path());
    cfg.snapshot_wal_bytes = 0;
    let engine = Engine::open(cfg).unwrap();
    let h = engine.handle();
    setup(&h);
    write_ok(&h, plain_batch(1, 200));
    h.snapshot().unwrap();
    write_ok(&h, plain_batch(1000, 200));
    h.snapshot().unwrap();
    write_ok(&h, plain_batch(2000, 50));
    engine.shutdown().unwrap();
    let snaps = snapshots(tmp.path());
    assert_eq!(snaps.len(), 2);
    // Both snapshots are needed: the second holds only the transfers after the first.
    for (snap, at, expected_offset) in [
        (&snaps[1], 32 + 20_000, 32), // the state (checksummed)
        (&snaps[1], 40, 32),          // the state's own header
        (&snaps[0], 32 + 100, 32),
        (&snaps[0], 0, 0),   // magic
        (&snaps[1], 16, 16), // the record it was taken after
        (&snaps[1], 24, 24), // the length
    ] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(tmp.path(), copy.path());
        let file = copy.path().join(snap.strip_prefix(tmp.path()).unwrap());
        flip_byte(&file, at);
        let (bad_file, bad_offset, reason) = expect_corrupt(copy.path());
        assert_eq!(bad_file, file, "byte {at}: {reason}");
        assert_eq!(bad_offset, expected_offset, "byte {at}: {reason}");
    }
}

#[test]
fn a_missing_segment_is_corruption() {
    let (pristine, _) = written_dir(SEGMENT_BYTES);
    let segs = segments(pristine.path());
    assert!(segs.len() >= 3);
    for (removed, reported) in [(1, 2), (0, 1)] {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), tmp.path());
        let name = |i: usize| tmp.path().join(segs[i].strip_prefix(pristine.path()).unwrap());
        std::fs::remove_file(name(removed)).unwrap();
        let (file, offset, reason) = expect_corrupt(tmp.path());
        assert_eq!(file, name(reported), "{reason}");
        assert_eq!(offset, 0);
        assert!(reason.contains("missing"), "{reason}");
    }
}

/// An empty (32-byte) record with a valid checksum, that a client can place inside the
/// body of its own record as the id and debit account of a transfer (bytes 0..32 of a
/// transfer fall on a 16-byte boundary of the record).
fn transfer_holding_a_record_header() -> Transfer {
    let mut fake = [0u8; 32];
    fake[4..8].copy_from_slice(b"FWR1");
    fake[16..24].copy_from_slice(&7u64.to_le_bytes());
    let crc = crc32c::crc32c(&fake[4..]);
    fake[0..4].copy_from_slice(&crc.to_le_bytes());
    Transfer {
        id: u128::from_le_bytes(fake[0..16].try_into().unwrap()),
        debit_account_id: u128::from_le_bytes(fake[16..32].try_into().unwrap()),
        credit_account_id: 1,
        amount: 1,
        asset: USD,
        code: 1,
        ..Default::default()
    }
}

#[test]
fn a_torn_record_is_a_torn_tail_whatever_its_events_hold() {
    let (tmp, _) = written_dir(SEGMENT_BYTES);
    let engine = open(tmp.path()).unwrap();
    let h = engine.handle();
    let batch = vec![
        transfer(800_001, 1, 2, 1),
        transfer_holding_a_record_header(),
        transfer(800_003, 1, 2, 1),
    ];
    h.create_transfers(batch).unwrap();
    engine.shutdown().unwrap();
    let records = wal_records(tmp.path());
    let last = records.last().unwrap();
    // The write was torn in the third event, after the second reached the disk.
    let cut = 32 + 16 + 2 * 128 + 64;
    let file = std::fs::OpenOptions::new().write(true).open(&last.file).unwrap();
    file.set_len(last.offset + cut).unwrap();
    drop(file);
    match open(tmp.path()) {
        Ok(engine) => {
            assert_eq!(engine.recovery().torn_tail, Some((last.file.clone(), last.offset, cut)));
            engine.shutdown().unwrap();
        }
        Err(e) => panic!("a torn, unacknowledged write made the directory unopenable: {e}"),
    }
}

#[test]
fn no_transfer_is_lost_or_invented_by_a_clean_scan() {
    let (tmp, _) = written_dir(SEGMENT_BYTES);
    let logged: BTreeSet<u128> =
        wal_records(tmp.path()).iter().flat_map(|r| r.transfer_ids.clone()).collect();
    let engine = open(tmp.path()).unwrap();
    let held: BTreeSet<u128> =
        engine.handle().read(|sm| sm.transfers().iter().map(|t| t.id).collect()).unwrap();
    assert_eq!(held, logged);
    assert_eq!(held.len(), BATCHES as usize * PER_BATCH);
    engine.shutdown().unwrap();
}

/// More bad bytes at the end than one group commit ever writes cannot be a torn write (a
/// wrong checksum seed, say, makes a whole segment look bad): start-up stops, nothing is cut.
#[test]
fn a_bad_tail_larger_than_any_write_is_corruption_not_a_torn_tail() {
    let (tmp, _) = written_dir(SEGMENT_BYTES);
    let seg = segments(tmp.path()).last().unwrap().clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let good_len = bytes.len() as u64;
    bytes.resize(bytes.len() + farthing_store::wal::WRITE_BYTES_MAX + 16, 0xAB);
    std::fs::write(&seg, &bytes).unwrap();
    let before = dir_bytes(tmp.path());
    let (file, offset, _) = expect_corrupt(tmp.path());
    assert_eq!(file, seg);
    assert_eq!(offset, good_len);
    assert_eq!(dir_bytes(tmp.path()), before, "a failed open must change nothing");
}
