//! Checking a webhook from Farthing (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, HMAC-SHA256 over `id.timestamp.body`, keyed by the `whsec_` secret).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Checks a delivery: the signature is one of the space-separated `v1,<base64>` values,
/// and the timestamp is within `tolerance_s` of `now_s` (replayed deliveries are refused).
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), String> {
    let ts: u64 = timestamp.parse().map_err(|_| "webhook-timestamp is not a number".to_string())?;
    if ts.abs_diff(now_s) > tolerance_s {
        return Err(format!("webhook-timestamp {ts} is more than {tolerance_s} s from now"));
    }
    let key = check_secret(secret)?;
    for candidate in signatures.split_whitespace() {
        let Some(sig) = candidate.strip_prefix("v1,") else { continue };
        let Ok(sig) = STANDARD.decode(sig) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("no signature matches".into())
}

/// The key inside a `whsec_<base64>` secret; anything else (an empty key included) is
/// refused rather than used.
pub fn check_secret(secret: &str) -> Result<Vec<u8>, String> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            "a webhook secret is whsec_ followed by base64, as POST /v1/webhooks shows it".into()
        })
}
