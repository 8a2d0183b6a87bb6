//! The transparency log's files and its thread.
//!
//! ```text
//! D/tlog/key              the log's private signing key (C2SP note key), mode 0600
//! D/tlog/key.pub          its verifier key, name+keyid+base64: publish this
//! D/tlog/leaves.fp        the first 8 bytes of every leaf hash, in leaf order
//! D/tlog/level-<k>.hashes the hashes of the complete subtrees of 2^k leaves, k >= 8
//!                         (the tree's upper levels, as C2SP tiles of height 8 would)
//! D/tlog/checkpoints      every signed checkpoint, oldest first: "<bytes>\n<note>"
//! ```
//! The tree is derived state: one leaf per committed transfer, in commit order, so the
//! ledger rebuilds it, and every open does (on every core) and holds the result to the latest
//! signed checkpoint: a ledger that no longer matches what the log signed refuses to start.
//! The files record what the log saw, cheaply (8.3 bytes a leaf, not synced): the audit
//! compares the ledger with them to name the first leaf that changed, and the upper levels
//! let a reader check any 256-leaf range against them without the ledger.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use farthing_ledger::leaf::{encode_leaf, encode_leaf_into};
use farthing_ledger::{StateMachine, Transfer};
use farthing_tlog::checkpoint::Checkpoint;
use farthing_tlog::note::{NoteSigner, NoteVerifier};
use farthing_tlog::proof::TlogProof;
use farthing_tlog::{leaf_hash, leaf_hashes, verify_inclusion, Hash, Tree};
use rand::TryRngCore;

use crate::error::{EngineError, StoreError};
use crate::wal::sync_dir;

pub const LOG_DIR: &str = "tlog";
const KEY_FILE: &str = "key";
const VERIFIER_FILE: &str = "key.pub";
const CHECKPOINTS_FILE: &str = "checkpoints";
const HASH_BYTES: u64 = 32;

pub fn log_dir(root: &Path) -> PathBuf {
    root.join(LOG_DIR)
}

/// The leaf hash of a committed transfer.
pub fn transfer_leaf_hash(t: &Transfer) -> Hash {
    leaf_hash(&encode_leaf(t))
}

/// Hashes batches of committed transfers' leaves, reusing its buffers from batch to batch:
/// the leaves are encoded back to back (82 bytes a typical payment), then hashed together.
#[derive(Default)]
pub struct LeafHasher {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    hashes: Vec<Hash>,
}

impl LeafHasher {
    /// The leaf hashes of `transfers`, in order.
    pub fn hash(&mut self, transfers: &[Transfer]) -> &[Hash] {
        self.bytes.clear();
        self.ends.clear();
        for t in transfers {
            encode_leaf_into(t, &mut self.bytes);
            self.ends.push(self.bytes.len());
        }
        let mut start = 0;
        let entries: Vec<&[u8]> = self
            .ends
            .iter()
            .map(|&end| {
                let entry = &self.bytes[start..end];
                start = end;
                entry
            })
            .collect();
        self.hashes.clear();
        self.hashes.resize(transfers.len(), [0; 32]);
        leaf_hashes(&entries, &mut self.hashes);
        &self.hashes
    }
}

fn format_error(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Format { path: path.to_path_buf(), reason: reason.into() }
}

