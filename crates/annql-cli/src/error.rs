//! The CLI's error type: every error says where (file, line, column) when it comes from a script.

/// Result alias for the CLI.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// What can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The engine rejected a statement or failed to run it.
    #[error("{0}")]
    Engine(#[from] annql_engine::Error),
    /// A pipeline was wrong (rendered diagnostics) or failed.
    #[error("{0}")]
    Lang(#[from] annql_lang::Error),
    /// DataFusion failed while streaming or writing.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow failed while formatting or writing.
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Reading a file or writing output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A statement in a script failed: where, and why.
    #[error("{file}:{line}:{column}: {message}")]
    Script {
        /// The script (`-` for stdin, `-c` for a command-line statement).
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The error.
        message: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The server could not start.
    #[error("{0}")]
    Server(#[from] annql_server::ServerError),
    /// The query was cancelled (Ctrl-C).
    #[error("query cancelled")]
    Cancelled,
}

impl CliError {
    /// Whether this says a dataset's PATH is not a store annql opens (missing, or neither a
    /// directory, a zip archive nor an HDF5 file): then the forms a DATASET may take are worth
    /// showing ([`crate::args::DATASET_FORMS`]).
    pub fn is_not_a_store(&self) -> bool {
        let store = match self {
            CliError::Engine(annql_engine::Error::Store(e)) => e,
            CliError::Server(annql_server::ServerError::Dataset { source, .. }) => source.as_ref(),
            _ => return false,
        };
        matches!(
            store,
            annql_store::Error::Open { .. } | annql_store::Error::UnsupportedSource { .. }
        )
    }
}
