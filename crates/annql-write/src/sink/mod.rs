//! Where a new AnnData's elements are written: one [`Sink`] per on-disk format.
//!
//! The subset stage drives a sink with groups (with their attributes) and arrays whose values
//! arrive as Arrow arrays in row-major order along the first axis, block by block, so no array is
//! ever held whole. Several arrays may be open at once (a sparse matrix's `data`, `indices` and
//! `indptr` grow together); each is closed when its last block has been appended.

use std::path::Path;

use annql_store::DType;
use annql_store::arrow::array::ArrayRef;
use serde_json::{Map, Value};

use crate::error::Result;

/// The `.h5ad` sink (HDF5, written by hdf5-pure).
pub mod h5ad;
/// The zarr v2 and v3 sinks (written by zarrs).
pub mod zarr;

/// Attributes of a group or array, as JSON (`encoding-type`, `shape`, `column-order`, …).
pub type Attrs = Map<String, Value>;

/// The on-disk format of an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// A `.h5ad` file (HDF5), as `anndata.write_h5ad` writes it.
    H5ad,
    /// A zarr v2 directory store, as `anndata.write_zarr` writes it with `zarr_format=2`.
    ZarrV2,
    /// A zarr v3 directory store; `sharded` writes sharded arrays as anndata 0.13 does.
    ZarrV3 {
        /// Whether arrays are sharded (several chunks per stored object).
        sharded: bool,
    },
}

impl Format {
    /// The format an output path implies: `.h5ad` → HDF5, `.zarr` → zarr v3 (sharded).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "h5ad" => Some(Format::H5ad),
            "zarr" => Some(Format::ZarrV3 { sharded: true }),
            _ => None,
        }
    }
}

/// Chunking of the arrays an output gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunking {
    /// Elements per chunk of a 1-D array (sparse `data`/`indices`, dataframe columns).
    pub chunk_len: u64,
    /// Rows per chunk of an n-D array (dense `X`, `obsm`): rows × inner size ≈ `chunk_len`.
    pub target_chunk_elements: u64,
    /// Chunks per shard along the first axis (zarr v3 sharded only).
    pub chunks_per_shard: u64,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            chunk_len: 1 << 16,
            target_chunk_elements: 1 << 16,
            chunks_per_shard: 64,
        }
    }
}

/// What an array holds: its element type and its shape apart from the first axis, which grows as
/// blocks are appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySpec {
    /// Element type.
    pub dtype: DType,
    /// Sizes of the axes after the first (empty for 1-D arrays).
    pub inner: Vec<u64>,
    /// A 0-d array (a scalar in `uns`): exactly one value is appended.
    pub scalar: bool,
    /// The final length of the first axis, when known in advance (lets a sink pre-size).
    pub len_hint: Option<u64>,
}

/// Handle of an open array of a [`Sink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArrayId(pub usize);

/// Writes the groups and arrays of one AnnData store.
///
/// Parents are created before children. Values arrive as Arrow arrays of the spec's type
/// (`Utf8` for strings, `Boolean` for bools), flat, row-major: a block of `n` rows of an array with
/// `inner = [a, b]` has `n·a·b` values.
pub trait Sink: Send {
    /// Creates the group at `path` ("" is the root) with its attributes.
    fn group(&mut self, path: &str, attrs: &Attrs) -> Result<()>;
    /// Opens an array at `path`, empty, with its attributes.
    fn open_array(&mut self, path: &str, spec: &ArraySpec, attrs: &Attrs) -> Result<ArrayId>;
    /// Appends whole rows to an open array.
    fn append(&mut self, array: ArrayId, values: &ArrayRef) -> Result<()>;
    /// Closes an array: its length is final.
    fn close_array(&mut self, array: ArrayId) -> Result<()>;
    /// Writes whatever remains (metadata, indexes) once every array is closed.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Opens the sink of `format` writing a new store at `path` (a directory for zarr, a file for
/// `.h5ad`), which must not exist yet.
pub fn create(format: &Format, path: &Path, chunking: &Chunking) -> Result<Box<dyn Sink>> {
    match format {
        Format::H5ad => Ok(Box::new(h5ad::H5adSink::create(path, chunking)?)),
        Format::ZarrV2 => Ok(Box::new(zarr::ZarrSink::create(path, 2, false, chunking)?)),
        Format::ZarrV3 { sharded } => Ok(Box::new(zarr::ZarrSink::create(
            path, 3, *sharded, chunking,
        )?)),
    }
}
