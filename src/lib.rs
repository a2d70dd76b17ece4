//! annql: a lazy, out-of-core query engine for AnnData stores.
//!
//! This facade re-exports the crates a user of annql needs:
//!
//! - [`store`] (`annql-store`): opens zarr stores and reads ranges of their elements into Arrow,
//!   reading only the chunks a read covers.
//! - [`engine`] (`annql-engine`): AnnData stores as DataFusion tables, with pushdown into chunk reads.
//!
//! Data flows one way: storage → engine → front-ends (CLI, server, language).

pub use annql_engine as engine;
pub use annql_store as store;
