//! `annql serve`: the PostgreSQL wire protocol over annql sessions, so BI tools (Tableau, Power BI,
//! Superset, DBeaver, Metabase, Excel) and every Postgres driver can query AnnData stores; and
//! Flight SQL beside it, so ADBC, pandas and polars get the answers as Arrow.
//!
//! Built on [`pgwire`] for the protocol and on `datafusion-pg-catalog` for `pg_catalog` and the
//! PostgreSQL spellings clients send; annql owns the server layer: sessions, authentication,
//! cursors, cancellation and limits.
//!
//! - [`config`]: what a server is told ([`ServerConfig`]).
//! - [`server`]: the listener, TLS, the connection limit and the per-connection watchdog.
//! - [`flight`]: Flight SQL on a second address, over the same datasets and sessions.
//! - [`shared`]: what every connection of a server shares, and how a session is opened.
//! - [`activity`]: what a connection is doing, for the watchdog and CancelRequests.
//! - [`auth`]: startup, SCRAM-SHA-256 and the session parameters.
//! - [`frames`]: frontend messages checked before pgwire decodes them (08P01 on a bad one).
//! - [`connection`]: one client's session and the simple/extended protocol handlers.
//! - [`queries`]: the runtime statements execute on, apart from the connections'.
//! - [`statement`]: sorting statements into queries and session statements.
//! - [`prepared`]: SQL `PREPARE`/`EXECUTE`: statements kept by name, arguments bound.
//! - [`settings`]: per-session `SET`/`SHOW` state.
//! - [`catalog`]: `information_schema`, `pg_catalog` and connection functions.
//! - [`compat`]: rewrites of what drivers send that DataFusion would not plan as PostgreSQL does.
//! - [`sqlstate`]: errors as clients see them: SQLSTATEs by type, and positions.
//! - [`error`]: what stops a server from starting.

pub mod activity;
pub mod auth;
pub mod catalog;
pub mod compat;
pub mod config;
pub mod connection;
pub mod error;
pub mod flight;
pub mod frames;
pub mod prepared;
pub mod queries;
pub mod server;
pub mod settings;
pub mod shared;
pub mod sqlstate;
pub mod statement;

pub use config::{Dataset, ServerConfig, TlsFiles};
pub use error::{Result, ServerError};
pub use server::Server;

/// The PostgreSQL version the server reports (clients pick features by it).
pub const PG_VERSION: &str = "16.6";
/// [`PG_VERSION`] as `server_version_num`.
pub const PG_VERSION_NUM: &str = "160006";
/// The catalog (database) name sessions run in; clients may name any database.
pub const CATALOG: &str = "annql";
