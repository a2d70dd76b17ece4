//! Flight SQL sessions: the basic-auth handshake, the bearer tokens it hands out, and the annql
//! session each token stands for.
//!
//! gRPC has no connection a session could live on (a client multiplexes calls, and may reconnect
//! between them), so a token is the session: the handshake checks the password the PostgreSQL
//! side checks, opens a session over the server's datasets (with the same memory limit and write
//! policy), and answers with `authorization: Bearer <token>`; every later call names it. A token
//! ends when unused for [`TOKEN_IDLE`] (or the server's `--idle-timeout`), [`TOKEN_LIFETIME`]
//! after the handshake, or at the client's `CloseSession`. Each live token takes one of the
//! server's connection slots, shared with PostgreSQL connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use annql_engine::AnnSession;
use base64::Engine as _;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::statements::Prepared;
use crate::catalog::Identity;
use crate::shared::{Shared, release_session};

/// How long an unused token stays valid (unless `--idle-timeout` says otherwise).
pub const TOKEN_IDLE: Duration = Duration::from_secs(60 * 60);
/// How long a token stays valid at most, used or not: a client then authenticates again.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Prepared statements one session may keep open.
const MAX_PREPARED: usize = 256;

/// One client's session.
pub struct FlightSession {
    /// The annql session its statements run in.
    pub session: AnnSession,
    /// The authenticated user.
    pub user: String,
    created: Instant,
    last_used: Mutex<Instant>,
    /// Prepared statements by handle.
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    /// Statements running now, by the run id of their ticket: `CancelFlightInfo` stops them.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// The server's connection slot this session holds.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FlightSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSession")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Drop for FlightSession {
    fn drop(&mut self) {
        release_session(&self.session);
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these maps leaves them consistent (single inserts and removes).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FlightSession {
    /// A prepared statement of this session.
    pub fn prepared(&self, handle: &[u8]) -> Result<Arc<Prepared>, Status> {
        let handle = std::str::from_utf8(handle).unwrap_or("");
        lock(&self.prepared).get(handle).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "prepared statement {handle:?} does not exist (closed, or made by another session)"
            ))
        })
    }

    /// Keeps a prepared statement; its handle.
    pub fn keep(&self, prepared: Prepared) -> Result<String, Status> {
        let mut all = lock(&self.prepared);
        if all.len() >= MAX_PREPARED {
            return Err(Status::resource_exhausted(format!(
                "{MAX_PREPARED} prepared statements are open in this session: close some"
            )));
        }
        let handle = random_hex(12)?;
        all.insert(handle.clone(), Arc::new(prepared));
        Ok(handle)
    }

    /// Closes a prepared statement (closing one that is gone is not an error: it is closed).
    pub fn close(&self, handle: &[u8]) {
        if let Ok(h) = std::str::from_utf8(handle) {
            lock(&self.prepared).remove(h);
        }
    }

    /// Registers a statement starting under `run`; the token stops it.
    pub fn start(&self, run: &str) -> CancellationToken {
        let token = CancellationToken::new();
        lock(&self.running).insert(run.to_string(), token.clone());
        token
    }

    /// The statement `run` ended.
    pub fn finish(&self, run: &str) {
        lock(&self.running).remove(run);
    }

    /// Stops the statement `run`; whether it was running.
    pub fn cancel(&self, run: &str) -> bool {
        match lock(&self.running).remove(run) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    fn expired(&self, idle: Duration) -> Option<&'static str> {
        if self.created.elapsed() > TOKEN_LIFETIME {
            Some("the token is older than its 24-hour lifetime")
        } else if lock(&self.last_used).elapsed() > idle {
            Some("the token was idle past its timeout")
        } else {
            None
        }
    }
}

/// The sessions of a Flight SQL server, by token.
pub struct Sessions {
    shared: Arc<Shared>,
    tokens: Mutex<HashMap<String, Arc<FlightSession>>>,
    /// The one session of clients that send no token, when the server runs without a password.
    anonymous: Mutex<Option<Arc<FlightSession>>>,
    /// Session numbers (`pg_backend_pid()` of a Flight session's catalog functions).
    next_pid: AtomicI32,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("tokens", &lock(&self.tokens).len())
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// No sessions yet, over `shared`'s datasets.
    pub fn new(shared: Arc<Shared>) -> Sessions {
        Sessions {
            shared,
            tokens: Mutex::default(),
            anonymous: Mutex::default(),
            next_pid: AtomicI32::new(1 << 30),
        }
    }

    fn idle(&self) -> Duration {
        self.shared.config.idle_timeout.unwrap_or(TOKEN_IDLE)
    }

