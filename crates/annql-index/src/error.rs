//! The index's error type: every variant names the source, the sidecar or the element it concerns.

use std::path::{Path, PathBuf};

/// Result alias for gene indexes.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong building, checking or removing a gene index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the source failed (the store error names the element).
    #[error(transparent)]
    Source(#[from] annql_store::Error),
    /// Writing the sidecar failed (the writer's error names the node).
    #[error(transparent)]
    Write(#[from] annql_write::Error),
    /// A filesystem operation on the sidecar or its lock failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("create", "remove", "read", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The element asked for is not a matrix an index can be built for.
    #[error("cannot index '{element}': {reason}")]
    NotIndexable {
        /// The element path in the source.
        element: String,
        /// Why.
        reason: String,
    },
    /// Another build of the same index holds its lock.
    #[error(
        "an index of {sidecar} is being built by process {pid} (lock {lock}); wait for it, or \
         remove the lock if that process is gone"
    )]
    Locked {
        /// The sidecar being built.
        sidecar: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The process that holds it, as recorded in the lock.
        pid: String,
    },
    /// The memory given cannot hold what one step of the build needs.
    #[error("{given} bytes of memory for the build are too few to index '{element}': {reason}")]
    TooLittleMemory {
        /// The element being indexed.
        element: String,
        /// The limit given.
        given: u64,
        /// What does not fit.
        reason: String,
    },
    /// A sidecar that is not an annql gene index, or whose record cannot be read.
    #[error("{path} is not a usable annql gene index: {reason}")]
    BadSidecar {
        /// The sidecar.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No index exists where one was asked for (`--check`, `--drop`).
    #[error("no gene index at {0}")]
    Missing(PathBuf),
    /// The build was cancelled; nothing was left at the sidecar's path.
    #[error("cancelled; no index was written to {0}")]
    Cancelled(PathBuf),
    /// A bug in annql.
    #[error("internal error (this is a bug in annql): {0}")]
    Internal(String),
}

impl Error {
    /// A filesystem error while doing `action` on `path`.
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
