//! The out-of-core transposition of a CSR matrix to CSC.
//!
//! A count pass reads only `indices` and gives each gene's column length, hence the CSC `indptr`.
//! Then the matrix is read again once per *window*: a range of positions of the CSC output that
//! fits the memory given. Every entry goes to `indptr[gene] + (entries of that gene in earlier
//! rows)`; a pass keeps those that land in its window, so the output is produced in order and
//! appended to the sink window by window, with each column's cells in row order (as scipy's
//! `tocsc()` gives them). Windows are cut at output positions, not at genes, so no gene is too
//! large for the memory given.
//!
//! Within a pass, row blocks are decoded in order (their chunks in parallel, each chunk once) and
//! scattered by the workers in parallel: each worker owns a contiguous slice of the window and
//! keeps its own per-gene cursors, so no two workers write the same place and none needs a lock.
//!
//! Spilling sorted runs to disk and merging them would read the source once instead of once per
//! window, but move every entry through the disk once more: an extra pass costs less (atlas-m:
//! ~1.7 s a pass against ≥ 10 s for its 4.9 GB of runs; docs/index.md has the numbers).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annql_store::arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array, PrimitiveArray};
use annql_store::arrow::buffer::ScalarBuffer;
use annql_store::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use annql_store::{AnnDataStore, ReadStats, SparseBlock, SparseCarry};
use annql_write::Sink;
use annql_write::sink::ArrayId;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The CSR matrix being transposed.
pub(crate) struct Csr<'a> {
    pub store: &'a AnnDataStore,
    /// The matrix element's path (`X`, `layers/counts`).
    pub path: &'a str,
    /// Cells.
    pub rows: u64,
    /// Genes.
    pub cols: u64,
    /// The source's whole `indptr`.
    pub indptr: Vec<u64>,
    /// The stored values' type.
    pub value_type: DataType,
}

/// How the transposition uses its memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Output entries per pass.
    pub window: u64,
    /// Source entries decoded per row block.
    pub block: u64,
}

/// Where the transposition reports progress and looks for cancellation.
pub(crate) struct Control<'a> {
    /// Called with (entries done, entries to do), counting every pass.
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
    /// Set to stop the build.
    pub cancel: Option<&'a AtomicBool>,
    /// The sidecar being built, for the error a cancellation gives.
    pub sidecar: &'a std::path::Path,
}

impl Control<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The open arrays of the CSC copy in the sink.
pub(crate) struct Output<'a> {
    pub sink: &'a mut dyn Sink,
    pub indices: ArrayId,
    pub data: ArrayId,
    /// Whether `indices` is int64 (more than 2³¹ entries or dimensions, as scipy chooses).
    pub wide: bool,
}

/// Entries per gene: the lengths of the CSC columns. Reads `indices` only, in parallel.
pub(crate) fn column_counts(
    csr: &Csr,
    stats: &Arc<ReadStats>,
    control: &Control,
) -> Result<Vec<u64>> {
    let nnz = *csr.indptr.last().unwrap_or(&0);
    let step = csr
        .store
        .sparse_chunk_len(csr.path)
        .map_or(1 << 20, |c| c * (1u64 << 20).div_ceil(c).max(1));
    let ranges: Vec<Range<u64>> = (0..nnz.div_ceil(step))
        .map(|i| i * step..((i + 1) * step).min(nnz))
        .collect();
    let path = format!("{}/indices", csr.path);
    let cols = csr.cols as usize;
    let done = std::sync::atomic::AtomicU64::new(0);
    ranges
        .into_par_iter()
        .try_fold(
            || vec![0u64; cols],
            |mut counts, entries| {
                if control.cancelled() {
                    return Err(Error::Cancelled(control.sidecar.to_path_buf()));
                }
                let ids = csr.store.read_array(&path, entries.clone(), stats)?;
                for_each_gene(&ids, csr.cols, &path, entries.start, |g| counts[g] += 1)?;
                let n = done.fetch_add(entries.end - entries.start, Ordering::Relaxed);
                (control.progress)(n + entries.end - entries.start, nnz);
                Ok(counts)
            },
        )
        .try_reduce(
            || vec![0u64; cols],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                Ok(a)
            },
        )
}