    /// The handshake: checks the `authorization: Basic …` header against the server's
    /// credentials and opens a session; its token.
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let basic = match authorization(metadata)? {
            Some(v) => v.strip_prefix("Basic ").map(decode_basic).transpose()?,
            None => None,
        };
        let user = match (&self.shared.admission.credentials, basic) {
            (Some(credentials), Some((user, password))) => {
                if !credentials.verify(&user, &password) {
                    log::info!("flight sql: password authentication failed for user {user:?}");
                    return Err(Status::unauthenticated(format!(
                        "password authentication failed for user \"{user}\""
                    )));
                }
                user
            }
            (Some(_), None) => {
                return Err(Status::unauthenticated(
                    "a user name and password are required (basic authentication)",
                ));
            }
            // --no-auth: whoever the client says it is.
            (None, basic) => basic.map_or_else(|| "annql".to_string(), |(u, _)| u),
        };
        self.sweep();
        let session = Arc::new(self.open(user)?);
        let token = random_hex(32)?;
        lock(&self.tokens).insert(token.clone(), session);
        Ok(token)
    }

    /// The session a call is made in: its bearer token's, or without a token the anonymous one
    /// of a server without a password.
    pub fn of(&self, metadata: &MetadataMap) -> Result<Arc<FlightSession>, Status> {
        let Some(token) = bearer(metadata)? else {
            if self.shared.admission.credentials.is_some() {
                return Err(Status::unauthenticated(
                    "no bearer token: authenticate first (a handshake with basic authentication)",
                ));
            }
            let mut anonymous = lock(&self.anonymous);
            if let Some(s) = anonymous.as_ref() {
                return Ok(s.clone());
            }
            let session = Arc::new(self.open("annql".into())?);
            *anonymous = Some(session.clone());
            return Ok(session);
        };
        let mut tokens = lock(&self.tokens);
        let session = tokens.get(token).cloned().ok_or_else(|| {
            Status::unauthenticated("unknown or expired token: authenticate again")
        })?;
        if let Some(why) = session.expired(self.idle()) {
            tokens.remove(token);
            return Err(Status::unauthenticated(format!(
                "{why}: authenticate again"
            )));
        }
        *lock(&session.last_used) = Instant::now();
        Ok(session)
    }

    /// Ends the session of the call's token (`CloseSession`); a call without a token (the
    /// shared session of a server without a password) has nothing of its own to close.
    pub fn close(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if let Some(token) = bearer(metadata)? {
            lock(&self.tokens).remove(token);
        }
        Ok(())
    }

    /// Drops the sessions of expired tokens (their slots free once their last stream ends).
    fn sweep(&self) {
        let idle = self.idle();
        lock(&self.tokens).retain(|_, s| s.expired(idle).is_none());
    }

    /// Opens a session for `user` in one of the server's connection slots.
    fn open(&self, user: String) -> Result<FlightSession, Status> {
        let shared = &self.shared;
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= shared.config.max_connections {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::resource_exhausted(
                "sorry, too many clients already (SQLSTATE 53300)",
            ));
        }
        let who = Identity {
            user: user.clone(),
            pid: self.next_pid.fetch_add(1, Ordering::Relaxed),
            tls: shared.config.tls.is_some(),
        };
        let session = match shared.open_session(&who) {
            Ok(s) => s,
            Err(e) => {
                shared.connections.fetch_sub(1, Ordering::SeqCst);
                return Err(super::status::from_error(&e));
            }
        };
        let now = Instant::now();
        Ok(FlightSession {
            session,
            user,
            created: now,
            last_used: Mutex::new(now),
            prepared: Mutex::default(),
            running: Mutex::default(),
            shared: shared.clone(),
        })
    }
}

/// The call's `authorization` header, if it has one.
fn authorization(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    metadata
        .get("authorization")
        .map(|v| {
            v.to_str()
                .map_err(|_| Status::unauthenticated("unreadable authorization header"))
        })
        .transpose()
}

/// The call's bearer token, if it has an `authorization` header (which must then be one).
fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    authorization(metadata)?
        .map(|v| {
            v.strip_prefix("Bearer ").ok_or_else(|| {
                Status::unauthenticated(
                    "expected `authorization: Bearer <token>` (the handshake's answer)",
                )
            })
        })
        .transpose()
}

/// `user:password` from a basic-auth header's base64.
fn decode_basic(b64: &str) -> Result<(String, String), Status> {
    let bad = || Status::unauthenticated("malformed basic authorization header");
    // Padded or not: clients differ (Go's ADBC driver leaves the padding out).
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(b64.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_string(), password.to_string()))
}

/// `n` random bytes from the operating system, as hex: tokens, handles and run ids (a token
/// must not be guessable, so there is no weaker fallback).
pub fn random_hex(n: usize) -> Result<String, Status> {
    crate::auth::secret_hex(n)
        .map_err(|e| Status::internal(format!("no random source for a token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("annql:p:w");
        let got = decode_basic(&b64).map_err(|e| e.message().to_string());
        assert_eq!(got, Ok(("annql".to_string(), "p:w".to_string())));
        assert!(decode_basic("%%%").is_err());
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("annql:wrong");
        assert!(decode_basic(&unpadded).is_ok());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("annql");
        assert!(decode_basic(&no_colon).is_err());
    }

    #[test]
    fn tokens_are_random_hex() {
        let a = random_hex(32).map_err(|e| e.to_string());
        assert_eq!(a.as_ref().map(String::len), Ok(64));
        assert_ne!(a, random_hex(32).map_err(|e| e.to_string()));
    }
}
