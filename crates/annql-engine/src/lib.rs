//! AnnData stores as DataFusion tables, planned so that only the chunks a query needs are read.
//!
//! [`AnnSession`] is the entry point: attach stores (`ATTACH 'path' AS atlas`), then query
//! `atlas.obs`, `atlas.x`, `atlas.layers_counts`, … with SQL. The [`model`] decides which tables a
//! store exposes; each is an [`AnnTable`] bound to its store and served by an
//! [`AnnDataTableProvider`] whose scan, [`AnnDataScanExec`], pushes projections, predicates
//! (static, and the dynamic filters of joins) and limits into chunk reads.
//!
//! Group-by aggregates of a matrix joined to obs/var run as one sparse pass ([`fused`]).
//!
//! Stages: `attach` ([`session`]: [`model`], `check`, the table) → `plan` ([`provider`],
//! [`pushdown`]) → `scan` ([`scan`]: block selection, the table's reads) → `decode`. On top of
//! SQL: [`select`]ions of cells and genes, [`export`]s and [`dataset`] matrices handed to Rust.
//! The modules below are listed in that order; each uses only those after it in its stage.

// Attach: the session, and the tables a store exposes.
/// Whether elements can be read as the tables and columns the model gives them.
pub mod check;
/// Gene indexes found beside attached stores, used once checked against the source.
pub mod gene_index;
/// Which tables a store exposes, and their names.
pub mod model;
/// The session: attach, detach, run SQL (`COPY` included).
pub mod session;
/// A table definition bound to its store: schema, column sources, reads (the fused
/// aggregation's whole-matrix reads among them).
mod table;

// Plan: the table as DataFusion sees it, and where each filter applies.
/// Tables as plain data another process opens again (a cluster's scheduler and executors).
pub mod address;
/// Many stores queried as one atlas: their tables as unions of each store's.
pub mod collection;
/// The fused group-by over a matrix joined to obs/var.
pub mod fused;
/// The query planner: DataFusion's, with annql's extension planners.
pub mod planner;
/// Table and schema providers.
pub mod provider;
/// Where each filter applies; categorical predicates by code.
pub mod pushdown;

// Scan: the operator, the blocks it reads, and their decoding.
/// Which spans of a major axis a read covers; rows or a CSC copy's columns.
mod blocks;
/// Store values turned into Arrow arrays (types, zero-filled entries, probe batches).
mod decode;
/// The scan operator.
pub mod scan;

// Around the operators: what they count, how they yield, where their work runs.
/// Joins yield to the runtime between output batches, so stopped queries stop.
pub mod coop;
/// Network metrics of remote stores for `EXPLAIN ANALYZE`.
mod fetch;
/// Blocks planned and scanned by a session's queries.
mod progress;
/// Where work runs: blocking work off the async runtime, bounded parallel workers (the one
/// place allowed to start threads: crates/annql-engine/clippy.toml).
mod schedule;

// On top of SQL: selections, exports, matrices for Rust.
/// What selections and exports need of the session they run in.
pub mod context;
/// Matrices of a dataset handed to Rust as `sprs`/`ndarray` values or row blocks.
pub mod dataset;
/// Exports: subsets and group-by aggregates written as AnnData; where a session may write.
pub mod export;
/// Predicates over obs/var turned into the row ids they keep.
pub mod select;

/// The error type.
pub mod error;

/// The former paths of `export::aggregate` and `export::sql` (the CLI, the server and the
/// integration tests name them).
pub use export::{aggregate as export_aggregate, sql as export_sql};

pub use context::QueryContext;
pub use dataset::{Dataset, MatrixElement, RowBlock, RowBlocks, Selected};
pub use error::{Error, Result};
pub use model::{Axis, TableDef, TableKind};
pub use progress::Progress;
pub use provider::{AnnDataSchemaProvider, AnnDataTableProvider};
pub use scan::{AnnDataScanExec, ScanParams};
pub use session::{AnnSession, SessionBuilder, StatementRewriter};
pub use table::{AnnTable, Note};

/// DataFusion, re-exported so embedders need not pin a matching version.
pub use datafusion;
/// ndarray and sprs, the types matrices are handed out as, re-exported likewise.
pub use {ndarray, sprs};
