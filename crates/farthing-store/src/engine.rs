//! The engine: one writer thread owns the state machine; a second makes its records durable.
//!
//! ```text
//! callers ──(bounded queue)──> engine thread ──(bounded)──> WAL thread ──> replies
//!                              merge waiting requests        write + fdatasync the records
//!                              into one batch, log it (one   gathered so far (group commit),
//!                              WAL record), then execute it  then answer their callers
//! ```
//! The engine thread runs ahead of the disk by at most `wal_queue_records_max` records, so it
//! executes batch N+1 while batch N is being synced. No answer, not even a read, leaves before
//! every record it may depend on is durable: reads travel the same queue as writes.

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use farthing_ledger::codec::{
    encode_accounts, encode_assets, encode_judged_transfers, encode_transfers,
};
use farthing_ledger::limits::{BATCH_EVENTS_MAX, LOOKUP_IDS_MAX};
use farthing_ledger::{
    Account, AccountFilter, Asset, BalanceAt, CreateAccountResult, CreateAssetResult,
    CreateTransferResult, Decision, EventResult, Page, QueryError, SnapshotBuilder, StateMachine,
    Transfer,
};

use crate::clock::{Clock, SystemClock};
use crate::datadir::{self, DataDir, Recovery};
use crate::error::{EngineError, StoreError};
use crate::tlog::{CheckpointPolicy, LogMsg, LogState, Logger, Receipt};
use crate::wal::{self, Op, RecordBuilder, WalWriter};

/// Engine settings; every bound has its unit in its name.
#[derive(Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// A WAL segment is sealed once it would grow past this.
    pub segment_bytes_max: u64,
    /// Requests waiting for the engine thread; past this, callers are pushed back.
    pub queue_requests_max: usize,
    /// Records executed but not yet durable; bounds how far execution runs ahead of the disk.
    pub wal_queue_records_max: usize,
    /// Take a snapshot once this many WAL bytes were written since the last one (0: never).
    pub snapshot_wal_bytes: u64,
    /// How long an idle engine waits before checking for pending transfers to expire.
    pub pulse_interval_ms: u64,
    /// How long a blocking submit waits for room in the queue before `Overloaded`.
    pub submit_timeout_ms: u64,
    /// Accounts and transfers to allocate (and touch) memory for at start-up, so that the
    /// hot path does not wait on fresh pages; the ledger still grows past them.
    pub accounts_capacity: usize,
    pub transfers_capacity: usize,
    pub clock: Arc<dyn Clock>,
    /// Keep the transparency log (a Merkle leaf per committed transfer, signed checkpoints).
    pub log: bool,
    /// The log's origin, used when its key is made (a new directory); ignored after.
    pub log_origin: Option<String>,
    /// The log signs a checkpoint once this long passed since the last and it grew...
    pub checkpoint_interval_ms: u64,
    /// ...or once this many leaves were added since the last.
    pub checkpoint_leaves: u64,
    /// Called by the WAL thread with each run of committed transfers once it is durable,
    /// before anyone is answered: the commit path's event feed (live events, webhooks).
    pub on_commit: Option<CommitListener>,
}

/// Receives `(index of the first transfer, transfers)` in commit order, each exactly once
/// per engine run. It runs on the WAL thread, so it must only hand the transfers on.
pub type CommitListener = Arc<dyn Fn(u64, &[Transfer]) + Send + Sync>;

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            segment_bytes_max: 256 << 20,
            queue_requests_max: 16_384,
            wal_queue_records_max: 4,
            snapshot_wal_bytes: 1 << 30,
            pulse_interval_ms: 100,
            submit_timeout_ms: 5_000,
            accounts_capacity: 100_000,
            transfers_capacity: 1_000_000,
            clock: Arc::new(SystemClock),
            log: true,
            log_origin: None,
            checkpoint_interval_ms: 1_000,
            checkpoint_leaves: 1_000_000,
            on_commit: None,
        }
    }
}

/// Transfers of a snapshot in progress encoded after each batch: small enough (4 MiB) to
/// add well under a millisecond to a batch, large enough to finish 10M transfers in ~300
/// batches.
const SNAPSHOT_STEP_TRANSFERS: usize = 32_768;

type ReadFn = Box<dyn FnOnce(&StateMachine) -> Box<dyn Any + Send> + Send>;

enum Command {
    CreateAssets(Vec<Asset>),
    CreateAccounts(Vec<Account>),
    CreateTransfers(Vec<Transfer>),
    /// Transfers, each with its decision (or `Decision::NONE`), in one WAL sub-batch.
    CreateJudgedTransfers(Vec<Transfer>, Vec<Decision>),
    Read(ReadFn),
    Snapshot,
    Stop,
}

impl Command {
    fn events(&self) -> usize {
        match self {
            Self::CreateAssets(e) => e.len(),
            Self::CreateAccounts(e) => e.len(),
            Self::CreateTransfers(e) => e.len(),
            // A transfer and its decision take the room of two events in a record.
            Self::CreateJudgedTransfers(e, _) => 2 * e.len(),
            Self::Read(_) | Self::Snapshot | Self::Stop => 0,
        }
    }
}

