//! The server's own records — API keys, idempotency records, webhooks and their deliveries —
//! in an embedded transactional store (`server.redb` in the data directory). The ledger holds
//! money; this holds everything about who may ask and what they were told.
//!
//! Writes go through one thread that gathers whatever is waiting into one durable
//! transaction (group commit), so many concurrent requests share one fsync.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

/// Rows of a table: (key, value).
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The tables. Keys and values are bytes; values are JSON documents.
#[derive(Clone, Copy, Debug)]
pub enum Table {
    /// Key prefix → key record (hash, role, owner...).
    Keys,
    /// `<key prefix>:<Idempotency-Key>` → the request's fingerprint and the answer.
    Idempotency,
    /// Webhook id → endpoint.
    Webhooks,
    /// `<webhook id>/<sequence (big-endian u64)>` → delivery and its attempts.
    Deliveries,
    /// Due time (big-endian unix ms) and delivery key → nothing: the deliveries waiting
    /// for an attempt, soonest first (so start reads none of the delivery log).
    DeliveryQueue,
    /// Named counters (the webhook dispatcher's position in the event feed...).
    Meta,
    /// Transfer id (big-endian u128) → a declined payment's risk decision (no transfer was
    /// made; the decisions of transfers made are kept with them in the ledger).
    RiskDecisions,
    /// Transfer id (big-endian u128) → the features a decision was made on (34 f32, little
    /// endian, NaN for missing): what a later label teaches the online model with, and what
    /// an approval is explained from. Erasable (an opt-out strips them).
    RiskFeatures,
    /// Policy version (big-endian u64) → the policy's text, digest and when it came in.
    RiskPolicies,
    /// Time and sequence (big-endian u64, u64) → one change to risk settings.
    RiskAudit,
    /// Account id (big-endian u128) → its own limits and profiling choice.
    RiskAccounts,
    /// Transfer id (big-endian u128) → the confirmed outcome.
    RiskLabels,
    /// Channel id (big-endian u128) → the channel: its parties, terms and state.
    Channels,
    /// Channel id (big-endian u128) → the best claim on it (voucher or hash-chain tick).
    ChannelClaims,
}

impl Table {
    fn def(self) -> Def {
        match self {
            Self::Keys => TableDefinition::new("api_keys"),
            Self::Idempotency => TableDefinition::new("idempotency"),
            Self::Webhooks => TableDefinition::new("webhooks"),
            Self::Deliveries => TableDefinition::new("deliveries"),
            Self::DeliveryQueue => TableDefinition::new("delivery_queue"),
            Self::Meta => TableDefinition::new("meta"),
            Self::RiskDecisions => TableDefinition::new("risk_decisions"),
            Self::RiskPolicies => TableDefinition::new("risk_policies"),
            Self::RiskAudit => TableDefinition::new("risk_audit"),
            Self::RiskAccounts => TableDefinition::new("risk_accounts"),
            Self::RiskLabels => TableDefinition::new("risk_labels"),
            Self::Channels => TableDefinition::new("channels"),
            Self::ChannelClaims => TableDefinition::new("channel_claims"),
            Self::RiskFeatures => TableDefinition::new("risk_features"),
        }
    }
    const ALL: [Table; 14] = [
        Self::Keys,
        Self::Idempotency,
        Self::Webhooks,
        Self::Deliveries,
        Self::DeliveryQueue,
        Self::Meta,
        Self::RiskDecisions,
        Self::RiskPolicies,
        Self::RiskAudit,
        Self::RiskAccounts,
        Self::RiskLabels,
        Self::Channels,
        Self::ChannelClaims,
        Self::RiskFeatures,
    ];
}

