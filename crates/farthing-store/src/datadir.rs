//! The data directory: its format version, its lock, its snapshots, and recovery from it.
//!
//! ```text
//! D/FORMAT               "farthing-data 1", then "wal-checksum-seed N" (random, per directory),
//!                        then a "holds <part>" line for each part made once (tlog, server.redb)
//! D/LOCK                 held (flock) by the one process using D
//! D/wal/<seq>.wal        WAL segments, named by their first record
//! D/snapshots/<seq>.snap state after record <seq>, checksummed
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use farthing_ledger::codec::{
    decode_account, decode_asset, decode_judged_transfers, decode_transfer,
};
use farthing_ledger::limits::{ASSET_BYTES, EVENT_BYTES};
use farthing_ledger::StateMachine;

use crate::error::StoreError;
use crate::wal::{self, corrupt, Op, Record};

pub const FORMAT_VERSION: u32 = 1;
const FORMAT_FILE: &str = "FORMAT";
const SNAPSHOT_MAGIC: &[u8; 8] = b"FSNAP001";
const SNAPSHOT_HEADER_BYTES: usize = 32;
/// A snapshot is written and synced this many bytes at a time.
const SNAPSHOT_SYNC_BYTES: usize = 8 << 20;

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    pub root: PathBuf,
    /// Seeds every WAL checksum: per directory and random, so that bytes a client chose (an
    /// event's fields) can never pass for a record header.
    pub wal_seed: u32,
    _lock: File,
}

impl DataDir {
    /// Opens `root`, creating it (with its format file) if it does not exist or is empty.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(StoreError::io(root))?;
        let format = root.join(FORMAT_FILE);
        let lock_path = root.join("LOCK");
        let foreign = std::fs::read_dir(root)
            .map_err(StoreError::io(root))?
            .flatten()
            .any(|e| e.file_name() != "LOCK" && e.file_name() != FORMAT_FILE);
        if foreign && !format.exists() {
            return Err(StoreError::Format {
                path: root.to_path_buf(),
                reason: format!("not a Farthing data directory (no {FORMAT_FILE}) and not empty"),
            });
        }
        // Lock before creating anything, so two processes never both initialise one directory.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(StoreError::io(&lock_path))?;
        lock.try_lock().map_err(|_| StoreError::Locked { path: root.to_path_buf() })?;
        if !format.exists() {
            for sub in ["wal", "snapshots"] {
                std::fs::create_dir_all(root.join(sub)).map_err(StoreError::io(root))?;
            }
            let tmp = root.join("FORMAT.tmp");
            let mut f = File::create(&tmp).map_err(StoreError::io(&tmp))?;
            let seed = random_u32();
            writeln!(f, "farthing-data {FORMAT_VERSION}\nwal-checksum-seed {seed}")
                .map_err(StoreError::io(&tmp))?;
            f.sync_all().map_err(StoreError::io(&tmp))?;
            std::fs::rename(&tmp, &format).map_err(StoreError::io(&format))?;
            wal::sync_dir(root)?;
        }
        let text = std::fs::read_to_string(&format).map_err(|e| StoreError::Format {
            path: root.to_path_buf(),
            reason: format!("not a Farthing data directory (no readable {FORMAT_FILE}: {e})"),
        })?;
        let mut lines = text.lines();
        let version = lines
            .next()
            .and_then(|l| l.trim().strip_prefix("farthing-data "))
            .and_then(|v| v.parse::<u32>().ok());
        match version {
            Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(StoreError::Format {
                    path: format,
                    reason: format!(
                        "format version {v}; this build reads version {FORMAT_VERSION}"
                    ),
                })
            }
            None => {
                return Err(StoreError::Format { path: format, reason: "unreadable format".into() })
            }
        }
        let wal_seed = lines
            .next()
            .and_then(|l| l.trim().strip_prefix("wal-checksum-seed "))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| StoreError::Format {
                path: format.clone(),
                reason: "no wal-checksum-seed line".into(),
            })?;
        Ok(Self { root: root.to_path_buf(), wal_seed, _lock: lock })
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Total bytes of the files in the directory.
    pub fn bytes_on_disk(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.root)
    }
}

/// The WAL checksum seed of a data directory, read without opening (locking) it: for tools
/// and tests that read the WAL of a directory in use.
pub fn wal_seed(root: &Path) -> Result<u32, StoreError> {
    let format = root.join(FORMAT_FILE);
    let text = std::fs::read_to_string(&format).map_err(StoreError::io(&format))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("wal-checksum-seed "))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Format { path: format, reason: "no wal-checksum-seed".into() })
}

/// Whether the directory's `FORMAT` file says it holds `what` (`tlog`, `server.redb`): a
/// part made once, whose absence later is a loss, not a fresh start.
pub fn holds(root: &Path, what: &str) -> bool {
    let line = format!("holds {what}");
    std::fs::read_to_string(root.join(FORMAT_FILE))
        .is_ok_and(|text| text.lines().any(|l| l.trim() == line))
}

