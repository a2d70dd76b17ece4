//! Lazy reader for AnnData stores: the storage layer of annql.
//!
//! [`AnnDataStore::open`] reads a store's metadata only (one request when consolidated metadata
//! exists) and yields the typed [`Element`] tree of the AnnData on-disk spec. Reads are by range —
//! a dataframe column slice, a CSR/CSC major-axis range, a block of dense rows — decode only the
//! chunks the range covers (through zarrs, in parallel), return Arrow arrays, and record what they
//! touched in a [`ReadStats`].
//!
//! Stages: `open` ([`storage`], [`object`], [`hdf5`] for where bytes come from; [`metadata`] for
//! the hierarchy) → `plan` ([`element`]) → `scan`/`decode` ([`read`]), brought together by the
//! opened [`store`].

/// The error type.
pub mod error;

/// Read limits: what one read may allocate, checked before allocating; decompression bombs.
pub mod limits;

/// Where bytes come from: directories, zip archives, and read accounting.
pub mod storage;

/// Local files opened without blocking: regular files only.
mod local;

/// Stores in object storage (HTTP, S3, GCS, Azure), with the shared chunk cache.
pub mod object;

/// HDF5 files (`.h5ad`, `.h5mu`) presented as zarr v2 stores.
pub mod hdf5;

/// A view of a store rooted at one node (arrays at paths zarrs refuses).
mod rooted;

/// Reading the zarr hierarchy (consolidated or walked) and array data types.
pub mod metadata;

/// Stores written before anndata 0.7, presented in the modern element tree.
mod legacy;

/// The typed element tree of the AnnData spec.
pub mod element;

/// Range reads into Arrow.
pub mod read;

/// The opened store.
pub mod store;

/// Entry points for the fuzz targets and their corpus-replay tests (not a stable API).
#[doc(hidden)]
pub mod fuzzing;

pub use element::{Element, Encoding};
pub use error::{Error, Result};
pub use limits::ReadLimit;
pub use metadata::{DType, ZarrFormat};
pub use object::{ChunkCache, FetchSnapshot, FetchStats, StorageOptions};
pub use read::{DenseBlock, SparseBlock, SparseCarry};
pub use storage::{ReadStats, Storage};
pub use store::AnnDataStore;

/// The Arrow crate annql builds on, so users need not pin it themselves.
pub use arrow;
