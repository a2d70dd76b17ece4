//! The cluster's error type.

/// Result alias for the cluster.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised while starting cluster processes or connecting to a scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Ballista failed (a process could not start, a scheduler could not be reached).
    #[error("ballista: {0}")]
    Ballista(#[from] ballista_core::error::BallistaError),
    /// DataFusion failed while building a session.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] annql_engine::Error),
    /// A cluster address that is not `df://HOST:PORT`.
    #[error("{0}: not a cluster address (expected df://HOST:PORT, e.g. df://127.0.0.1:50050)")]
    Address(String),
    /// The scheduler's gRPC service could not listen or stopped.
    #[error("scheduler service at {0}: {1}")]
    Serve(std::net::SocketAddr, std::io::Error),
    /// Options that cannot run.
    #[error("{0}")]
    Options(String),
}
