//! The units of work of a fold: which parts of the matrix each read takes.
//!
//! A CSR matrix whose `data` and `indices` are chunked alike is read in chunk-aligned ranges of
//! entries, so that each chunk is decoded by one job only (ranges of rows share the chunks at
//! their edges); any other matrix (a CSC copy, or chunks that differ) in runs of selected
//! majors, as the scan reads it.

use std::ops::Range;
use std::sync::Arc;

use annql_store::{Encoding, ReadStats};
use datafusion::error::{DataFusionError, Result};

use crate::AnnTable;
use crate::fused::kernel::NONE;

/// A unit of work of the fused fold.
pub(super) enum Job {
    /// A major-axis range (rows, or columns of a CSC copy), read with its `indptr` slice.
    Major(Range<u64>),
    /// A chunk-aligned range of stored entries (read with the matrix's whole `indptr`).
    Entries(Range<u64>),
}

impl Job {
    /// Stored entries the job reads: exact for entry ranges, the scan's block target for row
    /// ranges (whose entries are known only once their `indptr` is read).
    pub(super) fn entries(&self) -> usize {
        match self {
            Job::Entries(e) => (e.end - e.start) as usize,
            Job::Major(_) => 1 << 20,
        }
    }
}

/// Entries per chunk-aligned job of the fused fold: small chunks are grouped up to this, larger
/// ones are a job each (a one-chunk read decodes straight into its own buffer, with no copy into
/// a multi-chunk one).
const TARGET_JOB_ENTRIES: u64 = 1 << 18;

/// The jobs that read the selected cells (CSR) or genes (CSC) of `matrix` (`cells`: group per
/// cell, `genes`: slot per gene, [`NONE`] for those not selected), and the `indptr`
/// jobs of entries are read with (empty for jobs of majors).
pub(super) fn plan(
    matrix: &AnnTable,
    cells: &[u32],
    genes: &[u32],
    stats: &Arc<ReadStats>,
) -> Result<(Vec<Job>, Vec<u64>)> {
    let major_sel = if matrix.column_major { genes } else { cells };
    let max_gap = if matrix.column_major { 0 } else { u64::MAX };
    Ok(match chunk_jobs(matrix, major_sel, stats)? {
        Some((entries, indptr)) => (entries.into_iter().map(Job::Entries).collect(), indptr),
        None => (
            crate::blocks::selected_spans(
                major_sel.iter().map(|&g| g != NONE),
                matrix.block_rows,
                max_gap,
            )
            .into_iter()
            .map(Job::Major)
            .collect(),
            Vec::new(),
        ),
    })
}

/// The entry ranges of [`chunk_jobs`], and the `indptr` they are read with.
type ChunkJobs = (Vec<Range<u64>>, Vec<u64>);

/// Chunk-aligned entry ranges of a CSR matrix that hold a selected row: each data/indices chunk
/// is then decoded by one job only (row ranges share the chunks at their edges). None when the
/// matrix is not CSR or its `data` and `indices` are chunked differently. Also returns the
/// matrix's `indptr`, which the jobs are read with.
fn chunk_jobs(
    matrix: &AnnTable,
    selected: &[u32],
    stats: &Arc<ReadStats>,
) -> Result<Option<ChunkJobs>> {
    let encoding = matrix.stored_as()?;
    if matrix.column_major || *encoding != Encoding::CsrMatrix {
        return Ok(None);
    }
    let Some(chunk) = matrix.entry_chunk_len() else {
        return Ok(None);
    };
    let n_rows = selected.len() as u64;
    let indptr = matrix.matrix_indptr(0..n_rows, stats)?;
    if indptr.windows(2).any(|w| w[0] > w[1]) {
        return Err(DataFusionError::Execution(format!(
            "{}: element '{}/indptr' is not non-decreasing",
            matrix.store.name(),
            matrix.def.path
        )));
    }
    let nnz = indptr.last().copied().unwrap_or(0);
    // Selected rows before each row, to test a job's rows in O(1).
    let mut before = Vec::with_capacity(selected.len() + 1);
    before.push(0_u32);
    for &g in selected {
        let last = before.last().copied().unwrap_or(0);
        before.push(last + u32::from(g != NONE));
    }
    let per_job = (TARGET_JOB_ENTRIES / chunk).max(1) * chunk;
    let mut jobs = Vec::new();
    let mut start = 0;
    while start < nnz {
        let end = (start + per_job).min(nnz);
        let first = indptr.partition_point(|&p| p <= start).saturating_sub(1);
        let last = indptr.partition_point(|&p| p < end).min(selected.len());
        if before[last] > before[first] {
            jobs.push(start..end);
        }
        start = end;
    }
    Ok(Some((jobs, indptr)))
}
