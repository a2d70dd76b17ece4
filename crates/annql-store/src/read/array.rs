//! Decoding a range of one array into Arrow: the retrieval through zarrs (accounted, limited,
//! chunk-guarded), values of any dtype, index arrays as `u64`, a sparse matrix's `indices`
//! checked and narrowed to `u32`, and blocks of dense rows.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, StringArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::ArrowNativeType;
use zarrs::array::{ArrayBytes, ArraySubset, ElementOwned};
use zarrs::storage::ReadableStorageTraits;

use super::Reader;
use crate::error::Result;
use crate::limits::{GuardedStorage, bytes_of};
use crate::metadata::DType;
use crate::rooted::RootedStorage;
use crate::storage::{CountingStorage, ReadStats};

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

impl Reader {
    /// Retrieves `subset` of the array at `path` in zarrs's output type `T`, recording reads into
    /// `stats`: refused first if it would allocate more than the read limit, and every encoded
    /// chunk checked by the array's [`ChunkGuard`](crate::limits::ChunkGuard) before zarrs decodes it.
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

    /// Reads `rows` of a 1-D array (or the first axis of an n-d one) into an Arrow array.
    pub(crate) fn read_array(
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
    pub(crate) fn read_offsets(
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
    pub(super) fn read_indices(
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

    /// Reads `rows` of a dense 2-D array, all columns, row-major.
    pub(crate) fn read_dense_rows(
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
}
