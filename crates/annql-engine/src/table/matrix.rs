//! What a sparse matrix table reads from its store, named for what it means: how the matrix is
//! stored, its shape, its `indptr`, and its stored entries by a range of the major axis or by
//! a range of entries.
//!
//! Operators that read a matrix themselves (the fused aggregate) go through these rather than
//! through the store with the table's element path, so that the table stays the one thing that
//! knows where its arrays are and which way round they lie.

use std::ops::Range;
use std::sync::Arc;

use annql_store::{Encoding, ReadStats, SparseBlock};
use datafusion::error::Result;

use super::AnnTable;
use crate::error::store_err;

impl AnnTable {
    /// How the table's element is stored (CSR, CSC, a dense array, …).
    pub(crate) fn stored_as(&self) -> Result<&Encoding> {
        let element = self.store.element(&self.def.path).map_err(store_err)?;
        Ok(&element.encoding)
    }

    /// The (cells, genes) shape of a sparse matrix, validated against its `indptr`.
    pub(crate) fn matrix_shape(&self) -> Result<(u64, u64)> {
        let element = self.store.element(&self.def.path).map_err(store_err)?;
        let (major, minor) = self.store.sparse_dims(element).map_err(store_err)?;
        Ok(if self.column_major {
            (minor, major)
        } else {
            (major, minor)
        })
    }

    /// The `indptr` of a sparse matrix from major position `majors.start` to `majors.end`, both
    /// included: where each major (row; column of a CSC copy) starts among the stored entries.
    pub(crate) fn matrix_indptr(
        &self,
        majors: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<u64>> {
        let path = format!("{}/indptr", self.def.path);
        self.store
            .read_offsets(&path, majors.start..majors.end + 1, stats)
            .map_err(store_err)
    }

    /// Entries per chunk of a sparse matrix's `data` and `indices`, when both are chunked alike.
    pub(crate) fn entry_chunk_len(&self) -> Option<u64> {
        self.store.sparse_chunk_len(&self.def.path)
    }

    /// The stored entries of a range of majors (rows; columns of a CSC copy).
    pub(crate) fn read_major_range(
        &self,
        majors: Range<u64>,
        stats: &Arc<ReadStats>,
    ) -> Result<SparseBlock> {
        self.store
            .read_sparse(&self.def.path, majors, stats)
            .map_err(store_err)
    }

    /// A range of stored entries, read with the matrix's whole `indptr` (see
    /// [`Self::matrix_indptr`]).
    pub(crate) fn read_entry_range(
        &self,
        entries: Range<u64>,
        indptr: &[u64],
        stats: &Arc<ReadStats>,
    ) -> Result<SparseBlock> {
        self.store
            .read_sparse_entries(&self.def.path, entries, indptr, stats)
            .map_err(store_err)
    }
}
