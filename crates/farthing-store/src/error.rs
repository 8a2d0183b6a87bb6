//! Errors of the store and the engine: values a caller can act on.

use std::path::PathBuf;

/// Errors opening, recovering or writing a data directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data in {file} at byte offset {offset}: {reason}")]
    Corrupt { file: PathBuf, offset: u64, reason: String },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path} is in use by another Farthing process")]
    Locked { path: PathBuf },
    /// Part of the directory is missing or damaged and starting would paper over it (a new
    /// log key, a log signed afresh): nothing was changed; `command` recovers on purpose.
    #[error("{path}: {reason}. Nothing was changed. If the loss is known and accepted, `{command}` starts afresh from the ledger")]
    NeedsRecovery { path: PathBuf, reason: String, command: String },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// Why the engine did not answer a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the engine's queue is full; retry later")]
    Overloaded,
    #[error("a batch holds 1 to {max} events; this one has {events}")]
    BatchSize { events: usize, max: usize },
    /// A judged batch needs one decision (or none) per transfer, naming that transfer.
    #[error("a judged batch pairs each transfer with a decision naming it")]
    DecisionMismatch,
    /// Not applied: the engine was stopping or stopped.
    #[error("the engine is stopped; the request was not applied")]
    Stopped,
    /// The engine stopped for good (a storage failure or a broken invariant).
    #[error("the engine stopped: {0}")]
    Failed(String),
    /// The engine stopped while it held the request: it may or may not have been applied.
    /// Look the events up by id before retrying them (the ledger's ids make retries safe).
    #[error("the engine stopped while handling this request; it may or may not be applied")]
    OutcomeUnknown,
    /// A read's closure panicked; the ledger is unchanged and the engine runs on.
    #[error("the read failed: {0}")]
    ReadPanicked(String),
    /// A snapshot was not written; the WAL still holds everything.
    #[error("the snapshot was not written: {0}")]
    SnapshotFailed(String),
    /// The engine runs without its transparency log.
    #[error("the transparency log is off")]
    LogOff,
    #[error("transparency log: {0}")]
    Log(String),
}
