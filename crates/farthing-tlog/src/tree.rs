//! The log's Merkle tree with every complete subtree's hash kept, so that roots and proofs
//! for any size cost O(log² n) lookups and a few hashes, never a rebuild.
//!
//! `levels[k][i]` is the hash of the complete subtree over leaves `[i·2^k, (i+1)·2^k)`:
//! level 0 holds the leaf hashes, and appending a leaf completes at most one subtree per
//! level. The levels are what the store persists (one append-only file each); about two
//! hashes (64 bytes) per leaf.

use crate::{empty_root, node_hash, node_hashes, split, Hash, ProofError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub fn new() -> Self {
        Self { levels: vec![Vec::new()] }
    }

    /// A tree from stored levels, which must agree in length: level `k + 1` holds exactly
    /// half (rounded down) of level `k`. Interior hashes are taken as they are; the store
    /// checks them against a signed checkpoint.
    pub fn from_levels(mut levels: Vec<Vec<Hash>>) -> Result<Self, &'static str> {
        if levels.is_empty() {
            levels.push(Vec::new());
        }
        while levels.len() > 1 && levels.last().is_some_and(Vec::is_empty) {
            levels.pop();
        }
        for k in 1..levels.len() {
            if levels[k].len() != levels[k - 1].len() / 2 {
                return Err("a level's length does not match the one below it");
            }
        }
        if levels.last().is_some_and(|l| l.len() >= 2) {
            return Err("the top level is incomplete");
        }
        Ok(Self { levels })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// The stored levels, leaf hashes first.
    pub fn levels(&self) -> &[Vec<Hash>] {
        &self.levels
    }

    /// The hash of leaf `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels[0].get(index as usize).copied()
    }

    /// Makes room for `leaves` leaves in all, and touches it, so that appending up to there
    /// neither reallocates nor waits on the kernel for fresh pages.
    pub fn reserve(&mut self, leaves: u64) {
        let height = 64 - leaves.leading_zeros() as usize;
        while self.levels.len() < height.max(1) {
            self.levels.push(Vec::new());
        }
        for (k, level) in self.levels.iter_mut().enumerate() {
            let want = (leaves >> k) as usize;
            if want > level.len() {
                let len = level.len();
                level.reserve(want - len);
                level.resize(want, [0; 32]);
                level.truncate(len);
            }
        }
    }

    /// Appends a leaf hash; returns its index.
    pub fn push(&mut self, leaf_hash: Hash) -> u64 {
        self.levels[0].push(leaf_hash);
        let mut k = 0;
        while self.levels[k].len().is_multiple_of(2) {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
        self.size() - 1
    }

    /// Appends many leaf hashes, hashing each level's new parents in one batch
    /// ([`crate::node_hashes`]); the same tree as pushing them one by one.
    pub fn extend(&mut self, leaf_hashes: &[Hash]) {
        self.levels[0].extend_from_slice(leaf_hashes);
        let mut k = 0;
        loop {
            let want = self.levels[k].len() / 2;
            if want == 0 {
                break;
            }
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            let (below, above) = self.levels.split_at_mut(k + 1);
            let (below, above) = (&below[k], &mut above[0]);
            let have = above.len();
            if have == want {
                break;
            }
            let left: Vec<&[u8]> = (have..want).map(|j| &below[2 * j][..]).collect();
            let right: Vec<&[u8]> = (have..want).map(|j| &below[2 * j + 1][..]).collect();
            above.resize(want, [0; 32]);
            node_hashes(&left, &right, &mut above[have..]);
            k += 1;
        }
    }

    /// Keeps the first `size` leaves (and the subtrees within them).
    pub fn truncate(&mut self, size: u64) {
        for (k, level) in self.levels.iter_mut().enumerate() {
            level.truncate((size >> k) as usize);
        }
        while self.levels.len() > 1 && self.levels.last().is_some_and(Vec::is_empty) {
            self.levels.pop();
        }
    }

    /// MTH of leaves `[lo, hi)`, a range of the RFC 9162 decomposition: a complete subtree
    /// is one lookup, and only the tree's ragged right edge is hashed.
    fn mth(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(lo >> k) as usize];
        }
        let k = split(n);
        node_hash(&self.mth(lo, lo + k), &self.mth(lo + k, hi))
    }

    /// The root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::TreeTooSmall);
        }
        Ok(self.mth(0, size))
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162, 2.1.3.1).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size {
            return Err(ProofError::IndexOutOfRange);
        }
        if size > self.size() {
            return Err(ProofError::TreeTooSmall);
        }
        let mut proof = Vec::with_capacity(64 - size.leading_zeros() as usize);
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    /// The consistency proof from size `size1` to `size2` (RFC 9162, 2.1.4.1); sizes must
    /// satisfy 1 ≤ size1 ≤ size2.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        if size1 == 0 || size1 > size2 {
            return Err(ProofError::SizesInvalid);
        }
        if size2 > self.size() {
            return Err(ProofError::TreeTooSmall);
        }
        let mut proof = Vec::new();
        self.subproof(size1, 0, size2, true, &mut proof);
        Ok(proof)
    }

    /// PATH(m, D[lo:hi]), from the leaf up.
    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, lo, lo + k, out);
            out.push(self.mth(lo + k, hi));
        } else {
            self.path(m - k, lo + k, hi, out);
            out.push(self.mth(lo, lo + k));
        }
    }

    /// SUBPROOF(m, D[lo:hi], whole), from the bottom up.
    fn subproof(&self, m: u64, lo: u64, hi: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push(self.mth(lo, hi));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, lo, lo + k, whole, out);
            out.push(self.mth(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, out);
            out.push(self.mth(lo, lo + k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{leaf_hash, MemoryTree};

    fn trees(n: u64) -> (Tree, MemoryTree) {
        let mut tree = Tree::new();
        let mut reference = MemoryTree::default();
        for i in 0..n {
            let h = leaf_hash(&i.to_le_bytes());
            tree.push(h);
            reference.append(h);
        }
        (tree, reference)
    }

    #[test]
    fn agrees_with_the_reference_tree_for_every_size_and_proof_up_to_40() {
        let (tree, reference) = trees(40);
        for size in 0..=40 {
            assert_eq!(tree.root(size), reference.root(size), "root {size}");
            for index in 0..size {
                assert_eq!(
                    tree.inclusion_proof(index, size),
                    reference.inclusion_proof(index, size)
                );
            }
            for old in 0..=size {
                assert_eq!(
                    tree.consistency_proof(old, size),
                    reference.consistency_proof(old, size)
                );
            }
        }
        assert_eq!(tree.root(41), Err(ProofError::TreeTooSmall));
    }

    #[test]
    fn extending_in_batches_gives_the_same_tree_as_pushing() {
        let (one_by_one, _) = trees(1000);
        let hashes = one_by_one.levels()[0].clone();
        for cuts in [vec![1000], vec![1, 999], vec![3, 5, 8, 984], vec![512, 488], vec![0, 1000]] {
            let mut t = Tree::new();
            let mut at = 0;
            for n in cuts {
                t.extend(&hashes[at..at + n]);
                at += n;
            }
            assert_eq!(t, one_by_one);
        }
        let mut reserved = Tree::new();
        reserved.reserve(2000);
        reserved.extend(&hashes[..700]);
        reserved.extend(&hashes[700..]);
        assert_eq!(reserved.root(1000), one_by_one.root(1000));
        assert_eq!(reserved.inclusion_proof(5, 999), one_by_one.inclusion_proof(5, 999));
    }

    #[test]
    fn truncating_then_regrowing_gives_the_same_tree() {
        let (full, _) = trees(37);
        for size in [0, 1, 16, 31, 32, 36] {
            let mut t = full.clone();
            t.truncate(size);
            assert_eq!(t.size(), size);
            assert_eq!(t.root(size), full.root(size));
            for i in size..37 {
                t.push(leaf_hash(&i.to_le_bytes()));
            }
            assert_eq!(t, full);
            assert_eq!(Tree::from_levels(full.levels().to_vec()).as_ref(), Ok(&full));
        }
        let mut broken = full.levels().to_vec();
        broken[1].pop();
        assert!(Tree::from_levels(broken).is_err());
    }
}
