//! C2SP tlog-cosignature (Ed25519, `cosignature/v1`): a witness's statement that, as of a
//! time, the checkpoint is the largest consistent tree it has seen for the log.
//!
//! The signature line is `— <witness name> base64(key id || u64 time, big-endian ||
//! Ed25519 signature)`, over `cosignature/v1\ntime <time>\n` and the checkpoint's text. The
//! key id is `SHA-256(name || "\n" || 0x04 || public key)[:4]`; verifier keys are written
//! `<name>+<hex key id>+<base64(0x04 || public key)>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::note::{
    encode_key, key_id, name_is_valid, parse_private_key, parse_public_key, signature_lines,
    NoteError, DASH,
};

/// The signature type byte of Ed25519 cosignatures.
const COSIGNATURE_ED25519: u8 = 0x04;

fn message(checkpoint_text: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{checkpoint_text}")
}

/// A witness's signing key.
pub struct Cosigner {
    name: String,
    key: SigningKey,
}

impl Cosigner {
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !name_is_valid(name) {
            return Err(NoteError::KeyMalformed("invalid key name"));
        }
        Ok(Self { name: name.to_string(), key: SigningKey::from_bytes(seed) })
    }

    /// `PRIVATE+KEY+<name>+<hex id>+<base64(0x04 || seed)>`.
    pub fn parse_private(text: &str) -> Result<Self, NoteError> {
        let (name, seed) = parse_private_key(text, COSIGNATURE_ED25519)?;
        Self::from_seed(name, &seed)
    }

    pub fn encode_private(&self) -> String {
        let key =
            encode_key(&self.name, COSIGNATURE_ED25519, &self.verifier().id, self.key.as_bytes());
        format!("PRIVATE+KEY+{key}")
    }

    pub fn verifier(&self) -> CosignerKey {
        let public = self.key.verifying_key();
        CosignerKey {
            name: self.name.clone(),
            id: key_id(&self.name, COSIGNATURE_ED25519, public.as_bytes()),
            key: public,
        }
    }

    /// The cosignature line (ending in a newline) for a checkpoint's text at `time`
    /// (seconds since the epoch), to append to the checkpoint's note.
    pub fn cosign(&self, checkpoint_text: &str, time: u64) -> String {
        let signature = self.key.sign(message(checkpoint_text, time).as_bytes());
        let mut raw = self.verifier().id.to_vec();
        raw.extend_from_slice(&time.to_be_bytes());
        raw.extend_from_slice(&signature.to_bytes());
        format!("{DASH}{} {}\n", self.name, STANDARD.encode(raw))
    }
}

/// A witness's verifier key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignerKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl CosignerKey {
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, id, key) = parse_public_key(text, COSIGNATURE_ED25519)?;
        Ok(Self { name: name.to_string(), id, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn encode(&self) -> String {
        encode_key(&self.name, COSIGNATURE_ED25519, &self.id, self.key.as_bytes())
    }

    /// The time of this witness's valid cosignature on a checkpoint note.
    pub fn verify(&self, note: &str) -> Result<u64, NoteError> {
        let (text, lines) = signature_lines(note)?;
        for (name, raw) in lines {
            if name != self.name || raw.len() != 4 + 8 + 64 || raw[..4] != self.id {
                continue;
            }
            let time = u64::from_be_bytes(raw[4..12].try_into().expect("8 bytes"));
            let signature = Signature::from_slice(&raw[12..]).expect("64 bytes");
            if time < 1 << 63 && self.key.verify(message(text, time).as_bytes(), &signature).is_ok()
            {
                return Ok(time);
            }
        }
        Err(NoteError::NotSigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::note::NoteSigner;

    #[test]
    fn a_cosigned_checkpoint_verifies_for_the_log_and_the_witness() {
        let log = NoteSigner::from_seed("farthing.example/log", &[1; 32]).unwrap();
        let cp = Checkpoint {
            origin: "farthing.example/log".into(),
            size: 3,
            root: [7; 32],
            extensions: vec![],
        };
        let note = cp.sign(&log).unwrap();
        let witness = Cosigner::from_seed("witness.example/w1", &[2; 32]).unwrap();
        let cosigned = format!("{note}{}", witness.cosign(&cp.to_text(), 1_679_315_147));
        let key = CosignerKey::parse(&witness.verifier().encode()).unwrap();
        assert_eq!(key.verify(&cosigned), Ok(1_679_315_147));
        // The log's signature still opens; the witness line is ignored by it.
        assert_eq!(Checkpoint::open(&cosigned, &log.verifier()), Ok(cp));
        // Another witness, or a changed checkpoint, does not verify.
        let other = Cosigner::from_seed("witness.example/w1", &[3; 32]).unwrap();
        assert_eq!(other.verifier().verify(&cosigned), Err(NoteError::NotSigned));
        let forged = cosigned.replacen("\n3\n", "\n4\n", 1);
        assert_eq!(key.verify(&forged), Err(NoteError::NotSigned));
        let private = witness.encode_private();
        assert!(private.starts_with("PRIVATE+KEY+witness.example/w1+"));
        let again = Cosigner::parse_private(&private).unwrap();
        assert_eq!(again.verifier(), witness.verifier());
        assert!(CosignerKey::parse(&log.verifier().encode()).is_err(), "a log key is not one");
    }
}
