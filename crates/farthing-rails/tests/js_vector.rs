//! The voucher test vector shared with the JavaScript client (clients/js): the same seed
//! and voucher must give the same signing bytes and, Ed25519 being deterministic, the same
//! signature. The constants live here and in clients/js/test/vector.json; this test checks
//! that both agree with ed25519-dalek and with each other.

use ed25519_dalek::SigningKey;
use farthing_rails::channel::Voucher;

const SEED: [u8; 32] = [7; 32];
const PUBLIC_KEY: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
const SIGNING_BYTES: &str = "6661727468696e672d766f75636865722f76310a\
                             00000000000000000000000000000001\
                             0000000000000002\
                             0000000000000000000000000000012c\
                             00000000ee6b2800";
const SIGNATURE: &str = "6f747963ceb2df1a53e34e8c5311c4b95c13979c67490f3d7dab3e1a74a70fc3\
                         abf263049602a3091254191c4b5df2402af123148d3299effbc5df2251eeaa0d";

const VOUCHER: Voucher =
    Voucher { channel: 1, sequence: 2, cumulative: 300, expires_at_s: 4_000_000_000 };

use farthing_rails::hex::to_hex as hex;

#[test]
fn dalek_gives_the_constants() {
    let key = SigningKey::from_bytes(&SEED);
    assert_eq!(hex(key.verifying_key().as_bytes()), PUBLIC_KEY);
    assert_eq!(hex(&VOUCHER.signing_bytes()), SIGNING_BYTES);
    assert_eq!(hex(&VOUCHER.sign(&key).signature), SIGNATURE);
}

#[test]
fn the_js_vector_file_holds_the_same_constants() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../clients/js/test/vector.json");
    let text = std::fs::read_to_string(path).expect("clients/js/test/vector.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("vector.json is JSON");
    assert_eq!(json["seed"], hex(&SEED));
    assert_eq!(json["public_key"], PUBLIC_KEY);
    assert_eq!(json["signing_bytes"], SIGNING_BYTES);
    assert_eq!(json["signature"], SIGNATURE);
    let v = &json["voucher"];
    assert_eq!(v["channel_id"], VOUCHER.channel.to_string());
    assert_eq!(v["sequence"], VOUCHER.sequence.to_string());
    assert_eq!(v["cumulative"], VOUCHER.cumulative.to_string());
    assert_eq!(v["expires_at"], VOUCHER.expires_at_s);
}
