//! The listener: accepts connections, applies the connection limit and TLS, and watches each
//! connection (startup and idle timeouts, a client that disappears mid-query).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use annql_engine::collection::{Collection, CollectionSchemaProvider, CollectionSpec};
use annql_engine::export::WritePolicy;
use annql_engine::gene_index::sql::IndexChoice;
use annql_store::AnnDataStore;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::codec::{Framed, FramedParts};

use crate::activity::Activity;
use crate::auth::{Admission, Credentials};
use crate::catalog::Identity;
use crate::config::ServerConfig;
use crate::connection::{Connection, Handlers, Prepared};
use crate::error::{Result, ServerError};
use crate::flight::FlightSqlListener;
use crate::frames::{CANCEL_REQUEST, Guarded, ProtocolViolation};
use crate::queries::QueryRuntime;
pub use crate::shared::Shared;

/// A bound server, ready to [`Server::run`].
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    /// Flight SQL's listener, when asked for.
    flight: Option<FlightSqlListener>,
}

impl Server {
    /// Opens the datasets, loads the TLS files and binds the listen address. Fails (rather than
    /// serving something else) on a dataset that does not open, a broken TLS configuration or a
    /// non-loopback address without a password.
    pub async fn bind(config: ServerConfig) -> Result<Server> {
        for addr in std::iter::once(config.listen).chain(config.flight_sql) {
            if config.credentials.is_none() && !addr.ip().is_loopback() {
                return Err(ServerError::Config(format!(
                    "refusing to serve {addr} without a password: only loopback addresses may \
                     run with --no-auth"
                )));
            }
        }
        if config.require_tls && config.tls.is_none() {
            return Err(ServerError::Config(
                "--require-tls needs --tls-cert and --tls-key".into(),
            ));
        }
        let tls = match &config.tls {
            Some(files) => Some(load_tls(&files.cert, &files.key)?),
            None => None,
        };
        let write_policy = match &config.writable_dir {
            None => WritePolicy::ReadOnly,
            Some(dir) => WritePolicy::inside(dir).map_err(|e| ServerError::WritableDir {
                path: dir.clone(),
                source: Box::new(e),
            })?,
        };
        let mut stores = Vec::new();
        let mut collections = Vec::new();
        for d in &config.datasets {
            let location = d.location.to_string_lossy();
            let collection = |e| ServerError::Collection {
                name: d.name.clone(),
                source: Box::new(e),
            };
            if let Some(spec) =
                CollectionSpec::from_location(&location, &d.options).map_err(collection)?
            {
                let threads = config.threads.unwrap_or(4).clamp(4, 16);
                let opened = Collection::open(&spec, &d.options, &Arc::default(), threads)
                    .map_err(collection)?;
                let schema =
                    CollectionSchemaProvider::try_new(Arc::new(opened)).map_err(collection)?;
                collections.push((d.name.clone(), Arc::new(schema)));
                continue;
            }
            let store = AnnDataStore::open_with(&d.location, &d.options).map_err(|e| {
                ServerError::Dataset {
                    name: d.name.clone(),
                    path: d.location.display().to_string(),
                    source: Box::new(e),
                }
            })?;
            // The gene index beside a local store (`annql index`), used as `ATTACH` would.
            let index = IndexChoice::Beside
                .find(&location, &d.options)
                .map_err(|e| ServerError::GeneIndex {
                    name: d.name.clone(),
                    source: Box::new(e),
                })?;
            stores.push((d.name.clone(), Arc::new(store), index));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServerError::Bind(config.listen, e))?;
        let credentials = config
            .credentials
            .as_ref()
            .map(|(u, p)| Arc::new(Credentials::new(u, p)));
        let queries = QueryRuntime::new(config.threads).map_err(ServerError::QueryRuntime)?;
        let admission = Admission {
            credentials,
            require_tls: config.require_tls,
            pids: Arc::default(),
        };
        let shared = Arc::new(Shared {
            queries,
            config,
            stores,
            collections,
            parser: PostgresCompatibilityParser::new(),
            admission,
            cancels: Arc::default(),
            connections: AtomicUsize::new(0),
            write_policy,
        });
        // Check now that a session opens, so a catalog problem fails the start, not every client.
        let check = shared
            .open_session(&Identity {
                user: "annql".into(),
                pid: 0,
                tls: false,
            })
            .map_err(|e| ServerError::Session(Box::new(e)))?;
        crate::shared::release_session(&check);
        let flight = match shared.config.flight_sql {
            Some(addr) => Some(FlightSqlListener::bind(shared.clone(), addr).await?),
            None => None,
        };
        Ok(Server {
            shared,
            listener,
            tls,
            flight,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address Flight SQL listens on, when it does.
    pub fn flight_sql_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.flight.as_ref().map(FlightSqlListener::local_addr)
    }

    /// Serves both protocols until the future is dropped (or Flight SQL's listener fails).
    pub async fn run(mut self) -> Result<()> {
        match self.flight.take() {
            Some(flight) => tokio::select! {
                r = flight.run() => r,
                r = self.run_pg() => r,
            },
            None => self.run_pg().await,
        }
    }

    /// Accepts PostgreSQL connections until the future is dropped.
    async fn run_pg(self) -> Result<()> {
        loop {
            let (socket, addr) = match self.listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on accepting.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Only latency: a socket that refuses TCP_NODELAY still serves.
            let _ = socket.set_nodelay(true);
            let shared = self.shared.clone();
            let tls = self.tls.clone();
            let max = shared.config.max_connections;
            if shared.connections.fetch_add(1, Ordering::SeqCst) >= max {
                shared.connections.fetch_sub(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Err(e) = reject(&shared, socket, tls).await {
                        log::debug!("{addr}: rejecting over the limit: {e}");
                    }
                });
                continue;
            }
            tokio::spawn(async move {
                serve_connection(&shared, socket, tls, addr).await;
                shared.connections.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor> {
    let cert_pem = std::fs::read(cert).map_err(|e| tls_file("cannot read certificate", cert, e))?;
    let key_pem = std::fs::read(key).map_err(|e| tls_file("cannot read key", key, e))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_file("bad certificate", cert, e))?;
    if certs.is_empty() {
        return Err(tls_file("no certificate in", cert, "expected PEM"));
    }
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| tls_file("bad key", key, e))?
        .ok_or_else(|| tls_file("no private key in", key, "expected PEM"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| tls_file("certificate and key do not fit", cert, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What is wrong with a TLS file.
fn tls_file(
    what: &'static str,
    path: &std::path::Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ServerError {
    ServerError::TlsFile {
        what,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// Runs one connection to its end, containing panics and enforcing the timeouts.
async fn serve_connection(
    shared: &Arc<Shared>,
    socket: TcpStream,
    tls: Option<TlsAcceptor>,
    addr: SocketAddr,
) {
    // pgwire panics on a startup packet shorter than its own header; answer it the way
    // PostgreSQL does before pgwire reads anything.
    match startup_length(&socket, shared.config.startup_timeout).await {
        Some(len) if !(8..=10_000).contains(&len) => {
            let mut socket = socket;
            // The connection is closed either way; a client that cannot be told is gone.
            let _ = write_error(&mut socket, "08P01", "invalid length of startup packet").await;
            let _ = socket.shutdown().await;
            return;
        }
        Some(_) => {}
        None => return,
    }
    // A second handle on the socket lets the watchdog see the client hang up while a query runs
    // (pgwire only reads the socket between statements).
    let (socket, peer) = match socket.into_std().and_then(|s| {
        let peer = s.try_clone()?;
        Ok((TcpStream::from_std(s)?, peer))
    }) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("{addr}: {e}");
            return;
        }
    };
    let conn = Connection::new(shared.clone(), false);
    let activity = conn.activity.clone();
    let handlers = Arc::new(Handlers(conn));
    let opened = Instant::now();
    let work = tokio::spawn(process_socket(
        socket,
        tls,
        handlers,
        shared.config.startup_timeout,
    ));
    let abort = work.abort_handle();
    tokio::select! {
        r = work => match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::debug!("{addr}: {e}"),
            Err(e) if e.is_panic() => log::error!("{addr}: connection task panicked; connection closed"),
            Err(_) => {}
        },
        reason = watchdog(&activity, &peer, opened, &shared.config) => {
            log::info!("{addr}: closing: {reason}");
            activity.cancel();
            abort.abort();
        }
    }
}

/// pgwire's `process_socket`, reading through [`Guarded`]: a malformed frontend message is
/// answered with `FATAL 08P01` and closes the connection, as PostgreSQL does, instead of reaching
/// pgwire's decoder (which panics on some and closes silently on others).
async fn process_socket(
    socket: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Arc<Handlers>,
    startup_timeout: Duration,
) -> io::Result<()> {
    let deadline = tokio::time::sleep(startup_timeout);
    tokio::pin!(deadline);
    let negotiated = tokio::select! {
        _ = &mut deadline => return Ok(()),
        s = negotiate_tls::<Prepared>(socket, tls) => s?,
    };
    // None: a direct TLS handshake without TLS configured; nothing can be said in plain text.
    let Some(negotiated) = negotiated else {
        return Ok(());
    };
    let old = negotiated.into_parts();
    let mut parts = FramedParts::new(Guarded::new(old.io, old.read_buf), old.codec);
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    // The connection itself (the trait's `impl` return type would hide its statement type).
    let extended = handlers.0.clone();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let next = if matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        ) {
            tokio::select! {
                _ = &mut deadline => None,
                m = socket.next() => m,
            }
        } else {
            socket.next().await
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => return refuse(&mut socket, e).await,
            None => return Ok(()),
        };
        // The client is leaving: close at once (asyncpg waits for the close).
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let done = process_message(
            message,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(mut e) = done {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_query).await?;
        }
    }
}

/// Answers a message that could not be read with `FATAL 08P01` and closes, as PostgreSQL does;
/// a connection that failed underneath (reset, TLS) is just closed.
async fn refuse<S>(socket: &mut S, error: PgWireError) -> io::Result<()>
where
    S: futures::Sink<PgWireBackendMessage, Error = io::Error> + Unpin,
{
    let message = match error {
        PgWireError::IoError(e) => match ProtocolViolation::of(&e) {
            Some(v) => v.to_string(),
            None => return Err(e),
        },
        other => other.to_string(),
    };
    log::info!("closing on a protocol violation: {message}");
    let info = ErrorInfo::new("FATAL".into(), "08P01".into(), message);
    socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await?;
    socket.close().await
}

/// Returns when the connection should be closed, with the reason.
async fn watchdog(
    activity: &Activity,
    peer: &std::net::TcpStream,
    opened: Instant,
    config: &ServerConfig,
) -> &'static str {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !activity.authenticated.load(Ordering::Relaxed) {
            if opened.elapsed() > config.startup_timeout {
                return "no startup within the startup timeout";
            }
            continue;
        }
        if activity.busy() {
            if peer_gone(peer) {
                return "the client went away during a statement";
            }
        } else if let Some(idle) = config.idle_timeout
            && activity.idle_for(opened) > idle
        {
            return "idle session timeout";
        }
    }
}

fn peer_gone(peer: &std::net::TcpStream) -> bool {
    let mut b = [0u8; 1];
    match peer.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

/// Answers a connection over the limit the way PostgreSQL does: after its startup packet, with
/// `FATAL 53300 sorry, too many clients already`. A CancelRequest is still served: a server
/// full of clients is when one most needs to stop a statement.
async fn reject(
    shared: &Shared,
    mut socket: TcpStream,
    tls: Option<TlsAcceptor>,
) -> io::Result<()> {
    const SSL_REQUEST: u32 = 80877103;
    const GSSENC_REQUEST: u32 = 80877104;
    let deadline = Duration::from_secs(5);
    let run = async {
        let (mut code, body) = read_startup(&mut socket).await?;
        if code == CANCEL_REQUEST {
            if let (Some(pid), Some(key)) = (body.get(4..8), body.get(8..)) {
                shared
                    .cancels
                    .cancel(i32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]), key);
            }
            return Ok(());
        }
        if code == GSSENC_REQUEST {
            socket.write_all(b"N").await?;
            code = read_startup(&mut socket).await?.0;
        }
        if code == SSL_REQUEST {
            if let Some(acceptor) = tls {
                socket.write_all(b"S").await?;
                let mut secure = acceptor.accept(socket).await?;
                read_startup(&mut secure).await?;
                write_fatal(&mut secure).await?;
                return secure.shutdown().await;
            }
            socket.write_all(b"N").await?;
            read_startup(&mut socket).await?;
        }
        write_fatal(&mut socket).await?;
        socket.shutdown().await
    };
    tokio::time::timeout(deadline, run)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no startup packet"))?
}

/// A startup-phase packet: its code and its body (code included).
async fn read_startup<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<(u32, Vec<u8>)> {
    let len = s.read_u32().await? as usize;
    if !(8..=10_000).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad startup length",
        ));
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await?;
    Ok((
        u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        body,
    ))
}

/// The length field of the first packet (None: the client sent nothing usable in time). A
/// direct TLS handshake (first byte 0x16) is passed on as valid.
async fn startup_length(socket: &TcpStream, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    let mut head = [0u8; 4];
    loop {
        let n = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            socket.peek(&mut head),
        )
        .await
        // Timed out, or the socket failed: the client sent nothing usable (see the doc).
        .ok()?
        .ok()?;
        if n == 0 {
            return None;
        }
        if head[0] == 0x16 {
            return Some(8);
        }
        if n >= 4 {
            return Some(u32::from_be_bytes(head));
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write_fatal<S: AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    write_error(s, "53300", "sorry, too many clients already").await
}

/// A `FATAL` ErrorResponse written straight to the socket (before pgwire owns it).
async fn write_error<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: &str,
    message: &str,
) -> io::Result<()> {
    let mut fields = Vec::new();
    for (t, v) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(t);
        fields.extend_from_slice(v.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&fields);
    s.write_all(&msg).await?;
    s.flush().await
}
