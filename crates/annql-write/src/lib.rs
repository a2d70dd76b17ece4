//! AnnData output: the rows and genes of a store selected by the caller, or a group-by aggregate,
//! written as a new AnnData store that anndata, scanpy and annql open.
//!
//! [`export`] is the entry point: it walks the source's element tree ([`annql_store::Element`]),
//! cuts every element along the [`Selection`] of cells and genes the way anndata's
//! `adata[obs_mask, var_mask]` does, and streams the result block by block into a [`Sink`] — one
//! per on-disk format ([`Format`]) — inside a temporary sibling of the output that is renamed into
//! place only when everything is written ([`output`]).
//!
//! Stages: `select` (the caller: row ids) → `subset` (elements cut block by block) → `sink`
//! (encoded and written) → `output` (renamed into place).

/// The group-by aggregate of a matrix as an AnnData (`scanpy.get.aggregate`'s layout).
pub mod aggregate;
/// A new AnnData from Arrow dataframes and streamed CSR rows (a collection written as one).
pub mod concat;
/// The error type.
pub mod error;
/// Output paths: temporary siblings, overwrite rules, renaming into place.
pub mod output;
/// Which cells and genes are kept.
pub mod select;
/// Where elements are written: one implementation per on-disk format.
pub mod sink;
/// Cutting a store's elements along a selection.
pub mod subset;
#[cfg(test)]
mod testing;

pub use error::{Error, Result};
pub use select::Selection;
pub use sink::{ArraySpec, Format, Sink};
pub use subset::{ExportOptions, ExportSummary, export};
