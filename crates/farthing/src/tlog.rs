//! The transparency log's commands: `log`, `receipt`, `verify` and `audit`.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::{Args, Subcommand};
use farthing_ledger::leaf::decode_leaf;
use farthing_store::audit::{audit, AUDIT_PROGRESS_LEAVES};
use farthing_store::tlog::verifier_key;
use farthing_store::{Engine, EngineConfig};
use farthing_tlog::checkpoint::Checkpoint;
use farthing_tlog::cosignature::CosignerKey;
use farthing_tlog::note::{NoteError, NoteVerifier};
use farthing_tlog::proof::{encode_hashes, parse_hashes, TlogProof};
use farthing_tlog::verify_consistency;
use serde_json::{json, Value};

use farthing_server::receipt::receipt_json;
pub use farthing_server::receipt::{checkpoint_body, transfer_json, RECEIPT_JSON_FORMAT};

#[derive(Subcommand)]
pub enum LogCommand {
    /// Print the log's verifier key (name+keyid+base64): publish it; verifiers need only it.
    Key {
        #[arg(long, default_value = "./farthing-data")]
        data_dir: PathBuf,
    },
    /// Sign a checkpoint of everything committed and print it (a signed note).
    Checkpoint {
        #[arg(long, default_value = "./farthing-data")]
        data_dir: PathBuf,
    },
    /// Print the consistency proof (base64 hashes, one per line) between two log sizes.
    Consistency {
        #[arg(long, default_value = "./farthing-data")]
        data_dir: PathBuf,
        /// The older checkpoint's size.
        #[arg(long)]
        old: u64,
        /// The newer checkpoint's size (default: the latest checkpoint's).
        #[arg(long)]
        new: Option<u64>,
    },
}

#[derive(Args)]
pub struct ReceiptArgs {
    #[arg(long, default_value = "./farthing-data")]
    pub data_dir: PathBuf,
    /// The transfer's id.
    #[arg(long)]
    pub id: u128,
    /// Print JSON instead of the C2SP tlog-proof text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum VerifyCommand {
    /// Check a receipt (tlog-proof text or JSON) offline and print the transfer it proves.
    Receipt {
        file: PathBuf,
        /// The log's verifier key, or a file holding it.
        #[arg(long)]
        key: String,
        /// A witness whose cosignature the receipt's checkpoint must carry (repeatable).
        #[arg(long)]
        witness: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check a signed checkpoint, and the cosignatures of the given witnesses on it.
    Checkpoint {
        file: PathBuf,
        #[arg(long)]
        key: String,
        /// A witness whose cosignature must be on it (repeatable).
        #[arg(long)]
        witness: Vec<String>,
    },
    /// Check that the log only grew between two saved checkpoints.
    Consistency {
        old: PathBuf,
        new: PathBuf,
        /// The proof: base64 hashes, one per line (`farthing log consistency`).
        #[arg(long)]
        proof: PathBuf,
        #[arg(long)]
        key: String,
    },
}

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long, default_value = "./farthing-data")]
    pub data_dir: PathBuf,
    /// The log's published verifier key, or a file holding it. Default: the directory's own
    /// key.pub, which an independent auditor should not take on trust.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn open_engine(data_dir: &Path) -> Result<Engine, String> {
    if !data_dir.join("FORMAT").exists() {
        return Err(format!("{} is not a Farthing data directory", data_dir.display()));
    }
    let mut config = EngineConfig::new(data_dir);
    config.accounts_capacity = 0;
    config.transfers_capacity = 0;
    Engine::open(config).map_err(|e| e.to_string())
}

pub fn run_log(command: &LogCommand) -> Result<(), String> {
    match command {
        LogCommand::Key { data_dir } => {
            println!("{}", verifier_key(data_dir).map_err(|e| e.to_string())?);
            Ok(())
        }
        LogCommand::Checkpoint { data_dir } => {
            let engine = open_engine(data_dir)?;
            let note = engine.handle().checkpoint().map_err(|e| e.to_string())?;
            engine.shutdown().map_err(|e| e.to_string())?;
            print!("{note}");
            Ok(())
        }
        LogCommand::Consistency { data_dir, old, new } => {
            let engine = open_engine(data_dir)?;
            let h = engine.handle();
            let result = (|| {
                let new = match new {
                    Some(n) => *n,
                    None => {
                        let note = h.checkpoint().map_err(|e| e.to_string())?;
                        checkpoint_body(&note)?.size
                    }
                };
                h.consistency_proof(*old, new).map_err(|e| e.to_string())
            })();
            engine.shutdown().map_err(|e| e.to_string())?;
            print!("{}", encode_hashes(&result?));
            Ok(())
        }
    }
}