/// One change in a write.
#[derive(Debug)]
pub enum Write {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    /// Put, if the value there now (if any) may be replaced, as `replace` judges.
    PutIf(Table, Vec<u8>, Vec<u8>, fn(&[u8]) -> bool),
    /// Delete, if the value there is exactly this one.
    DeleteIfEqual(Table, Vec<u8>, Vec<u8>),
    /// Rewrite the value there (if any) as `update` says (`None`: leave it).
    Update(Table, Vec<u8>, fn(&[u8]) -> Option<Vec<u8>>),
    /// Put, unless the value there is already ahead of this one, as `ahead(old, new)`
    /// judges: writes racing in any order leave the highest.
    PutUnlessAhead(Table, Vec<u8>, Vec<u8>, fn(&[u8], &[u8]) -> bool),
}

const CLOSED: &str = "the server's store is closed";

type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Meta {
    /// `None` once closed: the file is released for the next process at once, whoever
    /// still holds a `Meta`.
    db: Arc<RwLock<Option<Database>>>,
    writes: mpsc::SyncSender<(Vec<Write>, Done)>,
}

impl Meta {
    /// Opens (or creates) the store and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, String> {
        let damaged = |why: String| {
            format!(
                "{}: damaged ({why}). Nothing was changed. Restore it from a backup; or, if the \
                 loss is known and accepted, `farthing recover --data-dir {} --new-server-records` \
                 starts the server's records afresh",
                path.display(),
                path.parent().map_or(".".into(), |p| p.display().to_string())
            )
        };
        // An empty file would be taken for a new database: every record gone, silently.
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(damaged("it is empty: truncated?".into()));
        }
        // redb asserts (panics) on some truncated files rather than answering an error.
        let opened = std::panic::catch_unwind(|| Database::create(path))
            .map_err(|_| damaged("shorter than its own header says: truncated?".into()))?;
        let db = opened.map_err(|e| damaged(e.to_string()))?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        for table in Table::ALL {
            txn.open_table(table.def()).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())?;
        let db = Arc::new(RwLock::new(Some(db)));
        let (writes, inbox) = mpsc::sync_channel::<(Vec<Write>, Done)>(4_096);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("farthing-meta".into())
            .spawn(move || write_loop(&writer_db, &inbox))
            .map_err(|e| e.to_string())?;
        Ok(Self { db, writes })
    }

    /// Applies the changes in one durable transaction (shared with whatever else is
    /// waiting); answers once they are on disk.
    pub async fn write(&self, changes: Vec<Write>) -> Result<(), String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let sender = self.writes.clone();
        // The channel is large; if it is ever full, wait for room off the async threads.
        if let Err(mpsc::TrySendError::Full(item)) = sender.try_send((changes, done)) {
            tokio::task::spawn_blocking(move || sender.send(item))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|_| "the store is closed".to_string())?;
        }
        wait.await.map_err(|_| "the store is closed".to_string())?
    }

    /// Queues the changes for the next transaction without waiting for it: for records
    /// that may be lost in a crash. False (nothing queued) when the queue is full.
    pub fn write_soon(&self, changes: Vec<Write>) -> bool {
        let (done, _) = tokio::sync::oneshot::channel();
        self.writes.try_send((changes, done)).is_ok()
    }

    /// Closes the store: later reads and writes fail with "closed".
    pub fn close(&self) {
        let db = self.db.write().unwrap().take();
        // A durable commit carries the `write_soon` commits made without an fsync.
        if let Some(txn) = db.as_ref().and_then(|db| db.begin_write().ok()) {
            let _ = txn.commit();
        }
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let db = self.db.read().unwrap();
        let txn = db.as_ref().ok_or(CLOSED)?.begin_read().map_err(|e| e.to_string())?;
        let t = txn.open_table(table.def()).map_err(|e| e.to_string())?;
        Ok(t.get(key).map_err(|e| e.to_string())?.map(|v| v.value().to_vec()))
    }

    /// Every row of a table whose key starts with `prefix`, in key order.
    pub fn scan(&self, table: Table, prefix: &[u8]) -> Result<Rows, String> {
        let db = self.db.read().unwrap();
        let txn = db.as_ref().ok_or(CLOSED)?.begin_read().map_err(|e| e.to_string())?;
        let t = txn.open_table(table.def()).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        for row in t.range(prefix..).map_err(|e| e.to_string())? {
            let (k, v) = row.map_err(|e| e.to_string())?;
            if !k.value().starts_with(prefix) {
                break;
            }
            rows.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(rows)
    }

    /// Up to `limit` rows with keys from `start` on, in key order.
    pub fn range(&self, table: Table, start: &[u8], limit: usize) -> Result<Rows, String> {
        let db = self.db.read().unwrap();
        let txn = db.as_ref().ok_or(CLOSED)?.begin_read().map_err(|e| e.to_string())?;
        let t = txn.open_table(table.def()).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        for row in t.range(start..).map_err(|e| e.to_string())?.take(limit) {
            let (k, v) = row.map_err(|e| e.to_string())?;
            rows.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(rows)
    }

    /// The last `limit` rows whose keys start with `prefix`, newest (highest key) first.
    pub fn scan_rev(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Rows, String> {
        let db = self.db.read().unwrap();
        let txn = db.as_ref().ok_or(CLOSED)?.begin_read().map_err(|e| e.to_string())?;
        let t = txn.open_table(table.def()).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        // Keys with the prefix lie in [prefix, prefix with its last byte + 1).
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                break;
            }
        }
        let range = match end.is_empty() {
            true => t.range(prefix..),
            false => t.range(prefix..end.as_slice()),
        };
        for row in range.map_err(|e| e.to_string())?.rev() {
            let (k, v) = row.map_err(|e| e.to_string())?;
            if !k.value().starts_with(prefix) {
                break;
            }
            rows.push((k.value().to_vec(), v.value().to_vec()));
            if rows.len() == limit {
                break;
            }
        }
        Ok(rows)
    }

    /// Deletes every row of `table` whose value `old` says is old, walking the table a page
    /// at a time (never loaded whole), each page's deletions in one write; returns how many.
    pub async fn delete_where(
        &self,
        table: Table,
        old: impl Fn(&[u8]) -> bool,
    ) -> Result<usize, String> {
        const PAGE_ROWS: usize = 4_096;
        let mut from = Vec::new();
        let mut n = 0;
        loop {
            let rows = self.range(table, &from, PAGE_ROWS)?;
            let Some((last, _)) = rows.last() else { break };
            from = last.clone();
            from.push(0);
            let full = rows.len() == PAGE_ROWS;
            let gone: Vec<Write> = rows
                .into_iter()
                .filter(|(_, value)| old(value))
                .map(|(key, _)| Write::Delete(table, key))
                .collect();
            n += gone.len();
            if !gone.is_empty() {
                self.write(gone).await?;
            }
            if !full {
                break;
            }
        }
        Ok(n)
    }

    /// A page of the rows whose keys start with `prefix`, highest key first, below
    /// `before` (exclusive) when given; and, when more follow, the page's last key (the
    /// next page's `before`).
    pub fn page_rev(
        &self,
        table: Table,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Rows, Option<Vec<u8>>), String> {
        let db = self.db.read().unwrap();
        let txn = db.as_ref().ok_or(CLOSED)?.begin_read().map_err(|e| e.to_string())?;
        let t = txn.open_table(table.def()).map_err(|e| e.to_string())?;
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                break;
            }
        }
        let end = match (before, end.is_empty()) {
            (Some(b), true) => Some(b.to_vec()),
            (Some(b), false) => Some(b.min(end.as_slice()).to_vec()),
            (None, true) => None,
            (None, false) => Some(end),
        };
        if end.as_deref().is_some_and(|e| e <= prefix) {
            return Ok((Vec::new(), None));
        }
        let range = match &end {
            Some(end) => t.range(prefix..end.as_slice()),
            None => t.range(prefix..),
        };
        let mut rows = Vec::new();
        for row in range.map_err(|e| e.to_string())?.rev() {
            let (k, v) = row.map_err(|e| e.to_string())?;
            if !k.value().starts_with(prefix) {
                break;
            }
            if rows.len() == limit {
                let last = rows.last().map(|(k, _): &(Vec<u8>, Vec<u8>)| k.clone());
                return Ok((rows, last));
            }
            rows.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok((rows, None))
    }

    /// Rows in a table (kept by the store: no scan).
    pub fn row_count(&self, table: Table) -> Result<u64, String> {
        let db = self.db.read().unwrap();
        let txn = db.as_ref().ok_or(CLOSED)?.begin_read().map_err(|e| e.to_string())?;
        let t = txn.open_table(table.def()).map_err(|e| e.to_string())?;
        t.len().map_err(|e| e.to_string())
    }

    pub fn counter(&self, name: &str) -> Result<u64, String> {
        Ok(self
            .get(Table::Meta, name.as_bytes())?
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }
}

