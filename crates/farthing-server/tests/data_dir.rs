//! A data directory that lost part of itself stops start-up with a clear message and changes
//! nothing; recovering on purpose is an explicit step (`farthing recover`).

mod common;

use common::*;
use farthing_server::Server;

/// A server over `dir` with the README's accounts and one payment, stopped.
async fn used(dir: &std::path::Path) {
    let (server, admin) = start(config(dir)).await;
    seed(&admin).await;
    pay(&admin, "42", "1001", "2001", "0.25").await;
    server.shutdown().await.unwrap();
}

async fn refused(dir: &std::path::Path) -> String {
    match Server::start(config(dir), None).await {
        Ok(server) => {
            server.shutdown().await.unwrap();
            panic!("the server started over a damaged directory");
        }
        Err(e) => e,
    }
}

/// Every file and its bytes, to show a refused start changed nothing.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "LOCK" {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_log_is_refused_until_a_new_one_is_started_on_purpose() {
    for lost in ["tlog", "tlog/checkpoints", "tlog/key"] {
        let dir = tempfile::tempdir().unwrap();
        used(dir.path()).await;
        let path = dir.path().join(lost);
        match path.is_dir() {
            true => std::fs::remove_dir_all(&path).unwrap(),
            false => std::fs::remove_file(&path).unwrap(),
        }
        let before = files(dir.path());
        let e = refused(dir.path()).await;
        assert!(e.contains("is missing") && e.contains("farthing recover"), "{lost}: {e}");
        assert!(e.contains("--new-log"), "{e}");
        assert_eq!(files(dir.path()), before, "{lost}: a refused start changed nothing");
        // On purpose: a new log, rebuilt from the ledger; the payment is in it.
        farthing_store::tlog::start_new_log(dir.path(), None).unwrap();
        let (server, admin) = start(config(dir.path())).await;
        // The payment's receipt verifies under the new key.
        let proof = admin.get_text("/v1/transfers/42/receipt?format=tlog-proof").await.unwrap();
        let key =
            farthing_tlog::note::NoteVerifier::parse(&admin.log_key().await.unwrap()).unwrap();
        let proof = farthing_tlog::proof::TlogProof::parse(&proof).unwrap();
        proof.verify(&key).expect("the receipt verifies under the new log's key");
        server.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_or_truncated_server_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    used(dir.path()).await;
    let records = dir.path().join("server.redb");
    let saved = std::fs::read(&records).unwrap();
    // Missing beside a ledger with accounts: no new admin key, no start.
    std::fs::remove_file(&records).unwrap();
    let before = files(dir.path());
    let e = refused(dir.path()).await;
    assert!(e.contains("missing") && e.contains("--new-server-records"), "{e}");
    assert_eq!(files(dir.path()), before);
    // Truncated: a clear error, not a panic, and no repair that drops records silently.
    for keep in [saved.len() / 2, 4096, 0] {
        std::fs::write(&records, &saved[..keep]).unwrap();
        let e = refused(dir.path()).await;
        assert!(e.contains("server.redb"), "{keep}: {e}");
    }
    // On purpose: new records and a new admin key; the ledger is untouched.
    let key = farthing_server::start_new_server_records(dir.path()).await.unwrap();
    let server = Server::start(config(dir.path()), None).await.unwrap();
    assert!(server.new_admin_key.is_none(), "the recovery made the admin key");
    let admin = farthing_client::Client::new(&server.url, &key);
    assert_eq!(admin.account("2001").await.unwrap()["balance"], "0.250000");
    server.shutdown().await.unwrap();
}
