//! Reading the selected cells × genes of a stored matrix (CSR, CSC or dense) into the compressed
//! arrays of a `sprs` matrix, through the store's range reads: only the selected rows (CSR,
//! dense) or columns (CSC) are read.

use std::ops::Range;
use std::sync::Arc;

use annql_store::arrow::array::{Array, ArrayRef, PrimitiveArray};
use annql_store::arrow::datatypes::{self as adt, ArrowPrimitiveType};
use annql_store::{AnnDataStore, DType, Encoding, ReadStats};

use crate::error::{Error, Result};

/// Selected rows closer than this many unselected ones are read in one range read.
const GAP_ROWS: u64 = 64;
/// Stored entries one read of a sparse matrix aims at (bounds the memory of one read).
const READ_ENTRIES: u64 = 1 << 20;

/// A Rust element type a stored matrix can be read as: exactly the stored dtype, never converted.
pub trait MatrixElement:
    Copy + Default + PartialEq + Send + Sync + std::fmt::Debug + adt::ArrowNativeType + 'static
{
    /// The stored dtype this type reads.
    const DTYPE: DType;
    /// The Arrow type the store's reads give for it.
    type Arrow: ArrowPrimitiveType<Native = Self>;
}

macro_rules! element {
    ($t:ty, $dtype:ident, $arrow:ty) => {
        impl MatrixElement for $t {
            const DTYPE: DType = DType::$dtype;
            type Arrow = $arrow;
        }
    };
}
element!(f32, Float32, adt::Float32Type);
element!(f64, Float64, adt::Float64Type);
element!(i8, Int8, adt::Int8Type);
element!(i16, Int16, adt::Int16Type);
element!(i32, Int32, adt::Int32Type);
element!(i64, Int64, adt::Int64Type);
element!(u8, UInt8, adt::UInt8Type);
element!(u16, UInt16, adt::UInt16Type);
element!(u32, UInt32, adt::UInt32Type);
element!(u64, UInt64, adt::UInt64Type);

/// How a matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `csr_matrix`: rows are the major axis.
    Csr,
    /// `csc_matrix`: columns are the major axis.
    Csc,
    /// A dense 2-D array.
    Dense,
}

/// A stored matrix: where, how and of what.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub store: Arc<AnnDataStore>,
    pub path: String,
    pub layout: Layout,
    pub n_obs: u64,
    pub n_vars: u64,
    pub dtype: DType,
}

impl Source {
    /// The matrix element at `path` of `store`.
    pub fn open(store: Arc<AnnDataStore>, path: &str) -> Result<Source> {
        let element = store.element(path)?;
        let malformed = |reason: &str| {
            Error::Store(annql_store::Error::Malformed {
                store: store.name().to_string(),
                path: path.to_string(),
                reason: reason.to_string(),
            })
        };
        let (layout, n_obs, n_vars) = match element.encoding {
            Encoding::CsrMatrix | Encoding::CscMatrix => {
                let (major, minor) = store.sparse_dims(element)?;
                if element.encoding == Encoding::CsrMatrix {
                    (Layout::Csr, major, minor)
                } else {
                    (Layout::Csc, minor, major)
                }
            }
            Encoding::Array => match element.shape[..] {
                [rows, cols] => (Layout::Dense, rows, cols),
                _ => return Err(malformed("a matrix must be a 2-D array")),
            },
            ref other => {
                return Err(malformed(&format!(
                    "a matrix must be a csr_matrix, csc_matrix or 2-D array, not {}",
                    other.name()
                )));
            }
        };
        let dtype = element
            .dtype
            .clone()
            .ok_or_else(|| malformed("the matrix has no element type"))?;
        Ok(Source {
            path: path.to_string(),
            store,
            layout,
            n_obs,
            n_vars,
            dtype,
        })
    }

    /// Refuses `T` unless it is the stored element type.
    pub fn check_type<T: MatrixElement>(&self) -> Result<()> {
        if self.dtype == T::DTYPE {
            return Ok(());
        }
        Err(Error::ElementType {
            element: format!("matrix '{}' of {}", self.path, self.store.name()),
            stored: self.dtype.to_string(),
            requested: std::any::type_name::<T>(),
        })
    }

    /// The values of a read as a `T` slice (the dtype was checked, so a mismatch is a bug).
    fn values<'a, T: MatrixElement>(&self, array: &'a ArrayRef) -> Result<&'a [T]> {
        let typed = array
            .as_any()
            .downcast_ref::<PrimitiveArray<T::Arrow>>()
            .ok_or_else(|| {
                Error::Internal(format!(
                    "{}: read gave {} for stored {}",
                    self.path,
                    array.data_type(),
                    self.dtype
                ))
            })?;
        Ok(&typed.values()[..])
    }
}

