//! The store reader's error type: every variant names the store and the element it concerns.

use std::path::PathBuf;

/// Result alias for the store reader.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong opening or reading an AnnData store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path does not exist or cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path given by the caller.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The path exists but is not a store annql knows how to read.
    #[error("{path}: {reason}")]
    UnsupportedSource {
        /// The path given by the caller.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A zip archive could not be read.
    #[error("{path}: not a readable zip archive: {source}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The zip crate's error.
        #[source]
        source: zip::result::ZipError,
    },
    /// An HDF5 file (`.h5ad`, `.h5mu`) could not be read: truncated, corrupt, or using a feature
    /// the pure-Rust reader does not have.
    #[error("{path}: cannot read HDF5 object '/{element}': {source}")]
    Hdf5 {
        /// The file.
        path: PathBuf,
        /// The group or dataset being read ("" for the file itself).
        element: String,
        /// hdf5-reader's error.
        #[source]
        source: hdf5_reader::error::Error,
    },
    /// The storage layer failed (I/O, missing file, truncated member).
    #[error("{store}: storage error reading '{key}': {source}")]
    Storage {
        /// The store, as displayed to users.
        store: String,
        /// The key being read.
        key: String,
        /// The storage error.
        #[source]
        source: zarrs::storage::StorageError,
    },
    /// Metadata that is not valid JSON or does not follow the zarr spec.
    #[error("{store}: bad metadata at '{key}': {reason}")]
    Metadata {
        /// The store.
        store: String,
        /// The metadata key (e.g. `obs/.zattrs`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The store is not an AnnData store.
    #[error("{store}: {reason}")]
    NotAnnData {
        /// The store.
        store: String,
        /// Why (e.g. no encoding attribute at the root).
        reason: String,
    },
    /// An element does not follow the AnnData on-disk spec.
    #[error("{store}: element '/{path}': {reason}")]
    Malformed {
        /// The store.
        store: String,
        /// The element path inside the store.
        path: String,
        /// What is wrong, and what was expected.
        reason: String,
    },
    /// An element is valid but annql cannot read it (yet).
    #[error("{store}: element '/{path}' ({what}) is not supported: {reason}")]
    Unsupported {
        /// The store.
        store: String,
        /// The element path inside the store.
        path: String,
        /// The encoding or data type.
        what: String,
        /// Why.
        reason: String,
    },
    /// No element at that path.
    #[error("{store}: no element '/{path}'")]
    NotFound {
        /// The store.
        store: String,
        /// The path asked for.
        path: String,
    },
    /// A read asked for rows outside the element.
    #[error("{store}: element '/{path}': range {start}..{end} is out of bounds for length {len}")]
    OutOfBounds {
        /// The store.
        store: String,
        /// The element path.
        path: String,
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
        /// Element length along the axis.
        len: u64,
    },
    /// zarrs could not decode a chunk (corrupt or truncated data, bad codec configuration).
    #[error("{store}: element '/{path}': {source}")]
    Decode {
        /// The store.
        store: String,
        /// The array path.
        path: String,
        /// The zarrs error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Building an Arrow array failed.
    #[error("{store}: element '/{path}': {source}")]
    Arrow {
        /// The store.
        store: String,
        /// The element path.
        path: String,
        /// The Arrow error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A store in object storage could not be reached or configured.
    #[error("{url}: {reason}")]
    Remote {
        /// The store's URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// One read would allocate more than the read limit: a chunk, a row block, a category table,
    /// a zip member or a metadata document sized from what the file declares.
    #[error(
        "{store}: element '/{path}': {what} would take {bytes} bytes, more than the read limit of \
         {limit} bytes (raise it with the read_limit option or --read-limit if the file is \
         trusted)"
    )]
    TooLarge {
        /// The store.
        store: String,
        /// The element (or key) being read.
        path: String,
        /// What the read would allocate (e.g. "a decoded chunk of 1000000×1000 float32").
        what: String,
        /// Bytes it would allocate.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A FIFO, socket, device or directory where a store file, chunk or metadata file belongs:
    /// refused without opening it for reading (a FIFO would block forever).
    #[error("{path}: is a {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead ("FIFO", "socket", "character device", ...).
        kind: &'static str,
    },
    /// A storage option (ATTACH options, catalog file) has a bad key or value.
    #[error("storage option {key} = '{value}': {reason}")]
    Option {
        /// The option's name.
        key: String,
        /// The value given.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
}