pub fn run_receipt(args: &ReceiptArgs) -> Result<(), String> {
    let engine = open_engine(&args.data_dir)?;
    let receipt = engine.handle().receipt(args.id);
    engine.shutdown().map_err(|e| e.to_string())?;
    let receipt = receipt
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no committed transfer has id {}", args.id))?;
    if args.json {
        let doc = receipt_json(&receipt)?;
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        print!("{}", receipt.proof.to_text());
    }
    Ok(())
}

/// A verifier key given as text, or the path of a file holding it.
pub fn read_key(arg: &str) -> Result<NoteVerifier, String> {
    key_arg(arg, "--key", "verifier key", NoteVerifier::parse)
}

/// A key given on the command line as text, or as the path of a file holding it.
fn key_arg<K>(
    arg: &str,
    flag: &str,
    what: &str,
    parse: fn(&str) -> Result<K, NoteError>,
) -> Result<K, String> {
    let as_key = parse(arg.trim());
    if as_key.is_ok() || !Path::new(arg).exists() && arg.contains('+') {
        return as_key.map_err(|e| format!("{flag} {arg}: not a {what}: {e}"));
    }
    let text = std::fs::read_to_string(arg)
        .map_err(|e| format!("{flag} is neither a {what} nor a readable file ({arg}: {e})"))?;
    parse(text.trim()).map_err(|e| format!("{arg}: not a {what}: {e}"))
}

pub fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A receipt file as a tlog-proof, whichever form it is in. For JSON, the fields a reader
/// might trust without checking (`transfer`, `index`) must agree with what is proven.
fn parse_receipt(text: &str) -> Result<(TlogProof, Option<Value>), String> {
    if !text.trim_start().starts_with('{') {
        return Ok((TlogProof::parse(text).map_err(|e| e.to_string())?, None));
    }
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("receipt JSON: {e}"))?;
    if doc["format"] != RECEIPT_JSON_FORMAT {
        return Err(format!("receipt JSON: format is not {RECEIPT_JSON_FORMAT:?}"));
    }
    let field = |name: &str| {
        doc[name].as_str().ok_or_else(|| format!("receipt JSON: no string field {name:?}"))
    };
    let leaf = STANDARD.decode(field("leaf")?).map_err(|_| "receipt JSON: leaf is not base64")?;
    let hashes: Vec<&str> = doc["inclusion_proof"]
        .as_array()
        .ok_or("receipt JSON: no inclusion_proof array")?
        .iter()
        .map(|h| h.as_str().ok_or("receipt JSON: a proof hash is not a string"))
        .collect::<Result<_, _>>()?;
    let proof = parse_hashes(&hashes.join("\n")).map_err(|e| format!("receipt JSON: {e}"))?;
    let index = doc["index"].as_u64().ok_or("receipt JSON: no index")?;
    let proof =
        TlogProof { extra: Some(leaf), index, proof, checkpoint: field("checkpoint")?.to_string() };
    Ok((proof, Some(doc)))
}

pub fn run_verify(command: &VerifyCommand) -> Result<(), String> {
    match command {
        VerifyCommand::Checkpoint { file, key, witness } => {
            let note = read_file(file)?;
            let cp = Checkpoint::open(&note, &read_key(key)?)
                .map_err(|e| format!("checkpoint refused: {e}"))?;
            println!("OK: {} size {} root {}", cp.origin, cp.size, STANDARD.encode(cp.root));
            for (name, time) in check_witnesses(&note, witness)? {
                println!("  cosigned by {name} at {time} (seconds since the epoch)");
            }
            Ok(())
        }
        VerifyCommand::Receipt { file, key, witness, json: as_json } => {
            let key = read_key(key)?;
            let (proof, doc) = parse_receipt(&read_file(file)?)?;
            let (cp, leaf) = proof.verify(&key).map_err(|e| format!("receipt refused: {e}"))?;
            let cosigned = check_witnesses(&proof.checkpoint, witness)
                .map_err(|e| format!("receipt refused: {e}"))?;
            let t = decode_leaf(leaf).map_err(|e| format!("receipt refused: {e}"))?;
            let transfer = transfer_json(&t);
            if let Some(doc) = doc {
                for (name, proven) in [("transfer", &transfer), ("tree_size", &json!(cp.size))] {
                    if doc.get(name).is_some_and(|v| v != proven) {
                        return Err(format!(
                            "receipt refused: its {name:?} field is not what the proof proves"
                        ));
                    }
                }
            }
            if *as_json {
                let out = json!({
                    "verified": true,
                    "log": cp.origin,
                    "index": proof.index,
                    "tree_size": cp.size,
                    "cosigned_by": cosigned.iter().map(|(n, t)| json!({"witness": n, "time": t})).collect::<Vec<_>>(),
                    "transfer": transfer,
                });
                println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            } else {
                println!(
                    "OK: transfer {} is leaf {} of {} (checkpoint size {}, signed)",
                    t.id, proof.index, cp.origin, cp.size
                );
                for (name, time) in &cosigned {
                    println!("  cosigned by {name} at {time} (seconds since the epoch)");
                }
                for (name, value) in transfer.as_object().expect("object") {
                    println!(
                        "  {name:<18} {}",
                        value.as_str().map_or(value.to_string(), String::from)
                    );
                }
            }
            Ok(())
        }
        VerifyCommand::Consistency { old, new, proof, key } => {
            let key = read_key(key)?;
            let open = |path: &Path| {
                Checkpoint::open(&read_file(path)?, &key)
                    .map_err(|e| format!("{}: checkpoint refused: {e}", path.display()))
            };
            let (a, b) = (open(old)?, open(new)?);
            let hashes = parse_hashes(&read_file(proof)?)
                .map_err(|e| format!("{}: {e}", proof.display()))?;
            verify_consistency(a.size, b.size, &a.root, &b.root, &hashes).map_err(|e| {
                format!(
                    "NOT consistent: the log at size {} does not extend size {}: {e}",
                    b.size, a.size
                )
            })?;
            println!(
                "OK: {} at size {} extends its checkpoint at size {} (append-only)",
                b.origin, b.size, a.size
            );
            Ok(())
        }
    }
}

