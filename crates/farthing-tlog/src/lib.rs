//! Farthing's transparency-log maths: RFC 9162 Merkle tree hashing, inclusion and
//! consistency proofs, and their verifiers. Pure: no I/O, no clock.
//!
//! Leaves are hashed `SHA-256(0x00 || data)` and interior nodes `SHA-256(0x01 || left ||
//! right)`, so proofs made here check with any RFC 9162 / RFC 6962 verifier, and proofs from
//! them check here.
//!
//! ```
//! use farthing_tlog::{leaf_hash, MemoryTree, verify_inclusion, verify_consistency};
//!
//! let mut tree = MemoryTree::default();
//! for payment in ["pay 1", "pay 2", "pay 3"] {
//!     tree.append(leaf_hash(payment.as_bytes()));
//! }
//! let root = tree.root(3).unwrap();
//! let proof = tree.inclusion_proof(1, 3).unwrap();
//! assert!(verify_inclusion(1, 3, &leaf_hash(b"pay 2"), &proof, &root).is_ok());
//!
//! let old = tree.root(2).unwrap();
//! let proof = tree.consistency_proof(2, 3).unwrap();
//! assert!(verify_consistency(2, 3, &old, &root, &proof).is_ok());
//! ```

pub mod checkpoint;
pub mod cosignature;
pub mod note;
pub mod proof;
pub mod tree;

pub use tree::Tree;

use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf, a node or a root.
pub type Hash = [u8; 32];

/// Why a proof was refused, or could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    IndexOutOfRange,
    /// The older size is zero or larger than the newer one.
    SizesInvalid,
    /// The proof has the wrong number of hashes for these sizes.
    WrongLength,
    /// The proof does not lead to the given root(s).
    RootMismatch,
    /// The tree holds fewer leaves than the size asked for.
    TreeTooSmall,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::IndexOutOfRange => "the leaf index is not below the tree size",
            Self::SizesInvalid => "the older tree size must be at least 1 and at most the newer",
            Self::WrongLength => "the proof has the wrong number of hashes for these sizes",
            Self::RootMismatch => "the proof does not lead to the given root",
            Self::TreeTooSmall => "the tree holds fewer leaves than the size asked for",
        })
    }
}

impl std::error::Error for ProofError {}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256_prefixed(0, data)
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // 65 bytes: two blocks, the second holding the last byte, the padding and the length.
    let mut first = [0u8; 64];
    first[0] = 1;
    first[1..33].copy_from_slice(left);
    first[33..].copy_from_slice(&right[..31]);
    let mut second = [0u8; 64];
    second[0] = right[31];
    second[1] = 0x80;
    second[56..].copy_from_slice(&(65u64 * 8).to_be_bytes());
    let mut state = SHA256_INIT;
    compress256(&mut state, &[first, second]);
    digest_bytes(&state)
}

/// `leaf_hash` of many entries at once. SHA-256 is serial within one message, but
/// independent messages can share the CPU's SHA units (several in flight, or SIMD lanes):
/// about twice the throughput of one at a time. The log hashes every batch this way.
pub fn leaf_hashes(entries: &[&[u8]], out: &mut [Hash]) {
    tape_sha256::hash_many_prefixed(&[0], entries, out);
}

/// `node_hash` of many (left, right) pairs at once; see [`leaf_hashes`].
pub fn node_hashes(left: &[&[u8]], right: &[&[u8]], out: &mut [Hash]) {
    tape_sha256::hash_pairs(&[1], left, right, out);
}

const SHA256_INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 of one prefix byte and `data`, padded by hand and fed to the block function
/// straight from the input: the log hashes millions of leaves and nodes a second, and the
/// streaming hasher's buffering cost a fifth of that.
fn sha256_prefixed(prefix: u8, data: &[u8]) -> Hash {
    let mut state = SHA256_INIT;
    let mut block = [0u8; 64];
    block[0] = prefix;
    let head = data.len().min(63);
    block[1..1 + head].copy_from_slice(&data[..head]);
    let mut rest = &data[head..];
    let mut filled = 1 + head;
    if filled == 64 {
        compress256(&mut state, &[block]);
        let (blocks, tail) = rest.as_chunks::<64>();
        compress256(&mut state, blocks);
        rest = tail;
        block = [0u8; 64];
        block[..rest.len()].copy_from_slice(rest);
        filled = rest.len();
    }
    // `filled` < 64 bytes are in `block`; then 0x80, zeros, and the length in bits.
    block[filled] = 0x80;
    let bits = ((data.len() as u64) + 1) * 8;
    if filled + 1 + 8 > 64 {
        compress256(&mut state, &[block]);
        block = [0u8; 64];
    }
    block[56..].copy_from_slice(&bits.to_be_bytes());
    compress256(&mut state, &[block]);
    digest_bytes(&state)
}

