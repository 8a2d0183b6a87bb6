//! The write-ahead log: append-only segments of checksummed records, each one group commit.
//!
//! A record is a 32-byte header and a body:
//! - header: `crc32c` (u32, over header bytes 4..32 and the body), magic `FWR1`, body length
//!   (u32), zero (u32), sequence number (u64, 1, 2, 3... with no gap), last timestamp (u64);
//! - body: sub-batches, each `op` (u8), 3 zero bytes, event count (u32), timestamp of its first
//!   event (u64), then the events in their fixed encoding.
//!
//! Every size is a multiple of 16, so a scan for "is there a valid record after this bad
//! one?" only looks at 16-byte boundaries. Segments are named by the sequence number of their
//! first record and rotate at a configured size.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use farthing_ledger::limits::{ASSET_BYTES, BATCH_EVENTS_MAX, EVENT_BYTES};

use crate::error::StoreError;

pub const HEADER_BYTES: usize = 32;
pub const SUB_HEADER_BYTES: usize = 16;
const MAGIC: &[u8; 4] = b"FWR1";
/// The largest body a valid record can have: a full batch of the largest events, plus one
/// sub-batch header per event at worst.
pub const BODY_BYTES_MAX: usize = BATCH_EVENTS_MAX * (EVENT_BYTES + SUB_HEADER_BYTES) + 4096;
const SEGMENT_SUFFIX: &str = ".wal";
/// The largest record: header and the largest body.
pub const RECORD_BYTES_MAX: usize = HEADER_BYTES + BODY_BYTES_MAX;
/// The most one group commit writes at once (the engine keeps its writes under it), and so
/// the largest tail a crash can tear. A bad tail larger than this is corruption.
pub const WRITE_BYTES_MAX: usize = 16 * RECORD_BYTES_MAX;

/// What a sub-batch does. Stored as one byte; part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    CreateAssets = 1,
    CreateAccounts = 2,
    CreateTransfers = 3,
    /// Advance time with no events (expires pending transfers).
    Pulse = 4,
    /// Transfers each followed by the decision made about it (256 bytes a pair).
    CreateJudgedTransfers = 5,
}

impl Op {
    pub fn from_u8(value: u8) -> Option<Self> {
        [
            Self::CreateAssets,
            Self::CreateAccounts,
            Self::CreateTransfers,
            Self::Pulse,
            Self::CreateJudgedTransfers,
        ]
        .into_iter()
        .find(|op| *op as u8 == value)
    }
    pub fn event_bytes(self) -> usize {
        match self {
            Self::CreateAssets => ASSET_BYTES,
            Self::CreateAccounts | Self::CreateTransfers => EVENT_BYTES,
            Self::Pulse => 0,
            Self::CreateJudgedTransfers => 2 * EVENT_BYTES,
        }
    }
}

/// Builds one record's body, sub-batch by sub-batch.
#[derive(Debug, Default)]
pub struct RecordBuilder {
    buf: Vec<u8>,
    last_timestamp: u64,
    events: usize,
}

impl RecordBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(HEADER_BYTES + 64 * 1024);
        buf.resize(HEADER_BYTES, 0);
        Self { buf, last_timestamp: 0, events: 0 }
    }

    /// Events in the record so far.
    pub fn events(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER_BYTES
    }

    /// Adds a sub-batch; `encode` appends exactly `count` events of `op`'s size.
    pub fn push(
        &mut self,
        op: Op,
        count: usize,
        timestamp: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) {
        self.buf.push(op as u8);
        self.buf.extend_from_slice(&[0, 0, 0]);
        self.buf.extend_from_slice(&(count as u32).to_le_bytes());
        self.buf.extend_from_slice(&timestamp.to_le_bytes());
        let before = self.buf.len();
        encode(&mut self.buf);
        assert_eq!(self.buf.len() - before, count * op.event_bytes(), "event encoding size");
        self.last_timestamp = timestamp + count.max(1) as u64 - 1;
        self.events += count;
    }

    /// Seals the record with its sequence number and checksum.
    pub fn finish(mut self, seq: u64, seed: u32) -> Vec<u8> {
        let body_len = self.buf.len() - HEADER_BYTES;
        assert!(body_len <= BODY_BYTES_MAX, "record body of {body_len} bytes");
        let h = &mut self.buf[..HEADER_BYTES];
        h[4..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&(body_len as u32).to_le_bytes());
        h[12..16].copy_from_slice(&[0; 4]);
        h[16..24].copy_from_slice(&seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.last_timestamp.to_le_bytes());
        let crc = crc32c::crc32c_append(seed, &self.buf[4..]);
        self.buf[0..4].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// One sub-batch read back from a record.
#[derive(Clone, Copy, Debug)]
pub struct SubBatch<'a> {
    pub op: Op,
    pub count: usize,
    pub timestamp: u64,
    pub events: &'a [u8],
}