/// The genes kept: for every stored column, its position in the output, if kept.
#[derive(Debug, Clone)]
pub(crate) struct VarMap {
    /// `slot[g]` is gene `g`'s output column, `u32::MAX` when dropped; `None` keeps every gene.
    slot: Option<Vec<u32>>,
    /// Output columns.
    pub len: usize,
}

impl VarMap {
    /// Keeps `ids` (strictly increasing, each below `n_vars`), or every gene.
    pub fn new(ids: Option<&[u64]>, n_vars: u64) -> VarMap {
        match ids {
            None => VarMap {
                slot: None,
                len: n_vars as usize,
            },
            Some(ids) => {
                let mut slot = vec![u32::MAX; n_vars as usize];
                for (i, &g) in ids.iter().enumerate() {
                    slot[g as usize] = i as u32;
                }
                VarMap {
                    slot: Some(slot),
                    len: ids.len(),
                }
            }
        }
    }

    /// The output column of stored gene `g`.
    fn get(&self, g: usize) -> Option<usize> {
        match &self.slot {
            None => Some(g),
            Some(slot) => slot.get(g).filter(|&&s| s != u32::MAX).map(|&s| s as usize),
        }
    }
}

/// The compressed arrays of a sparse matrix under construction, one outer row at a time.
#[derive(Debug)]
pub(crate) struct Compressed<T> {
    pub indptr: Vec<usize>,
    pub indices: Vec<usize>,
    pub data: Vec<T>,
}

impl<T: MatrixElement> Compressed<T> {
    fn new() -> Self {
        Compressed {
            indptr: vec![0],
            indices: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Ends the current outer row, sorting its entries by inner index if they came unsorted.
    fn end_row(&mut self) {
        let start = self.indptr[self.indptr.len() - 1];
        let row = &self.indices[start..];
        if row.windows(2).any(|w| w[0] >= w[1]) {
            let mut pairs: Vec<(usize, T)> = row
                .iter()
                .copied()
                .zip(self.data[start..].iter().copied())
                .collect();
            pairs.sort_by_key(|p| p.0);
            for (k, (i, v)) in pairs.into_iter().enumerate() {
                self.indices[start + k] = i;
                self.data[start + k] = v;
            }
        }
        self.indptr.push(self.indices.len());
    }
}

/// Ranges that cover `ids` (strictly increasing): neighbours closer than [`GAP_ROWS`] share a
/// range, and a range stops growing past `max_len` rows.
fn runs(ids: &[u64], max_len: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for &id in ids {
        match out.last_mut() {
            Some(r) if id - r.end < GAP_ROWS && id + 1 - r.start <= max_len => r.end = id + 1,
            _ => out.push(id..id + 1),
        }
    }
    out
}

/// Rows per read of a sparse matrix whose `nnz` entries spread over `n_major` rows.
fn rows_per_read(nnz: u64, n_major: u64) -> u64 {
    let per_row = nnz.div_ceil(n_major.max(1)).max(1);
    (READ_ENTRIES / per_row).max(1)
}

/// The selected rows `obs` (strictly increasing) × the genes of `var`, as CSR arrays: rows in
/// the order of `obs`, columns in the order of `var`.
pub(crate) fn read_rows<T: MatrixElement>(
    src: &Source,
    obs: &[u64],
    var: &VarMap,
) -> Result<Compressed<T>> {
    src.check_type::<T>()?;
    let stats = ReadStats::new_shared();
    let mut out = Compressed::new();
    match src.layout {
        Layout::Csr => {
            let nnz = src.store.sparse_nnz(&src.path, 0..src.n_obs, &stats)?;
            for run in runs(obs, rows_per_read(nnz, src.n_obs)) {
                let block = src.store.read_sparse(&src.path, run.clone(), &stats)?;
                let data = src.values::<T>(&block.data)?;
                for &id in obs_in(obs, &run) {
                    let r = (id - run.start) as usize;
                    let (a, b) = (block.indptr[r] as usize, block.indptr[r + 1] as usize);
                    for (&g, &v) in block.indices[a..b].iter().zip(&data[a..b]) {
                        if let Some(col) = var.get(g as usize) {
                            out.indices.push(col);
                            out.data.push(v);
                        }
                    }
                    out.end_row();
                }
            }
        }
        Layout::Dense => {
            let per_read = (READ_ENTRIES / src.n_vars.max(1)).max(1);
            for run in runs(obs, per_read) {
                let block = src.store.read_dense_rows(&src.path, run.clone(), &stats)?;
                let values = src.values::<T>(&block.values)?;
                let ncols = src.n_vars as usize;
                for &id in obs_in(obs, &run) {
                    let row = &values[(id - run.start) as usize * ncols..][..ncols];
                    for (g, &v) in row.iter().enumerate() {
                        if v != T::default()
                            && let Some(col) = var.get(g)
                        {
                            out.indices.push(col);
                            out.data.push(v);
                        }
                    }
                    out.end_row();
                }
            }
        }
        Layout::Csc => {
            let by_col = read_columns::<T>(src, obs, var)?;
            return Ok(transpose(&by_col, obs.len()));
        }
    }
    Ok(out)
}

/// The selected genes of a CSC matrix × the cells of `obs`, as CSC arrays (one outer entry per
/// selected gene, inner indices positions in `obs`).
pub(crate) fn read_columns<T: MatrixElement>(
    src: &Source,
    obs: &[u64],
    var: &VarMap,
) -> Result<Compressed<T>> {
    src.check_type::<T>()?;
    if src.layout != Layout::Csc {
        let rows = read_rows::<T>(src, obs, var)?;
        return Ok(transpose(&rows, var.len));
    }
    let stats = ReadStats::new_shared();
    // Output row of each stored cell (u32::MAX: not selected).
    let mut row_of = vec![u32::MAX; src.n_obs as usize];
    for (i, &id) in obs.iter().enumerate() {
        row_of[id as usize] = i as u32;
    }
    let genes: Vec<u64> = match &var.slot {
        None => (0..src.n_vars).collect(),
        Some(slot) => (0..src.n_vars)
            .filter(|&g| slot[g as usize] != u32::MAX)
            .collect(),
    };
    let nnz = src.store.sparse_nnz(&src.path, 0..src.n_vars, &stats)?;
    let mut out = Compressed::new();
    for run in runs(&genes, rows_per_read(nnz, src.n_vars)) {
        let block = src.store.read_sparse(&src.path, run.clone(), &stats)?;
        let data = src.values::<T>(&block.data)?;
        for &g in obs_in(&genes, &run) {
            let c = (g - run.start) as usize;
            let (a, b) = (block.indptr[c] as usize, block.indptr[c + 1] as usize);
            for (&cell, &v) in block.indices[a..b].iter().zip(&data[a..b]) {
                let r = row_of[cell as usize];
                if r != u32::MAX {
                    out.indices.push(r as usize);
                    out.data.push(v);
                }
            }
            out.end_row();
        }
    }
    Ok(out)
}

/// The ids of `ids` (sorted) inside `range`.
fn obs_in<'a>(ids: &'a [u64], range: &Range<u64>) -> &'a [u64] {
    let a = ids.partition_point(|&i| i < range.start);
    let b = ids.partition_point(|&i| i < range.end);
    &ids[a..b]
}

