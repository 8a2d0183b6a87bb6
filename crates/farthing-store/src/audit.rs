//! The offline audit of a data directory: rebuild the ledger from its WAL and snapshots,
//! recompute the whole Merkle tree from it, and hold both to every checkpoint the log
//! signed. Trusts nothing in the directory but what the log's key signed.

use std::path::Path;
use std::time::{Duration, Instant};

use farthing_ledger::StateMachine;
use farthing_tlog::checkpoint::Checkpoint;
use farthing_tlog::note::NoteVerifier;
use farthing_tlog::Tree;

use crate::datadir::{self, DataDir};
use crate::error::StoreError;
use crate::tlog::{fingerprint, load_stored, read_checkpoints, LeafHasher};
use farthing_ledger::limits::BATCH_EVENTS_MAX;

/// Leaves between progress reports.
pub const AUDIT_PROGRESS_LEAVES: u64 = 1 << 20;

#[derive(Clone, Debug, Default)]
pub struct AuditReport {
    /// Leaves recomputed from the ledger (its committed transfers).
    pub leaves: u64,
    pub checkpoints: usize,
    /// The newest checkpoint that verified and matched the recomputed tree.
    pub latest_good: Option<Checkpoint>,
    /// Everything found wrong; empty means the audit passed.
    pub problems: Vec<String>,
    /// The first leaf whose data is not what the log signed, when it can be named.
    pub first_bad_leaf: Option<u64>,
    /// Otherwise the range `[from, to)` holding it, as bounded by the checkpoints.
    pub bad_range: Option<(u64, u64)>,
    /// Ledger invariants broken by the recovered state.
    pub invariants: Vec<String>,
    pub recovery: Duration,
    pub hashing: Duration,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.invariants.is_empty()
    }
}

/// Audits the directory `root` against the log's verifier key. `progress(done, total)` is
/// called as leaves are hashed. Errors are directories that cannot be read or recovered at
/// all (a broken WAL checksum is one: the audit names its file and offset).
pub fn audit(
    root: &Path,
    key: &NoteVerifier,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(AuditReport, StateMachine), StoreError> {
    if !root.join("FORMAT").exists() {
        return Err(StoreError::Format {
            path: root.to_path_buf(),
            reason: "not a Farthing data directory (no FORMAT file)".into(),
        });
    }
    let dir = DataDir::open(root)?;
    let started = Instant::now();
    let (sm, _) = datadir::recover(&dir, false)?;
    let mut report = AuditReport { recovery: started.elapsed(), ..Default::default() };

    let started = Instant::now();
    let transfers = sm.transfers();
    let total = transfers.len() as u64;
    let mut tree = Tree::new();
    tree.reserve(total);
    let mut hasher = LeafHasher::default();
    for (n, part) in transfers.chunks(AUDIT_PROGRESS_LEAVES as usize).enumerate() {
        progress(n as u64 * AUDIT_PROGRESS_LEAVES, total);
        for batch in part.chunks(BATCH_EVENTS_MAX) {
            tree.extend(hasher.hash(batch));
        }
    }
    progress(total, total);
    report.hashing = started.elapsed();
    report.leaves = total;

    let (notes, _) = read_checkpoints(root)?;
    report.checkpoints = notes.len();
    if notes.is_empty() && total > 0 {
        report
            .problems
            .push(format!("the ledger holds {total} transfers but no signed checkpoint"));
    }
    let stored = load_stored(root)?;
    // The first checkpoint that fails, and the size of the last one before it that held.
    let mut good_size = 0u64;
    let mut failed: Option<Checkpoint> = None;
    let mut last_size = 0u64;
    for (n, note) in notes.iter().enumerate() {
        let cp = match Checkpoint::open(note, key) {
            Ok(cp) => cp,
            Err(e) => {
                report.problems.push(format!("checkpoint #{n} does not verify with the key: {e}"));
                continue;
            }
        };
        if cp.size < last_size {
            report.problems.push(format!(
                "checkpoint #{n} has {} leaves, fewer than the {last_size} of one before it",
                cp.size
            ));
        }
        last_size = last_size.max(cp.size);
        let holds = tree.root(cp.size).is_ok_and(|r| r == cp.root);
        if holds {
            if failed.is_none() {
                good_size = good_size.max(cp.size);
                report.latest_good = Some(cp);
            }
            continue;
        }
        if cp.size > total {
            report.problems.push(format!(
                "checkpoint #{n} signs {} leaves but the ledger holds {total}: leaves from \
                 {total} on are missing",
                cp.size
            ));
        } else {
            report.problems.push(format!(
                "checkpoint #{n} (size {}) does not match the tree recomputed from the ledger",
                cp.size
            ));
        }
        if failed.is_none() {
            failed = Some(cp);
        }
    }

    if let Some(cp) = failed {
        // The files hold the fingerprint of every leaf as the log saw it when it signed. The
        // first leaf past the last good checkpoint where the ledger's differs is the first
        // bad one. If the files were rewritten too, only the checkpoints bound it.
        let upto = cp.size.min(total).min(stored.size());
        let differs = (good_size..upto).find(|i| {
            stored.fingerprints[*i as usize] != fingerprint(&tree.levels()[0][*i as usize])
        });
        report.first_bad_leaf = match differs {
            Some(i) => Some(i),
            // The ledger ends early and every leaf it has matches: the first missing one.
            None if total < cp.size && stored.size() >= cp.size => Some(total),
            None => None,
        };
        if report.first_bad_leaf.is_none() {
            report.bad_range = Some((good_size, cp.size));
        }
    } else if let Some(i) = stored.first_difference(&tree, total) {
        // The signed log holds; the files are derived, and rewritten at the next start.
        report.problems.push(format!(
            "the log's files differ from the ledger from leaf {i} on: they are derived, and \
             the next start rewrites them (nothing signed is affected)"
        ));
    }
    report.invariants = sm.check_invariants();
    Ok((report, sm))
}
