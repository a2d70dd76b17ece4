//! CSR/CSC matrices: a major-axis range read through its `indptr` slice, a range of stored
//! entries, and the sequential scan that decodes each chunk of `indices`/`data` once, carrying
//! the chunk a block ends in over to the next ([`SparseCarry`]).

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array as _, ArrayRef};
use arrow::buffer::ScalarBuffer;
use rayon::prelude::*;

use super::Reader;
use crate::error::Result;
use crate::storage::ReadStats;

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
/// [`AnnDataStore::read_sparse_parts`](crate::AnnDataStore::read_sparse_parts)): the next block
/// starts in it.
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

impl Reader {
    /// Reads the major-axis range `major` of a CSR (rows) or CSC (columns) matrix: the `indptr` slice,
    /// then only the `indices`/`data` chunks it covers.
    pub(crate) fn read_sparse(
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
    pub(crate) fn sparse_chunk_len(&self, path: &str) -> Option<u64> {
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
    pub(crate) fn read_sparse_parts(
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
    pub(crate) fn read_sparse_entries(
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
    pub(crate) fn sparse_nnz(
        &self,
        path: &str,
        major: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<u64> {
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
    pub(crate) fn sparse_dims(&self, element: &crate::Element) -> Result<(u64, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float32Array;

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
