//! The RFC 9162 test vectors (tests/data/rfc9162, third party): a verifier must accept
//! exactly the cases marked `wantErr: false`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use farthing_tlog::{verify_consistency, verify_inclusion, Hash};
use serde_json::Value;

fn cases(kind: &str) -> Vec<(PathBuf, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc9162").join(kind);
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, serde_json::from_str(&text).unwrap()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A hash field; a value that is not 32 bytes (as some negative cases hold) yields `None`.
fn hash(v: &Value) -> Option<Hash> {
    let text = v.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    bytes.try_into().ok()
}

/// A root: any byte string (some negative cases hold roots that are not hashes).
fn bytes(v: &Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => None,
    }
}

#[test]
fn inclusion_vectors_are_decided_exactly() {
    let all = cases("inclusion");
    assert!(all.len() > 50, "vectors missing: {}", all.len());
    for (path, c) in &all {
        let want_err = c["wantErr"].as_bool().unwrap();
        let got = match (hash(&c["leafHash"]), bytes(&c["root"]), proof(&c["proof"])) {
            (Some(leaf), Some(root), Some(p)) => verify_inclusion(
                c["leafIdx"].as_u64().unwrap(),
                c["treeSize"].as_u64().unwrap(),
                &leaf,
                &p,
                &root,
            )
            .is_ok(),
            _ => false,
        };
        assert_eq!(got, !want_err, "{} ({})", path.display(), c["desc"]);
    }
}

#[test]
fn consistency_vectors_are_decided_exactly() {
    let all = cases("consistency");
    assert!(all.len() > 50, "vectors missing: {}", all.len());
    for (path, c) in &all {
        let want_err = c["wantErr"].as_bool().unwrap();
        let got = match (bytes(&c["root1"]), bytes(&c["root2"]), proof(&c["proof"])) {
            (Some(r1), Some(r2), Some(p)) => verify_consistency(
                c["size1"].as_u64().unwrap(),
                c["size2"].as_u64().unwrap(),
                &r1,
                &r2,
                &p,
            )
            .is_ok(),
            _ => false,
        };
        assert_eq!(got, !want_err, "{} ({})", path.display(), c["desc"]);
    }
}