/// The log's signing key, made (with a random seed, mode 0600) if the directory has none.
/// The key's name is the log's origin: `origin` if given, else `farthing.local/<random>`.
pub fn ensure_key(root: &Path, origin: Option<&str>) -> Result<NoteSigner, StoreError> {
    let dir = log_dir(root);
    std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut seed).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let origin = match origin {
            Some(o) => o.to_string(),
            None => format!("farthing.local/{}", random_name()),
        };
        let signer = NoteSigner::from_seed(&origin, &seed)
            .map_err(|e| format_error(&path, format!("log origin {origin:?}: {e}")))?;
        let tmp = dir.join("key.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(StoreError::io(&tmp))?;
        writeln!(f, "{}", signer.encode_private()).map_err(StoreError::io(&tmp))?;
        f.sync_all().map_err(StoreError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
        sync_dir(&dir)?;
    }
    let meta = std::fs::metadata(&path).map_err(StoreError::io(&path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format_error(
            &path,
            format!("the log's private key is open to others (mode {mode:o}); chmod 600 it"),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(StoreError::io(&path))?;
    let signer = NoteSigner::parse_private(text.trim_end())
        .map_err(|e| format_error(&path, format!("not a signing key: {e}")))?;
    let public = dir.join(VERIFIER_FILE);
    let encoded = format!("{}\n", signer.verifier().encode());
    if std::fs::read_to_string(&public).ok().as_deref() != Some(encoded.as_str()) {
        let tmp = dir.join("key.pub.tmp");
        std::fs::write(&tmp, &encoded).map_err(StoreError::io(&tmp))?;
        std::fs::rename(&tmp, &public).map_err(StoreError::io(&public))?;
        sync_dir(&dir)?;
    }
    Ok(signer)
}

fn random_name() -> String {
    let mut bytes = [0u8; 6];
    let _ = rand::rngs::OsRng.try_fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The log's verifier key (`name+keyid+base64`), read without opening the directory.
pub fn verifier_key(root: &Path) -> Result<String, StoreError> {
    let path = log_dir(root).join(VERIFIER_FILE);
    let text = std::fs::read_to_string(&path).map_err(StoreError::io(&path))?;
    let key = text.trim_end().to_string();
    NoteVerifier::parse(&key)
        .map_err(|e| format_error(&path, format!("not a verifier key: {e}")))?;
    Ok(key)
}

fn level_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("level-{k:02}.hashes"))
}

const FINGERPRINTS_FILE: &str = "leaves.fp";
/// Bytes of each leaf hash kept in `leaves.fp`: enough that a changed leaf goes unnoticed
/// with odds of 2^-64.
pub const FINGERPRINT_BYTES: usize = 8;
/// The lowest tree level kept in files; lower ones are rebuilt from the leaves.
pub const STORED_LEVEL_MIN: usize = 8;

pub type Fingerprint = [u8; FINGERPRINT_BYTES];

pub fn fingerprint(hash: &Hash) -> Fingerprint {
    hash[..FINGERPRINT_BYTES].try_into().expect("prefix")
}

/// What the log's files hold: leaf fingerprints and the upper levels (index = level; the
/// levels below [`STORED_LEVEL_MIN`] are empty), cut back to the longest prefix of leaves
/// they agree on (a crash can leave them at different lengths).
#[derive(Debug, Default)]
pub struct StoredLog {
    pub fingerprints: Vec<Fingerprint>,
    pub levels: Vec<Vec<Hash>>,
}

impl StoredLog {
    pub fn size(&self) -> u64 {
        self.fingerprints.len() as u64
    }

    /// The first leaf below `upto` whose fingerprint or 2^k-leaf subtree (k >= 8) in the
    /// files is not `tree`'s.
    pub fn first_difference(&self, tree: &Tree, upto: u64) -> Option<u64> {
        let upto = upto.min(self.size()).min(tree.size()) as usize;
        let mut first =
            (0..upto).find(|i| self.fingerprints[*i] != fingerprint(&tree.levels()[0][*i]));
        for (k, level) in self.levels.iter().enumerate().skip(STORED_LEVEL_MIN) {
            let theirs = tree.levels().get(k).map_or(&[][..], |l| &l[..]);
            let n = (upto >> k).min(level.len()).min(theirs.len());
            if let Some(j) = (0..n).find(|j| level[*j] != theirs[*j]) {
                let at = j << k;
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        first.map(|i| i as u64)
    }
}

fn read_all(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Loads the log's files.
pub fn load_stored(root: &Path) -> Result<StoredLog, StoreError> {
    let dir = log_dir(root);
    let bytes = read_all(&dir.join(FINGERPRINTS_FILE))?.unwrap_or_default();
    let mut fingerprints: Vec<Fingerprint> =
        bytes.chunks_exact(FINGERPRINT_BYTES).map(|c| c.try_into().expect("fingerprint")).collect();
    let mut size = fingerprints.len() as u64;
    let mut levels: Vec<Vec<Hash>> = vec![Vec::new(); STORED_LEVEL_MIN];
    for k in STORED_LEVEL_MIN..64 {
        if size >> k == 0 {
            break;
        }
        let bytes = read_all(&level_path(&dir, k))?.unwrap_or_default();
        let level: Vec<Hash> =
            bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect();
        let have = level.len() as u64;
        if have < size >> k {
            size = ((have + 1) << k) - 1;
        }
        levels.push(level);
    }
    fingerprints.truncate(size as usize);
    for (k, level) in levels.iter_mut().enumerate() {
        level.truncate((size >> k) as usize);
    }
    Ok(StoredLog { fingerprints, levels })
}

/// The tree over `transfers`' leaves, hashed on every core.
pub fn build_tree(transfers: &[Transfer]) -> Tree {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
    let chunk = transfers.len().div_ceil(threads).max(1 << 16);
    let leaves: Vec<Hash> = std::thread::scope(|scope| {
        let parts: Vec<_> = transfers
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut hasher = LeafHasher::default();
                    let mut hashes = Vec::with_capacity(part.len());
                    for piece in part.chunks(BUILD_BATCH_LEAVES) {
                        hashes.extend_from_slice(hasher.hash(piece));
                    }
                    hashes
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().expect("hashing thread")).collect()
    });
    let mut levels = vec![leaves];
    while levels.last().is_some_and(|l| l.len() >= 2) {
        let below = levels.last().expect("a level");
        let pairs = below.len() / 2;
        let chunk = pairs.div_ceil(threads).max(1 << 15);
        let next: Vec<Hash> = std::thread::scope(|scope| {
            let parts: Vec<_> = (0..pairs)
                .step_by(chunk)
                .map(|from| {
                    let to = (from + chunk).min(pairs);
                    scope.spawn(move || {
                        let left: Vec<&[u8]> = (from..to).map(|j| &below[2 * j][..]).collect();
                        let right: Vec<&[u8]> = (from..to).map(|j| &below[2 * j + 1][..]).collect();
                        let mut out = vec![[0u8; 32]; to - from];
                        farthing_tlog::node_hashes(&left, &right, &mut out);
                        out
                    })
                })
                .collect();
            parts.into_iter().flat_map(|p| p.join().expect("hashing thread")).collect()
        });
        levels.push(next);
    }
    Tree::from_levels(levels).expect("levels built pairwise")
}

/// Leaves hashed per batch when rebuilding (bounds the scratch memory).
const BUILD_BATCH_LEAVES: usize = 1 << 14;

/// Appends what the tree adds to the files.
struct LevelFiles {
    dir: PathBuf,
    /// Leaves whose fingerprints are in the file.
    leaves_written: u64,
    /// Hashes in each upper level's file (index = level).
    written: Vec<u64>,
}

impl LevelFiles {
    /// Cuts the files back to the first `leaves` leaves (which they must hold).
    fn open(root: &Path, leaves: u64) -> Result<Self, StoreError> {
        let dir = log_dir(root);
        let cut = |path: &Path, len: u64| match OpenOptions::new().write(true).open(path) {
            Ok(f) => f.set_len(len).map_err(StoreError::io(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io { path: path.to_path_buf(), source: e }),
        };
        cut(&dir.join(FINGERPRINTS_FILE), leaves * FINGERPRINT_BYTES as u64)?;
        let mut written = vec![0; STORED_LEVEL_MIN];
        for k in STORED_LEVEL_MIN..64 {
            cut(&level_path(&dir, k), (leaves >> k) * HASH_BYTES)?;
            written.push(leaves >> k);
        }
        Ok(Self { dir, leaves_written: leaves, written })
    }

    /// Writes what the files do not hold yet. Not synced: the files are derived, and every
    /// open checks them against the ledger.
    fn persist(&mut self, tree: &Tree) -> Result<(), StoreError> {
        let append = |path: &Path, bytes: &[u8]| -> Result<(), StoreError> {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(StoreError::io(path))?;
            f.write_all(bytes).map_err(StoreError::io(path))
        };
        let leaves = &tree.levels()[0][self.leaves_written as usize..];
        if !leaves.is_empty() {
            let bytes: Vec<u8> = leaves.iter().flat_map(fingerprint).collect();
            append(&self.dir.join(FINGERPRINTS_FILE), &bytes)?;
            self.leaves_written = tree.size();
        }
        for (k, level) in tree.levels().iter().enumerate().skip(STORED_LEVEL_MIN) {
            let from = self.written[k] as usize;
            if from < level.len() {
                append(&level_path(&self.dir, k), level[from..].as_flattened())?;
                self.written[k] = level.len() as u64;
            }
        }
        Ok(())
    }
}

/// Makes the (empty) checkpoints file if there is none, durably: from then on its absence
/// beside a ledger with transfers is a loss, not a new log.
fn create_checkpoints_file(root: &Path) -> Result<(), StoreError> {
    let path = log_dir(root).join(CHECKPOINTS_FILE);
    if path.exists() {
        return Ok(());
    }
    let file = File::create(&path).map_err(StoreError::io(&path))?;
    file.sync_all().map_err(StoreError::io(&path))?;
    sync_dir(&log_dir(root))
}

/// Starts a new log for a directory whose log was lost (`farthing recover --new-log`): the
/// old `tlog/`, if any, is moved aside to `tlog.lost-<unix seconds>`, and a new key and an
/// empty checkpoints file are made. The engine then rebuilds the tree from the ledger and
/// signs it anew. Returns where the old log went, if there was one.
pub fn start_new_log(root: &Path, origin: Option<&str>) -> Result<Option<PathBuf>, StoreError> {
    let dir = log_dir(root);
    let moved = match dir.exists() {
        true => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = root.join(format!("tlog.lost-{now}"));
            std::fs::rename(&dir, &aside).map_err(StoreError::io(&dir))?;
            Some(aside)
        }
        false => None,
    };
    ensure_key(root, origin)?;
    create_checkpoints_file(root)?;
    sync_dir(root)?;
    crate::datadir::mark_holds(root, "tlog")?;
    Ok(moved)
}

/// Every signed checkpoint note in the file, oldest first, and the length of the valid part
/// (a torn final entry, from a crash while appending, is not counted).
pub fn read_checkpoints(root: &Path) -> Result<(Vec<String>, u64), StoreError> {
    let path = log_dir(root).join(CHECKPOINTS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(StoreError::Io { path, source: e }),
    };
    let mut notes = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(nl) = bytes[at..].iter().position(|b| *b == b'\n') else { break };
        let len: usize = std::str::from_utf8(&bytes[at..at + nl])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| crate::wal::corrupt(&path, at as u64, "bad checkpoint length line"))?;
        let start = at + nl + 1;
        let Some(note) = bytes.get(start..start + len) else { break };
        let note = String::from_utf8(note.to_vec())
            .map_err(|_| crate::wal::corrupt(&path, start as u64, "checkpoint is not UTF-8"))?;
        notes.push(note);
        at = start + len;
    }
    Ok((notes, at as u64))
}

fn append_checkpoint(root: &Path, note: &str, valid_len: u64) -> Result<u64, StoreError> {
    let path = log_dir(root).join(CHECKPOINTS_FILE);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    f.set_len(valid_len).map_err(StoreError::io(&path))?;
    let entry = format!("{}\n{note}", note.len());
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(valid_len)).map_err(StoreError::io(&path))?;
    f.write_all(entry.as_bytes()).map_err(StoreError::io(&path))?;
    f.sync_data().map_err(StoreError::io(&path))?;
    if valid_len == 0 {
        sync_dir(&log_dir(root))?;
    }
    Ok(valid_len + entry.len() as u64)
}

/// The log as the engine opens it: key, tree (matched to the ledger) and latest checkpoint.
pub(crate) struct LogState {
    root: PathBuf,
    signer: NoteSigner,
    tree: Tree,
    files: LevelFiles,
    latest: Option<(Checkpoint, String)>,
    checkpoints_len: u64,
}

impl LogState {
    /// Opens the log of `root` for the recovered ledger `sm`: loads the stored tree, drops
    /// what the ledger does not hold, adds what it holds beyond, and checks the result
    /// against the latest signed checkpoint.
    pub(crate) fn open(
        root: &Path,
        sm: &StateMachine,
        origin: Option<&str>,
    ) -> Result<Self, StoreError> {
        let dir = log_dir(root);
        let cp_path = dir.join(CHECKPOINTS_FILE);
        // A log once made and now missing is a loss; a ledger that never had one (run with
        // the log off) gets one built from it.
        if crate::datadir::holds(root, "tlog") {
            let key_path = dir.join(KEY_FILE);
            let missing =
                [(&dir, "tlog/"), (&key_path, "tlog/key"), (&cp_path, "tlog/checkpoints")]
                    .into_iter()
                    .find(|(path, _)| !path.exists());
            if let Some((path, name)) = missing {
                return Err(StoreError::NeedsRecovery {
                    path: path.clone(),
                    reason: format!(
                        "this directory's log was made (FORMAT says `holds tlog`) but {name} is missing; \
                         the ledger holds {} transfers: starting would sign a new log that no earlier \
                         receipt or checkpoint verifies against",
                        sm.transfers().len()
                    ),
                    command: format!("farthing recover --data-dir {} --new-log", root.display()),
                });
            }
        }
        let signer = ensure_key(root, origin)?;
        create_checkpoints_file(root)?;
        crate::datadir::mark_holds(root, "tlog")?;
        let key = signer.verifier();
        let (notes, checkpoints_len) = read_checkpoints(root)?;
        let latest = match notes.last() {
            Some(note) => {
                let cp = Checkpoint::open(note, &key).map_err(|e| {
                    format_error(&cp_path, format!("the latest checkpoint does not verify: {e}"))
                })?;
                Some((cp, note.clone()))
            }
            None => None,
        };
        let transfers = sm.transfers();
        let tree = build_tree(transfers);
        if let Some((cp, _)) = &latest {
            if tree.root(cp.size).ok() != Some(cp.root) {
                return Err(format_error(
                    &cp_path,
                    format!(
                        "the ledger ({} transfers) does not match the log's signed checkpoint \
                         of size {}: stored data was changed or lost; run `farthing audit` \
                         on this directory",
                        transfers.len(),
                        cp.size
                    ),
                ));
            }
        }
        // The ledger holds what was signed, so files that differ from its tree are damaged:
        // they are rewritten from the point where they differ.
        let stored = load_stored(root)?;
        let keep = stored.size().min(tree.size());
        let keep = stored.first_difference(&tree, keep).unwrap_or(keep);
        let mut files = LevelFiles::open(root, keep)?;
        files.persist(&tree)?;
        Ok(Self { root: root.to_path_buf(), signer, tree, files, latest, checkpoints_len })
    }

    pub(crate) fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Room (touched) for `leaves` leaves in all.
    pub(crate) fn reserve(&mut self, leaves: u64) {
        self.tree.reserve(leaves);
    }
}

/// When the log signs a new checkpoint by itself.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Sign once this long has passed since the last checkpoint and the log has grown.
    pub interval: Duration,
    /// Sign once this many leaves were added since the last checkpoint.
    pub leaves: u64,
}

