//! Flight SQL beside the PostgreSQL wire (`annql serve --flight-sql ADDR`): answers leave as
//! Arrow record batches, so ADBC (Python, R, Go, Java), polars and pandas read them without
//! the text rows of the PostgreSQL protocol.
//!
//! The same server: the same datasets and gene indexes ([`crate::shared::Shared`]), the same
//! password (basic authentication at the handshake, then a bearer token), the same TLS
//! certificate, read-only rules, per-session memory limit and connection slots.
//!
//! - [`sessions`]: the handshake, tokens, and the annql session behind each.
//! - [`statements`]: SQL to plans, tickets, prepared statements and their parameters.
//! - [`metadata`]: catalogs, schemas, tables, table types and `SqlInfo`.
//! - [`service`]: the Flight SQL calls.
//! - [`status`]: errors as gRPC statuses.

pub mod metadata;
pub mod service;
pub mod sessions;
pub mod statements;
pub mod status;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server as GrpcServer, ServerTlsConfig};

use crate::error::{Result, ServerError};
use crate::shared::Shared;
pub use service::AnnqlFlightSql;

/// Streams (calls) one client connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// A bound Flight SQL listener.
pub struct FlightSqlListener {
    listener: TcpListener,
    tls: Option<Identity>,
    service: AnnqlFlightSql,
}

impl std::fmt::Debug for FlightSqlListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlListener")
            .field("listener", &self.listener.local_addr())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl FlightSqlListener {
    /// Binds `addr` for `shared`'s server. With TLS configured the listener takes TLS only
    /// (gRPC has no in-band upgrade).
    pub async fn bind(shared: Arc<Shared>, addr: SocketAddr) -> Result<FlightSqlListener> {
        let tls = match &shared.config.tls {
            Some(files) => {
                let read = |what, path: &std::path::PathBuf| {
                    std::fs::read(path).map_err(|e| ServerError::TlsFile {
                        what,
                        path: path.clone(),
                        source: Box::new(e),
                    })
                };
                let cert = read("cannot read certificate", &files.cert)?;
                let key = read("cannot read key", &files.key)?;
                Some(Identity::from_pem(cert, key))
            }
            None => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ServerError::Bind(addr, e))?;
        Ok(FlightSqlListener {
            listener,
            tls,
            service: AnnqlFlightSql::new(shared),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the future is dropped.
    pub async fn run(self) -> Result<()> {
        let mut builder = GrpcServer::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(identity) = self.tls {
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(ServerError::Flight)?;
        }
        builder
            .add_service(FlightServiceServer::new(self.service))
            .serve_with_incoming(TcpIncoming::from(self.listener))
            .await
            .map_err(ServerError::Flight)
    }
}
