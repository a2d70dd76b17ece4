//! Connection startup: TLS policy, SCRAM-SHA-256 password authentication (the default), and the
//! parameters every session starts with.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, LoginInfo, Password, ServerParameterProvider, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_APPLICATION_NAME, METADATA_USER, PgWireConnectionState};
use pgwire::api::{PidSecretKeyGenerator, RandomPidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::activity::Activity;
use crate::sqlstate;

/// PBKDF2 iterations of the stored SCRAM secret (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// The one user the server accepts and its SCRAM secret (the password itself is not kept).
#[derive(Debug)]
pub struct Credentials {
    user: String,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl Credentials {
    /// Credentials for `user` with `password`.
    pub fn new(user: &str, password: &str) -> Credentials {
        let salt = random_bytes(16);
        let salted_password = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        Credentials {
            user: user.to_string(),
            salt,
            salted_password,
        }
    }

    /// The accepted user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether `user` and `password` are the accepted ones (Flight SQL's basic authentication),
    /// checked through the stored SCRAM secret, in a time that does not depend on where they
    /// differ.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let salted = gen_salted_password(password, &self.salt, SCRAM_ITERATIONS);
        let differ = salted
            .iter()
            .zip(&self.salted_password)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differ == 0 && salted.len() == self.salted_password.len() && user == self.user
    }
}

/// Random bytes from the standard library's randomly seeded hasher (salts need uniqueness, not
/// secrecy).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    let state = std::collections::hash_map::RandomState::new();
    let mut i = 0u64;
    while out.len() < n {
        let mut h = state.build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.extend_from_slice(&h.finish().to_le_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// `n` bytes from the operating system's random source, as hex: secrets (Flight SQL's bearer
/// tokens) as well as ids.
pub fn secret_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        match login.user() {
            Some(u) if u == self.user => Ok(Password::new(
                Some(self.salt.clone()),
                self.salted_password.clone(),
            )),
            Some(u) => Err(PgWireError::InvalidPassword(u.to_string())),
            None => Err(PgWireError::UserNameRequired),
        }
    }
}

/// The parameters a session starts with (`ParameterStatus` after authentication).
#[derive(Debug, Default)]
pub struct Parameters;

impl ServerParameterProvider for Parameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut p: HashMap<String, String> = [
            ("server_version", crate::PG_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "off"),
            ("default_transaction_read_only", "on"),
            ("in_hot_standby", "off"),
            ("scram_iterations", "4096"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(app) = client.metadata().get(METADATA_APPLICATION_NAME) {
            p.insert("application_name".into(), app.clone());
        }
        if let Some(user) = client.metadata().get(METADATA_USER) {
            p.insert("session_authorization".into(), user.clone());
        }
        Some(p)
    }
}

/// Hands out backend process ids and cancel keys, one sequence for the whole server.
#[derive(Debug, Default)]
pub struct Pids(RandomPidSecretKeyGenerator);

impl PidSecretKeyGenerator for Pids {
    fn generate(&self, client: &dyn ClientInfo) -> (i32, pgwire::messages::startup::SecretKey) {
        self.0.generate(client)
    }
}

/// Who may connect, and how: what a connection's startup needs of its server, and no more.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The user and SCRAM secret a password is checked against; None trusts every client
    /// (`--no-auth`, which the server allows only on loopback).
    pub credentials: Option<Arc<Credentials>>,
    /// Refuse connections that do not use TLS.
    pub require_tls: bool,
    /// The server's sequence of backend process ids and cancel keys.
    pub pids: Arc<Pids>,
}

/// The startup handler of one connection.
pub struct Startup {
    scram: Option<SASLAuthStartupHandler<Parameters>>,
    admission: Admission,
    activity: Arc<Activity>,
}

impl Startup {
    /// The startup of a new connection, admitted by `admission`; `activity` learns when it has
    /// authenticated.
    pub fn new(admission: &Admission, activity: Arc<Activity>) -> Startup {
        let scram = admission.credentials.as_ref().map(|c| {
            let mut auth = ScramAuth::new(c.clone());
            auth.set_iterations(SCRAM_ITERATIONS);
            SASLAuthStartupHandler::new(Arc::new(Parameters))
                .with_scram(auth)
                .with_pid_secret_key_generator(admission.pids.clone())
        });
        Startup {
            scram,
            admission: admission.clone(),
            activity,
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(startup) = &message {
            if self.admission.require_tls && !client.is_secure() {
                return Err(sqlstate::fatal(
                    "28000",
                    "this server accepts only encrypted connections (use sslmode=require)",
                ));
            }
            // PostgreSQL refuses a startup packet without a user, with or without a password.
            let Some(user) = startup.parameters.get(METADATA_USER) else {
                return Err(sqlstate::fatal(
                    "28000",
                    "no PostgreSQL user name specified in startup packet",
                ));
            };
            if user.contains('\u{FFFD}') {
                return Err(sqlstate::fatal(
                    "22021",
                    "invalid byte sequence for encoding \"UTF8\" in the user name",
                ));
            }
        }
        match &self.scram {
            Some(scram) => {
                scram
                    .on_startup(client, message)
                    .await
                    .map_err(|e| match e {
                        // pgwire names the user of the client's first SCRAM message, which libpq
                        // and most drivers leave empty (the server is to use the startup
                        // packet's); name that one, in PostgreSQL's words.
                        PgWireError::InvalidPassword(_) => sqlstate::fatal(
                            "28P01",
                            format!(
                                "password authentication failed for user \"{}\"",
                                client
                                    .metadata()
                                    .get(METADATA_USER)
                                    .map_or("", String::as_str)
                            ),
                        ),
                        other => other,
                    })?
            }
            None => {
                // Trust (`--no-auth`, loopback only): start the session at once.
                if let PgWireFrontendMessage::Startup(startup) = &message {
                    protocol_negotiation(client, startup).await?;
                    save_startup_parameters_to_metadata(client, startup);
                    let (pid, key) = self.admission.pids.generate(client);
                    client.set_pid_and_secret_key(pid, key);
                    finish_authentication(client, &Parameters).await?;
                }
            }
        }
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            self.activity.authenticated.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_differ() {
        let a = random_bytes(16);
        let b = random_bytes(16);
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
