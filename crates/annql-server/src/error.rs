//! The server crate's error type: what stops a server from starting.

use std::net::SocketAddr;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The TLS certificate or key is missing or broken.
    #[error("TLS configuration: {0}")]
    Tls(String),
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
    /// Options that do not go together, or a session that cannot be set up.
    #[error("{0}")]
    Config(String),
    /// I/O while serving.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Results of the server crate.
pub type Result<T> = std::result::Result<T, ServerError>;
