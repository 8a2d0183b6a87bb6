//! C2SP signed notes with Ed25519 keys: the envelope of checkpoints and cosignatures.
//!
//! A note is text (ending in a newline), a blank line, then one line per signature:
//! `— <key name> <base64(key id || signature)>`. A key's id is the first four bytes of
//! `SHA-256(name || "\n" || 0x01 || public key)`, and its verifier key is written
//! `<name>+<hex key id>+<base64(0x01 || public key)>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature type byte of Ed25519 keys.
const ED25519: u8 = 0x01;
/// A note's signature lines start with an em dash and a space.
pub(crate) const DASH: &str = "\u{2014} ";
/// Signature lines a note may carry before it is refused (bounds parsing work).
pub const NOTE_SIGNATURES_MAX: usize = 100;

/// Why a key or note was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoteError {
    KeyMalformed(&'static str),
    NoteMalformed(&'static str),
    /// No signature by the given key verifies.
    NotSigned,
}

impl std::fmt::Display for NoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KeyMalformed(why) => write!(f, "malformed key: {why}"),
            Self::NoteMalformed(why) => write!(f, "malformed note: {why}"),
            Self::NotSigned => write!(f, "no valid signature by the given key"),
        }
    }
}

impl std::error::Error for NoteError {}

/// A key name: non-empty, no whitespace, no `+`.
pub(crate) fn name_is_valid(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// Splits `<name>+<hex id>+<base64(kind || 32 bytes)>` (a name holds no '+', base64 may),
/// checking the key type byte. Shared by note keys (0x01) and cosignature keys (0x04).
pub(crate) fn split_key(text: &str, kind: u8) -> Result<(&str, &str, [u8; 32]), NoteError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::KeyMalformed("expected name+id+key"));
    };
    if !name_is_valid(name) {
        return Err(NoteError::KeyMalformed("invalid key name"));
    }
    let raw = STANDARD.decode(b64).map_err(|_| NoteError::KeyMalformed("bad base64"))?;
    let Some((_, bytes)) = raw.split_first().filter(|(k, _)| **k == kind) else {
        return Err(NoteError::KeyMalformed("not a key of the type this use needs"));
    };
    let bytes = bytes.try_into().map_err(|_| NoteError::KeyMalformed("key length"))?;
    Ok((name, hex, bytes))
}

/// `SHA-256(name || "\n" || kind || public key)[:4]`.
pub(crate) fn key_id(name: &str, kind: u8, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([kind]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// `<name>+<hex id>+<base64(kind || key bytes)>`, the form of verifier keys (and, after
/// `PRIVATE+KEY+`, of private keys).
pub(crate) fn encode_key(name: &str, kind: u8, id: &[u8; 4], bytes: &[u8; 32]) -> String {
    let mut raw = vec![kind];
    raw.extend_from_slice(bytes);
    format!("{name}+{}+{}", to_hex(id), STANDARD.encode(raw))
}

/// The name and seed of `PRIVATE+KEY+<name>+<hex id>+<base64(kind || seed)>`, checking
/// that the id is the one of the seed's public key.
pub(crate) fn parse_private_key(text: &str, kind: u8) -> Result<(&str, [u8; 32]), NoteError> {
    let rest = text
        .trim_end()
        .strip_prefix("PRIVATE+KEY+")
        .ok_or(NoteError::KeyMalformed("expected PRIVATE+KEY+"))?;
    let (name, hex, seed) = split_key(rest, kind)?;
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    if hex != to_hex(&key_id(name, kind, &public)) {
        return Err(NoteError::KeyMalformed("key id does not match the key"));
    }
    Ok((name, seed))
}

/// A verifier key's name, id and public key, checking the id.
pub(crate) fn parse_public_key(
    text: &str,
    kind: u8,
) -> Result<(&str, [u8; 4], VerifyingKey), NoteError> {
    let (name, hex, public) = split_key(text.trim_end(), kind)?;
    let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::KeyMalformed("bad key"))?;
    let id = key_id(name, kind, &public);
    if hex != to_hex(&id) {
        return Err(NoteError::KeyMalformed("key id does not match the key"));
    }
    Ok((name, id, key))
}

/// A key that verifies notes: a name and an Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<hex id>+<base64(0x01 || public key)>`, checking the id.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, id, key) = parse_public_key(text, ED25519)?;
        Ok(Self { name: name.to_string(), id, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key in its published form.
    pub fn encode(&self) -> String {
        encode_key(&self.name, ED25519, &self.id, self.key.as_bytes())
    }

    /// Checks a signed note and returns its text if a signature by this key verifies.
    /// Signatures by other keys are ignored, as the format requires.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (text, signatures) = split_note(note)?;
        for (name, id, signature) in signatures {
            if name != self.name || id != self.id {
                continue;
            }
            if self.key.verify(text.as_bytes(), &signature).is_ok() {
                return Ok(text);
            }
        }
        Err(NoteError::NotSigned)
    }
}

/// A key that signs notes. Its secret half never leaves this struct except through
/// [`NoteSigner::encode_private`], for storage with restrictive permissions.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed (from the OS's randomness, or storage).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !name_is_valid(name) {
            return Err(NoteError::KeyMalformed("invalid key name"));
        }
        Ok(Self { name: name.to_string(), key: SigningKey::from_bytes(seed) })
    }

    /// Parses the private key format `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`.
    pub fn parse_private(text: &str) -> Result<Self, NoteError> {
        let (name, seed) = parse_private_key(text, ED25519)?;
        Self::from_seed(name, &seed)
    }

    /// The private key in the same text format.
    pub fn encode_private(&self) -> String {
        format!("PRIVATE+KEY+{}", encode_key(&self.name, ED25519, &self.id(), self.key.as_bytes()))
    }

    fn id(&self) -> [u8; 4] {
        key_id(&self.name, ED25519, self.key.verifying_key().as_bytes())
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), id: self.id(), key: self.key.verifying_key() }
    }

    /// Signs `text` (which must end in a newline) into a note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.ends_with("\n\n") {
            return Err(NoteError::NoteMalformed("text must end in exactly one newline"));
        }
        let signature = self.key.sign(text.as_bytes());
        let mut payload = self.id().to_vec();
        payload.extend_from_slice(&signature.to_bytes());
        Ok(format!("{text}\n{DASH}{} {}\n", self.name, STANDARD.encode(payload)))
    }
}

