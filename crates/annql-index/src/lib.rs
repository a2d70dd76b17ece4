//! Gene indexes: a gene-major (CSC) copy of a cell-major (CSR) matrix, so that questions about a
//! few genes read only those genes' columns instead of every row of the matrix.
//!
//! anndata writes `X` by cell; a one-gene question then decodes the whole matrix. [`build`]
//! transposes it out of core, within a memory limit, into a sidecar
//! zarr v3 store beside the source ([`sidecar`]), which records what it was built from
//! ([`provenance`]) so that a source changed since is never answered from a stale copy. The
//! engine finds the sidecar when a dataset is attached and reads genes from it.
//!
//! Stages: `build` (checks, lock, temporary sibling) → `transpose` (count pass, then passes over
//! windows of the output) → the AnnData writer's zarr sink → `carry` (other copies kept) → rename.

/// Building an index.
pub mod build;
mod carry;
/// Checking a sidecar against its source.
pub mod check;
mod consolidated;
/// The error type.
pub mod error;
mod in_place;
/// What a copy was built from.
pub mod provenance;
/// The sidecar store, its location and its lock.
pub mod sidecar;
mod transpose;

pub use build::{IndexOptions, IndexSummary, build};
pub use check::{CopyStatus, check};
pub use error::{Error, Result};
pub use provenance::Provenance;
pub use sidecar::{GeneIndex, IndexedCopy, default_location, drop_index};
