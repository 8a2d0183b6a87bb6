//! `Idempotency-Key` on POST requests, with Stripe's semantics: the same key with the same
//! request replays the first answer (status and body, marked `Idempotent-Replayed: true`);
//! the same key with a different request is refused (422); a request still running under
//! the key answers 409. Keys are scoped to the API key that sent them and kept at least
//! `idempotency_ttl_h` hours, across restarts: the record is durable before the answer.
//!
//! What is recorded: answers of requests that ran to a decision — 2xx, and the ledger's
//! refusals (409, 422), and the risk engine's declines (402). Requests refused before they ran (400, 401, 403, 404, 413, 415,
//! 429) and failures (5xx) are not: a retry runs again. Answers that show a secret once
//! (a new API key, a webhook's signing secret) are never stored, nor transient conflicts
//! (a 409 with `Retry-After`, such as `channel_busy`). Requests are compared as
//! JSON (key order and spacing do not matter). Beneath this, the ledger's own ids make a
//! retried transfer safe even without a key.

//!
//! This module is the store of kept answers (below the services); `idempotent.rs` is the
//! middleware that uses it.
use std::collections::HashSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::auth::now_unix_s;
use crate::meta::{Meta, Table};

/// Put on a response that must not be stored for replay (it shows a secret once).
#[derive(Clone, Copy, Debug)]
pub struct NoReplay;

/// A kept answer.
#[derive(Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) fingerprint: String,
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: String,
    pub(crate) created_unix_s: u64,
}

pub struct Idempotency {
    pub(crate) meta: Meta,
    /// Keys whose request is running now.
    pub(crate) in_flight: Mutex<HashSet<String>>,
    ttl_s: u64,
}

impl Idempotency {
    pub fn new(meta: Meta, ttl_h: u64) -> Self {
        Self { meta, in_flight: Mutex::default(), ttl_s: ttl_h * 3_600 }
    }

    /// Deletes records older than the retention; returns how many. The table is walked a
    /// page at a time (never loaded whole), each page's old records deleted in one write.
    pub async fn prune(&self) -> Result<usize, String> {
        let cutoff = now_unix_s().saturating_sub(self.ttl_s);
        self.meta
            .delete_where(Table::Idempotency, |value| {
                serde_json::from_slice::<Record>(value).map_or(0, |r| r.created_unix_s) < cutoff
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Write;

    /// Pruning walks the table a page at a time: more records than a page, old and new
    /// interleaved, and exactly the old ones go.
    #[tokio::test]
    async fn pruning_pages_through_the_table_and_keeps_the_young() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("server.redb")).unwrap();
        let idempotency = Idempotency::new(meta.clone(), 24);
        let now = now_unix_s();
        let writes = (0..10_000u32)
            .map(|i| {
                let created_unix_s = if i % 3 == 0 { now - 25 * 3_600 } else { now };
                let record = Record {
                    fingerprint: String::new(),
                    status: 200,
                    content_type: "application/json".into(),
                    body: String::new(),
                    created_unix_s,
                };
                let key = format!("fk_x:{i:05}").into_bytes();
                Write::Put(Table::Idempotency, key, serde_json::to_vec(&record).unwrap())
            })
            .collect();
        meta.write(writes).await.unwrap();
        assert_eq!(idempotency.prune().await.unwrap(), 3_334);
        assert_eq!(meta.scan(Table::Idempotency, b"").unwrap().len(), 6_666);
        assert_eq!(idempotency.prune().await.unwrap(), 0);
        meta.close();
    }
}
