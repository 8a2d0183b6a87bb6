//! Every proof the tree makes verifies, and any single flipped bit makes it fail.

use farthing_tlog::{leaf_hash, verify_consistency, verify_inclusion, MemoryTree};
use proptest::prelude::*;

fn tree(size: u64) -> MemoryTree {
    let mut t = MemoryTree::default();
    for i in 0..size {
        t.append(leaf_hash(&i.to_le_bytes()));
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn inclusion_proofs_verify_and_any_flipped_bit_fails(size in 1u64..300, pick in any::<u64>(), bit in any::<u16>()) {
        let t = tree(size);
        let index = pick % size;
        let root = t.root(size).unwrap();
        let leaf = leaf_hash(&index.to_le_bytes());
        let proof = t.inclusion_proof(index, size).unwrap();
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root).is_ok());
        // Flip one bit of the proof, the leaf or the root: refused.
        let total_bits = (proof.len() + 2) * 256;
        let b = bit as usize % total_bits;
        let (mut proof2, mut leaf2, mut root2) = (proof.clone(), leaf, root);
        match b / 256 {
            0 => leaf2[b % 256 / 8] ^= 1 << (b % 8),
            1 => root2[b % 256 / 8] ^= 1 << (b % 8),
            i => proof2[i - 2][b % 256 / 8] ^= 1 << (b % 8),
        }
        prop_assert!(verify_inclusion(index, size, &leaf2, &proof2, &root2).is_err());
        // A wrong index or size is refused too.
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert!(verify_inclusion(other, size, &leaf, &proof, &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_any_flipped_bit_fails(size2 in 1u64..300, pick in any::<u64>(), bit in any::<u16>()) {
        let t = tree(size2);
        let size1 = 1 + pick % size2;
        let (root1, root2) = (t.root(size1).unwrap(), t.root(size2).unwrap());
        let proof = t.consistency_proof(size1, size2).unwrap();
        prop_assert!(verify_consistency(size1, size2, &root1, &root2, &proof).is_ok());
        let total_bits = (proof.len() + 2) * 256;
        let b = bit as usize % total_bits;
        let (mut proof2, mut r1, mut r2) = (proof.clone(), root1, root2);
        match b / 256 {
            0 => r1[b % 256 / 8] ^= 1 << (b % 8),
            1 => r2[b % 256 / 8] ^= 1 << (b % 8),
            i => proof2[i - 2][b % 256 / 8] ^= 1 << (b % 8),
        }
        // With equal sizes the old root is the new one: flipping either is a mismatch.
        prop_assert!(verify_consistency(size1, size2, &r1, &r2, &proof2).is_err());
    }
}

#[test]
fn a_consistency_proof_from_size_zero_is_refused() {
    let t = tree(4);
    assert!(t.consistency_proof(0, 4).is_err());
    let root = t.root(4).unwrap();
    let empty = farthing_tlog::empty_root();
    assert!(verify_consistency(0, 4, &empty, &root, &[]).is_err());
}
