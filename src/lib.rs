//! annql: a lazy, out-of-core query engine for AnnData stores.
//!
//! This facade re-exports the crates a user of annql needs:
//!
//! - [`store`] (`annql-store`): opens zarr stores and reads ranges of their elements into Arrow,
//!   reading only the chunks a read covers.
//! - [`engine`] (`annql-engine`): AnnData stores as DataFusion tables, with pushdown into chunk reads.
//! - [`lang`] (`annql-lang`): the pipeline language, lowered to the same plans as SQL; [`session`]
//!   opens a session where SQL can also call pipelines as `aql('…')`.
//!
//! - [`write`] (`annql-write`): subsets and aggregates of a store written as new AnnData stores
//!   (zarr v2/v3, `.h5ad`); the engine's `export` module runs them from predicates.
//!
//! - [`server`] (`annql-server`): `annql serve`, the PostgreSQL wire protocol over sessions.
//!
//! Data flows one way: storage → engine → front-ends (CLI, server, language).

pub use annql_engine as engine;
pub use annql_lang as lang;
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

/// Builds a session from `builder` and installs the `aql('…')` table function.
pub fn open(builder: SessionBuilder) -> engine::Result<AnnSession> {
    let s = builder.build()?;
    annql_lang::install(&s)?;
    Ok(s)
}
