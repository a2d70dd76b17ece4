//! [`AnnDataStore`]: an opened store — its element tree, its storage, and what reads cost.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow::array::ArrayRef;

use crate::element::{Element, Encoding, build_tree};
use crate::error::{Error, Result};
use crate::limits::ReadLimit;
use crate::metadata::{ArrayMeta, ZarrFormat, read_hierarchy};
use crate::object::{FetchStats, ObjectStorage, StorageOptions, is_remote};
use crate::read::{DenseBlock, Reader, SparseBlock, SparseCarry};
use crate::storage::{ReadStats, Storage, open_local_within};

/// An AnnData (or MuData) store opened lazily: metadata is read, no chunk is.
pub struct AnnDataStore {
    /// The element tree, the storage and what reads need of them.
    reader: Reader,
    format: ZarrFormat,
    consolidated: bool,
    fetches: Option<Arc<FetchStats>>,
}

impl std::fmt::Debug for AnnDataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnDataStore")
            .field("name", &self.reader.name())
            .field("format", &self.format)
            .field("consolidated", &self.consolidated)
            .finish_non_exhaustive()
    }
}

impl AnnDataStore {
    /// Opens a store: a local zarr directory, `.zarr.zip` archive or `.h5ad` file, or a zarr
    /// store's URL (`https://`, `s3://`, `gs://`, `az://`) with default [`StorageOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &StorageOptions::default())
    }

    /// Opens a store, reaching a remote one with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: &StorageOptions) -> Result<Self> {
        let path = path.as_ref();
        let location = path.to_string_lossy();
        if let Some(local) = location.strip_prefix("file://") {
            return Self::open_with(local, options);
        }
        if !is_remote(&location) {
            let storage = open_local_within(path, options.read_limit())?;
            return Self::from_storage_within(storage, path.display(), options.read_limit());
        }
        if location.ends_with(".h5ad") || location.ends_with(".h5mu") {
            return Err(Error::Remote {
                url: location.into_owned(),
                reason: "remote HDF5 files are not supported (the HDF5 reader needs a local \
                         file); download it, or convert it to zarr with anndata"
                    .into(),
            });
        }
        let object = ObjectStorage::open(&location, options)?;
        let fetches = object.stats().clone();
        let mut store = Self::from_storage_within(
            Arc::new(object),
            location.trim_end_matches('/'),
            options.read_limit(),
        )?;
        if !store.consolidated {
            log::warn!(
                "{}: no consolidated metadata, so opening read {} metadata documents one by one \
                 ({} requests); consolidate it (zarr.consolidate_metadata) to open in one",
                store.name(),
                store.reader.node_count(),
                fetches.requests()
            );
        }
        store.fetches = Some(fetches);
        Ok(store)
    }

    /// Opens a store over any storage, with the default [`ReadLimit`]; `name` is how errors and
    /// plans refer to it.
    pub fn from_storage(storage: Storage, name: impl Into<String>) -> Result<Self> {
        Self::from_storage_within(storage, name.into(), ReadLimit::default())
    }

    /// Opens a store over any storage, no read of it allocating more than `limit`.
    pub fn from_storage_within(
        storage: Storage,
        name: impl std::fmt::Display,
        limit: ReadLimit,
    ) -> Result<Self> {
        let name = name.to_string();
        let hierarchy = read_hierarchy(&storage, &name)?;
        // A store written before anndata 0.7 is read through its modern reading.
        let (storage, nodes) = crate::legacy::modernize(storage, &name, hierarchy.nodes)?;
        let root = build_tree(&name, &nodes)?;
        Ok(Self {
            reader: Reader::new(name, storage, nodes, hierarchy.damaged, root, limit),
            format: hierarchy.format,
            consolidated: hierarchy.consolidated,
            fetches: None,
        })
    }

    /// How the store is referred to in messages (its path or URL).
    #[inline]
    pub fn name(&self) -> &str {
        self.reader.name()
    }

    /// Zarr format 2 or 3.
    pub fn format(&self) -> ZarrFormat {
        self.format
    }

    /// Whether metadata came from one consolidated document.
    pub fn consolidated(&self) -> bool {
        self.consolidated
    }

    /// The root element (`anndata` or `MuData`).
    #[inline]
    pub fn root(&self) -> &Element {
        self.reader.root()
    }

    /// The AnnData objects in the store: the root, or each `mod/<name>` of a MuData store.
    pub fn anndatas(&self) -> Vec<&Element> {
        let root = self.root();
        match root.encoding {
            Encoding::MuData => root
                .child("mod")
                .map(|m| {
                    m.children
                        .iter()
                        .filter(|c| c.encoding == Encoding::AnnData)
                        .collect()
                })
                // A MuData store without `mod` holds no AnnData objects.
                .unwrap_or_default(),
            _ => vec![root],
        }
    }

    /// The element at `path` (no leading slash needed).
    #[inline]
    pub fn element(&self, path: &str) -> Result<&Element> {
        self.reader.element(path)
    }

    /// Running totals of every read made through this store.
    #[inline]
    pub fn totals(&self) -> &Arc<ReadStats> {
        self.reader.totals()
    }

    /// What a remote store fetched over the network (None for local stores).
    pub fn fetches(&self) -> Option<&Arc<FetchStats>> {
        self.fetches.as_ref()
    }

    /// The most one read of this store may allocate.
    #[inline]
    pub fn read_limit(&self) -> ReadLimit {
        self.reader.read_limit()
    }

    /// Refuses an allocation of `bytes` for `what` of the element at `path` above the read limit:
    /// for callers that size buffers from the store's declared shapes (the engine's block
    /// lists, id columns and lookup tables).
    #[inline]
    pub fn check_alloc(&self, path: &str, what: &str, bytes: u64) -> Result<()> {
        self.reader.check_alloc(path, what, bytes)
    }

    /// The underlying storage.
    #[inline]
    pub fn storage(&self) -> &Storage {
        self.reader.storage()
    }

    /// Why the metadata of the node at `path` (with `within`, of it or of any node below it)
    /// could not be read at open, as that element's error; None when it was read. Such a node
    /// is an empty group in the tree: whoever reads it asks here first.
    #[inline]
    pub fn damage(&self, path: &str, within: bool) -> Option<Error> {
        self.reader.damage(path, within)
    }

    /// Shape and dtype of the array node at `path`.
    #[inline]
    pub fn array_meta(&self, path: &str) -> Result<&ArrayMeta> {
        self.reader.array_meta(path)
    }
}