fn digest_bytes(state: &[u32; 8]) -> Hash {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// The hash of an empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (n ≥ 2).
pub(crate) fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Right-shifts both until `f` is odd or zero (RFC 9162's walk up past right edges).
fn shift_while_even(mut f: u64, mut s: u64) -> (u64, u64) {
    while f & 1 == 0 && f != 0 {
        f >>= 1;
        s >>= 1;
    }
    (f, s)
}

/// Checks that `proof` shows the leaf `leaf_hash` at `index` in the tree of `size` leaves
/// whose root is `root` (RFC 9162, 2.1.3.2). Roots are byte strings, as they travel.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange);
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            (f, s) = shift_while_even(f, s);
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r.as_slice() != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `size2` leaves with root `root2` extends the tree of `size1`
/// leaves with root `root1` (RFC 9162, 2.1.4.2). A proof from size 0 is refused: an empty
/// tree proves nothing.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 == 0 || size1 > size2 {
        return Err(ProofError::SizesInvalid);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if root1 == root2 { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(root1.try_into().map_err(|_| ProofError::RootMismatch)?);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            (f, s) = shift_while_even(f, s);
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr.as_slice() != root1 || sr.as_slice() != root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// A Merkle tree over leaf hashes kept in memory, answering roots and proofs for any size
/// up to the leaves it holds. Proofs cost O(size) hashing here; the persisted log keeps
/// interior hashes so that they cost O(log size).
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    pub fn append(&mut self, leaf_hash: Hash) -> u64 {
        self.leaves.push(leaf_hash);
        self.leaves.len() as u64 - 1
    }

    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    fn slice(&self, size: u64) -> Result<&[Hash], ProofError> {
        self.leaves.get(..size as usize).ok_or(ProofError::TreeTooSmall)
    }

    /// The root of the tree's first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        Ok(mth(self.slice(size)?))
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162, 2.1.3.1).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size {
            return Err(ProofError::IndexOutOfRange);
        }
        let mut proof = Vec::new();
        path(index, self.slice(size)?, &mut proof);
        Ok(proof)
    }

    /// The consistency proof from the tree of `size1` leaves to that of `size2` (RFC 9162,
    /// 2.1.4.1). Sizes must satisfy 1 ≤ size1 ≤ size2.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        if size1 == 0 || size1 > size2 {
            return Err(ProofError::SizesInvalid);
        }
        let mut proof = Vec::new();
        subproof(size1, self.slice(size2)?, true, &mut proof);
        Ok(proof)
    }
}

/// MTH(D[n]) over leaf hashes.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]), appended to `out` from the leaf up.
fn path(m: u64, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len() as u64;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &leaves[..k as usize], out);
        out.push(mth(&leaves[k as usize..]));
    } else {
        path(m - k, &leaves[k as usize..], out);
        out.push(mth(&leaves[..k as usize]));
    }
}

/// SUBPROOF(m, D[n], b), appended to `out` from the bottom up.
fn subproof(m: u64, leaves: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = leaves.len() as u64;
    if m == n {
        if !whole {
            out.push(mth(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k as usize], whole, out);
        out.push(mth(&leaves[k as usize..]));
    } else {
        subproof(m - k, &leaves[k as usize..], false, out);
        out.push(mth(&leaves[..k as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        assert_eq!([2, 3, 4, 5, 8, 9].map(split), [1, 2, 2, 4, 4, 8]);
    }

    #[test]
    fn hand_padded_hashes_equal_the_streaming_hasher_at_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=data.len() {
            for prefix in [0u8, 1] {
                let mut h = Sha256::new();
                h.update([prefix]);
                h.update(&data[..len]);
                let want: Hash = h.finalize().into();
                assert_eq!(sha256_prefixed(prefix, &data[..len]), want, "length {len}");
            }
        }
        let (l, r) = ([3u8; 32], [9u8; 32]);
        let mut joined = l.to_vec();
        joined.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), sha256_prefixed(1, &joined));
    }

    #[test]
    fn batch_hashes_equal_one_at_a_time() {
        let data: Vec<Vec<u8>> = (0..300usize).map(|n| (0..n).map(|i| i as u8).collect()).collect();
        let entries: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut out = vec![[0u8; 32]; entries.len()];
        leaf_hashes(&entries, &mut out);
        for (entry, hash) in entries.iter().zip(&out) {
            assert_eq!(*hash, leaf_hash(entry), "length {}", entry.len());
        }
        let left: Vec<&[u8]> = out[..150].iter().map(|h| &h[..]).collect();
        let right: Vec<&[u8]> = out[150..].iter().map(|h| &h[..]).collect();
        let mut nodes = vec![[0u8; 32]; 150];
        node_hashes(&left, &right, &mut nodes);
        for i in 0..150 {
            assert_eq!(nodes[i], node_hash(&out[i], &out[150 + i]));
        }
    }

    #[test]
    fn an_empty_tree_hashes_to_sha256_of_nothing() {
        let hex: String = empty_root().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
