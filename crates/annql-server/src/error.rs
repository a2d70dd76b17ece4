//! The server crate's error type: what stops a server from starting. (What fails a client's
//! statement is the engine's, DataFusion's or the language's error, turned into an
//! ErrorResponse by [`crate::sqlstate`].)

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// A TLS certificate or key file is missing or broken.
    #[error("TLS configuration: {what} {}: {source}", path.display())]
    TlsFile {
        /// What is wrong with it (`cannot read certificate`, `bad key`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// TLS could not be set up with the certificate and key.
    #[error("TLS configuration: {0}")]
    Tls(#[source] tokio_rustls::rustls::Error),
    /// A dataset to serve did not open.
    #[error("dataset {name} ({path}): {source}")]
    Dataset {
        /// The schema name it was to be served under.
        name: String,
        /// Its path.
        path: String,
        /// What the store reader said (boxed: it is large, and every Result carries it).
        #[source]
        source: Box<annql_store::Error>,
    },
    /// A collection to serve (a glob or a collection file) did not open.
    #[error("collection {name}: {source}")]
    Collection {
        /// The schema name it was to be served under.
        name: String,
        /// What went wrong (which dataset, which column).
        #[source]
        source: Box<annql_engine::Error>,
    },
    /// The gene index of a dataset to serve did not open.
    #[error("dataset {name}: its gene index: {source}")]
    GeneIndex {
        /// The schema name it was to be served under.
        name: String,
        /// What the engine said.
        #[source]
        source: Box<annql_engine::Error>,
    },
    /// The writable directory cannot be used.
    #[error("--writable-dir {}: {source}", path.display())]
    WritableDir {
        /// The directory given.
        path: PathBuf,
        /// Why it cannot be written in.
        #[source]
        source: Box<annql_engine::Error>,
    },
    /// The runtime statements execute on did not start.
    #[error("cannot start the query runtime: {0}")]
    QueryRuntime(#[source] std::io::Error),
    /// A session could not be set up over the datasets (checked once at startup).
    #[error("{0}")]
    Session(#[source] Box<annql_engine::Error>),
    /// Options that do not go together.
    #[error("{0}")]
    Config(String),
    /// The Flight SQL listener failed (its TLS setup, or serving).
    #[error("Flight SQL: {0}")]
    Flight(#[source] tonic::transport::Error),
    /// I/O while serving.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Results of the server crate.
pub type Result<T> = std::result::Result<T, ServerError>;