/// Records in `FORMAT` that the directory holds `what` (once; atomically: a new file
/// renamed over the old, then the directory synced).
pub fn mark_holds(root: &Path, what: &str) -> Result<(), StoreError> {
    if holds(root, what) {
        return Ok(());
    }
    let format = root.join(FORMAT_FILE);
    let mut text = std::fs::read_to_string(&format).map_err(StoreError::io(&format))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("holds {what}\n"));
    let tmp = root.join("FORMAT.tmp");
    let mut f = File::create(&tmp).map_err(StoreError::io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(StoreError::io(&tmp))?;
    f.sync_all().map_err(StoreError::io(&tmp))?;
    std::fs::rename(&tmp, &format).map_err(StoreError::io(&format))?;
    wal::sync_dir(root)
}

/// A random number from the operating system's entropy (through std's hasher keys).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish() as u32
}

/// Snapshot files, oldest first, with the record each was taken after.
fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let path = entry.map_err(StoreError::io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(seq) = name.strip_suffix(".snap").and_then(|s| s.parse::<u64>().ok()) {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Writes the encoded state taken after record `seq` as a snapshot, durably and atomically.
/// Snapshots form a chain (each holds the transfers since the one before), so none is
/// removed.
pub fn write_snapshot(dir: &Path, seq: u64, state: &[u8]) -> Result<PathBuf, StoreError> {
    let path = dir.join(format!("{seq:020}.snap"));
    let tmp = dir.join(format!("{seq:020}.snap.tmp"));
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[0..8].copy_from_slice(SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&crc32c::crc32c(state).to_le_bytes());
    header[16..24].copy_from_slice(&seq.to_le_bytes());
    header[24..32].copy_from_slice(&(state.len() as u64).to_le_bytes());
    let mut f = File::create(&tmp).map_err(StoreError::io(&tmp))?;
    f.write_all(&header).map_err(StoreError::io(&tmp))?;
    // Sync as it goes: one flush of a whole large snapshot would hold up the WAL's fsyncs
    // behind it for seconds.
    for chunk in state.chunks(SNAPSHOT_SYNC_BYTES) {
        f.write_all(chunk).and_then(|()| f.sync_data()).map_err(StoreError::io(&tmp))?;
    }
    f.sync_all().map_err(StoreError::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
    wal::sync_dir(dir)?;
    Ok(path)
}

/// True if a snapshot file holds its state from transfer 0 (needs no earlier part). Only the
/// first 48 bytes are read; the file is checked in full when it is loaded.
fn starts_chain(path: &Path) -> bool {
    let mut head = [0u8; SNAPSHOT_HEADER_BYTES + 16];
    let read = File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    read.is_ok() && head[SNAPSHOT_HEADER_BYTES + 8..] == [0u8; 8]
}

/// Removes the snapshot files older than `seq` (a self-contained snapshot made them
/// obsolete).
pub fn remove_snapshots_before(dir: &Path, seq: u64) -> Result<(), StoreError> {
    for (s, path) in list_snapshots(dir)? {
        if s < seq {
            std::fs::remove_file(&path).map_err(StoreError::io(&path))?;
        }
    }
    wal::sync_dir(dir)
}

/// Reads and checks one snapshot file: the record it was taken after, and the file's bytes
/// (the state follows the header).
fn read_snapshot(path: &Path) -> Result<(u64, Vec<u8>), StoreError> {
    let bytes = std::fs::read(path).map_err(StoreError::io(path))?;
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(path, 0, "not a snapshot (bad header)"));
    }
    let seq = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let len = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    if body.len() as u64 != len {
        return Err(corrupt(path, 24, format!("length {len}, file holds {}", body.len())));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if crc32c::crc32c(body) != crc {
        return Err(corrupt(path, SNAPSHOT_HEADER_BYTES as u64, "checksum mismatch"));
    }
    Ok((seq, bytes))
}

/// Loads the chain of snapshots: the state after the newest, and that record's number.
fn load_snapshots(dir: &Path, transfers: usize) -> Result<(u64, StateMachine), StoreError> {
    let files = list_snapshots(dir)?;
    if files.is_empty() {
        let mut sm = StateMachine::new();
        sm.reserve(0, transfers);
        return Ok((0, sm));
    }
    // The chain starts at the newest self-contained part; older files are obsolete (the
    // snapshot thread removes them once a self-contained part is durable).
    let start = files.iter().rposition(|(_, path)| starts_chain(path)).unwrap_or(0);
    let files = &files[start..];
    let mut parts = Vec::with_capacity(files.len());
    let mut seq = 0;
    for (named, path) in files {
        let (s, body) = read_snapshot(path)?;
        if s != *named || s < seq {
            return Err(corrupt(path, 16, format!("snapshot of record {s} named {named}")));
        }
        seq = s;
        parts.push(body);
    }
    let slices: Vec<&[u8]> = parts.iter().map(|p| &p[SNAPSHOT_HEADER_BYTES..]).collect();
    let sm = StateMachine::decode_snapshot_chain_reserving(&slices, transfers)
        .map_err(|(i, reason)| corrupt(&files[i].1, SNAPSHOT_HEADER_BYTES as u64, reason))?;
    Ok((seq, sm))
}

/// Applies one WAL record to the state machine, exactly as the engine did.
pub fn apply_record(
    sm: &mut StateMachine,
    record: &Record<'_>,
    file: &Path,
    offset: u64,
) -> Result<(), StoreError> {
    let batches = record.sub_batches().map_err(|r| corrupt(file, offset, r))?;
    for b in batches {
        if b.timestamp <= sm.last_timestamp() {
            return Err(corrupt(file, offset, "timestamps do not increase"));
        }
        match b.op {
            Op::CreateAssets => {
                let events: Vec<_> = b.events.chunks_exact(ASSET_BYTES).map(decode_asset).collect();
                sm.create_assets(&events, b.timestamp);
            }
            Op::CreateAccounts => {
                let events: Vec<_> =
                    b.events.chunks_exact(EVENT_BYTES).map(decode_account).collect();
                sm.create_accounts(&events, b.timestamp);
            }
            Op::CreateTransfers => {
                let events: Vec<_> =
                    b.events.chunks_exact(EVENT_BYTES).map(decode_transfer).collect();
                sm.create_transfers(&events, b.timestamp);
            }
            Op::CreateJudgedTransfers => {
                let (events, decisions) = decode_judged_transfers(b.events);
                let paired = events.iter().zip(&decisions);
                if paired.clone().any(|(t, d)| !d.is_none() && d.transfer_id != t.id) {
                    return Err(corrupt(file, offset, "a decision names another transfer"));
                }
                sm.create_judged_transfers(&events, &decisions, b.timestamp);
            }
            Op::Pulse => {
                sm.pulse(b.timestamp);
            }
        }
    }
    Ok(())
}

/// What recovery did, for logs and `farthing inspect`.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// The record the loaded snapshot was taken after (0: none loaded).
    pub snapshot_seq: u64,
    /// Transfers held by the snapshot chain; the next snapshot starts after them.
    pub snapshot_transfers: u64,
    pub records_replayed: u64,
    pub last_seq: u64,
    pub wal_bytes: u64,
    pub wal_segments: usize,
    /// A torn final write found (file, offset, bytes); cut off when repairing.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    pub duration: Duration,
}

/// Rebuilds the state: the chain of snapshots (any damaged one is an error naming it: they
/// are written atomically, so damage is real corruption), then every later WAL record. With `repair`, a torn tail is truncated so that appending can resume.
pub fn recover(dir: &DataDir, repair: bool) -> Result<(StateMachine, Recovery), StoreError> {
    let started = Instant::now();
    // Room for every transfer the WAL could hold (snapshots hold a subset of what it
    // logged), so neither loading nor replay ever regrows the tables.
    let wal_bytes: u64 = wal::list_segments(&dir.wal_dir())?
        .iter()
        .filter_map(|(_, path)| std::fs::metadata(path).ok())
        .map(|m| m.len())
        .sum();
    let upper = (wal_bytes / EVENT_BYTES as u64) as usize;
    let (snapshot_seq, mut sm) = load_snapshots(&dir.snapshot_dir(), upper)?;
    let snapshot_transfers = sm.counts().transfers;
    let mut replayed = 0u64;
    let summary = wal::scan(&dir.wal_dir(), dir.wal_seed, |record, file, offset| {
        if record.seq > snapshot_seq {
            // A record that breaks an invariant on replay is reported where it lies, not
            // as a panic on every start.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                apply_record(&mut sm, record, file, offset)
            }));
            outcome.unwrap_or_else(|_| {
                Err(corrupt(file, offset, "replaying this record broke a ledger invariant"))
            })?;
            replayed += 1;
        }
        Ok(())
    })?;
    if summary.last_seq < snapshot_seq {
        return Err(StoreError::Format {
            path: dir.wal_dir(),
            reason: format!(
                "the WAL ends at record {} but a snapshot was taken after record {snapshot_seq}",
                summary.last_seq
            ),
        });
    }
    if let (true, Some((file, offset, _))) = (repair, &summary.torn_tail) {
        wal::truncate_tail(file, *offset)?;
    }
    let recovery = Recovery {
        snapshot_seq,
        snapshot_transfers,
        records_replayed: replayed,
        last_seq: summary.last_seq,
        wal_bytes: summary.bytes,
        wal_segments: summary.segments,
        torn_tail: summary.torn_tail,
        duration: started.elapsed(),
    };
    Ok((sm, recovery))
}