/// Calls `f` with each gene id of an `indices` array, refusing ids outside `0..cols`.
fn for_each_gene(
    ids: &ArrayRef,
    cols: u64,
    path: &str,
    first: u64,
    mut f: impl FnMut(usize),
) -> Result<()> {
    let bad = |i: usize, v: i128| Error::NotIndexable {
        element: path.to_string(),
        reason: format!(
            "entry {}: gene id {v} is outside 0..{cols}",
            first + i as u64
        ),
    };
    macro_rules! each {
        ($t:ty) => {{
            for (i, &v) in ids.as_primitive::<$t>().values().iter().enumerate() {
                let g = v as i128;
                if g < 0 || g >= cols as i128 {
                    return Err(bad(i, g));
                }
                f(g as usize);
            }
        }};
    }
    match ids.data_type() {
        DataType::Int32 => each!(Int32Type),
        DataType::Int64 => each!(Int64Type),
        DataType::UInt32 => each!(UInt32Type),
        DataType::UInt64 => each!(UInt64Type),
        DataType::Int16 => each!(Int16Type),
        DataType::UInt16 => each!(UInt16Type),
        DataType::Int8 => each!(Int8Type),
        DataType::UInt8 => each!(UInt8Type),
        other => {
            return Err(Error::NotIndexable {
                element: path.to_string(),
                reason: format!("indices of type {other} are not integers"),
            });
        }
    }
    Ok(())
}

/// Writes the CSC `indices` and `data` of `csr`, whose CSC `indptr` is `colptr`, window by window.
pub(crate) fn transpose(
    csr: &Csr,
    colptr: &[u64],
    budget: Budget,
    out: &mut Output,
    stats: &Arc<ReadStats>,
    control: &Control,
) -> Result<()> {
    macro_rules! typed {
        ($t:ty) => {
            Transposer::<$t> {
                csr,
                colptr,
                budget,
                stats,
                control,
                _values: std::marker::PhantomData,
            }
            .run(out)
        };
    }
    match &csr.value_type {
        DataType::Float32 => typed!(Float32Type),
        DataType::Float64 => typed!(Float64Type),
        DataType::Int8 => typed!(Int8Type),
        DataType::Int16 => typed!(Int16Type),
        DataType::Int32 => typed!(Int32Type),
        DataType::Int64 => typed!(Int64Type),
        DataType::UInt8 => typed!(UInt8Type),
        DataType::UInt16 => typed!(UInt16Type),
        DataType::UInt32 => typed!(UInt32Type),
        DataType::UInt64 => typed!(UInt64Type),
        other => Err(Error::NotIndexable {
            element: format!("{}/data", csr.path),
            reason: format!("values of type {other} are not numbers annql indexes"),
        }),
    }
}

/// The passes of one transposition, for values of type `T`.
struct Transposer<'a, T> {
    csr: &'a Csr<'a>,
    colptr: &'a [u64],
    budget: Budget,
    stats: &'a Arc<ReadStats>,
    control: &'a Control<'a>,
    _values: std::marker::PhantomData<T>,
}

/// One worker's share of a window: output positions `start..start + rows.len()`, the genes whose
/// columns reach into it, and a cursor per such gene (the next output position of its column).
struct Share<'a, V> {
    start: u64,
    genes: Range<usize>,
    cursors: Vec<u64>,
    rows: &'a mut [u32],
    values: &'a mut [V],
}