/// Gathers waiting writes into one transaction each time round.
/// Commits of only `write_soon` changes in a row without an fsync, at most: then one is
/// made durable (redb frees pages only at durable commits, so the file stays bounded).
const SOON_COMMITS_MAX: u32 = 32;

fn write_loop(db: &RwLock<Option<Database>>, inbox: &mpsc::Receiver<(Vec<Write>, Done)>) {
    let mut soon_run = 0u32;
    while let Ok(first) = inbox.recv() {
        let mut batch = vec![first];
        while batch.len() < 4_096 {
            match inbox.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // Nobody waits on `write_soon` changes (their receiver is gone): a batch of only
        // those needs no fsync of its own; the next durable commit carries it.
        let waited = batch.iter().any(|(_, done)| !done.is_closed());
        soon_run = if waited { 0 } else { soon_run + 1 };
        let durable = waited || soon_run >= SOON_COMMITS_MAX;
        if durable {
            soon_run = 0;
        }
        let result = match db.read().unwrap().as_ref() {
            Some(db) => apply(db, durable, batch.iter_mut().flat_map(|(w, _)| w.drain(..))),
            None => Err(CLOSED.to_string()),
        };
        for (_, done) in batch {
            let _ = done.send(result.clone());
        }
    }
}

fn apply(db: &Database, durable: bool, changes: impl Iterator<Item = Write>) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    if !durable {
        txn.set_durability(redb::Durability::None);
    }
    {
        let mut tables: Vec<Option<redb::Table<&[u8], &[u8]>>> =
            Table::ALL.iter().map(|_| None).collect();
        for change in changes {
            let (table, key) = match &change {
                Write::Put(t, k, _)
                | Write::Delete(t, k)
                | Write::PutIf(t, k, _, _)
                | Write::DeleteIfEqual(t, k, _)
                | Write::Update(t, k, _)
                | Write::PutUnlessAhead(t, k, _, _) => (*t, k),
            };
            let slot = &mut tables[table as usize];
            if slot.is_none() {
                *slot = Some(txn.open_table(table.def()).map_err(|e| e.to_string())?);
            }
            let t = slot.as_mut().expect("opened");
            match &change {
                Write::Put(_, _, value) => {
                    t.insert(key.as_slice(), value.as_slice()).map_err(|e| e.to_string())?;
                }
                Write::Delete(..) => {
                    t.remove(key.as_slice()).map_err(|e| e.to_string())?;
                }
                Write::PutIf(_, _, value, replace) => {
                    let may = t
                        .get(key.as_slice())
                        .map_err(|e| e.to_string())?
                        .is_none_or(|old| replace(old.value()));
                    if may {
                        t.insert(key.as_slice(), value.as_slice()).map_err(|e| e.to_string())?;
                    }
                }
                Write::PutUnlessAhead(_, _, value, ahead) => {
                    let behind = t
                        .get(key.as_slice())
                        .map_err(|e| e.to_string())?
                        .is_none_or(|old| !ahead(old.value(), value));
                    if behind {
                        t.insert(key.as_slice(), value.as_slice()).map_err(|e| e.to_string())?;
                    }
                }
                Write::Update(_, _, update) => {
                    let new = t
                        .get(key.as_slice())
                        .map_err(|e| e.to_string())?
                        .and_then(|old| update(old.value()));
                    if let Some(new) = new {
                        t.insert(key.as_slice(), new.as_slice()).map_err(|e| e.to_string())?;
                    }
                }
                Write::DeleteIfEqual(_, _, value) => {
                    let same = t
                        .get(key.as_slice())
                        .map_err(|e| e.to_string())?
                        .is_some_and(|old| old.value() == value.as_slice());
                    if same {
                        t.remove(key.as_slice()).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

/// A 32-byte secret. Its `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// The server's secrets, one per use, so that no output of one use helps against another.
#[derive(Clone, Copy, Debug)]
pub struct Secrets {
    /// Ids the server chooses for an `Idempotency-Key`'s request.
    pub ids: Secret,
    /// The ledger ids of channels' escrow accounts and transfers.
    pub channels: Secret,
    /// Keyed hashes of devices and IPs in the risk engine.
    pub hashing: Secret,
}

const SECRET: &[u8] = b"server_secret";
const DERIVATION: &[u8] = b"server_secret_derivation";
const HKDF_V1: &[u8] = b"hkdf-sha256/1";

impl Secrets {
    /// HKDF-SHA256 (RFC 5869) of the directory's root secret, one `info` per use.
    fn derive(root: &[u8; 32]) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"farthing server secrets"), root);
        let one = |info: &[u8]| {
            let mut out = [0u8; 32];
            hk.expand(info, &mut out).expect("32 bytes is a valid HKDF-SHA256 length");
            Secret(out)
        };
        Self {
            ids: one(b"ids"),
            channels: one(b"channel ledger ids"),
            hashing: one(b"risk hashing"),
        }
    }
}

/// The data directory's secrets, from its root secret (32 random bytes, made at first
/// start). A directory made before the secrets were derived keeps using its root secret for
/// every use: its channels' ledger ids and kept hashes were made with it.
pub async fn secrets(meta: &Meta) -> Result<Secrets, String> {
    let damaged = || "server.redb: the server secret is damaged".to_string();
    if let Some(v) = meta.get(Table::Meta, SECRET)? {
        let root: [u8; 32] = v.try_into().map_err(|_| damaged())?;
        return Ok(match meta.get(Table::Meta, DERIVATION)?.as_deref() {
            Some(HKDF_V1) => Secrets::derive(&root),
            Some(_) => return Err(damaged()),
            None => Secrets { ids: Secret(root), channels: Secret(root), hashing: Secret(root) },
        });
    }
    let root: [u8; 32] = rand::random();
    meta.write(vec![
        Write::Put(Table::Meta, SECRET.to_vec(), root.to_vec()),
        Write::Put(Table::Meta, DERIVATION.to_vec(), HKDF_V1.to_vec()),
    ])
    .await?;
    Ok(Secrets::derive(&root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_are_derived_one_per_use_and_old_directories_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("server.redb")).unwrap();
        let made = secrets(&meta).await.unwrap();
        let root = meta.get(Table::Meta, SECRET).unwrap().unwrap();
        let all = [made.ids.0, made.channels.0, made.hashing.0];
        for (i, a) in all.iter().enumerate() {
            assert_ne!(a.as_slice(), root.as_slice(), "no use sees the root secret");
            assert!(all[i + 1..].iter().all(|b| b != a), "one secret per use");
        }
        let again = secrets(&meta).await.unwrap();
        assert_eq!(
            (again.ids, again.channels, again.hashing),
            (made.ids, made.channels, made.hashing)
        );
        let shown = format!("{made:?}");
        assert!(
            !shown.contains(&format!("{:?}", made.ids.0[0..4].to_vec()))
                && shown.contains("redacted")
        );
        // A directory from before the derivation: every use keeps the root secret.
        meta.write(vec![Write::Delete(Table::Meta, DERIVATION.to_vec())]).await.unwrap();
        let old = secrets(&meta).await.unwrap();
        assert_eq!(old.channels.0.as_slice(), root.as_slice());
        assert_eq!(old.ids, old.hashing);
        meta.close();
    }
}
