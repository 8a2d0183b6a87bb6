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
    #[error("the engine is stopped")]
    Stopped,
    #[error("the engine stopped after a storage failure: {0}")]
    Failed(String),
}