enum Answer {
    Assets(Vec<EventResult<CreateAssetResult>>),
    Accounts(Vec<EventResult<CreateAccountResult>>),
    Transfers(Vec<EventResult<CreateTransferResult>>),
    Read(Box<dyn Any + Send>),
    Snapshot(u64),
    Stopped,
    Error(EngineError),
}

type Reply = oneshot::Sender<Result<Answer, EngineError>>;

struct Request {
    command: Command,
    reply: Reply,
}

/// What the engine thread hands the WAL thread: at most one record and the answers that wait
/// for it (and for every record before it).
struct Commit {
    record: Option<Vec<u8>>,
    events: u64,
    answers: Vec<(Reply, Answer)>,
    snapshot: Option<SnapshotJob>,
    /// Transfers this commit's record committed, in order, for the log once durable.
    leaves: Vec<Transfer>,
    /// Commit position of `leaves[0]`.
    first_index: u64,
}

/// Live counters, readable from any thread.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub records_durable: AtomicU64,
    pub events_durable: AtomicU64,
    pub syncs: AtomicU64,
    pub wal_bytes_written: AtomicU64,
}

/// A running engine. Dropping it without [`Engine::shutdown`] still stops it cleanly.
pub struct Engine {
    handle: EngineHandle,
    threads: Vec<JoinHandle<()>>,
    dir: Arc<DataDir>,
    recovery: Recovery,
}

/// A cheap, cloneable way to talk to the engine from any thread.
#[derive(Clone)]
pub struct EngineHandle {
    requests: Sender<Request>,
    /// The engine's own queue, so that a request that slipped in after the engine stopped
    /// can be answered by the caller that sent it rather than waiting forever.
    queued: Receiver<Request>,
    closed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    submit_timeout: Duration,
    stats: Arc<EngineStats>,
    log: Option<Sender<LogMsg>>,
}

/// Log messages waiting for the log thread; the WAL thread waits (briefly) past this.
const LOG_QUEUE_MAX: usize = 64;

impl Engine {
    /// Opens (or creates) the data directory, recovers its state and starts the threads.
    pub fn open(config: EngineConfig) -> Result<Self, StoreError> {
        let dir = Arc::new(DataDir::open(&config.data_dir)?);
        // A torn tail is cut only after the log agreed: a cut-off record that a checkpoint
        // signed is lost data, not a torn write, and is left as it is for the audit.
        let (mut sm, recovery) = datadir::recover(&dir, false)?;
        let mut log_state = match config.log {
            true => Some(LogState::open(&dir.root, &sm, config.log_origin.as_deref())?),
            false => None,
        };
        if let Some(log) = &mut log_state {
            log.reserve(log.size().max(config.transfers_capacity as u64));
        }
        if let Some((file, offset, _)) = &recovery.torn_tail {
            wal::truncate_tail(file, *offset)?;
        }
        let counts = sm.counts();
        sm.reserve(
            config.accounts_capacity.saturating_sub(counts.accounts as usize),
            config.transfers_capacity.saturating_sub(counts.transfers as usize),
        );
        let wal = WalWriter::open(&dir.wal_dir(), recovery.last_seq, config.segment_bytes_max)?;
        let (requests, inbox) = bounded::<Request>(config.queue_requests_max);
        let (commits, commit_inbox) = bounded::<Commit>(config.wal_queue_records_max);
        let failure = Arc::new(Mutex::new(None));
        let closed = Arc::new(AtomicBool::new(false));
        let snapshot_failed = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(EngineStats::default());
        // Emptied leaf buffers go back to the engine thread: a fresh megabyte per batch
        // would cost page faults on one side and an unmap on the other.
        let (recycle, recycled) = bounded::<Vec<Transfer>>(LOG_QUEUE_MAX + 8);
        let writer = Writer {
            sm,
            inbox: inbox.clone(),
            closed: closed.clone(),
            failure: failure.clone(),
            wal_seed: dir.wal_seed,
            commits,
            clock: config.clock.clone(),
            next_seq: recovery.last_seq + 1,
            pulse_interval: Duration::from_millis(config.pulse_interval_ms),
            snapshot_wal_bytes: config.snapshot_wal_bytes,
            wal_bytes_since_snapshot: 0,
            snapshot_transfers: recovery.snapshot_transfers as usize,
            building: None,
            snapshot_failed: snapshot_failed.clone(),
            snapshots_in_flight: in_flight.clone(),
            log: config.log,
            listening: config.on_commit.is_some(),
            recycled,
        };
        let (log_sender, log_inbox) = bounded::<LogMsg>(LOG_QUEUE_MAX);
        let log = log_state.is_some().then_some(log_sender);
        let (snapshots, snapshot_inbox) = bounded::<SnapshotJob>(2);
        let snapshotter = Snapshotter {
            inbox: snapshot_inbox,
            dir: dir.snapshot_dir(),
            failed: snapshot_failed.clone(),
            in_flight: in_flight.clone(),
            written_seq: recovery.snapshot_seq,
            written_end: recovery.snapshot_transfers as usize,
        };
        let syncer = Syncer {
            wal,
            inbox: commit_inbox,
            failure: failure.clone(),
            stats: stats.clone(),
            snapshots,
            log: log.clone(),
            on_commit: config.on_commit.clone(),
        };
        let mut threads = vec![
            std::thread::Builder::new()
                .name("farthing-engine".into())
                .spawn(move || writer.run())
                .map_err(StoreError::io(&config.data_dir))?,
            std::thread::Builder::new()
                .name("farthing-wal".into())
                .spawn(move || syncer.run())
                .map_err(StoreError::io(&config.data_dir))?,
            std::thread::Builder::new()
                .name("farthing-snapshot".into())
                .spawn(move || snapshotter.run())
                .map_err(StoreError::io(&config.data_dir))?,
        ];
        if let Some(state) = log_state {
            let logger = Logger {
                state,
                inbox: log_inbox,
                policy: CheckpointPolicy {
                    interval: Duration::from_millis(config.checkpoint_interval_ms),
                    leaves: config.checkpoint_leaves.max(1),
                },
                failure: failure.clone(),
                recycle,
                hasher: Default::default(),
                idle: false,
            };
            threads.push(
                std::thread::Builder::new()
                    .name("farthing-log".into())
                    .spawn(move || logger.run())
                    .map_err(StoreError::io(&config.data_dir))?,
            );
        }
        let handle = EngineHandle {
            requests,
            queued: inbox,
            closed,
            failure,
            submit_timeout: Duration::from_millis(config.submit_timeout_ms),
            stats,
            log,
        };
        Ok(Self { handle, threads, dir, recovery })
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// What recovery found and did when the engine opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn bytes_on_disk(&self) -> u64 {
        self.dir.bytes_on_disk()
    }