type SignatureLine = (String, [u8; 4], Signature);

/// A signature line: the key name and the decoded bytes (key id, then the signature).
pub(crate) type RawSignature<'a> = (&'a str, Vec<u8>);

/// Splits a note into its text and its signature lines.
pub(crate) fn signature_lines(note: &str) -> Result<(&str, Vec<RawSignature<'_>>), NoteError> {
    let at = note.rfind("\n\n").ok_or(NoteError::NoteMalformed("no blank line"))?;
    let (text, lines) = (&note[..at + 1], &note[at + 2..]);
    if !lines.ends_with('\n') {
        return Err(NoteError::NoteMalformed("signatures must end in a newline"));
    }
    let mut out = Vec::new();
    for line in lines.lines() {
        if out.len() == NOTE_SIGNATURES_MAX {
            return Err(NoteError::NoteMalformed("too many signatures"));
        }
        let rest = line.strip_prefix(DASH).ok_or(NoteError::NoteMalformed("signature line"))?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::NoteMalformed("signature"))?;
        let raw = STANDARD.decode(b64).map_err(|_| NoteError::NoteMalformed("bad base64"))?;
        if raw.len() < 4 {
            return Err(NoteError::NoteMalformed("signature shorter than a key id"));
        }
        out.push((name, raw));
    }
    Ok((text, out))
}

/// Splits a note into its text and its Ed25519-shaped signature lines.
fn split_note(note: &str) -> Result<(&str, Vec<SignatureLine>), NoteError> {
    let (text, lines) = signature_lines(note)?;
    let mut out = Vec::new();
    for (name, raw) in lines {
        // Signatures of other types or lengths belong to other keys: skipped, not refused.
        if raw.len() != 4 + 64 {
            continue;
        }
        let id = [raw[0], raw[1], raw[2], raw[3]];
        let signature = Signature::from_slice(&raw[4..]).expect("64 bytes");
        out.push((name.to_string(), id, signature));
    }
    Ok((text, out))
}

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo \
        Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn the_published_example_parses_verifies_and_round_trips() {
        let key = NoteVerifier::parse(SPEC_VKEY).unwrap();
        assert_eq!(key.name(), "example.com/foo");
        assert_eq!(key.encode(), SPEC_VKEY);
        assert_eq!(key.open(SPEC_NOTE), Ok("This is an example message.\n"));
    }

    #[test]
    fn any_change_to_the_example_is_refused() {
        let key = NoteVerifier::parse(SPEC_VKEY).unwrap();
        let altered = SPEC_NOTE.replace("example message", "example massage");
        assert_eq!(key.open(&altered), Err(NoteError::NotSigned));
        let wrong_id = SPEC_VKEY.replace("530d903a", "530d903b");
        assert!(NoteVerifier::parse(&wrong_id).is_err());
    }

    /// The private key of golang.org/x/mod/sumdb/note's documentation, used as data: its
    /// verifier key must come out as published, and what it signs must verify.
    #[test]
    fn a_known_private_key_yields_its_published_verifier_key() {
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let signer = NoteSigner::parse_private(skey).unwrap();
        assert_eq!(signer.encode_private(), skey);
        let vkey = signer.verifier();
        assert_eq!(
            vkey.encode(),
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        );
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let note = signer.sign(text).unwrap();
        assert_eq!(vkey.open(&note), Ok(text));
        let other = NoteSigner::from_seed("PeterNeumann", &[7; 32]).unwrap();
        assert_eq!(other.verifier().open(&note), Err(NoteError::NotSigned));
    }
}