/// A record read back and checked.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub seq: u64,
    pub last_timestamp: u64,
    pub body: &'a [u8],
}

impl<'a> Record<'a> {
    /// Splits the body into sub-batches, checking every length.
    pub fn sub_batches(&self) -> Result<Vec<SubBatch<'a>>, String> {
        let mut out = Vec::new();
        let mut at = 0;
        let body = self.body;
        while at < body.len() {
            if body.len() - at < SUB_HEADER_BYTES {
                return Err("sub-batch header truncated".into());
            }
            let h = &body[at..at + SUB_HEADER_BYTES];
            let op = Op::from_u8(h[0]).ok_or_else(|| format!("unknown op {}", h[0]))?;
            let count = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
            let timestamp = u64::from_le_bytes(h[8..16].try_into().unwrap());
            let len = count * op.event_bytes();
            at += SUB_HEADER_BYTES;
            if count > BATCH_EVENTS_MAX || body.len() - at < len {
                return Err(format!("sub-batch of {count} events does not fit the record"));
            }
            out.push(SubBatch { op, count, timestamp, events: &body[at..at + len] });
            at += len;
        }
        Ok(out)
    }
}

/// Why the bytes at an offset are not a valid record.
fn parse_record(bytes: &[u8], seed: u32) -> Result<Record<'_>, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes left, less than a record header", bytes.len()));
    }
    if &bytes[4..8] != MAGIC {
        return Err("no record magic".into());
    }
    let body_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    if body_len > BODY_BYTES_MAX || !body_len.is_multiple_of(16) {
        return Err(format!("impossible body length {body_len}"));
    }
    if bytes.len() - HEADER_BYTES < body_len {
        return Err(format!("record of {body_len} bytes runs past the end of the file"));
    }
    let end = HEADER_BYTES + body_len;
    let stored = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    if crc32c::crc32c_append(seed, &bytes[4..end]) != stored {
        return Err("checksum mismatch".into());
    }
    Ok(Record {
        seq: u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
        last_timestamp: u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
        body: &bytes[HEADER_BYTES..end],
    })
}

/// True if a valid record starts anywhere after `from` (on a 16-byte boundary).
/// A torn write only ever damages the end of the log; a record that checks out *after* a bad
/// one, with a later sequence number, proves the damage is corruption. (The seeded checksum
/// keeps client-chosen event bytes from passing for a record.)
fn valid_record_after(bytes: &[u8], from: usize, seed: u32, expected_seq: u64) -> bool {
    let mut at = from + 16;
    while at + HEADER_BYTES <= bytes.len() {
        if &bytes[at + 4..at + 8] == MAGIC {
            if let Ok(r) = parse_record(&bytes[at..], seed) {
                if r.seq > expected_seq {
                    return true;
                }
            }
        }
        at += 16;
    }
    false
}

/// The segments of a WAL directory, in order, with the sequence number each starts at.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let path = entry.map_err(StoreError::io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        let first = stem.parse::<u64>().map_err(|_| StoreError::Format {
            path: path.clone(),
            reason: "a WAL segment's name is its first sequence number".into(),
        })?;
        segments.push((first, path));
    }
    segments.sort();
    Ok(segments)
}

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// What a scan of the WAL found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanSummary {
    pub segments: usize,
    pub records: u64,
    pub last_seq: u64,
    pub last_timestamp: u64,
    pub bytes: u64,
    /// A torn final write: where it started and how many bytes it held.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
}