/// A receipt: a committed transfer with its proof of inclusion under a signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub transfer: Transfer,
    /// The C2SP tlog-proof; its `extra` is the transfer's leaf.
    pub proof: TlogProof,
}

type LogReply<T> = oneshot::Sender<Result<T, EngineError>>;

pub(crate) enum LogMsg {
    /// Committed transfers whose records are durable, in commit order.
    Leaves(Vec<Transfer>),
    /// The inclusion proof of the leaf at `index`, whose hash the asker computed from the
    /// ledger: every proof is checked against the checkpoint before it is handed out.
    Prove {
        index: u64,
        leaf: Hash,
        reply: LogReply<TlogProof>,
    },
    /// Sign now (if the log grew) and answer the latest signed checkpoint.
    Checkpoint {
        reply: LogReply<String>,
    },
    Consistency {
        old: u64,
        new: u64,
        reply: LogReply<Vec<Hash>>,
    },
    Stop,
}

/// The log thread: appends leaves, signs checkpoints, answers proofs.
pub(crate) struct Logger {
    pub(crate) state: LogState,
    pub(crate) inbox: Receiver<LogMsg>,
    pub(crate) policy: CheckpointPolicy,
    pub(crate) failure: Arc<Mutex<Option<String>>>,
    /// Where emptied leaf buffers go back for reuse.
    pub(crate) recycle: crossbeam_channel::Sender<Vec<Transfer>>,
    pub(crate) hasher: LeafHasher,
    /// Whether the thread runs at idle priority now.
    pub(crate) idle: bool,
}

