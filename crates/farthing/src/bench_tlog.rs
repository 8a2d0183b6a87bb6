//! `farthing bench tlog`: the transparency log's own costs, without the ledger around it:
//! appending leaves (hash + tree), and making and checking proofs on a large tree.

use std::time::Instant;

use clap::Args;
use farthing_ledger::limits::BATCH_EVENTS_MAX;
use farthing_ledger::{Transfer, TransferFlags};
use farthing_store::tlog::{build_tree, transfer_leaf_hash, LeafHasher};
use farthing_tlog::{verify_inclusion, Tree};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

#[derive(Args, Debug)]
pub struct TlogArgs {
    /// Leaves in the log.
    #[arg(long, default_value_t = 10_000_000)]
    pub leaves: u64,
    /// Inclusion proofs to make (at random indexes, against the full size).
    #[arg(long, default_value_t = 1_000_000)]
    pub proofs: u64,
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

const LEAVES_MAX: u64 = 1_000_000_000;
const PROOFS_MAX: u64 = 100_000_000;

pub fn run(args: &TlogArgs) -> Result<(), String> {
    if !(1..=LEAVES_MAX).contains(&args.leaves) || !(1..=PROOFS_MAX).contains(&args.proofs) {
        return Err(format!("--leaves must be 1..={LEAVES_MAX}, --proofs 1..={PROOFS_MAX}"));
    }
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let transfers: Vec<Transfer> = (0..args.leaves)
        .map(|i| Transfer {
            id: rng.random(),
            debit_account_id: rng.random_range(1..=10_000),
            credit_account_id: rng.random_range(1..=10_000),
            amount: rng.random_range(1..=1_000),
            asset: 1,
            code: 1,
            flags: TransferFlags::empty(),
            timestamp: 1_700_000_000_000_000_000 + i,
            ..Default::default()
        })
        .collect();

    // What the log thread does with each batch of committed transfers (8,190): hash the
    // leaves together, append them, hash the new parents level by level.
    let started = Instant::now();
    let mut tree = Tree::new();
    tree.reserve(args.leaves);
    let reserved = started.elapsed();
    let started = Instant::now();
    let mut hasher = LeafHasher::default();
    for batch in transfers.chunks(BATCH_EVENTS_MAX) {
        tree.extend(hasher.hash(batch));
    }
    let append_s = started.elapsed().as_secs_f64();
    let size = tree.size();

    // What an open (and the audit) does: the whole tree from the ledger, on every core.
    let started = Instant::now();
    let rebuilt = build_tree(&transfers);
    let rebuild_s = started.elapsed().as_secs_f64();
    if rebuilt.root(size) != tree.root(size) {
        return Err("the parallel rebuild disagrees with the incremental tree".into());
    }

    let root = tree.root(size).map_err(|e| e.to_string())?;
    let indexes: Vec<u64> = (0..args.proofs).map(|_| rng.random_range(0..size)).collect();
    let started = Instant::now();
    let mut proofs = Vec::with_capacity(indexes.len().min(1 << 16));
    let mut hashes = 0usize;
    for (n, &i) in indexes.iter().enumerate() {
        let proof = tree.inclusion_proof(i, size).map_err(|e| e.to_string())?;
        hashes += proof.len();
        if n < 1 << 16 {
            proofs.push(proof);
        }
    }
    let prove_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for (proof, &i) in proofs.iter().zip(&indexes) {
        let leaf = transfer_leaf_hash(&transfers[i as usize]);
        verify_inclusion(i, size, &leaf, proof, &root).map_err(|e| e.to_string())?;
    }
    let verify_s = started.elapsed().as_secs_f64();
    let report = json!({
        "leaves": size,
        "reserve_s": reserved.as_secs_f64(),
        "append_leaves_per_second": size as f64 / append_s,
        "append_ns_per_leaf": append_s * 1e9 / size as f64,
        "rebuild_s": rebuild_s,
        "inclusion_proofs": args.proofs,
        "inclusion_proofs_per_second": args.proofs as f64 / prove_s,
        "proof_hashes_mean": hashes as f64 / args.proofs as f64,
        "verifications_per_second": proofs.len() as f64 / verify_s,
        "tree_bytes": tree.levels().iter().map(|l| l.len() * 32).sum::<usize>(),
        "rss_bytes_max": crate::bench::peak_rss_bytes(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{size} leaves: append {:.0} leaves/s ({:.0} ns each, hash + tree); whole-tree \
             rebuild {:.2} s",
            report["append_leaves_per_second"].as_f64().unwrap(),
            report["append_ns_per_leaf"].as_f64().unwrap(),
            rebuild_s
        );
        println!(
            "inclusion proofs: {:.0}/s ({:.1} hashes each); verified {:.0}/s",
            report["inclusion_proofs_per_second"].as_f64().unwrap(),
            report["proof_hashes_mean"].as_f64().unwrap(),
            report["verifications_per_second"].as_f64().unwrap()
        );
    }
    Ok(())
}