/// Reads every record in order, checking checksums and sequence, and hands each to `visit`.
/// A bad record with no valid record after it in the last segment is a torn write (it was
/// never acknowledged) and is reported in `torn_tail`, not visited; any other bad record is
/// corruption and stops the scan with the file and offset.
pub fn scan(
    dir: &Path,
    seed: u32,
    mut visit: impl FnMut(&Record<'_>, &Path, u64) -> Result<(), StoreError>,
) -> Result<ScanSummary, StoreError> {
    let segments = list_segments(dir)?;
    let mut summary = ScanSummary { segments: segments.len(), ..Default::default() };
    let mut buffer = Vec::new();
    for (n, (first, path)) in segments.iter().enumerate() {
        let is_last = n + 1 == segments.len();
        // One buffer for every segment: fresh memory costs page faults, reused memory not.
        buffer.clear();
        File::open(path)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut buffer))
            .map_err(StoreError::io(path))?;
        let bytes = &buffer[..];
        if *first != summary.last_seq + 1 && !(n == 0 && bytes.is_empty()) {
            return Err(corrupt(
                path,
                0,
                format!(
                    "segment starts at record {first}, expected {}: records are missing",
                    summary.last_seq + 1
                ),
            ));
        }
        let mut at = 0usize;
        while at < bytes.len() {
            let record = match parse_record(&bytes[at..], seed) {
                Ok(record) => record,
                Err(reason) => {
                    let expected = summary.last_seq + 1;
                    let tail = bytes.len() - at;
                    if is_last
                        && tail <= WRITE_BYTES_MAX
                        && !valid_record_after(bytes, at, seed, expected)
                    {
                        let torn = bytes.len() - at;
                        summary.torn_tail = Some((path.clone(), at as u64, torn as u64));
                        break;
                    }
                    return Err(corrupt(path, at as u64, reason));
                }
            };
            if record.seq != summary.last_seq + 1 {
                return Err(corrupt(
                    path,
                    at as u64,
                    format!("record {} where {} was expected", record.seq, summary.last_seq + 1),
                ));
            }
            visit(&record, path, at as u64)?;
            summary.records += 1;
            summary.last_seq = record.seq;
            summary.last_timestamp = record.last_timestamp;
            at += HEADER_BYTES + record.body.len();
        }
        summary.bytes += at as u64;
    }
    Ok(summary)
}

pub fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { file: path.to_path_buf(), offset, reason: reason.into() }
}

/// Cuts a torn tail off the last segment, durably.
pub fn truncate_tail(path: &Path, offset: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new().write(true).open(path).map_err(StoreError::io(path))?;
    file.set_len(offset).map_err(StoreError::io(path))?;
    file.sync_all().map_err(StoreError::io(path))
}

/// Appends records to the current segment and makes them durable.
#[derive(Debug)]
pub struct WalWriter {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    len: u64,
    segment_bytes_max: u64,
    next_seq: u64,
}

impl WalWriter {
    /// Opens the WAL for appending after the record `last_seq` (the end of a clean scan).
    pub fn open(dir: &Path, last_seq: u64, segment_bytes_max: u64) -> Result<Self, StoreError> {
        let segments = list_segments(dir)?;
        let (path, fresh) = match segments.last() {
            Some((_, path)) => (path.clone(), false),
            None => (segment_path(dir, last_seq + 1), true),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        if fresh {
            sync_dir(dir)?;
        }
        let len = file.metadata().map_err(StoreError::io(&path))?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            file,
            path,
            len,
            segment_bytes_max,
            next_seq: last_seq + 1,
        })
    }

    /// Writes whole records (in sequence order) and fsyncs before returning: only then may
    /// they be acknowledged.
    pub fn append_durable(&mut self, records: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut chunk: Vec<&[u8]> = Vec::with_capacity(records.len());
        let mut chunk_len = 0u64;
        for record in records {
            let seq = u64::from_le_bytes(record[16..24].try_into().unwrap());
            assert_eq!(seq, self.next_seq, "WAL records must be appended in sequence");
            let full = self.len + chunk_len + record.len() as u64 > self.segment_bytes_max;
            if full && self.len + chunk_len > 0 {
                self.write_chunk(&chunk)?;
                chunk.clear();
                chunk_len = 0;
                self.rotate(seq)?;
            }
            chunk.push(record);
            chunk_len += record.len() as u64;
            self.next_seq += 1;
        }
        self.write_chunk(&chunk)?;
        self.file.sync_data().map_err(StoreError::io(&self.path))
    }

    fn write_chunk(&mut self, chunk: &[&[u8]]) -> Result<(), StoreError> {
        for record in chunk {
            self.file.write_all(record).map_err(StoreError::io(&self.path))?;
            self.len += record.len() as u64;
        }
        Ok(())
    }

    /// Seals the current segment (durably) and starts the next at `first_seq`.
    fn rotate(&mut self, first_seq: u64) -> Result<(), StoreError> {
        self.file.sync_data().map_err(StoreError::io(&self.path))?;
        let path = segment_path(&self.dir, first_seq);
        self.file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        self.path = path;
        self.len = 0;
        sync_dir(&self.dir)
    }
}

/// Makes a directory's entries (new or renamed files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io(dir))
}
