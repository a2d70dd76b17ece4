//! annql: a lazy, out-of-core query engine for AnnData stores.
//!
//! This facade is the library a Rust program embeds; the `annql` command is the `annql-cli`
//! package. The workspace's crates, in pipeline order (each depends only on those above it):
//!
//! | crate | here as | job |
//! |---|---|---|
//! | `annql-store` | [`store`] | opens zarr v2/v3 (directories, zip, object storage) and `.h5ad` stores; reads ranges of their elements into Arrow, only the chunks a read covers |
//! | `annql-write` | [`write`] | writes subsets and aggregates of a store as new AnnData stores (zarr v2/v3, `.h5ad`) |
//! | `annql-index` | [`index`] | gene indexes: a CSC copy of a CSR matrix built out of core into a sidecar store, which the engine reads genes from |
//! | `annql-engine` | [`engine`] | AnnData stores as DataFusion tables: pushdown into chunk reads, the fused aggregation, export by predicate |
//! | `annql-syntax` | (through [`lang`]) | the pipeline language's grammar, AST and diagnostics |
//! | `annql-lang` | [`lang`] | binds and lowers pipelines to the same plans as SQL; `aql('…')` in SQL |
//! | `annql-server` | [`server`] (feature `server`) | `annql serve`: the PostgreSQL wire protocol over sessions |
//! | `annql-cluster` | [`cluster`] (feature `cluster`) | queries on an Apache Ballista cluster: codecs, the scheduler and executor processes, sessions connected to them |
//! | `annql-cli` | (the `annql` command) | the REPL, batch runs, output formats, `export`, `index`, `serve` |
//!
//! [`session`] opens a session with the language installed; [`open`] does the same from a
//! [`SessionBuilder`].
//!
#![doc = include_str!("../docs/architecture.md")]

#[cfg(feature = "cluster")]
pub use annql_cluster as cluster;
pub use annql_engine as engine;
pub use annql_index as index;
pub use annql_lang as lang;
#[cfg(feature = "server")]
pub use annql_server as server;
pub use annql_store as store;
pub use annql_write as write;

pub use annql_engine::datafusion::arrow::record_batch::RecordBatch;
pub use annql_engine::datafusion::dataframe::DataFrame;
pub use annql_engine::{AnnSession, SessionBuilder};

/// A session with default settings and the `aql('…')` table function installed.
pub fn session() -> engine::Result<AnnSession> {
    open(AnnSession::builder())
}

/// Builds a session from `builder` and installs the `aql('…')` table function (the one way
/// every front-end builds its sessions: [`lang::session`]).
pub fn open(builder: SessionBuilder) -> engine::Result<AnnSession> {
    annql_lang::session(builder)
}
