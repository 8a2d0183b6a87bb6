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
use sha2::{Digest, Sha256};

use crate::note::{name_is_valid, signature_lines, to_hex, NoteError, DASH};

/// The signature type byte of Ed25519 cosignatures.
const COSIGNATURE_ED25519: u8 = 0x04;

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([COSIGNATURE_ED25519]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn message(checkpoint_text: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{checkpoint_text}")
}

/// Splits `<name>+<hex id>+<base64(0x04 || 32 bytes)>`, checking the type and that the id
/// is the one of the name and this public key.
fn parse_key(text: &str, prefix: &str, private: bool) -> Result<(String, [u8; 32]), NoteError> {
    let text = text.trim_end().strip_prefix(prefix).ok_or(NoteError::KeyMalformed("prefix"))?;
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::KeyMalformed("expected name+id+key"));
    };
    if !name_is_valid(name) {
        return Err(NoteError::KeyMalformed("invalid key name"));
    }
    let raw = STANDARD.decode(b64).map_err(|_| NoteError::KeyMalformed("bad base64"))?;
    let Some((&COSIGNATURE_ED25519, bytes)) = raw.split_first() else {
        return Err(NoteError::KeyMalformed("not an Ed25519 cosignature key (type 0x04)"));
    };
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| NoteError::KeyMalformed("key length"))?;
    let public = match private {
        true => SigningKey::from_bytes(&bytes).verifying_key().to_bytes(),
        false => bytes,
    };
    if hex != to_hex(&key_id(name, &public)) {
        return Err(NoteError::KeyMalformed("key id does not match the key"));
    }
    Ok((name.to_string(), bytes))
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
        let (name, seed) = parse_key(text, "PRIVATE+KEY+", true)?;
        Self::from_seed(&name, &seed)
    }

    pub fn encode_private(&self) -> String {
        let mut raw = vec![COSIGNATURE_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        let id = to_hex(&self.verifier().id);
        format!("PRIVATE+KEY+{}+{id}+{}", self.name, STANDARD.encode(raw))
    }

    pub fn verifier(&self) -> CosignerKey {
        let public = self.key.verifying_key();
        CosignerKey {
            name: self.name.clone(),
            id: key_id(&self.name, public.as_bytes()),
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
        let (name, public) = parse_key(text, "", false)?;
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| NoteError::KeyMalformed("bad key"))?;
        Ok(Self { id: key_id(&name, &public), name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn encode(&self) -> String {
        let mut raw = vec![COSIGNATURE_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, to_hex(&self.id), STANDARD.encode(raw))
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
