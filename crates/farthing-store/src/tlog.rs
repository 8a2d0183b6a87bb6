//! The transparency log's files and its thread.
//!
//! ```text
//! D/tlog/key              the log's private signing key (C2SP note key), mode 0600
//! D/tlog/key.pub          its verifier key, name+keyid+base64: publish this
//! D/tlog/level-<k>.hashes complete-subtree hashes at height k (level 0: the leaf hashes),
//!                         32 bytes each, append-only
//! D/tlog/checkpoints      every signed checkpoint, oldest first: "<bytes>\n<note>"
//! ```
//! The tree is derived state: one leaf per committed transfer, in commit order, so the
//! ledger rebuilds it. It is persisted so that opening a large log and proving old entries
//! need no rebuild; on open it is checked against the latest signed checkpoint, and a ledger
//! that no longer matches a checkpoint the log signed refuses to start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use farthing_ledger::leaf::encode_leaf;
use farthing_ledger::{StateMachine, Transfer};
use farthing_tlog::checkpoint::Checkpoint;
use farthing_tlog::note::{NoteSigner, NoteVerifier};
use farthing_tlog::proof::TlogProof;
use farthing_tlog::{leaf_hash, verify_inclusion, Hash, Tree};
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

/// Loads the stored tree, cut back to the longest prefix its level files agree on (a crash
/// can leave them at different lengths; what is missing is rebuilt from the ledger).
pub fn load_tree(root: &Path) -> Result<Tree, StoreError> {
    let dir = log_dir(root);
    let mut levels: Vec<Vec<Hash>> = Vec::new();
    for k in 0..64 {
        let path = level_path(&dir, k);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(StoreError::io(&path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let hashes = bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect();
        levels.push(hashes);
    }
    let Some(first) = levels.first() else { return Ok(Tree::new()) };
    let mut size = first.len() as u64;
    for (k, level) in levels.iter().enumerate().skip(1) {
        let have = level.len() as u64;
        if have < size >> k {
            size = size.min(((have + 1) << k) - 1);
        }
    }
    for (k, level) in levels.iter_mut().enumerate() {
        level.truncate((size >> k) as usize);
    }
    Tree::from_levels(levels).map_err(|e| format_error(&dir, e))
}

/// Appends the levels' new hashes to their files.
struct LevelFiles {
    dir: PathBuf,
    /// Hashes in each level's file.
    written: Vec<u64>,
}

impl LevelFiles {
    /// Cuts the files back to exactly what `tree` holds (a prefix of what they held).
    fn open(root: &Path, tree: &Tree) -> Result<Self, StoreError> {
        let dir = log_dir(root);
        let mut written = Vec::new();
        for k in 0..64 {
            let keep = tree.levels().get(k).map_or(0, |l| l.len() as u64);
            let path = level_path(&dir, k);
            match OpenOptions::new().write(true).open(&path) {
                Ok(f) => f.set_len(keep * HASH_BYTES).map_err(StoreError::io(&path))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io { path, source: e }),
            }
            if k < tree.levels().len() {
                written.push(if path.exists() { keep } else { 0 });
            }
        }
        Ok(Self { dir, written })
    }

    /// Writes and syncs every hash not yet in the files.
    fn persist(&mut self, tree: &Tree) -> Result<(), StoreError> {
        let mut created = false;
        for (k, level) in tree.levels().iter().enumerate() {
            if self.written.len() == k {
                self.written.push(0);
                created = true;
            }
            let from = self.written[k] as usize;
            if from == level.len() {
                continue;
            }
            let path = level_path(&self.dir, k);
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(StoreError::io(&path))?;
            f.write_all(level[from..].as_flattened()).map_err(StoreError::io(&path))?;
            f.sync_data().map_err(StoreError::io(&path))?;
            self.written[k] = level.len() as u64;
        }
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
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
        let signer = ensure_key(root, origin)?;
        let key = signer.verifier();
        let (notes, checkpoints_len) = read_checkpoints(root)?;
        let cp_path = log_dir(root).join(CHECKPOINTS_FILE);
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
        let mut tree = load_tree(root)?;
        tree.truncate(tree.size().min(transfers.len() as u64));
        // The stored leaf hashes must be the ledger's: a difference is either damage to
        // the (derived) files or a ledger changed behind the log's back. A rebuild from the
        // ledger, held to the signed checkpoint, tells which.
        let mut files = LevelFiles::open(root, &tree)?;
        let differs = first_difference(&tree, transfers);
        if differs.is_none() {
            extend(&mut tree, transfers);
        }
        let signed = |tree: &Tree| match &latest {
            Some((cp, _)) => tree.root(cp.size).is_ok_and(|r| r == cp.root),
            None => true,
        };
        if differs.is_some() || !signed(&tree) {
            tree = Tree::new();
            extend(&mut tree, transfers);
            if let (false, Some((cp, _))) = (signed(&tree), &latest) {
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
            files = LevelFiles::open(root, &Tree::new())?;
        }
        files.persist(&tree)?;
        Ok(Self { root: root.to_path_buf(), signer, tree, files, latest, checkpoints_len })
    }

    pub(crate) fn size(&self) -> u64 {
        self.tree.size()
    }
}

/// The first leaf the stored tree holds that is not the hash of the ledger's transfer there,
/// checked on every core (a 10M-leaf log in well under a second).
fn first_difference(tree: &Tree, transfers: &[Transfer]) -> Option<u64> {
    let stored = &tree.levels()[0];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
    let chunk = stored.len().div_ceil(threads).max(1 << 16);
    std::thread::scope(|scope| {
        let workers: Vec<_> = stored
            .chunks(chunk)
            .enumerate()
            .map(|(n, hashes)| {
                let from = n * chunk;
                scope.spawn(move || {
                    let mine = &transfers[from..from + hashes.len()];
                    let bad =
                        mine.iter().zip(hashes).position(|(t, h)| transfer_leaf_hash(t) != *h);
                    bad.map(|i| (from + i) as u64)
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().expect("hashing thread")).min()
    })
}

/// Appends the leaves of `transfers` the tree does not hold yet.
fn extend(tree: &mut Tree, transfers: &[Transfer]) {
    for t in &transfers[tree.size() as usize..] {
        tree.push(transfer_leaf_hash(t));
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
                LogMsg::Leaves(transfers) => {
                    for t in &transfers {
                        self.state.tree.push(transfer_leaf_hash(t));
                    }
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
