//! AnnData stores as DataFusion tables, planned so that only the chunks a query needs are read.
//!
//! [`AnnSession`] is the entry point: attach stores (`ATTACH 'path' AS atlas`), then query
//! `atlas.obs`, `atlas.x`, `atlas.layers_counts`, … with SQL. The [`model`] decides which tables a
//! store exposes; each is an [`AnnDataTableProvider`] whose scan, [`AnnDataScanExec`], pushes
//! projections, predicates (static, and the dynamic filters of joins) and limits into chunk reads.
//!
//! Group-by aggregates of a matrix joined to obs/var run as one sparse pass ([`fused`]).
//!
//! Stages: `attach` ([`session`]) → `plan` ([`provider`], [`pushdown`]) → `scan` ([`scan`]) →
//! `decode` ([`decode`]).

/// Which spans of a major axis a read covers; rows or a CSC copy's columns.
mod blocks;
/// Whether elements can be read as the tables and columns the model gives them.
pub mod check;
/// Joins yield to the runtime between output batches, so stopped queries stop.
pub mod coop;
/// Matrices of a dataset handed to Rust as `sprs`/`ndarray` values or row blocks.
pub mod dataset;
/// Store values turned into Arrow arrays (types, zero-filled entries, probe batches).
mod decode;
/// The error type.
pub mod error;
/// Subsets of a dataset written as new AnnData stores; where a session may write.
pub mod export;
/// Group-by aggregates written as AnnData (`scanpy.get.aggregate`'s layout).
pub mod export_aggregate;
/// `COPY dataset TO 'out.h5ad' WHERE OBS (…) AND VAR (…)`: the SQL statement of exports.
pub mod export_sql;
/// Network metrics of remote stores for `EXPLAIN ANALYZE`.
mod fetch;
/// The fused group-by over a matrix joined to obs/var.
pub mod fused;
/// Which tables a store exposes, and their names.
pub mod model;
/// Blocks planned and scanned by a session's queries.
mod progress;
/// Table and schema providers.
pub mod provider;
/// Filter classification and categorical predicates by code.
pub mod pushdown;
/// The scan operator.
pub mod scan;
/// Predicates over obs/var turned into the row ids they keep.
pub mod select;
/// The session: attach, detach, run SQL.
pub mod session;
/// A table definition bound to its store: schema, column sources, reads.
mod table;

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
