//! The engine's error type.

use datafusion::error::DataFusionError;

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised while attaching stores and planning over them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] annql_store::Error),
    /// DataFusion rejected or failed a query.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// `ATTACH` under a name already in use.
    #[error("a dataset named '{0}' is already attached (DETACH it first)")]
    AlreadyAttached(String),
    /// `DETACH` of a name that is not attached.
    #[error("no dataset named '{0}' is attached")]
    NotAttached(String),
    /// A statement annql handles itself was malformed.
    #[error("{0}")]
    Statement(String),
    /// A table or column whose element annql cannot read: its encoding, parts, shape or length
    /// are not what the AnnData spec (or annql) allows. The table model keeps such elements, with
    /// the reason, so that `annql schema` lists them and only queries that read them fail.
    #[error("{what} cannot be read: {source}")]
    Unmapped {
        /// `table x` or `column obs.n_counts`.
        what: String,
        /// The store's error naming the element and what is wrong.
        #[source]
        source: std::sync::Arc<annql_store::Error>,
    },
    /// Building, checking or removing a gene index failed (the error names the sidecar).
    #[error(transparent)]
    Index(#[from] annql_index::Error),
    /// Writing a new AnnData store failed (the writer's error names the output or element).
    #[error(transparent)]
    Write(#[from] annql_write::Error),
    /// A write in a read-only session (a server started without a writable directory).
    #[error(
        "cannot write {0}: this session is read-only (a server writes only when started with \
         --writable-dir, and only inside it)"
    )]
    ReadOnly(std::path::PathBuf),
    /// A write the session's write policy refuses: a path outside the writable directory.
    #[error("cannot write {path}: {reason}")]
    WriteRefused {
        /// The output path as given.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// An export's obs or var predicate failed (a column that does not exist, a type error).
    #[error("the {axis} predicate of the export: {source}")]
    Predicate {
        /// `obs` or `var`.
        axis: &'static str,
        /// The planning or execution error.
        #[source]
        source: Box<Error>,
    },
    /// A matrix asked for with an element type other than the stored one.
    #[error("{element} stores {stored} values; read it as that type, not {requested}")]
    ElementType {
        /// The matrix and its dataset.
        element: String,
        /// The stored dtype.
        stored: String,
        /// The Rust type asked for.
        requested: &'static str,
    },
    /// A dense matrix above the caller's element limit.
    #[error(
        "{element}: the selection is {rows} × {cols} elements, above the dense limit of {limit} \
         (take the sparse matrix or row blocks instead)"
    )]
    DenseLimit {
        /// The matrix and its dataset.
        element: String,
        /// Selected cells.
        rows: u64,
        /// Selected genes.
        cols: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// A matrix of a dataset that cannot be handed out as asked.
    #[error("dataset '{dataset}': {reason}")]
    Matrix {
        /// The dataset.
        dataset: String,
        /// Why.
        reason: String,
    },
    /// A collection's datasets whose columns or genes cannot be brought together.
    #[error("collection table {table}, column {column}: {detail}")]
    Harmonise {
        /// The table (`obs`, `var`, …).
        table: String,
        /// The column.
        column: String,
        /// Which datasets disagree, and how to resolve it.
        detail: String,
    },
    /// A dataset of a collection that cannot be opened or read.
    #[error("dataset '{dataset}' ({location}): {source}")]
    Dataset {
        /// Its name in the collection.
        dataset: String,
        /// Where it was opened from.
        location: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// A table address naming a table the store's model does not have (a plan made against
    /// another version of the store).
    #[error("{location}: no table '{table}' in this store")]
    NoTable {
        /// The store's path or URL.
        location: String,
        /// The table asked for.
        table: String,
    },
    /// A local path that cannot be resolved.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bug in annql.
    #[error("internal error (this is a bug in annql): {0}")]
    Internal(String),
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Wraps a store error for DataFusion, keeping it typed.
pub(crate) fn store_err(e: annql_store::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