/// The same matrix compressed along the other axis (`inner_len` is the new outer length); inner
/// indices come out sorted.
pub(crate) fn transpose<T: MatrixElement>(m: &Compressed<T>, inner_len: usize) -> Compressed<T> {
    let mut counts = vec![0usize; inner_len + 1];
    for &i in &m.indices {
        counts[i + 1] += 1;
    }
    for k in 0..inner_len {
        counts[k + 1] += counts[k];
    }
    let indptr = counts.clone();
    let mut next = counts;
    let mut indices = vec![0usize; m.indices.len()];
    let mut data = vec![T::default(); m.data.len()];
    for outer in 0..m.indptr.len() - 1 {
        for e in m.indptr[outer]..m.indptr[outer + 1] {
            let i = m.indices[e];
            indices[next[i]] = outer;
            data[next[i]] = m.data[e];
            next[i] += 1;
        }
    }
    Compressed {
        indptr,
        indices,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_close_rows_and_split_long_ones() {
        assert_eq!(runs(&[0, 1, 5, 200, 201], 1000), vec![0..6, 200..202]);
        assert_eq!(runs(&[0, 1, 2, 3], 2), vec![0..2, 2..4]);
        assert!(runs(&[], 10).is_empty());
    }

    #[test]
    fn transpose_swaps_axes() {
        // [[1, 0, 2], [0, 3, 0]] as CSR → CSC.
        let csr = Compressed {
            indptr: vec![0, 2, 3],
            indices: vec![0, 2, 1],
            data: vec![1.0f32, 2.0, 3.0],
        };
        let csc = transpose(&csr, 3);
        assert_eq!(csc.indptr, vec![0, 1, 2, 3]);
        assert_eq!(csc.indices, vec![0, 1, 0]);
        assert_eq!(csc.data, vec![1.0, 3.0, 2.0]);
    }

    #[test]
    fn unsorted_rows_are_sorted() {
        let mut m = Compressed::<f64>::new();
        m.indices.extend([3, 1]);
        m.data.extend([30.0, 10.0]);
        m.end_row();
        assert_eq!(m.indices, vec![1, 3]);
        assert_eq!(m.data, vec![10.0, 30.0]);
    }
}