/// Reads by range (see [`crate::read`]): each decodes only the chunks its range covers.
impl AnnDataStore {
    /// Reads `rows` of a 1-D array (or the first axis of an n-d one) into an Arrow array.
    #[inline]
    pub fn read_array(
        &self,
        path: &str,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<ArrayRef> {
        self.reader.read_array(path, rows, stats)
    }

    /// Reads a range of an integer array as `u64`, refusing negative values (index arrays).
    #[inline]
    pub fn read_offsets(
        &self,
        path: &str,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<u64>> {
        self.reader.read_offsets(path, rows, stats)
    }

    /// Reads the major-axis range `major` of a CSR (rows) or CSC (columns) matrix: the `indptr` slice,
    /// then only the `indices`/`data` chunks it covers.
    #[inline]
    pub fn read_sparse(
        &self,
        path: &str,
        major: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<SparseBlock> {
        self.reader.read_sparse(path, major, stats)
    }

    /// The chunk length shared by a sparse matrix's `indices` and `data`, if they are chunked
    /// alike (what reads aligned to chunks need).
    #[inline]
    pub fn sparse_chunk_len(&self, path: &str) -> Option<u64> {
        self.reader.sparse_chunk_len(path)
    }

    /// [`read_sparse`](Self::read_sparse) for a scan that reads blocks in order, as parts that
    /// together cover `major` in order. The block's `indices`/`data` chunks are decoded one by one
    /// (in parallel), each whole into its own buffer; a part is a run of rows within one chunk,
    /// a slice of it without a copy, or a single row that crosses chunks, copied. The last
    /// chunk, which the next block starts in, is kept in `carry`, so row blocks that share a
    /// chunk decode it once.
    #[inline]
    pub fn read_sparse_parts(
        &self,
        path: &str,
        major: Range<u64>,
        carry: &mut SparseCarry,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<SparseBlock>> {
        self.reader.read_sparse_parts(path, major, carry, stats)
    }

    /// Reads the stored entries `entries` of a CSR/CSC matrix whose whole `indptr` is given: the
    /// rows (columns for CSC) they fall in, the first and last possibly in part. With `entries`
    /// on chunk boundaries, every chunk of `indices`/`data` is decoded by exactly one such read,
    /// where row ranges share the chunks at their edges.
    #[inline]
    pub fn read_sparse_entries(
        &self,
        path: &str,
        entries: Range<u64>,
        indptr: &[u64],
        stats: &Arc<ReadStats>,
    ) -> Result<SparseBlock> {
        self.reader
            .read_sparse_entries(path, entries, indptr, stats)
    }

    /// Stored entries in the major-axis range `major`, from `indptr` alone.
    #[inline]
    pub fn sparse_nnz(&self, path: &str, major: Range<u64>, stats: &Arc<ReadStats>) -> Result<u64> {
        self.reader.sparse_nnz(path, major, stats)
    }

    /// (major, minor) lengths of a sparse matrix element, validated against its arrays.
    #[inline]
    pub fn sparse_dims(&self, element: &Element) -> Result<(u64, u64)> {
        self.reader.sparse_dims(element)
    }

    /// Reads `rows` of a dense 2-D array, all columns, row-major.
    #[inline]
    pub fn read_dense_rows(
        &self,
        path: &str,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<DenseBlock> {
        self.reader.read_dense_rows(path, rows, stats)
    }

    /// Reads `rows` of a dataframe column (any of the column encodings) into Arrow.
    #[inline]
    pub fn read_column(
        &self,
        column: &Element,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<ArrayRef> {
        self.reader.read_column(column, rows, stats)
    }
}