    /// Stops taking requests, finishes (and makes durable) every request queued before this
    /// call, and waits for the threads. Requests queued after it, and every request from
    /// handles still held elsewhere, are answered `Stopped` and never applied.
    pub fn shutdown(mut self) -> Result<(), EngineError> {
        self.stop();
        match self.handle.failure.lock().unwrap().clone() {
            Some(reason) => Err(EngineError::Failed(reason)),
            None => Ok(()),
        }
    }

    fn stop(&mut self) {
        // The engine thread stops at the Stop command, after everything queued before it,
        // and answers whatever is queued behind it with `Stopped`.
        let h = &self.handle;
        if !h.closed.load(Ordering::SeqCst) {
            let (reply, done) = oneshot::channel();
            if h.requests.send(Request { command: Command::Stop, reply }).is_ok() {
                if h.closed.load(Ordering::SeqCst) {
                    drain(&h.queued, &h.failure);
                }
                let _ = done.recv();
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

impl EngineHandle {
    /// Live counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    fn check_batch(events: usize) -> Result<(), EngineError> {
        if events == 0 || events > BATCH_EVENTS_MAX {
            return Err(EngineError::BatchSize { events, max: BATCH_EVENTS_MAX });
        }
        Ok(())
    }

    /// Refuses new requests once the engine failed or is stopping.
    fn check_open(&self) -> Result<(), EngineError> {
        if let Some(reason) = self.failure.lock().unwrap().clone() {
            return Err(EngineError::Failed(reason));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(EngineError::Stopped);
        }
        Ok(())
    }

    fn submit(&self, command: Command, wait: bool) -> Result<Answer, EngineError> {
        self.check_open()?;
        let (reply, answer) = oneshot::channel();
        let request = Request { command, reply };
        let sent = if wait {
            self.requests.send_timeout(request, self.submit_timeout).map_err(|e| match e {
                crossbeam_channel::SendTimeoutError::Timeout(_) => EngineError::Overloaded,
                crossbeam_channel::SendTimeoutError::Disconnected(_) => EngineError::Stopped,
            })
        } else {
            self.requests.try_send(request).map_err(|e| match e {
                TrySendError::Full(_) => EngineError::Overloaded,
                TrySendError::Disconnected(_) => EngineError::Stopped,
            })
        };
        sent?;
        if self.closed.load(Ordering::SeqCst) {
            // The engine may have drained its queue before this request arrived.
            drain(&self.queued, &self.failure);
        }
        // Every request is answered explicitly; a reply dropped unanswered means the engine
        // died holding it, after it may have been logged.
        answer.recv().unwrap_or(Err(EngineError::OutcomeUnknown))
    }

    /// Like `submit` for async callers: never blocks a thread. A full queue is `Overloaded`
    /// at once (the caller answers "retry later" rather than holding a task).
    async fn submit_async(&self, command: Command) -> Result<Answer, EngineError> {
        self.check_open()?;
        let (reply, answer) = oneshot::channel();
        self.requests.try_send(Request { command, reply }).map_err(|e| match e {
            TrySendError::Full(_) => EngineError::Overloaded,
            TrySendError::Disconnected(_) => EngineError::Stopped,
        })?;
        if self.closed.load(Ordering::SeqCst) {
            drain(&self.queued, &self.failure);
        }
        answer.await.unwrap_or(Err(EngineError::OutcomeUnknown))
    }

    /// [`Self::create_assets`] for async callers.
    pub async fn create_assets_async(
        &self,
        assets: Vec<Asset>,
    ) -> Result<Vec<EventResult<CreateAssetResult>>, EngineError> {
        Self::check_batch(assets.len())?;
        match self.submit_async(Command::CreateAssets(assets)).await? {
            Answer::Assets(r) => Ok(r),
            _ => unreachable!("answer kind"),
        }
    }

    /// [`Self::create_accounts`] for async callers.
    pub async fn create_accounts_async(
        &self,
        accounts: Vec<Account>,
    ) -> Result<Vec<EventResult<CreateAccountResult>>, EngineError> {
        Self::check_batch(accounts.len())?;
        match self.submit_async(Command::CreateAccounts(accounts)).await? {
            Answer::Accounts(r) => Ok(r),
            _ => unreachable!("answer kind"),
        }
    }

    /// [`Self::create_transfers`] for async callers; `Overloaded` at once if the queue is
    /// full.
    pub async fn create_transfers_async(
        &self,
        transfers: Vec<Transfer>,
    ) -> Result<Vec<EventResult<CreateTransferResult>>, EngineError> {
        Self::check_batch(transfers.len())?;
        match self.submit_async(Command::CreateTransfers(transfers)).await? {
            Answer::Transfers(r) => Ok(r),
            _ => unreachable!("answer kind"),
        }
    }

    /// Creates transfers, each with the decision made about it (or `Decision::NONE`), in
    /// one WAL record: a decision is durable exactly when its transfer is, and kept only if
    /// its transfer is committed. A judged batch holds at most `BATCH_EVENTS_MAX / 2`
    /// transfers.
    pub async fn create_judged_transfers_async(
        &self,
        transfers: Vec<Transfer>,
        decisions: Vec<Decision>,
    ) -> Result<Vec<EventResult<CreateTransferResult>>, EngineError> {
        Self::check_judged(&transfers, &decisions)?;
        match self.submit_async(Command::CreateJudgedTransfers(transfers, decisions)).await? {
            Answer::Transfers(r) => Ok(r),
            _ => unreachable!("answer kind"),
        }
    }

    /// [`Self::create_judged_transfers_async`], blocking while the queue is full.
    pub fn create_judged_transfers(
        &self,
        transfers: Vec<Transfer>,
        decisions: Vec<Decision>,
    ) -> Result<Vec<EventResult<CreateTransferResult>>, EngineError> {
        Self::check_judged(&transfers, &decisions)?;
        match self.submit(Command::CreateJudgedTransfers(transfers, decisions), true)? {
            Answer::Transfers(r) => Ok(r),
            _ => unreachable!("answer kind"),
        }
    }

    /// A judged batch's preconditions, checked before it reaches the WAL (replay asserts
    /// them).
    fn check_judged(transfers: &[Transfer], decisions: &[Decision]) -> Result<(), EngineError> {
        Self::check_batch(2 * transfers.len())?;
        let paired = transfers.len() == decisions.len()
            && transfers.iter().zip(decisions).all(|(t, d)| d.is_none() || d.transfer_id == t.id);
        if !paired {
            return Err(EngineError::DecisionMismatch);
        }
        Ok(())
    }

    /// [`Self::read`] for async callers.
    pub async fn read_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StateMachine) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let read: ReadFn = Box::new(move |sm| Box::new(f(sm)));
        match self.submit_async(Command::Read(read)).await? {
            Answer::Read(value) => Ok(*value.downcast::<T>().expect("read answer type")),
            _ => unreachable!("answer kind"),
        }
    }

    /// [`Self::get_account_transfers`] for async callers.
    pub async fn get_account_transfers_async(
        &self,
        filter: AccountFilter,
    ) -> Result<Result<Page<Transfer>, QueryError>, EngineError> {
        self.read_async(move |sm| sm.get_account_transfers(&filter)).await
    }

    /// [`Self::get_account_balances`] for async callers.
    pub async fn get_account_balances_async(
        &self,
        filter: AccountFilter,
    ) -> Result<Result<Page<BalanceAt>, QueryError>, EngineError> {
        self.read_async(move |sm| sm.get_account_balances(&filter)).await
    }

    /// Registers assets; answers once they are durable.
    pub fn create_assets(
        &self,
        assets: Vec<Asset>,
    ) -> Result<Vec<EventResult<CreateAssetResult>>, EngineError> {
        Self::check_batch(assets.len())?;
        match self.submit(Command::CreateAssets(assets), true)? {
            Answer::Assets(r) => Ok(r),
            _ => unreachable!("answer kind"),
        }
    }

    /// Creates accounts; answers once they are durable.
    pub fn create_accounts(
        &self,
        accounts: Vec<Account>,
    ) -> Result<Vec<EventResult<CreateAccountResult>>, EngineError> {
        Self::check_batch(accounts.len())?;
        match self.submit(Command::CreateAccounts(accounts), true)? {
            Answer::Accounts(r) => Ok(r),
            _ => unreachable!("answer kind"),
        }
    }

    /// Creates transfers; answers once they are durable. Blocks while the queue is full, up
    /// to the submit timeout.
    pub fn create_transfers(
        &self,
        transfers: Vec<Transfer>,
    ) -> Result<Vec<EventResult<CreateTransferResult>>, EngineError> {
        self.transfers(transfers, true)
    }

    /// Like [`Self::create_transfers`] but answers `Overloaded` at once if the queue is full.
    pub fn try_create_transfers(
        &self,
        transfers: Vec<Transfer>,
    ) -> Result<Vec<EventResult<CreateTransferResult>>, EngineError> {
        self.transfers(transfers, false)
    }

    fn transfers(
        &self,
        transfers: Vec<Transfer>,
        wait: bool,
    ) -> Result<Vec<EventResult<CreateTransferResult>>, EngineError> {
        Self::check_batch(transfers.len())?;
        match self.submit(Command::CreateTransfers(transfers), wait)? {
            Answer::Transfers(r) => Ok(r),
            _ => unreachable!("answer kind"),
        }
    }

    /// Runs a read against the state, in order with writes: it sees every write submitted
    /// before it, and answers only once those are durable.
    pub fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StateMachine) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let read: ReadFn = Box::new(move |sm| Box::new(f(sm)));
        match self.submit(Command::Read(read), true)? {
            Answer::Read(value) => Ok(*value.downcast::<T>().expect("read answer type")),
            _ => unreachable!("answer kind"),
        }
    }

    /// Accounts by id, in the order asked (`None` for an unknown id).
    pub fn lookup_accounts(&self, ids: Vec<u128>) -> Result<Vec<Option<Account>>, EngineError> {
        Self::check_lookup(ids.len())?;
        self.read(move |sm| ids.iter().map(|id| sm.account(*id).copied()).collect())
    }

    /// Transfers by id, in the order asked (`None` for an unknown id).
    pub fn lookup_transfers(&self, ids: Vec<u128>) -> Result<Vec<Option<Transfer>>, EngineError> {
        Self::check_lookup(ids.len())?;
        self.read(move |sm| ids.iter().map(|id| sm.transfer(*id).copied()).collect())
    }

    /// An account's transfers in time order, one page at a time.
    pub fn get_account_transfers(
        &self,
        filter: AccountFilter,
    ) -> Result<Result<Page<Transfer>, QueryError>, EngineError> {
        self.read(move |sm| sm.get_account_transfers(&filter))
    }

    /// A `history` account's balances after each change, one page at a time.
    pub fn get_account_balances(
        &self,
        filter: AccountFilter,
    ) -> Result<Result<Page<BalanceAt>, QueryError>, EngineError> {
        self.read(move |sm| sm.get_account_balances(&filter))
    }

    fn check_lookup(ids: usize) -> Result<(), EngineError> {
        if ids == 0 || ids > LOOKUP_IDS_MAX {
            return Err(EngineError::BatchSize { events: ids, max: LOOKUP_IDS_MAX });
        }
        Ok(())
    }

    /// A receipt for a committed transfer: its leaf and inclusion proof under a signed
    /// checkpoint (one is signed now if the latest does not cover it yet). `None`: no
    /// transfer has this id.
    pub fn receipt(&self, id: u128) -> Result<Option<Receipt>, EngineError> {
        let found = self.read(move |sm| {
            sm.transfer_log_index(id).and_then(|i| sm.transfer(id).map(|t| (i, *t)))
        })?;
        let Some((index, transfer)) = found else { return Ok(None) };
        let leaf = crate::tlog::transfer_leaf_hash(&transfer);
        let mut proof = self.ask_log(|reply| LogMsg::Prove { index, leaf, reply })?;
        proof.extra = Some(farthing_ledger::leaf::encode_leaf(&transfer).to_vec());
        Ok(Some(Receipt { transfer, proof }))
    }

    /// The latest signed checkpoint note, after signing one for everything committed so
    /// far (every write answered before this call is covered).
    pub fn checkpoint(&self) -> Result<String, EngineError> {
        // A read orders this behind every write submitted before it.
        self.read(|_| ())?;
        self.ask_log(|reply| LogMsg::Checkpoint { reply })
    }

    /// The consistency proof between two log sizes, the newer no larger than the latest
    /// checkpoint.
    pub fn consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<farthing_tlog::Hash>, EngineError> {
        self.ask_log(|reply| LogMsg::Consistency { old, new, reply })
    }

    fn ask_log<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> LogMsg,
    ) -> Result<T, EngineError> {
        let log = self.log.as_ref().ok_or(EngineError::LogOff)?;
        let (reply, answer) = oneshot::channel();
        log.send(msg(reply)).map_err(|_| EngineError::Stopped)?;
        answer.recv().unwrap_or(Err(EngineError::Stopped))
    }

    /// Writes a snapshot of the current state; answers with the record it was taken after
    /// once the snapshot file is durable.
    pub fn snapshot(&self) -> Result<u64, EngineError> {
        match self.submit(Command::Snapshot, true)? {
            Answer::Snapshot(seq) => Ok(seq),
            _ => unreachable!("answer kind"),
        }
    }
}

