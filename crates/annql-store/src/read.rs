//! Stages `scan → decode`: range reads of arrays into Arrow, through zarrs, with chunk accounting.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow::array::{
    Array as _, ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, PrimitiveArray, StringArray, UInt8Array, UInt16Array,
    UInt32Array, UInt64Array,
};
use arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::ArrowNativeType;
use arrow::datatypes::{
    ArrowDictionaryKeyType, ArrowPrimitiveType, DataType, Int8Type, Int16Type, Int32Type, Int64Type,
};
use rayon::prelude::*;
use zarrs::array::{Array, ArrayBytes, ArraySubset, ElementOwned};
use zarrs::storage::ReadableStorageTraits;

use crate::error::{Error, Result};
use crate::limits::{ChunkGuard, GuardedStorage, bytes_of};
use crate::metadata::{ArrayMeta, DType};
use crate::rooted::RootedStorage;
use crate::storage::{CountingStorage, ReadStats};
use crate::store::{AnnDataStore, OpenedArray};

/// A zarrs array over the store's storage (without accounting; see [`AnnDataStore::counted`]).
pub(crate) type ZArray = Array<dyn ReadableStorageTraits>;

/// A block of rows (CSR) or columns (CSC) of a sparse matrix, as stored.
#[derive(Debug, Clone)]
pub struct SparseBlock {
    /// The major-axis range this block covers.
    pub major: Range<u64>,
    /// Offsets into `indices`/`data`, rebased to start at 0; `major.len() + 1` entries.
    pub indptr: Vec<u64>,
    /// Minor-axis positions (gene ids for CSR, cell ids for CSC).
    pub indices: ScalarBuffer<u32>,
    /// Stored values, in the matrix's own type.
    pub data: ArrayRef,
}

/// The last chunk of `indices` and `data` a sequential scan decoded, whole (see
/// [`AnnDataStore::read_sparse_parts`]): the next block starts in it.
#[derive(Debug, Default)]
pub struct SparseCarry {
    path: String,
    start: u64,
    indices: ScalarBuffer<u32>,
    data: Option<ArrayRef>,
}

impl SparseBlock {
    /// A block of `major` from its absolute `indptr` slice and the entries it points to.
    fn rebased(
        major: Range<u64>,
        indptr: &[u64],
        indices: ScalarBuffer<u32>,
        data: ArrayRef,
    ) -> Self {
        let first = indptr[0];
        SparseBlock {
            indptr: indptr.iter().map(|p| p - first).collect(),
            major,
            indices,
            data,
        }
    }

    /// Stored entries in the block.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }
}

/// A block of rows of a dense 2-D array, row-major.
#[derive(Debug, Clone)]
pub struct DenseBlock {
    /// The rows covered.
    pub rows: Range<u64>,
    /// Number of columns.
    pub ncols: u64,
    /// Values, row-major, `rows.len() * ncols` of them.
    pub values: ArrayRef,
}

impl AnnDataStore {
    /// The zarrs array at `path` (cached) with its chunk guard, refusing a chunk shape that one
    /// read could not decode within the read limit.
    pub(crate) fn zarray(&self, path: &str) -> Result<OpenedArray> {
        // A poisoned cache lock only costs a rebuild of the array (and it is then not cached).
        if let Some(a) = self
            .arrays_cache()
            .lock()
            .ok()
            .and_then(|c| c.get(path).cloned())
        {
            return Ok(a);
        }
        let meta = self.array_meta(path)?;
        let decoded = self.decoded_chunk_bytes(path, meta)?;
        let metadata: zarrs::array::ArrayMetadata = serde_json::from_value(meta.document.clone())
            .map_err(|e| {
            self.malformed(
                path,
                &format!("array metadata does not follow the zarr spec: {e}"),
            )
        })?;
        let mut storage: Arc<dyn ReadableStorageTraits> = self.storage().clone();
        let mut node = format!("/{path}");
        if !zarrs::node::NodePath::validate(&node) {
            // A name zarr v3 reserves (anndata 0.7's `__categories`): open it at the root of a
            // view rooted at its node, which zarrs accepts.
            storage = Arc::new(RootedStorage::new(storage, path));
            node = "/".to_string();
        }
        let array = Array::new_with_metadata(storage, &node, metadata)
            .map_err(|e| self.array_refused(path, &meta.dtype, &e))?;
        let guard = ChunkGuard::from_document(&meta.document, decoded);
        let opened = (Arc::new(array), Arc::new(guard));
        if let Ok(mut cache) = self.arrays_cache().lock() {
            cache.insert(path.to_string(), opened.clone());
        }
        Ok(opened)
    }

