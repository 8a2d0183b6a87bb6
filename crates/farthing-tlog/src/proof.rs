//! C2SP tlog-proof: a self-contained, offline-verifiable proof that an entry is in a log.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the entry's leaf data>     (optional)
//! index <leaf index>
//! <base64 hash>                               inclusion proof, leaf's sibling first
//! ...
//!
//! <signed checkpoint, verbatim>
//! ```
//! Farthing puts the leaf data in `extra`, so a receipt carries the payment it proves. The
//! extra data is not signed by itself: it is trusted only because its hash is proven to be
//! the leaf at `index` under the signed checkpoint.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::note::NoteVerifier;
use crate::{leaf_hash, verify_inclusion, Hash, ProofError};

pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
/// More hashes than any tree of 2^64 leaves needs.
const PROOF_HASHES_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

/// Why a tlog-proof was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlogProofError {
    Malformed(&'static str),
    Checkpoint(CheckpointError),
    /// The proof has no extra data, so there is no entry to check.
    NoEntry,
    Inclusion(ProofError),
}

impl std::fmt::Display for TlogProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed tlog-proof: {why}"),
            Self::Checkpoint(e) => write!(f, "checkpoint refused: {e}"),
            Self::NoEntry => write!(f, "the proof carries no entry (no extra line)"),
            Self::Inclusion(e) => write!(f, "inclusion proof refused: {e}"),
        }
    }
}

impl std::error::Error for TlogProofError {}

impl TlogProof {
    pub fn to_text(&self) -> String {
        let mut text = format!("{TLOG_PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            text.push_str(&format!("extra {}\n", STANDARD.encode(extra)));
        }
        text.push_str(&format!("index {}\n", self.index));
        text.push_str(&encode_hashes(&self.proof));
        text.push('\n');
        text.push_str(&self.checkpoint);
        text
    }

    pub fn parse(text: &str) -> Result<Self, TlogProofError> {
        let malformed = TlogProofError::Malformed;
        let rest = text
            .strip_prefix(TLOG_PROOF_HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or(malformed("the first line is not c2sp.org/tlog-proof@v1"))?;
        let (head, checkpoint) =
            rest.split_once("\n\n").ok_or(malformed("no empty line before the checkpoint"))?;
        let mut lines = head.split('\n').peekable();
        let extra = match lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            Some(b64) => {
                lines.next();
                Some(STANDARD.decode(b64).map_err(|_| malformed("extra is not base64"))?)
            }
            None => None,
        };
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .and_then(parse_decimal)
            .ok_or(malformed("no index line with a decimal index"))?;
        let proof = parse_hash_lines(lines).map_err(malformed)?;
        if checkpoint.is_empty() {
            return Err(malformed("no checkpoint"));
        }
        Ok(Self { extra, index, proof, checkpoint: checkpoint.to_string() })
    }

    /// Checks the checkpoint's signature with the log's key and the entry's inclusion under
    /// it; returns the checkpoint and the proven leaf data.
    pub fn verify(&self, log_key: &NoteVerifier) -> Result<(Checkpoint, &[u8]), TlogProofError> {
        let checkpoint =
            Checkpoint::open(&self.checkpoint, log_key).map_err(TlogProofError::Checkpoint)?;
        let data = self.extra.as_deref().ok_or(TlogProofError::NoEntry)?;
        verify_inclusion(
            self.index,
            checkpoint.size,
            &leaf_hash(data),
            &self.proof,
            &checkpoint.root,
        )
        .map_err(TlogProofError::Inclusion)?;
        Ok((checkpoint, data))
    }
}

/// Hashes as base64 lines, each ending in a newline (the form of proofs in files).
pub fn encode_hashes(hashes: &[Hash]) -> String {
    hashes.iter().map(|h| format!("{}\n", STANDARD.encode(h))).collect()
}

/// Parses base64 hash lines (as written by [`encode_hashes`]); blank lines are not allowed
/// in between, a final newline is.
pub fn parse_hashes(text: &str) -> Result<Vec<Hash>, &'static str> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    parse_hash_lines(text.split('\n'))
}

fn parse_hash_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Vec<Hash>, &'static str> {
    let mut hashes = Vec::new();
    for line in lines {
        if hashes.len() == PROOF_HASHES_MAX {
            return Err("too many proof hashes");
        }
        let bytes = STANDARD.decode(line).map_err(|_| "a proof hash is not base64")?;
        hashes.push(bytes.try_into().map_err(|_| "a proof hash is not 32 bytes")?);
    }
    Ok(hashes)
}

/// A decimal with no sign and no leading zero (unless it is "0").
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    let canonical = s == "0" || (!s.starts_with('0') && !s.is_empty());
    s.parse::<u64>().ok().filter(|_| canonical && s.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::NoteSigner;
    use crate::Tree;

    fn example() -> (TlogProof, NoteSigner) {
        let signer = NoteSigner::from_seed("farthing.example/log", &[3; 32]).unwrap();
        let mut tree = Tree::new();
        for i in 0..11u8 {
            tree.push(leaf_hash(&[i]));
        }
        let cp = Checkpoint {
            origin: "farthing.example/log".into(),
            size: 11,
            root: tree.root(11).unwrap(),
            extensions: vec![],
        };
        let proof = TlogProof {
            extra: Some(vec![6]),
            index: 6,
            proof: tree.inclusion_proof(6, 11).unwrap(),
            checkpoint: cp.sign(&signer).unwrap(),
        };
        (proof, signer)
    }

    #[test]
    fn a_proof_round_trips_and_verifies() {
        let (proof, signer) = example();
        let text = proof.to_text();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra Bg==\nindex 6\n"), "{text}");
        let parsed = TlogProof::parse(&text).unwrap();
        assert_eq!(parsed, proof);
        let (cp, data) = parsed.verify(&signer.verifier()).unwrap();
        assert_eq!((cp.size, data), (11, &[6u8][..]));
    }

    #[test]
    fn a_changed_entry_index_or_key_is_refused() {
        let (proof, signer) = example();
        let key = signer.verifier();
        let mut other = proof.clone();
        other.extra = Some(vec![7]);
        assert_eq!(other.verify(&key), Err(TlogProofError::Inclusion(ProofError::RootMismatch)));
        let mut other = proof.clone();
        other.index = 7;
        assert!(other.verify(&key).is_err());
        let stranger = NoteSigner::from_seed("farthing.example/log", &[4; 32]).unwrap();
        assert!(matches!(proof.verify(&stranger.verifier()), Err(TlogProofError::Checkpoint(_))));
        let mut other = proof;
        other.extra = None;
        assert_eq!(other.verify(&key), Err(TlogProofError::NoEntry));
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let (proof, _) = example();
        let text = proof.to_text();
        for bad in [
            text.replacen("tlog-proof@v1", "tlog-proof@v2", 1),
            text.replacen("index 6", "index 06", 1),
            text.replacen("index 6", "idx 6", 1),
            text.replacen("\n\n", "\n", 1),
            text.replacen("extra Bg==", "extra !!", 1),
        ] {
            assert!(TlogProof::parse(&bad).is_err(), "{bad}");
        }
    }
}