/// The engine thread: owns the state machine.
struct Writer {
    sm: StateMachine,
    inbox: Receiver<Request>,
    /// Set once the writer no longer takes requests.
    closed: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    wal_seed: u32,
    commits: Sender<Commit>,
    clock: Arc<dyn Clock>,
    next_seq: u64,
    pulse_interval: Duration,
    snapshot_wal_bytes: u64,
    wal_bytes_since_snapshot: u64,
    /// Transfers already in snapshot files: the next snapshot holds only those after.
    snapshot_transfers: usize,
    building: Option<Building>,
    /// Set by the snapshot thread when a snapshot could not be written.
    snapshot_failed: Arc<AtomicBool>,
    /// Snapshots handed on and not yet written (or refused) by the snapshot thread.
    snapshots_in_flight: Arc<AtomicUsize>,
    /// Hand committed transfers on to the log.
    log: bool,
    /// Hand committed transfers on to the commit listener.
    listening: bool,
    recycled: Receiver<Vec<Transfer>>,
}

impl Writer {
    /// Serves until stopped, then answers everything still queued. A panic (a broken
    /// invariant) stops the engine loudly: nothing more is executed or acknowledged, and
    /// every waiting caller gets `Failed`.
    fn run(mut self) {
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve()));
        if let Err(panic) = served {
            let reason = format!("the engine thread panicked: {}", panic_text(&panic));
            eprintln!("farthing: {reason}");
            self.failure.lock().unwrap().get_or_insert(reason);
        }
        self.closed.store(true, Ordering::SeqCst);
        drain(&self.inbox, &self.failure);
    }

    fn serve(&mut self) {
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None => match self.inbox.recv_timeout(self.pulse_interval) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        self.pulse_if_due();
                        self.step_snapshot(SNAPSHOT_STEP_TRANSFERS * 8);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            let mut stopping = matches!(first.command, Command::Stop);
            let mut group = vec![first];
            let mut events = group[0].command.events();
            while !stopping {
                let Ok(next) = self.inbox.try_recv() else { break };
                stopping = matches!(next.command, Command::Stop);
                let n = next.command.events();
                if events + n > BATCH_EVENTS_MAX {
                    carry = Some(next);
                    break;
                }
                events += n;
                group.push(next);
            }
            if !self.execute(group) {
                return;
            }
            if stopping {
                // A snapshot in progress is finished, so the next start replays less.
                self.step_snapshot(usize::MAX);
                return;
            }
        }
    }

    /// The next batch timestamp: the clock, but always after the last one used.
    fn next_timestamp(&self) -> u64 {
        self.clock.now_ns().max(self.sm.last_timestamp() + 1)
    }

    fn pulse_if_due(&mut self) {
        let ts = self.next_timestamp();
        if self.sm.next_expiry().is_some_and(|due| due <= ts) {
            let mut record = RecordBuilder::new();
            self.sm.pulse(ts);
            record.push(Op::Pulse, 0, ts, |_| {});
            let record = record.finish(self.next_seq, self.wal_seed);
            self.next_seq += 1;
            let commit = Commit {
                record: Some(record),
                events: 0,
                answers: vec![],
                snapshot: None,
                leaves: vec![],
                first_index: 0,
            };
            let _ = self.commits.send(commit);
        }
    }

    /// Executes a group of requests as one WAL record. Returns false once the WAL thread is
    /// gone (storage failure), after which nothing more may be executed.
    fn execute(&mut self, group: Vec<Request>) -> bool {
        // 1. Log first. A record holds the inputs and their timestamps, never results, and
        //    replay re-executes it; so it can be written and fsynced while it executes.
        let mut record = RecordBuilder::new();
        let mut last = self.sm.last_timestamp();
        let mut planned = Vec::with_capacity(group.len());
        for Request { command, reply } in group {
            let (op, n) = match &command {
                Command::CreateAssets(e) => (Op::CreateAssets, e.len()),
                Command::CreateAccounts(e) => (Op::CreateAccounts, e.len()),
                Command::CreateTransfers(e) => (Op::CreateTransfers, e.len()),
                Command::CreateJudgedTransfers(e, _) => (Op::CreateJudgedTransfers, e.len()),
                _ => {
                    planned.push((command, reply, 0));
                    continue;
                }
            };
            let ts = self.clock.now_ns().max(last + 1);
            record.push(op, n, ts, |b| match &command {
                Command::CreateAssets(e) => encode_assets(e, b),
                Command::CreateAccounts(e) => encode_accounts(e, b),
                Command::CreateTransfers(e) => encode_transfers(e, b),
                Command::CreateJudgedTransfers(e, d) => encode_judged_transfers(e, d, b),
                _ => unreachable!("write command"),
            });
            last = ts + n.max(1) as u64 - 1;
            planned.push((command, reply, ts));
        }
        let events = record.events() as u64;
        if !record.is_empty() {
            let r = record.finish(self.next_seq, self.wal_seed);
            self.next_seq += 1;
            self.wal_bytes_since_snapshot += r.len() as u64;
            let commit = Commit {
                record: Some(r),
                events,
                answers: Vec::new(),
                snapshot: None,
                leaves: Vec::new(),
                first_index: 0,
            };
            if self.commits.send(commit).is_err() {
                return false;
            }
        }
        // 2. Execute, in order, with the timestamps logged. The answers travel behind the
        //    record, so the WAL thread releases them only once it is durable.
        let mut answers = Vec::with_capacity(planned.len());
        let mut snapshot_waiting = Vec::new();
        let transfers_before = self.sm.transfers().len();
        for (command, reply, ts) in planned {
            let answer = match command {
                Command::CreateAssets(events) => Answer::Assets(self.sm.create_assets(&events, ts)),
                Command::CreateAccounts(events) => {
                    Answer::Accounts(self.sm.create_accounts(&events, ts))
                }
                Command::CreateTransfers(events) => {
                    Answer::Transfers(self.sm.create_transfers(&events, ts))
                }
                Command::CreateJudgedTransfers(events, decisions) => {
                    Answer::Transfers(self.sm.create_judged_transfers(&events, &decisions, ts))
                }
                Command::Read(f) => {
                    // A read cannot change the ledger, so its panic is the reader's alone.
                    let sm = &self.sm;
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(sm))) {
                        Ok(value) => Answer::Read(value),
                        Err(panic) => Answer::Error(EngineError::ReadPanicked(panic_text(&panic))),
                    }
                }
                Command::Snapshot => {
                    snapshot_waiting.push(reply);
                    continue;
                }
                Command::Stop => Answer::Stopped,
            };
            answers.push((reply, answer));
        }
        assert_eq!(self.sm.last_timestamp(), last, "execution must match the logged timestamps");
        let leaves = match self.log || self.listening {
            true => {
                let mut leaves = self.recycled.try_recv().unwrap_or_default();
                leaves.extend_from_slice(&self.sm.transfers()[transfers_before..]);
                leaves
            }
            false => Vec::new(),
        };
        let first_index = transfers_before as u64;
        let commit =
            Commit { record: None, events: 0, answers, snapshot: None, leaves, first_index };
        if self.commits.send(commit).is_err() {
            return false;
        }
        if !snapshot_waiting.is_empty() {
            // Asked for: finish any snapshot in progress, then take one now, whole.
            self.step_snapshot(usize::MAX);
            self.start_snapshot(snapshot_waiting);
            self.step_snapshot(usize::MAX);
        } else if self.building.is_none()
            && self.snapshots_in_flight.load(Ordering::SeqCst) == 0
            && self.snapshot_wal_bytes > 0
            && self.wal_bytes_since_snapshot >= self.snapshot_wal_bytes
        {
            self.start_snapshot(Vec::new());
        }
        self.step_snapshot(SNAPSHOT_STEP_TRANSFERS);
        true
    }

    /// Captures the state after the last record; its transfers are encoded step by step.
    fn start_snapshot(&mut self, waiting: Vec<Reply>) {
        // One snapshot at a time: a pending one is finished (and queued) first.
        self.step_snapshot(usize::MAX);
        if self.snapshot_failed.swap(false, Ordering::Relaxed) {
            // The last snapshot file was not written: start a new, self-contained chain.
            self.snapshot_transfers = 0;
        }
        let builder = self.sm.begin_snapshot(self.snapshot_transfers);
        self.snapshot_transfers = builder.transfers_end();
        self.wal_bytes_since_snapshot = 0;
        self.building = Some(Building { seq: self.next_seq - 1, builder, waiting });
    }

    /// Encodes up to `max` transfers of the snapshot in progress; hands it to the WAL thread
    /// (which passes it on once its record is durable) when complete.
    fn step_snapshot(&mut self, max: usize) {
        let Some(building) = &mut self.building else {
            return;
        };
        if !building.builder.step(&self.sm, max) {
            return;
        }
        let Building { seq, builder, waiting } = self.building.take().expect("snapshot");
        let answers = waiting.into_iter().map(|r| (r, Answer::Snapshot(seq))).collect();
        self.snapshots_in_flight.fetch_add(1, Ordering::SeqCst);
        let snapshot = Some(SnapshotJob {
            seq,
            transfers_from: builder.transfers_from(),
            transfers_end: builder.transfers_end(),
            state: builder.finish(),
            waiting: Vec::new(),
        });
        let commit = Commit {
            record: None,
            events: 0,
            answers,
            snapshot,
            leaves: Vec::new(),
            first_index: 0,
        };
        let _ = self.commits.send(commit);
    }
}