    /// Most bytes one (inner) chunk of the array decodes to, checked against the read limit; for a
    /// sharded array also its shard index (16 bytes per inner chunk). Variable-length strings
    /// are bounded by the limit itself (their size is known only once decoded).
    fn decoded_chunk_bytes(&self, path: &str, meta: &ArrayMeta) -> Result<u64> {
        let doc = &meta.document;
        let shape_of = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_array())
                .and_then(|dims| {
                    dims.iter().try_fold(1u64, |acc, c| {
                        c.as_u64().filter(|&c| c > 0).map(|c| acc.saturating_mul(c))
                    })
                })
                .ok_or_else(|| self.malformed(path, "declared chunk shape is missing or zero"))
        };
        let outer = shape_of(
            doc.get("chunks")
                .or_else(|| doc.pointer("/chunk_grid/configuration/chunk_shape")),
        )?;
        let sharding = doc
            .pointer("/codecs/0")
            .filter(|c| c.get("name").and_then(|n| n.as_str()) == Some("sharding_indexed"));
        let elements = match sharding {
            Some(codec) => {
                let inner = shape_of(codec.pointer("/configuration/chunk_shape"))?;
                self.check_alloc(
                    path,
                    "the index of a shard of the declared chunk shape",
                    bytes_of(outer.div_ceil(inner), 16),
                )?;
                inner
            }
            None => outer,
        };
        let what = format!(
            "a chunk of the declared chunk shape ({elements} {} values)",
            meta.dtype
        );
        match meta.dtype.size() {
            Some(size) => {
                let bytes = bytes_of(elements, size as u64);
                self.check_alloc(path, &what, bytes)?;
                Ok(bytes)
            }
            None => {
                // At least an 8-byte offset per string.
                self.check_alloc(path, &what, bytes_of(elements, 8))?;
                Ok(self.read_limit().bytes())
            }
        }
    }

    /// zarrs's refusal of the array at `path`, sorted: unsupported for a data type, codec or
    /// feature zarrs does not have; malformed for metadata the zarr spec does not allow (a bad
    /// fill value, chunk grid or codec configuration).
    fn array_refused(
        &self,
        path: &str,
        dtype: &DType,
        e: &zarrs::array::ArrayCreateError,
    ) -> Error {
        use zarrs::array::ArrayCreateError as E;
        use zarrs::plugin::PluginCreateError as P;
        let unsupported = match e {
            E::AdditionalFieldUnsupportedError(_) | E::UnsupportedZarrV2Array(_) => true,
            // zarrs refuses names zarr v3 reserves (anndata 0.7's `__categories`), which are
            // valid in the stores annql reads.
            E::NodePathError(_) => true,
            // `Other` is how zarrs's codecs refuse a configuration variant they lack...
            E::DataTypeCreateError(p)
            | E::CodecsCreateError(p)
            | E::StorageTransformersCreateError(p) => {
                matches!(p, P::Unsupported(_) | P::Other(_))
            }
            // ...and how its chunk grids refuse a chunk shape that does not fit the array.
            E::ChunkGridCreateError(p) | E::ChunkKeyEncodingCreateError(p) => {
                matches!(p, P::Unsupported(_))
            }
            _ => false,
        };
        if unsupported {
            self.unsupported(path, &dtype.to_string(), &e.to_string())
        } else {
            self.malformed(path, &format!("invalid array metadata: {e}"))
        }
    }

    /// Retrieves `subset` of the array at `path` in zarrs's output type `T`, recording reads into
    /// `stats`: refused first if it would allocate more than the read limit, and every encoded
    /// chunk checked by the array's [`ChunkGuard`] before zarrs decodes it.
    fn retrieve_as<T: zarrs::array::FromArrayBytes>(
        &self,
        path: &str,
        subset: &ArraySubset,
        stats: &Arc<ReadStats>,
    ) -> Result<T> {
        let (array, guard) = self.zarray(path)?;
        let meta = self.array_meta(path)?;
        let n = subset.num_elements();
        // Variable-length strings: at least an 8-byte offset each.
        let size = meta.dtype.size().unwrap_or(8) as u64;
        self.check_alloc(
            path,
            &format!("reading {n} {} values", meta.dtype),
            bytes_of(n, size),
        )?;
        let mut storage: Arc<dyn ReadableStorageTraits> = Arc::new(CountingStorage::new(
            self.storage().clone(),
            vec![stats.clone(), self.totals().clone()],
        ));
        if guard.is_active() {
            storage = Arc::new(GuardedStorage::new(storage, guard));
        }
        if array.path().as_str() == "/" && !path.trim_matches('/').is_empty() {
            // Opened at the root of a view rooted at its node (see `zarray`): read it there too.
            storage = Arc::new(RootedStorage::new(storage, path));
        }
        let counted = array.with_storage(storage);
        // Some of zarrs's decoders index chunk bytes without checking them (the v2 vlen-utf8
        // codec slices by the lengths a damaged chunk declares) and annql cannot see the decoded
        // bytes before they do: a panic there is the chunk's damage, reported as its error.
        catch_unwind(AssertUnwindSafe(|| {
            counted.retrieve_array_subset::<T>(subset)
        }))
        .map_err(|_| {
            self.decode_error(path, "the zarr decoder failed on damaged chunk data".into())
        })?
        .map_err(|e| self.decode_error(path, Box::new(e)))
    }

    /// A decoding failure of the array at `path`.
    fn decode_error(&self, path: &str, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Decode {
            store: self.name().into(),
            path: path.into(),
            source,
        }
    }

    /// Retrieves `subset` of the array at `path` as a vector, recording reads into `stats`.
    fn retrieve<T: ElementOwned>(
        &self,
        path: &str,
        subset: &ArraySubset,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<T>> {
        let values: Vec<T> = self.retrieve_as(path, subset, stats)?;
        let expected = subset.num_elements();
        if values.len() as u64 != expected {
            return Err(self.malformed(
                path,
                &format!("decoded {} elements, expected {expected}", values.len()),
            ));
        }
        Ok(values)
    }

    /// Retrieves `subset` of a fixed-size array at `path` as an Arrow buffer of `T`, in the
    /// decoded chunk's own allocation when it is aligned for `T` (as large allocations are):
    /// zarrs's `Vec<T>` output zero-fills a second allocation and copies into it.
    fn retrieve_buffer<T: ArrowNativeType>(
        &self,
        path: &str,
        subset: &ArraySubset,
        stats: &Arc<ReadStats>,
    ) -> Result<ScalarBuffer<T>> {
        let bytes: ArrayBytes<'static> = self.retrieve_as(path, subset, stats)?;
        let bytes = bytes
            .into_fixed()
            .map_err(|e| self.decode_error(path, Box::new(e)))?
            .into_owned();
        let expected = subset.num_elements() as usize;
        if bytes.len() != expected * std::mem::size_of::<T>() {
            return Err(self.malformed(
                path,
                &format!(
                    "decoded {} bytes, expected {expected} elements of {} bytes",
                    bytes.len(),
                    std::mem::size_of::<T>()
                ),
            ));
        }
        let buffer = Buffer::from_vec(bytes);
        let buffer = if buffer.as_ptr().align_offset(std::mem::align_of::<T>()) == 0 {
            buffer
        } else {
            Buffer::from_slice_ref(buffer.as_slice())
        };
        Ok(ScalarBuffer::new(buffer, 0, expected))
    }

    /// Retrieves `subset` of a string array at `path` as an Arrow string array, from the decoded
    /// bytes and offsets as they are (one `String` per element would be allocated otherwise).
    fn retrieve_strings(
        &self,
        path: &str,
        subset: &ArraySubset,
        stats: &Arc<ReadStats>,
    ) -> Result<StringArray> {
        let bytes: ArrayBytes<'static> = self.retrieve_as(path, subset, stats)?;
        let (raw, offsets) = bytes
            .into_variable()
            .map_err(|e| self.decode_error(path, Box::new(e)))?
            .into_parts();
        let expected = subset.num_elements() as usize;
        let offsets: Vec<i32> = offsets
            .iter()
            .map(|&o| i32::try_from(o))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| self.malformed(path, "strings longer than 2 GiB in one read"))?;
        if offsets.len() != expected + 1
            || offsets.first() != Some(&0)
            || offsets.windows(2).any(|w| w[0] > w[1])
            || offsets.last().map(|&o| o as usize) != Some(raw.len())
        {
            return Err(self.malformed(path, "string offsets do not match the decoded elements"));
        }
        StringArray::try_new(
            arrow::buffer::OffsetBuffer::new(offsets.into()),
            Buffer::from_vec(raw.into_owned()),
            None,
        )
        .map_err(|e| self.malformed(path, &e.to_string()))
    }

    /// Checks a 1-D range against the array's length.
    fn check_range(&self, path: &str, len: u64, range: &Range<u64>) -> Result<()> {
        if range.start > range.end || range.end > len {
            return Err(Error::OutOfBounds {
                store: self.name().into(),
                path: path.into(),
                start: range.start,
                end: range.end,
                len,
            });
        }
        Ok(())
    }

    /// Reads `rows` of a 1-D array (or the first axis of an n-d one) into an Arrow array.
    pub fn read_array(
        &self,
        path: &str,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<ArrayRef> {
        let meta = self.array_meta(path)?;
        let len = meta.shape.first().copied().unwrap_or(1);
        self.check_range(path, len, &rows)?;
        let mut ranges = vec![rows];
        ranges.extend(meta.shape.iter().skip(1).map(|&n| 0..n));
        if meta.shape.is_empty() {
            ranges.clear();
        }
        let subset = ArraySubset::new_with_ranges(&ranges);
        macro_rules! prim {
            ($t:ty, $arr:ty) => {
                Arc::new(<$arr>::new(
                    self.retrieve_buffer::<$t>(path, &subset, stats)?,
                    None,
                )) as ArrayRef
            };
        }
        Ok(match &meta.dtype {
            DType::Bool => Arc::new(BooleanArray::from(
                self.retrieve::<bool>(path, &subset, stats)?,
            )),
            DType::Int8 => prim!(i8, Int8Array),
            DType::Int16 => prim!(i16, Int16Array),
            DType::Int32 => prim!(i32, Int32Array),
            DType::Int64 => prim!(i64, Int64Array),
            DType::UInt8 => prim!(u8, UInt8Array),
            DType::UInt16 => prim!(u16, UInt16Array),
            DType::UInt32 => prim!(u32, UInt32Array),
            DType::UInt64 => prim!(u64, UInt64Array),
            DType::Float32 => prim!(f32, Float32Array),
            DType::Float64 => prim!(f64, Float64Array),
            DType::String => Arc::new(self.retrieve_strings(path, &subset, stats)?),
            DType::Other(d) => {
                return Err(self.unsupported(
                    path,
                    d,
                    "annql reads bool, integer, float and string arrays",
                ));
            }
        })
    }

    /// Reads a range of an integer array as `u64`, refusing negative values (index arrays).
    pub fn read_offsets(
        &self,
        path: &str,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<u64>> {
        let meta = self.array_meta(path)?;
        let len = meta.shape.first().copied().unwrap_or(0);
        self.check_range(path, len, &rows)?;
        let subset = ArraySubset::new_with_ranges(&[rows]);
        let negative = || self.malformed(path, "negative value in an index array");
        macro_rules! signed {
            ($t:ty) => {
                self.retrieve::<$t>(path, &subset, stats)?
                    .into_iter()
                    .map(|v| u64::try_from(v).map_err(|_| negative()))
                    .collect()
            };
        }
        macro_rules! unsigned {
            ($t:ty) => {
                Ok(self
                    .retrieve::<$t>(path, &subset, stats)?
                    .into_iter()
                    .map(u64::from)
                    .collect())
            };
        }
        match &meta.dtype {
            DType::Int8 => signed!(i8),
            DType::Int16 => signed!(i16),
            DType::Int32 => signed!(i32),
            DType::Int64 => signed!(i64),
            DType::UInt8 => unsigned!(u8),
            DType::UInt16 => unsigned!(u16),
            DType::UInt32 => unsigned!(u32),
            DType::UInt64 => unsigned!(u64),
            other => Err(self.malformed(
                path,
                &format!("index array has dtype {other}, expected an integer type"),
            )),
        }
    }

    /// Reads a range of a sparse matrix's `indices` as `u32` positions below `n_minor`: decoded in
    /// the stored type, then checked and narrowed in one pass (the hot path of every matrix scan).
    fn read_indices(
        &self,
        path: &str,
        rows: Range<u64>,
        n_minor: u64,
        stats: &Arc<ReadStats>,
    ) -> Result<ScalarBuffer<u32>> {
        let meta = self.array_meta(path)?;
        let len = meta.shape.first().copied().unwrap_or(0);
        self.check_range(path, len, &rows)?;
        let subset = ArraySubset::new_with_ranges(&[rows]);
        let bad = || self.malformed(path, &format!("index out of range 0..{n_minor}"));
        // Check (one vectorised pass), then convert: 32-bit indices are the decoded buffer itself,
        // reinterpreted; other widths are copied. A signed index is checked as its unsigned bits
        // (a negative one is then past every valid index).
        macro_rules! narrow {
            ($t:ty, $unsigned:expr) => {{
                let values = self.retrieve_buffer::<$t>(path, &subset, stats)?;
                let fits = match n_minor.checked_sub(1) {
                    None => values.is_empty(),
                    Some(last) => {
                        let last = $unsigned(last.min(<$t>::MAX as u64) as $t);
                        all_at_most(&values, last, $unsigned)
                    }
                };
                if n_minor > u64::from(u32::MAX) + 1 {
                    return Err(self.unsupported(
                        path,
                        "sparse matrix",
                        &format!("its minor axis of {n_minor} is longer than 2^32"),
                    ));
                }
                if !fits {
                    return Err(bad());
                }
                Ok(if std::mem::size_of::<$t>() == 4 {
                    let n = values.len();
                    ScalarBuffer::new(values.into_inner(), 0, n)
                } else {
                    values.iter().map(|&v| v as u32).collect()
                })
            }};
        }
        match &meta.dtype {
            DType::Int8 => narrow!(i8, |v: i8| v as u8),
            DType::Int16 => narrow!(i16, |v: i16| v as u16),
            DType::Int32 => narrow!(i32, |v: i32| v as u32),
            DType::Int64 => narrow!(i64, |v: i64| v as u64),
            DType::UInt8 => narrow!(u8, |v: u8| v),
            DType::UInt16 => narrow!(u16, |v: u16| v),
            DType::UInt32 => narrow!(u32, |v: u32| v),
            DType::UInt64 => narrow!(u64, |v: u64| v),
            other => Err(self.malformed(
                path,
                &format!("index array has dtype {other}, expected an integer type"),
            )),
        }
    }

    /// Reads the major-axis range `major` of a CSR (rows) or CSC (columns) matrix: the `indptr` slice,
    /// then only the `indices`/`data` chunks it covers.
    pub fn read_sparse(
        &self,
        path: &str,
        major: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<SparseBlock> {
        let (indptr, n_minor, _) = self.sparse_offsets(path, major.clone(), stats)?;
        self.read_sparse_from(path, major, &indptr, n_minor, stats)
    }

    /// The entries `indptr` (the slice of `major`) points to.
    fn read_sparse_from(
        &self,
        path: &str,
        major: Range<u64>,
        indptr: &[u64],
        n_minor: u64,
        stats: &Arc<ReadStats>,
    ) -> Result<SparseBlock> {
        let entries = indptr[0]..indptr[indptr.len() - 1];
        let indices =
            self.read_indices(&format!("{path}/indices"), entries.clone(), n_minor, stats)?;
        let data = self.read_array(&format!("{path}/data"), entries, stats)?;
        Ok(SparseBlock::rebased(major, indptr, indices, data))
    }

    /// The chunk length shared by a sparse matrix's `indices` and `data`, if they are chunked
    /// alike (what reads aligned to chunks need).
    pub fn sparse_chunk_len(&self, path: &str) -> Option<u64> {
        // A missing array gives `None`: the reads that follow then name it in their error.
        let chunk_of = |a: &str| {
            self.array_meta(&format!("{path}/{a}"))
                .ok()
                .and_then(|m| m.chunk_len())
        };
        let (chunk, other) = (chunk_of("data")?, chunk_of("indices")?);
        (chunk == other && chunk > 0).then_some(chunk)
    }

    /// [`read_sparse`](Self::read_sparse) for a scan that reads blocks in order, as parts that
    /// together cover `major` in order. The block's `indices`/`data` chunks are decoded one by one
    /// (in parallel), each whole into its own buffer; a part is a run of rows within one chunk,
    /// a slice of it without a copy, or a single row that crosses chunks, copied. The last
    /// chunk, which the next block starts in, is kept in `carry`, so row blocks that share a
    /// chunk decode it once.
    pub fn read_sparse_parts(
        &self,
        path: &str,
        major: Range<u64>,
        carry: &mut SparseCarry,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<SparseBlock>> {
        let (indptr, n_minor, nnz) = self.sparse_offsets(path, major.clone(), stats)?;
        let (first, last) = (indptr[0], indptr[indptr.len() - 1]);
        let chunk = match self.sparse_chunk_len(path) {
            Some(chunk) if first < last => chunk,
            _ => {
                return Ok(vec![
                    self.read_sparse_from(path, major, &indptr, n_minor, stats)?,
                ]);
            }
        };
        // The carried chunk, if the block starts in it (a pruned block in between drops it).
        let held = (carry.path == path && carry.data.is_some())
            .then_some(carry.start / chunk)
            .filter(|&c| c == first / chunk);
        let (indices_path, data_path) = (format!("{path}/indices"), format!("{path}/data"));
        // `last <= nnz` (checked by `sparse_offsets`), so every chunk here starts below `nnz`.
        let fresh: Vec<Piece> = (first / chunk..last.div_ceil(chunk))
            .filter(|&c| Some(c) != held)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|c| {
                let entries = c * chunk..((c + 1) * chunk).min(nnz);
                let indices = self.read_indices(&indices_path, entries.clone(), n_minor, stats)?;
                let data = self.read_array(&data_path, entries.clone(), stats)?;
                Ok(Piece {
                    start: entries.start,
                    indices,
                    data,
                })
            })
            .collect::<Result<_>>()?;
        // The block's pieces in entry order: the carried chunk, then the fresh ones.
        let carried = held.and_then(|_| {
            carry.data.clone().map(|data| Piece {
                start: carry.start,
                indices: carry.indices.clone(),
                data,
            })
        });
        let pieces: Vec<Piece> = carried.into_iter().chain(fresh).collect();
        let parts = split_rows(&major, &indptr, &pieces)
            .map_err(|e| self.malformed(&data_path, &e.to_string()))?;
        // The next block starts where this one ends: keep the chunk holding that entry, if any.
        if let Some(piece) = pieces.into_iter().next_back() {
            *carry = if piece.start + (piece.indices.len() as u64) > last {
                SparseCarry {
                    path: path.to_string(),
                    start: piece.start,
                    indices: piece.indices,
                    data: Some(piece.data),
                }
            } else {
                SparseCarry::default()
            };
        }
        Ok(parts)
    }

    /// The `indptr` slice of `major` (checked: non-decreasing, within the stored entries), the
    /// matrix's minor length and its stored entries.
    fn sparse_offsets(
        &self,
        path: &str,
        major: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<(Vec<u64>, u64, u64)> {
        let element = self.element(path)?;
        let (n_major, n_minor) = self.sparse_dims(element)?;
        self.check_range(path, n_major, &major)?;
        let indptr =
            self.read_offsets(&format!("{path}/indptr"), major.start..major.end + 1, stats)?;
        let last = indptr[indptr.len() - 1];
        if indptr.windows(2).any(|w| w[0] > w[1]) {
            return Err(self.malformed(&format!("{path}/indptr"), "indptr is not non-decreasing"));
        }
        let nnz = self
            .array_meta(&format!("{path}/indices"))?
            .shape
            .first()
            .copied()
            .unwrap_or(0);
        if last > nnz {
            return Err(self.malformed(
                &format!("{path}/indptr"),
                &format!("indptr points to entry {last} but indices has {nnz}"),
            ));
        }
        Ok((indptr, n_minor, nnz))
    }

    /// Reads the stored entries `entries` of a CSR/CSC matrix whose whole `indptr` is given: the
    /// rows (columns for CSC) they fall in, the first and last possibly in part. With `entries`
    /// on chunk boundaries, every chunk of `indices`/`data` is decoded by exactly one such read,
    /// where row ranges share the chunks at their edges.
    pub fn read_sparse_entries(
        &self,
        path: &str,
        entries: Range<u64>,
        indptr: &[u64],
        stats: &Arc<ReadStats>,
    ) -> Result<SparseBlock> {
        let element = self.element(path)?;
        let (n_major, n_minor) = self.sparse_dims(element)?;
        if indptr.len() as u64 != n_major + 1 || entries.end > indptr[indptr.len() - 1] {
            return Err(self.malformed(
                &format!("{path}/indptr"),
                "indptr does not match the matrix's shape and entries",
            ));
        }
        // Rows whose entries meet `entries`: from the row holding its first entry to the row
        // holding its last.
        let first = indptr
            .partition_point(|&p| p <= entries.start)
            .saturating_sub(1);
        let end = indptr
            .partition_point(|&p| p < entries.end)
            .clamp(first + 1, n_major as usize);
        let local: Vec<u64> = indptr[first..=end]
            .iter()
            .map(|&p| p.clamp(entries.start, entries.end) - entries.start)
            .collect();
        let indices =
            self.read_indices(&format!("{path}/indices"), entries.clone(), n_minor, stats)?;
        let data = self.read_array(&format!("{path}/data"), entries, stats)?;
        Ok(SparseBlock {
            major: first as u64..end as u64,
            indptr: local,
            indices,
            data,
        })
    }

    /// Stored entries in the major-axis range `major`, from `indptr` alone.
    pub fn sparse_nnz(&self, path: &str, major: Range<u64>, stats: &Arc<ReadStats>) -> Result<u64> {
        let element = self.element(path)?;
        let (n_major, _) = self.sparse_dims(element)?;
        self.check_range(path, n_major, &major)?;
        let first = self.read_offsets(
            &format!("{path}/indptr"),
            major.start..major.start + 1,
            stats,
        )?;
        let last = self.read_offsets(&format!("{path}/indptr"), major.end..major.end + 1, stats)?;
        Ok(last[0].saturating_sub(first[0]))
    }

    /// (major, minor) lengths of a sparse matrix element, validated against its arrays.
    pub fn sparse_dims(&self, element: &crate::Element) -> Result<(u64, u64)> {
        let path = &element.path;
        let [rows, cols] = element.shape[..] else {
            return Err(self.malformed(path, "sparse matrix without a 2-D 'shape' attribute"));
        };
        let (major, minor) = match element.encoding {
            crate::Encoding::CsrMatrix => (rows, cols),
            crate::Encoding::CscMatrix => (cols, rows),
            _ => return Err(self.malformed(path, "not a csr_matrix or csc_matrix")),
        };
        let indptr_len = self
            .array_meta(&format!("{path}/indptr"))?
            .shape
            .first()
            .copied()
            .unwrap_or(0);
        if indptr_len != major + 1 {
            return Err(self.malformed(
                path,
                &format!(
                    "shape says {major} major-axis entries but indptr has length {indptr_len}"
                ),
            ));
        }
        Ok((major, minor))
    }

    /// Reads `rows` of a dense 2-D array, all columns, row-major.
    pub fn read_dense_rows(
        &self,
        path: &str,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<DenseBlock> {
        let meta = self.array_meta(path)?;
        let ncols = match meta.shape[..] {
            [_] => 1,
            [_, c] => c,
            _ => return Err(self.malformed(path, "expected a 1-D or 2-D array")),
        };
        let values = self.read_array(path, rows.clone(), stats)?;
        Ok(DenseBlock {
            rows,
            ncols,
            values,
        })
    }

    /// Reads `rows` of a dataframe column (any of the column encodings) into Arrow.
    pub fn read_column(
        &self,
        column: &crate::Element,
        rows: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<ArrayRef> {
        use crate::Encoding as E;
        let path = &column.path;
        match &column.encoding {
            E::Array | E::StringArray => self.read_array(path, rows, stats),
            E::Categorical => {
                let codes = self.read_array(&format!("{path}/codes"), rows, stats)?;
                let categories = self.categories(&format!("{path}/categories"))?;
                self.dictionary(path, codes, categories)
            }
            E::LegacyCategorical => {
                let codes = self.read_array(path, rows, stats)?;
                let categories = self.categories(&self.legacy_categories_path(column)?)?;
                self.dictionary(path, codes, categories)
            }
            E::NullableInteger | E::NullableBoolean | E::NullableStringArray => {
                let values = self.read_array(&format!("{path}/values"), rows.clone(), stats)?;
                let mask = self.read_array(&format!("{path}/mask"), rows, stats)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| {
                        self.malformed(&format!("{path}/mask"), "mask is not boolean")
                    })?;
                if mask.len() != values.len() {
                    return Err(self.malformed(path, "mask and values differ in length"));
                }
                let valid =
                    NullBuffer::from(mask.iter().map(|m| m != Some(true)).collect::<Vec<_>>());
                let data = values.to_data().into_builder().nulls(Some(valid));
                let data = data.build().map_err(|source| Error::Arrow {
                    store: self.name().into(),
                    path: path.clone(),
                    source,
                })?;
                Ok(arrow::array::make_array(data))
            }
            other => Err(self.unsupported(path, other.name(), "not a dataframe column encoding")),
        }
    }

    fn legacy_categories_path(&self, column: &crate::Element) -> Result<String> {
        column.legacy_categories_path().ok_or_else(|| {
            self.malformed(
                &column.path,
                "legacy categorical: the 'categories' attribute is not a path string",
            )
        })
    }

    /// The categories of a categorical (read whole, once, and cached: they are the dictionary).
    fn categories(&self, path: &str) -> Result<ArrayRef> {
        // A poisoned cache lock only costs reading the categories again.
        if let Some(c) = self
            .categories_cache()
            .lock()
            .ok()
            .and_then(|c| c.get(path).cloned())
        {
            return Ok(c);
        }
        let len = self.array_meta(path)?.shape.first().copied().unwrap_or(0);
        let values = self.read_array(path, 0..len, &ReadStats::new_shared())?;
        if let Ok(mut cache) = self.categories_cache().lock() {
            cache.insert(path.to_string(), values.clone());
        }
        Ok(values)
    }

    fn dictionary(&self, path: &str, codes: ArrayRef, categories: ArrayRef) -> Result<ArrayRef> {
        let n = categories.len();
        macro_rules! dict {
            ($k:ty) => {
                self.make_dictionary::<$k>(
                    path,
                    codes.as_any().downcast_ref::<PrimitiveArray<$k>>(),
                    categories,
                    n,
                )
            };
        }
        match codes.data_type() {
            DataType::Int8 => dict!(Int8Type),
            DataType::Int16 => dict!(Int16Type),
            DataType::Int32 => dict!(Int32Type),
            DataType::Int64 => dict!(Int64Type),
            other => Err(self.malformed(
                path,
                &format!("categorical codes are {other}, expected signed integers"),
            )),
        }
    }

    fn make_dictionary<K: ArrowDictionaryKeyType + ArrowPrimitiveType>(
        &self,
        path: &str,
        codes: Option<&PrimitiveArray<K>>,
        categories: ArrayRef,
        n: usize,
    ) -> Result<ArrayRef>
    where
        K::Native: TryInto<i64> + Copy,
    {
        let codes = codes.ok_or_else(|| self.malformed(path, "codes have an unexpected type"))?;
        let mut valid = Vec::with_capacity(codes.len());
        for code in codes.values().iter() {
            let Ok(c) = TryInto::<i64>::try_into(*code) else {
                return Err(self.malformed(path, "categorical code does not fit in 64 bits"));
            };
            if c >= n as i64 || c < -1 {
                return Err(
                    self.malformed(path, &format!("code {c} out of range for {n} categories"))
                );
            }
            valid.push(c >= 0);
        }
        let keys = PrimitiveArray::<K>::new(codes.values().clone(), Some(NullBuffer::from(valid)));
        let dict =
            DictionaryArray::<K>::try_new(keys, categories).map_err(|source| Error::Arrow {
                store: self.name().into(),
                path: path.into(),
                source,
            })?;
        Ok(Arc::new(dict))
    }
}

/// One decoded chunk of a sparse matrix's `indices` and `data`, from entry `start`.
struct Piece {
    start: u64,
    indices: ScalarBuffer<u32>,
    data: ArrayRef,
}

impl Piece {
    fn end(&self) -> u64 {
        self.start + self.indices.len() as u64
    }
}

/// The rows `major` (whose absolute `indptr` slice is given) as blocks over `pieces`, the
/// consecutive chunks holding their entries: runs of rows within one piece, sliced from it, and
/// single rows that cross pieces, copied.
fn split_rows(
    major: &Range<u64>,
    indptr: &[u64],
    pieces: &[Piece],
) -> std::result::Result<Vec<SparseBlock>, arrow::error::ArrowError> {
    let mut parts = Vec::new();
    let rows = indptr.len() - 1;
    let (mut r, mut p) = (0, 0);
    while r < rows {
        // Skip pieces that end before this row's entries start.
        while p + 1 < pieces.len() && pieces[p].end() <= indptr[r] && indptr[r] < indptr[rows] {
            p += 1;
        }
        let piece = &pieces[p];
        if indptr[r + 1] <= piece.end() {
            // A run of rows within the piece.
            let a = r;
            while r < rows && indptr[r + 1] <= piece.end() {
                r += 1;
            }
            let (e0, e1) = (indptr[a], indptr[r]);
            let (o, n) = ((e0 - piece.start) as usize, (e1 - e0) as usize);
            parts.push(SparseBlock {
                major: major.start + a as u64..major.start + r as u64,
                indptr: indptr[a..=r].iter().map(|&i| i - e0).collect(),
                indices: piece.indices.slice(o, n),
                data: piece.data.slice(o, n),
            });
        } else {
            // A row that crosses into the next pieces: its entries copied together.
            let (e0, e1) = (indptr[r], indptr[r + 1]);
            let (mut indices, mut data) = (Vec::new(), Vec::new());
            for q in &pieces[p..] {
                if q.start >= e1 {
                    break;
                }
                let (a, b) = (e0.max(q.start) - q.start, e1.min(q.end()) - q.start);
                let (a, b) = (a as usize, b as usize);
                indices.extend_from_slice(&q.indices[a..b]);
                data.push(q.data.slice(a, b - a));
            }
            let data =
                arrow::compute::concat(&data.iter().map(|d| d.as_ref()).collect::<Vec<_>>())?;
            parts.push(SparseBlock {
                major: major.start + r as u64..major.start + r as u64 + 1,
                indptr: vec![0, e1 - e0],
                indices: indices.into(),
                data,
            });
            r += 1;
        }
    }
    Ok(parts)
}

/// Whether every value, as `unsigned` bits, is at most `last`. Runs of 4096 are folded without an
/// early exit, so the compiler vectorises the comparison (an `all` stops per element).
fn all_at_most<T: Copy, U: Copy + PartialOrd>(
    values: &[T],
    last: U,
    unsigned: impl Fn(T) -> U,
) -> bool {
    values
        .chunks(4096)
        .all(|run| run.iter().fold(true, |ok, &v| ok & (unsigned(v) <= last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_checked_as_unsigned_bits() {
        let as_bits = |v: i32| v as u32;
        let mut indices: Vec<i32> = (0..10_000).map(|i| i % 50).collect();
        assert!(all_at_most(&indices, 49, as_bits));
        assert!(!all_at_most(&indices, 48, as_bits));
        // A negative index, past the first run of 4096: its bits are above every valid index.
        indices[9_000] = -1;
        assert!(!all_at_most(&indices, 49, as_bits));
        assert!(all_at_most::<i32, u32>(&[], 0, as_bits));
    }

    /// Chunks of 3 entries holding rows of 2, 0, 7 and 1 entries: the second row is empty at a
    /// chunk edge, the third crosses three chunks.
    #[test]
    fn rows_split_into_slices_of_chunks_and_copied_crossing_rows() {
        let pieces: Vec<Piece> = (0..4)
            .map(|c| {
                let start = 3 * c;
                let values: Vec<u32> = (start as u32..(start as u32 + 3).min(10)).collect();
                let data: Vec<f32> = values.iter().map(|&v| v as f32 * 10.0).collect();
                Piece {
                    start,
                    indices: values.into(),
                    data: Arc::new(Float32Array::from(data)),
                }
            })
            .collect();
        let indptr = [0, 2, 2, 9, 10];
        let parts = split_rows(&(5..9), &indptr, &pieces).unwrap_or_else(|e| panic!("{e}"));
        let majors: Vec<Range<u64>> = parts.iter().map(|p| p.major.clone()).collect();
        assert_eq!(majors, vec![5..7, 7..8, 8..9]);
        assert_eq!(parts[0].indptr, vec![0, 2, 2]);
        assert_eq!(parts[1].indptr, vec![0, 7]);
        assert_eq!(&parts[1].indices[..], &[2, 3, 4, 5, 6, 7, 8]);
        let data = parts[1].data.as_any().downcast_ref::<Float32Array>();
        assert_eq!(data.map(|d| d.value(6)), Some(80.0));
        assert_eq!(&parts[2].indices[..], &[9]);
    }
}