/// Every given witness's cosignature on a checkpoint note: (name, time), or which is missing.
fn check_witnesses(note: &str, witnesses: &[String]) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for text in witnesses {
        let key = key_arg(text, "--witness", "witness key", CosignerKey::parse)?;
        let time = key
            .verify(note)
            .map_err(|_| format!("no valid cosignature by witness {}", key.name()))?;
        out.push((key.name().to_string(), time));
    }
    Ok(out)
}

pub fn run_audit(args: &AuditArgs) -> Result<bool, String> {
    let (key, key_source) = match &args.key {
        Some(k) => (read_key(k)?, "given"),
        None => {
            if !args.data_dir.join("tlog").join("key.pub").exists() {
                return Err(format!(
                    "{} has no transparency log key (not a data directory, or written with \
                     the log off); pass the log's published key with --key",
                    args.data_dir.display()
                ));
            }
            let text = verifier_key(&args.data_dir).map_err(|e| e.to_string())?;
            (NoteVerifier::parse(&text).map_err(|e| e.to_string())?, "the directory's own key.pub")
        }
    };
    let show_progress = !args.json;
    let mut progress = |done: u64, total: u64| {
        if show_progress && total >= AUDIT_PROGRESS_LEAVES {
            let width = 40;
            let filled = (done * width / total.max(1)) as usize;
            let bar: String = "#".repeat(filled) + &".".repeat(width as usize - filled);
            eprint!("\rhashing leaves [{bar}] {:>3}% {done}/{total}", done * 100 / total.max(1));
            if done == total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    };
    let (report, _) = audit(&args.data_dir, &key, &mut progress)
        .map_err(|e| format!("AUDIT FAILED: the data directory cannot be recovered: {e}"))?;
    let passed = report.passed();
    if args.json {
        let out = json!({
            "passed": passed,
            "key": key.encode(),
            "leaves": report.leaves,
            "checkpoints": report.checkpoints,
            "latest_good_checkpoint_size": report.latest_good.as_ref().map(|c| c.size),
            "first_bad_leaf": report.first_bad_leaf,
            "bad_range": report.bad_range.map(|(a, b)| json!([a, b])),
            "problems": report.problems,
            "invariants": report.invariants,
            "recovery_ms": report.recovery.as_millis() as u64,
            "hashing_ms": report.hashing.as_millis() as u64,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else {
        println!("key: {} ({key_source})", key.encode());
        println!(
            "ledger: {} leaves recomputed (recovery {:.2} s, hashing {:.2} s)",
            report.leaves,
            report.recovery.as_secs_f64(),
            report.hashing.as_secs_f64()
        );
        println!("checkpoints: {} on file", report.checkpoints);
        if let Some(cp) = &report.latest_good {
            println!("latest matching checkpoint: size {}", cp.size);
            if report.leaves > cp.size && report.problems.is_empty() {
                println!(
                    "  ({} later leaves not signed yet: the engine signs them when it next runs)",
                    report.leaves - cp.size
                );
            }
        }
        if let Some(i) = report.first_bad_leaf {
            println!("FIRST BAD LEAF: {i}");
        }
        if let Some((a, b)) = report.bad_range {
            println!("FIRST BAD LEAF: somewhere in leaves {a}..{b}");
        }
        for p in report.problems.iter().chain(&report.invariants) {
            println!("PROBLEM: {p}");
        }
        println!("{}", if passed { "AUDIT PASSED" } else { "AUDIT FAILED" });
    }
    Ok(passed)
}