/// A snapshot being encoded by the engine thread between batches.
struct Building {
    seq: u64,
    builder: SnapshotBuilder,
    waiting: Vec<Reply>,
}

/// A snapshot to write, once every record up to `seq` is durable, and who waits for it.
struct SnapshotJob {
    seq: u64,
    /// The transfers it holds: the chain must continue exactly where the last file ended.
    transfers_from: usize,
    transfers_end: usize,
    state: Vec<u8>,
    waiting: Vec<Reply>,
}

/// The snapshot thread: writes snapshot files without holding up the WAL.
struct Snapshotter {
    inbox: Receiver<SnapshotJob>,
    dir: PathBuf,
    failed: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    /// The record and the end of the transfers of the last snapshot file written.
    written_seq: u64,
    written_end: usize,
}

impl Snapshotter {
    fn run(mut self) {
        while let Ok(job) = self.inbox.recv() {
            let answer = self.write(&job);
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            for reply in job.waiting {
                let _ = reply.send(answer.clone().map(|()| Answer::Snapshot(job.seq)));
            }
        }
    }

    /// Writes a job's file if it extends the chain. The WAL still holds everything: a
    /// snapshot not written loses nothing, but is reported, and the engine's next snapshot
    /// then starts a new, self-contained chain.
    fn write(&mut self, job: &SnapshotJob) -> Result<(), EngineError> {
        if job.seq == self.written_seq && job.seq != 0 {
            // Same record, same state: the file already written is this snapshot.
            return Ok(());
        }
        if job.transfers_from != 0 && job.transfers_from != self.written_end {
            self.failed.store(true, Ordering::SeqCst);
            return Err(EngineError::SnapshotFailed(format!(
                "snapshot after record {} skipped: it follows a snapshot that was not written",
                job.seq
            )));
        }
        match datadir::write_snapshot(&self.dir, job.seq, &job.state) {
            Ok(_) => {
                self.written_seq = job.seq;
                self.written_end = job.transfers_end;
                if job.transfers_from == 0 {
                    // Best effort: an obsolete file left behind is skipped at recovery.
                    let _ = datadir::remove_snapshots_before(&self.dir, job.seq);
                }
                Ok(())
            }
            Err(e) => {
                eprintln!("farthing: snapshot after record {} failed: {e}", job.seq);
                self.failed.store(true, Ordering::SeqCst);
                Err(EngineError::SnapshotFailed(e.to_string()))
            }
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_text(panic: &Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Answers every request still queued: `Failed` after a failure, else `Stopped`.
fn drain(queue: &Receiver<Request>, failure: &Mutex<Option<String>>) {
    while let Ok(request) = queue.try_recv() {
        let error =
            failure.lock().unwrap().clone().map_or(EngineError::Stopped, EngineError::Failed);
        let _ = request.reply.send(Err(error));
    }
}

/// The WAL thread: makes records durable, then releases their answers.
struct Syncer {
    wal: WalWriter,
    inbox: Receiver<Commit>,
    failure: Arc<Mutex<Option<String>>>,
    stats: Arc<EngineStats>,
    snapshots: Sender<SnapshotJob>,
    log: Option<Sender<LogMsg>>,
    on_commit: Option<CommitListener>,
}

impl Syncer {
    /// Runs until the engine thread is gone. A panic here (a broken invariant) stops the
    /// engine as failed, never silently.
    fn run(mut self) {
        let failure = self.failure.clone();
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve()))
        {
            let reason = format!("the WAL thread panicked: {}", panic_text(&panic));
            eprintln!("farthing: {reason}");
            failure.lock().unwrap().get_or_insert(reason);
        }
        if let Some(log) = &self.log {
            let _ = log.send(LogMsg::Stop);
        }
    }

    fn serve(&mut self) {
        while let Ok(first) = self.inbox.recv() {
            let mut commits = vec![first];
            // Group commit, bounded: one write never exceeds WRITE_BYTES_MAX, which is also
            // the largest tail recovery will treat as torn.
            let mut bytes = commits[0].record.as_ref().map_or(0, Vec::len);
            while bytes + wal::RECORD_BYTES_MAX <= wal::WRITE_BYTES_MAX {
                let Ok(next) = self.inbox.try_recv() else { break };
                bytes += next.record.as_ref().map_or(0, Vec::len);
                commits.push(next);
            }
            let records: Vec<Vec<u8>> =
                commits.iter_mut().filter_map(|c| c.record.take()).collect();
            if !records.is_empty() {
                if let Err(e) = self.wal.append_durable(&records) {
                    self.fail(format!("WAL write failed: {e}"), commits);
                    return;
                }
                let events = commits.iter().map(|c| c.events).sum();
                self.count(&records, events);
            }
            for commit in commits {
                // The log learns of durable transfers before anyone hears they committed,
                // so a receipt asked for after an answer always finds its leaf.
                if let (false, Some(listener)) = (commit.leaves.is_empty(), &self.on_commit) {
                    listener(commit.first_index, &commit.leaves);
                }
                if let (false, Some(log)) = (commit.leaves.is_empty(), &self.log) {
                    let _ = log.send(LogMsg::Leaves(commit.leaves));
                }
                let mut waiting = Vec::new();
                for (reply, answer) in commit.answers {
                    match answer {
                        Answer::Snapshot(_) => waiting.push(reply),
                        Answer::Error(e) => {
                            let _ = reply.send(Err(e));
                        }
                        answer => {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                }
                if let Some(mut job) = commit.snapshot {
                    // Every record up to `job.seq` is durable now: the snapshot may be written.
                    job.waiting = waiting;
                    // The engine starts an automatic snapshot only when none is in flight, so
                    // this waits only behind snapshots somebody asked for.
                    let _ = self.snapshots.send(job);
                }
            }
        }
    }

    fn count(&self, records: &[Vec<u8>], events: u64) {
        let bytes: usize = records.iter().map(Vec::len).sum();
        let s = &self.stats;
        s.events_durable.fetch_add(events, Ordering::Relaxed);
        s.records_durable.fetch_add(records.len() as u64, Ordering::Relaxed);
        s.wal_bytes_written.fetch_add(bytes as u64, Ordering::Relaxed);
        s.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed write or fsync leaves the durable state unknown: stop everything, loudly.
    fn fail(&self, reason: String, commits: Vec<Commit>) {
        eprintln!("farthing: engine stopped: {reason}");
        *self.failure.lock().unwrap() = Some(reason.clone());
        for commit in commits {
            for (reply, _) in commit.answers {
                let _ = reply.send(Err(EngineError::Failed(reason.clone())));
            }
        }
        while let Ok(commit) = self.inbox.try_recv() {
            for (reply, _) in commit.answers {
                let _ = reply.send(Err(EngineError::Failed(reason.clone())));
            }
        }
    }
}
