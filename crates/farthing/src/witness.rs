//! `farthing witness`: a cosigner that follows a log's checkpoints, checks that each one
//! extends the last it cosigned (a consistency proof), and cosigns it (C2SP
//! tlog-cosignature, Ed25519). Its state directory is its memory: the largest checkpoint
//! it cosigned for each log, so it never cosigns a rollback or a fork.
//!
//! ```text
//! STATE/key              the witness's private key, mode 0600
//! STATE/key.pub          its verifier key: publish it
//! STATE/logs/<id>        the last checkpoint cosigned for a log (id: hash of its origin)
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use farthing_tlog::checkpoint::Checkpoint;
use farthing_tlog::cosignature::Cosigner;
use farthing_tlog::note::NoteVerifier;
use farthing_tlog::proof::parse_hashes;
use farthing_tlog::verify_consistency;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

use crate::inspect::hex;
use crate::tlog::{read_file, read_key};

#[derive(Subcommand)]
pub enum WitnessCommand {
    /// Make the witness's key (once) and print its verifier key.
    Init {
        #[arg(long)]
        state: PathBuf,
        /// The witness's name (a schema-less URL); default `farthing-witness.local/<random>`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Print the witness's verifier key.
    Key {
        #[arg(long)]
        state: PathBuf,
    },
    /// Check a checkpoint against the last one cosigned for its log and cosign it: prints
    /// the checkpoint with the cosignature line added.
    Cosign {
        #[arg(long)]
        state: PathBuf,
        /// The log's verifier key, or a file holding it.
        #[arg(long)]
        log_key: String,
        /// The new checkpoint (a signed note).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Consistency proof from the last cosigned size (`farthing log consistency`).
        /// Not needed for a log's first checkpoint or an unchanged one.
        #[arg(long)]
        proof: Option<PathBuf>,
    },
}

fn private_path(state: &Path) -> PathBuf {
    state.join("key")
}

fn load_cosigner(state: &Path) -> Result<Cosigner, String> {
    let path = private_path(state);
    let meta = std::fs::metadata(&path).map_err(|e| {
        format!("{}: {e} (run `farthing witness init --state {}`)", path.display(), state.display())
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("{}: the witness key is open to others; chmod 600 it", path.display()));
    }
    Cosigner::parse_private(read_file(&path)?.trim_end())
        .map_err(|e| format!("{}: not a witness key: {e}", path.display()))
}

fn write_atomically(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub fn run(command: &WitnessCommand) -> Result<(), String> {
    match command {
        WitnessCommand::Init { state, name } => {
            std::fs::create_dir_all(state.join("logs")).map_err(|e| e.to_string())?;
            if !private_path(state).exists() {
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.try_fill_bytes(&mut seed).map_err(|e| e.to_string())?;
                let name = name.clone().unwrap_or_else(|| {
                    let mut tag = [0u8; 6];
                    let _ = rand::rngs::OsRng.try_fill_bytes(&mut tag);
                    format!("farthing-witness.local/{}", hex(&tag))
                });
                let signer = Cosigner::from_seed(&name, &seed)
                    .map_err(|e| format!("witness name {name:?}: {e}"))?;
                write_atomically(&private_path(state), &signer.encode_private(), 0o600)?;
                let public = format!("{}\n", signer.verifier().encode());
                write_atomically(&state.join("key.pub"), &public, 0o644)?;
            }
            println!("{}", load_cosigner(state)?.verifier().encode());
            Ok(())
        }
        WitnessCommand::Key { state } => {
            println!("{}", load_cosigner(state)?.verifier().encode());
            Ok(())
        }
        WitnessCommand::Cosign { state, log_key, checkpoint, proof } => {
            let signer = load_cosigner(state)?;
            let log_key = read_key(log_key)?;
            let note = read_file(checkpoint)?;
            let cp = Checkpoint::open(&note, &log_key)
                .map_err(|e| format!("{}: checkpoint refused: {e}", checkpoint.display()))?;
            let memory = log_memory(state, &cp.origin);
            if let Some(last) = last_cosigned(&memory, &log_key)? {
                check_extends(&last, &cp, proof.as_deref())?;
            }
            let time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            let line = signer.cosign(&cp.to_text(), time);
            let cosigned =
                format!("{}{line}", note_without_witness(&note, signer.verifier().name()));
            // Remember before answering: a crash after printing must not forget it.
            write_atomically(&memory, &cosigned, 0o644)?;
            print!("{cosigned}");
            Ok(())
        }
    }
}

fn log_memory(state: &Path, origin: &str) -> PathBuf {
    state.join("logs").join(hex(&Sha256::digest(origin.as_bytes())[..8]))
}

fn last_cosigned(memory: &Path, log_key: &NoteVerifier) -> Result<Option<Checkpoint>, String> {
    match std::fs::read_to_string(memory) {
        Ok(note) => Checkpoint::open(&note, log_key)
            .map(Some)
            .map_err(|e| format!("{}: the witness's own record is damaged: {e}", memory.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", memory.display())),
    }
}

/// The note without an earlier signature line of this witness (a re-cosign replaces it).
fn note_without_witness(note: &str, name: &str) -> String {
    let prefix = format!("\u{2014} {name} ");
    note.lines().filter(|l| !l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect()
}

fn check_extends(last: &Checkpoint, cp: &Checkpoint, proof: Option<&Path>) -> Result<(), String> {
    if cp.size < last.size {
        return Err(format!(
            "REFUSED: the log went back from size {} to {} (a rollback)",
            last.size, cp.size
        ));
    }
    if cp.size == last.size {
        return match cp.root == last.root {
            true => Ok(()),
            false => Err(format!("REFUSED: FORK: two different roots at size {}", cp.size)),
        };
    }
    if last.size == 0 {
        return Ok(());
    }
    let proof = proof.ok_or_else(|| {
        format!(
            "a consistency proof from size {} (the last cosigned) to {} is needed: \
             farthing log consistency --old {}",
            last.size, cp.size, last.size
        )
    })?;
    let hashes =
        parse_hashes(&read_file(proof)?).map_err(|e| format!("{}: {e}", proof.display()))?;
    verify_consistency(last.size, cp.size, &last.root, &cp.root, &hashes).map_err(|e| {
        format!("REFUSED: size {} does not extend the cosigned size {}: {e}", cp.size, last.size)
    })
}