impl Logger {
    /// Serves until stopped. A failure to persist, or a broken invariant (the log about to
    /// sign a checkpoint inconsistent with one it signed), stops the engine: payments are
    /// never acknowledged by a ledger whose log cannot keep up its promise.
    pub(crate) fn run(mut self) {
        let failure = self.failure.clone();
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve()));
        let reason = match served {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("the transparency log failed: {e}"),
            Err(panic) => format!("the log thread panicked: {}", crate::engine::panic_text(&panic)),
        };
        eprintln!("farthing: {reason}");
        failure.lock().unwrap().get_or_insert(reason.clone());
        while let Ok(msg) = self.inbox.try_recv() {
            let error = EngineError::Failed(reason.clone());
            match msg {
                LogMsg::Prove { reply, .. } => drop(reply.send(Err(error))),
                LogMsg::Checkpoint { reply } => drop(reply.send(Err(error))),
                LogMsg::Consistency { reply, .. } => drop(reply.send(Err(error))),
                LogMsg::Leaves(_) | LogMsg::Stop => {}
            }
        }
    }

    fn serve(&mut self) -> Result<(), StoreError> {
        let mut signed_at = Instant::now();
        loop {
            let grown = self.state.size() > self.signed_size();
            let wait = if grown {
                self.policy.interval.saturating_sub(signed_at.elapsed())
            } else {
                self.policy.interval
            };
            let msg = match self.inbox.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    if grown {
                        self.sign()?;
                        signed_at = Instant::now();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => LogMsg::Stop,
            };
            match msg {
                LogMsg::Leaves(mut transfers) => {
                    // Encoded here, not on the engine thread: the engine only copies.
                    self.yield_to_the_engine(self.inbox.len());
                    self.state.tree.extend(self.hasher.hash(&transfers));
                    transfers.clear();
                    let _ = self.recycle.try_send(transfers);
                    if self.state.size() - self.signed_size() >= self.policy.leaves {
                        self.sign()?;
                        signed_at = Instant::now();
                    }
                }
                LogMsg::Prove { index, leaf, reply } => {
                    if index >= self.signed_size() && index < self.state.size() {
                        self.sign()?;
                        signed_at = Instant::now();
                    }
                    let _ = reply.send(self.prove(index, &leaf));
                }
                LogMsg::Checkpoint { reply } => {
                    if self.state.latest.is_none() || self.state.size() > self.signed_size() {
                        self.sign()?;
                        signed_at = Instant::now();
                    }
                    let note = self.state.latest.as_ref().map(|(_, n)| n.clone());
                    let _ = reply.send(Ok(note.expect("signed above")));
                }
                LogMsg::Consistency { old, new, reply } => {
                    let answer = if new > self.signed_size() {
                        Err(EngineError::Log(format!(
                            "size {new} is past the latest checkpoint ({})",
                            self.signed_size()
                        )))
                    } else {
                        self.state
                            .tree
                            .consistency_proof(old, new)
                            .map_err(|e| EngineError::Log(e.to_string()))
                    };
                    let _ = reply.send(answer);
                }
                LogMsg::Stop => {
                    if self.state.size() > self.signed_size() {
                        self.sign()?;
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The log hashes off the critical path: while it keeps up, it runs at idle priority,
    /// so the engine and WAL threads (and the clients) have the cores first and the log
    /// takes the time they spend waiting on the disk. Once its queue is half full it runs
    /// as an ordinary thread again, so it can never be starved behind the work it holds up.
    fn yield_to_the_engine(&mut self, queued: usize) {
        let idle = match self.idle {
            true => queued < self.inbox.capacity().unwrap_or(usize::MAX) * 3 / 4,
            false => queued == 0,
        };
        if idle != self.idle {
            self.idle = idle;
            let policy = if idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: plain system call on the calling thread; a failure leaves the policy
            // as it was, which is harmless.
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }

    fn signed_size(&self) -> u64 {
        self.state.latest.as_ref().map_or(0, |(cp, _)| cp.size)
    }

    fn prove(&self, index: u64, leaf: &Hash) -> Result<TlogProof, EngineError> {
        let (cp, note) = self
            .state
            .latest
            .as_ref()
            .filter(|(cp, _)| index < cp.size)
            .ok_or_else(|| EngineError::Log(format!("leaf {index} is not in the log yet")))?;
        let proof = self.state.tree.inclusion_proof(index, cp.size).expect("index below size");
        // A damaged stored hash would make a receipt nobody can verify: refuse instead.
        verify_inclusion(index, cp.size, leaf, &proof, &cp.root).map_err(|_| {
            EngineError::Log(format!(
                "the stored tree gives a bad proof for leaf {index}: its files are damaged; \
                 `farthing audit` locates the damage, and removing {}/level-*.hashes \
                 makes the next start rebuild them from the ledger",
                log_dir(&self.state.root).display()
            ))
        })?;
        Ok(TlogProof { extra: None, index, proof, checkpoint: note.clone() })
    }

    /// Signs a checkpoint of the whole tree, after making the tree's files durable. Never
    /// signs one inconsistent with the last: asserted, not assumed.
    fn sign(&mut self) -> Result<(), StoreError> {
        let s = &mut self.state;
        let size = s.tree.size();
        let root = s.tree.root(size).expect("size of the tree");
        if let Some((last, _)) = &s.latest {
            assert!(size >= last.size, "the log shrank from {} to {size} leaves", last.size);
            assert_eq!(
                s.tree.root(last.size).expect("older size"),
                last.root,
                "refusing to sign a checkpoint inconsistent with the one of size {}",
                last.size
            );
        }
        s.files.persist(&s.tree)?;
        let cp = Checkpoint {
            origin: s.signer.verifier().name().to_string(),
            size,
            root,
            extensions: Vec::new(),
        };
        let note = cp.sign(&s.signer).map_err(|e| format_error(&s.root, e.to_string()))?;
        s.checkpoints_len = append_checkpoint(&s.root, &note, s.checkpoints_len)?;
        s.latest = Some((cp, note));
        Ok(())
    }
}
