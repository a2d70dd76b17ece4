//! How a server is configured: what it serves, where it listens, who may connect.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use annql_store::StorageOptions;

/// The memory one query may hold by default: with the remote chunk cache (256 MiB by default,
/// shared by all connections), a full scan of a remote store stays within 1 GiB.
pub const DEFAULT_QUERY_MEMORY: usize = 512 << 20;

/// PEM files of the server certificate (chain) and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One dataset served: its schema name, where it is (a path or a URL), and how a remote one is
/// reached.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The schema it appears as.
    pub name: String,
    /// A local path or a store URL.
    pub location: PathBuf,
    /// Settings for a remote store.
    pub options: StorageOptions,
}

/// Everything `annql serve` is told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on (loopback by default).
    pub listen: SocketAddr,
    /// Where Flight SQL listens, if anywhere (off by default): the same datasets, password,
    /// TLS, limits and read-only rules as the PostgreSQL side.
    pub flight_sql: Option<SocketAddr>,
    /// Datasets served.
    pub datasets: Vec<Dataset>,
    /// The user and password SCRAM-SHA-256 checks; None runs without authentication, which
    /// [`crate::Server::bind`] allows only on loopback.
    pub credentials: Option<(String, String)>,
    /// TLS, when configured.
    pub tls: Option<TlsFiles>,
    /// Refuse connections that do not use TLS.
    pub require_tls: bool,
    /// Connections served at once; the next one gets `FATAL 53300`.
    pub max_connections: usize,
    /// Memory one connection's query may hold: its sorts, joins and aggregates (which spill to
    /// a temporary directory beyond it, or fail with SQLSTATE 53200), the scans' decoded blocks
    /// and the fused aggregation's accumulators. Each connection has its own pool of this size,
    /// so one client cannot starve another ([`DEFAULT_QUERY_MEMORY`] by default; None: no limit).
    pub memory_limit: Option<usize>,
    /// Scan partitions per query (default: the number of cores).
    pub threads: Option<usize>,
    /// Close sessions idle this long.
    pub idle_timeout: Option<Duration>,
    /// Close connections that have not authenticated within this time.
    pub startup_timeout: Duration,
    /// The directory `COPY dataset TO 'out.h5ad'` may write in (relative outputs are taken from
    /// it; paths leaving it are refused). None: the server is read-only.
    pub writable_dir: Option<PathBuf>,
    /// Where sessions' queries run when not in this process: a cluster (`serve --cluster`).
    pub cluster: Option<std::sync::Arc<dyn annql_engine::session::remote::Connector>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5433)),
            flight_sql: None,
            datasets: Vec::new(),
            credentials: None,
            tls: None,
            require_tls: false,
            max_connections: 64,
            memory_limit: Some(DEFAULT_QUERY_MEMORY),
            threads: None,
            idle_timeout: None,
            startup_timeout: Duration::from_secs(10),
            writable_dir: None,
            cluster: None,
        }
    }
}