impl<T: ArrowPrimitiveType> Transposer<'_, T> {
    fn run(&self, out: &mut Output) -> Result<()> {
        let nnz = *self.colptr.last().unwrap_or(&0);
        let window = self.budget.window.max(1);
        let passes = nnz.div_ceil(window);
        let total = nnz * (passes + 1);
        let mut done = nnz;
        // One pair of buffers for every pass: what a pass frees, the next one reuses.
        let mut rows = vec![0u32; window.min(nnz) as usize];
        let mut values = vec![T::Native::default(); window.min(nnz) as usize];
        for pass in 0..passes {
            let span = pass * window..((pass + 1) * window).min(nnz);
            let len = (span.end - span.start) as usize;
            self.fill(
                span.clone(),
                &mut rows[..len],
                &mut values[..len],
                done,
                total,
            )?;
            done += span.end - span.start;
            (self.control.progress)(done, total);
            self.append(out, &rows[..len], &values[..len])?;
        }
        Ok(())
    }

    /// Reads the whole matrix and keeps the entries whose output position is in `span`.
    fn fill(
        &self,
        span: Range<u64>,
        rows: &mut [u32],
        values: &mut [T::Native],
        done: u64,
        total: u64,
    ) -> Result<()> {
        let workers = rayon::current_num_threads().max(1);
        let mut shares = self.shares(span.clone(), rows, values, workers);
        let mut carry = SparseCarry::default();
        let nnz_window = span.end - span.start;
        let mut read = 0u64;
        for block in self.row_blocks() {
            if self.control.cancelled() {
                return Err(Error::Cancelled(self.control.sidecar.to_path_buf()));
            }
            let parts =
                self.csr
                    .store
                    .read_sparse_parts(self.csr.path, block, &mut carry, self.stats)?;
            for part in &parts {
                let data = part.data.as_primitive_opt::<T>().ok_or_else(|| {
                    Error::Internal(format!(
                        "{}/data read as {}, not {}",
                        self.csr.path,
                        part.data.data_type(),
                        T::DATA_TYPE
                    ))
                })?;
                shares
                    .par_iter_mut()
                    .for_each(|share| scatter(share, part, data.values()));
                read += part.nnz() as u64;
            }
            let nnz = *self.csr.indptr.last().unwrap_or(&0);
            // Progress counts this pass's share of the window by how much of the source is read.
            (self.control.progress)(done + nnz_window * read / nnz.max(1), total);
        }
        Ok(())
    }

    /// Cuts the window into `workers` slices, each with the genes that reach into it.
    fn shares<'s>(
        &self,
        span: Range<u64>,
        mut rows: &'s mut [u32],
        mut values: &'s mut [T::Native],
        workers: usize,
    ) -> Vec<Share<'s, T::Native>> {
        let len = span.end - span.start;
        let step = len.div_ceil(workers as u64).max(1);
        let mut shares = Vec::new();
        let mut start = span.start;
        while start < span.end {
            let end = (start + step).min(span.end);
            let (r, rest_r) = rows.split_at_mut((end - start) as usize);
            let (v, rest_v) = values.split_at_mut((end - start) as usize);
            (rows, values) = (rest_r, rest_v);
            // Genes whose column [colptr[g], colptr[g+1]) meets [start, end).
            let first = self
                .colptr
                .partition_point(|&p| p <= start)
                .saturating_sub(1);
            let last = self
                .colptr
                .partition_point(|&p| p < end)
                .min(self.colptr.len() - 1);
            let genes = first..last.max(first);
            shares.push(Share {
                start,
                cursors: self.colptr[genes.clone()].to_vec(),
                genes,
                rows: r,
                values: v,
            });
            start = end;
        }
        shares
    }

    /// Row blocks of about `budget.block` entries each, in order.
    fn row_blocks(&self) -> Vec<Range<u64>> {
        let indptr = &self.csr.indptr;
        let mut blocks = Vec::new();
        let mut start = 0u64;
        while start < self.csr.rows {
            let target = indptr[start as usize] + self.budget.block.max(1);
            let end = (indptr.partition_point(|&p| p <= target) as u64 - 1)
                .clamp(start + 1, self.csr.rows);
            blocks.push(start..end);
            start = end;
        }
        blocks
    }

    /// Appends a finished window to the sink, in pieces: each is copied into an Arrow array the
    /// sink buffers until its shard is full.
    fn append(&self, out: &mut Output, rows: &[u32], values: &[T::Native]) -> Result<()> {
        const PIECE: usize = 1 << 20;
        for (rows, values) in rows.chunks(PIECE).zip(values.chunks(PIECE)) {
            let ids: ArrayRef = if out.wide {
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|&r| r as i64)))
            } else {
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|&r| r as i32)))
            };
            out.sink.append(out.indices, &ids)?;
            let values: ArrayRef = Arc::new(PrimitiveArray::<T>::new(
                ScalarBuffer::from(values.to_vec()),
                None,
            ));
            out.sink.append(out.data, &values)?;
        }
        Ok(())
    }
}

/// Scatters the entries of one decoded part that fall in `share`.
fn scatter<V: Copy>(share: &mut Share<V>, part: &SparseBlock, values: &[V]) {
    let (g0, g1) = (share.genes.start as u32, share.genes.end as u32);
    let end = share.start + share.rows.len() as u64;
    for (i, row) in part.major.clone().enumerate() {
        let entries = part.indptr[i] as usize..part.indptr[i + 1] as usize;
        for e in entries {
            let g = part.indices[e];
            if g < g0 || g >= g1 {
                continue;
            }
            let cursor = &mut share.cursors[(g - g0) as usize];
            let pos = *cursor;
            *cursor += 1;
            if pos >= share.start && pos < end {
                let at = (pos - share.start) as usize;
                share.rows[at] = row as u32;
                share.values[at] = values[e];
            }
        }
    }
}
