//! The writer's error type: every variant names the output or the element it concerns.

use std::path::PathBuf;

/// Result alias for the writer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong writing an AnnData store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the source failed (the store error names the source element).
    #[error(transparent)]
    Source(#[from] annql_store::Error),
    /// The output path exists and overwriting was not asked for.
    #[error("{0} already exists (pass overwrite to replace it)")]
    Exists(PathBuf),
    /// A filesystem operation on the output failed (unwritable directory, full disk, …).
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The zarr encoder or store rejected an array of the output.
    #[error("cannot write zarr node '{element}' of {path}: {source}")]
    Zarr {
        /// The output store.
        path: PathBuf,
        /// The element path inside the output.
        element: String,
        /// zarrs' error (array, group, codec or storage).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HDF5 writer rejected an object of the output.
    #[error("cannot write HDF5 object '/{element}' of {path}: {source}")]
    Hdf5 {
        /// The output file.
        path: PathBuf,
        /// The group or dataset being written.
        element: String,
        /// hdf5-pure's error.
        #[source]
        source: hdf5_pure::Error,
    },
    /// An element the target format (or annql) cannot write: refused by name, never dropped.
    #[error("cannot write element '{element}': {reason}")]
    Refused {
        /// The element path in the source.
        element: String,
        /// Why.
        reason: String,
    },
    /// A selection that does not fit the source (an id past the end, not sorted, duplicated).
    #[error("invalid {axis} selection: {reason}")]
    Selection {
        /// `obs` or `var`.
        axis: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The write was cancelled; nothing was left at the output path.
    #[error("cancelled; nothing was written to {0}")]
    Cancelled(PathBuf),
    /// A bug in annql.
    #[error("internal error (this is a bug in annql): {0}")]
    Internal(String),
}
