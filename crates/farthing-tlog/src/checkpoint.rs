//! C2SP tlog-checkpoint: the text a log signs to commit to its size and root.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <base64 root hash>
//! [extension lines]
//! ```
//! Signed as a note whose key name is the origin.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::note::{NoteError, NoteSigner, NoteVerifier};
use crate::proof::parse_decimal;
use crate::Hash;

/// A log's commitment to its first `size` leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines, kept and signed as they are.
    pub extensions: Vec<String>,
}

/// Why a checkpoint was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointError {
    Malformed(&'static str),
    Note(NoteError),
    /// Signed, but by a key whose name is not the checkpoint's origin.
    OriginMismatch,
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed checkpoint: {why}"),
            Self::Note(e) => write!(f, "{e}"),
            Self::OriginMismatch => write!(f, "the checkpoint's origin is not the key's name"),
        }
    }
}

impl std::error::Error for CheckpointError {}

impl Checkpoint {
    /// The checkpoint's text, each line ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint's text (the body of a note).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::Malformed("no final newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty());
        let origin = origin.ok_or(CheckpointError::Malformed("no origin"))?;
        let size = lines.next().ok_or(CheckpointError::Malformed("no size"))?;
        let size = parse_decimal(size)
            .ok_or(CheckpointError::Malformed("size is not a decimal number"))?;
        let root = lines.next().ok_or(CheckpointError::Malformed("no root hash"))?;
        let root = STANDARD.decode(root).map_err(|_| CheckpointError::Malformed("root base64"))?;
        let root: Hash = root.try_into().map_err(|_| CheckpointError::Malformed("root size"))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Self { origin: origin.to_string(), size, root, extensions })
    }

    /// Signs the checkpoint as a note with the log's key (named after the origin).
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        if signer.verifier().name() != self.origin {
            return Err(CheckpointError::OriginMismatch);
        }
        signer.sign(&self.to_text()).map_err(CheckpointError::Note)
    }

    /// Verifies a signed checkpoint with the log's verifier key and parses it.
    pub fn open(note: &str, log_key: &NoteVerifier) -> Result<Self, CheckpointError> {
        let text = log_key.open(note).map_err(CheckpointError::Note)?;
        let checkpoint = Self::parse(text)?;
        if checkpoint.origin != log_key.name() {
            return Err(CheckpointError::OriginMismatch);
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{leaf_hash, MemoryTree};

    #[test]
    fn a_signed_checkpoint_opens_with_the_log_key_only() {
        let mut tree = MemoryTree::default();
        for i in 0..5u8 {
            tree.append(leaf_hash(&[i]));
        }
        let signer = NoteSigner::from_seed("farthing.example/log", &[9; 32]).unwrap();
        let cp = Checkpoint {
            origin: "farthing.example/log".into(),
            size: 5,
            root: tree.root(5).unwrap(),
            extensions: vec![],
        };
        let note = cp.sign(&signer).unwrap();
        assert!(note.starts_with("farthing.example/log\n5\n"));
        assert_eq!(Checkpoint::open(&note, &signer.verifier()), Ok(cp.clone()));
        let stranger = NoteSigner::from_seed("farthing.example/log", &[8; 32]).unwrap();
        assert!(Checkpoint::open(&note, &stranger.verifier()).is_err());
        let forged = note.replacen("\n5\n", "\n6\n", 1);
        assert!(Checkpoint::open(&forged, &signer.verifier()).is_err());
        let other = NoteSigner::from_seed("other.example/log", &[9; 32]).unwrap();
        assert_eq!(cp.sign(&other), Err(CheckpointError::OriginMismatch));
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let root = STANDARD.encode([0u8; 32]);
        for bad in [
            format!("o\n05\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n5\n{root}"),
            "o\n5\nAAAA\n".to_string(),
            format!("\n5\n{root}\n"),
            format!("o\n5\n{root}\n\n"),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
        let good = Checkpoint::parse(&format!("o\n5\n{root}\next\n")).unwrap();
        assert_eq!(good.extensions, ["ext"]);
        assert_eq!(good.to_text(), format!("o\n5\n{root}\next\n"));
    }
}
