//! The fold: the matrix's blocks that hold selected cells (or genes) read and added into the
//! group × slot grid, by one of a few strategies that [`choose_fold`] picks once per execution.
//!
//! - Which matrix: the table itself, or its CSC copy when few genes of many cells are kept
//!   ([`crate::blocks::prefer_columns`]).
//! - Which reads ([`jobs`]): chunk-aligned ranges of entries for a CSR matrix whose `data` and
//!   `indices` are chunked alike (each chunk decoded once), else runs of selected majors.
//! - Which strategy ([`Strategy`]): a grid that fits in the caches is folded per worker and
//!   merged ([`per_worker`]); a larger one is one grid of tiles, fed by windows of CSR rows
//!   bucketed by tile ([`windows`]) or by CSC entries scattered by tile under the tiles' locks
//!   ([`locked_tiles`]).
//!
//! Within a block, the kernel picks how each row's entries find their slots (the few kept genes
//! by binary search; every gene by its index, as a full pseudobulk keeps them; or the slot map):
//! see [`super::kernel`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use annql_store::{ReadStats, SparseBlock};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, Time};

use super::FusedSpec;
use super::grouping::Grouping;
use super::kernel::{Accumulators, GeneSlots, Grid, NONE, check_values, tiled};
use crate::AnnTable;
use crate::fetch::FetchMetrics;
use crate::schedule;
use jobs::Job;

/// The reads of a fold: jobs of entries or of majors.
mod jobs;
/// Tiled CSC folds: entries scattered by tile, added under the tiles' locks.
mod locked_tiles;
/// Grids that fit in the caches: one per worker, merged.
mod per_worker;
/// Tiled CSR folds: windows of blocks, their rows bucketed by tile.
mod windows;

/// How the blocks of a fold are added into its grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// A grid small enough for the caches: each worker folds blocks into accumulators of its
    /// own, where the entries fall, and they merge at the end ([`per_worker`]).
    PerWorker,
    /// A grid of CSR blocks too large for the caches: one grid of tiles of whole groups; windows
    /// of blocks are decoded in parallel, their rows bucketed by tile, and the tiles added to in
    /// parallel, each by one thread ([`windows`]).
    RowWindows,
    /// A grid of CSC blocks (a CSC copy's genes) too large for the caches: one grid of tiles;
    /// each worker scatters a block's entries by tile and adds each bucket under its tile's
    /// lock ([`locked_tiles`]).
    LockedTiles,
}

/// What [`choose_fold`] decided: the matrix to read and how to add its blocks.
pub(super) struct FoldPlan {
    /// The matrix read: the table, or its CSC copy.
    matrix: Arc<AnnTable>,
    /// Whether `matrix` is the table's CSC copy.
    csc_copy: bool,
    strategy: Strategy,
    /// Slots per group.
    slots: usize,
    /// Cells of the grid (groups × slots).
    len: usize,
}

/// Stored entries decoded before they are added to a tiled grid: 32 Mi entries (256 MiB of f32
/// values and u32 indices). The larger the window, the more rows each tile takes per visit, and
/// the fewer times the grid streams through the caches.
const WINDOW_ENTRIES: usize = 1 << 25;

/// Chooses the matrix and the strategy of the fold of `table` into a grid of `len` cells,
/// `slots` per group.
pub(super) fn choose_fold(
    spec: &FusedSpec,
    table: &Arc<AnnTable>,
    cells: &Grouping,
    genes: &Grouping,
    slots: usize,
    len: usize,
) -> FoldPlan {
    // Few genes of many cells: read the genes' columns of the CSC copy, if there is one.
    let (matrix, csc_copy) = match table.csc_copy() {
        Some(copy) if !table.column_major && prefer_columns(&cells.of, &genes.of) => {
            (copy.clone(), true)
        }
        _ => (table.clone(), false),
    };
    let strategy = if !tiled(len, &spec.aggs, spec.dense) {
        Strategy::PerWorker
    } else if !matrix.column_major {
        Strategy::RowWindows
    } else {
        Strategy::LockedTiles
    };
    FoldPlan {
        matrix,
        csc_copy,
        strategy,
        slots,
        len,
    }
}

impl FoldPlan {
    /// Bytes the fold holds at most with `threads` workers, for the memory pool.
    pub(super) fn bytes(&self, spec: &FusedSpec, threads: usize) -> usize {
        let grid = Accumulators::bytes(self.len, &spec.aggs, spec.dense);
        // A tiled grid is shared by the workers; smaller ones are one per worker plus the merge.
        match self.strategy {
            // The grid, and a window of decoded blocks (f64 values at most).
            Strategy::RowWindows | Strategy::LockedTiles => grid + WINDOW_ENTRIES * 12,
            Strategy::PerWorker => grid * (threads + 1),
        }
    }
}

/// [`crate::blocks::prefer_columns`] for cell → group and gene → slot maps.
fn prefer_columns(cells: &[u32], genes: &[u32]) -> bool {
    let kept = |of: &[u32]| of.iter().filter(|&&g| g != NONE).count() as u64;
    crate::blocks::prefer_columns(
        kept(cells),
        cells.len() as u64,
        kept(genes),
        genes.len() as u64,
    )
}

/// Sets the drop flag when the output stream goes away, so worker threads stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Wall time of a tiled CSR fold's phases: decoding windows, bucketing rows, adding them.
struct PhaseTimes {
    decode: Time,
    bucket: Time,
    add: Time,
}

/// Reads the blocks that hold selected cells (CSR) or genes (CSC) and folds them as `plan`
/// says, on up to `threads` workers off the async runtime.
pub(super) async fn run(
    plan: FoldPlan,
    spec: &Arc<FusedSpec>,
    cells: &Grouping,
    genes: &Grouping,
    threads: usize,
    metrics: &ExecutionPlanMetricsSet,
) -> Result<Grid> {
    let FoldPlan {
        matrix,
        csc_copy,
        strategy,
        slots,
        len,
    } = plan;
    if csc_copy {
        MetricBuilder::new(metrics)
            .global_counter("csc_copy_used")
            .add(1);
    }
    matrix.check_first_read()?;
    let stats = ReadStats::new_shared();
    // Cells of a CSR matrix are read in jobs of whole chunks (each chunk decoded once); the
    // genes of a CSC copy as runs of columns.
    let (jobs, indptr) = jobs::plan(&matrix, cells, genes, &stats)?;
    matrix.progress.plan(jobs.len());
    let spec = spec.clone();
    let row_group = cells.of.clone();
    let gene_slot = genes.of.clone();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let worker_stats = stats.clone();
    let chunks = MetricBuilder::new(metrics).global_counter("chunks_read");
    let bytes = MetricBuilder::new(metrics).global_counter("bytes_read");
    let read = MetricBuilder::new(metrics).global_counter("blocks_read");
    let times = PhaseTimes {
        decode: MetricBuilder::new(metrics).subset_time("decode_time", 0),
        bucket: MetricBuilder::new(metrics).subset_time("bucket_time", 0),
        add: MetricBuilder::new(metrics).subset_time("add_time", 0),
    };
    let nblocks = jobs.len();
    let fetch = FetchMetrics::start(&matrix.store, metrics);
    let grid = schedule::blocking(move || -> Result<Grid> {
        let genes = GeneSlots::new(&gene_slot);
        let pass = Pass {
            matrix: &matrix,
            jobs: &jobs,
            indptr: &indptr,
            cancel: &cancel,
            stats: &worker_stats,
            spec: &spec,
            row_group: &row_group,
            genes: &genes,
            slots,
            len,
            workers: threads.min(nblocks.max(1)),
        };
        match strategy {
            Strategy::PerWorker => per_worker::fold(&pass),
            Strategy::RowWindows => windows::fold(&pass, &times),
            Strategy::LockedTiles => locked_tiles::fold(&pass),
        }
    })
    .await
    .map_err(|e| DataFusionError::External(Box::new(e)))??;
    chunks.add(stats.key_count());
    bytes.add(stats.bytes() as usize);
    read.add(nblocks);
    if let Some(f) = fetch {
        f.update();
    }
    Ok(grid)
}

/// One pass over the matrix, as every strategy sees it: the jobs to read, and where their
/// entries land.
struct Pass<'a> {
    /// The matrix read (the table or its CSC copy).
    matrix: &'a AnnTable,
    jobs: &'a [Job],
    /// The matrix's whole `indptr`, for jobs of entries.
    indptr: &'a [u64],
    /// Set when the query was dropped.
    cancel: &'a AtomicBool,
    stats: &'a Arc<ReadStats>,
    spec: &'a FusedSpec,
    /// Group per cell, or [`NONE`].
    row_group: &'a [u32],
    genes: &'a GeneSlots<'a>,
    slots: usize,
    len: usize,
    /// Worker threads: the session's partitions, at most one per job.
    workers: usize,
}

impl Pass<'_> {
    /// Whether the blocks' major axis is cells (CSR); otherwise genes.
    fn row_major(&self) -> bool {
        !self.matrix.column_major
    }

    /// Job `i`'s block, or None when the jobs are done or the query was dropped.
    fn read(&self, i: usize) -> Result<Option<SparseBlock>> {
        if i >= self.jobs.len() || self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        let block = match &self.jobs[i] {
            Job::Major(rows) => self.matrix.read_major_range(rows.clone(), self.stats),
            Job::Entries(entries) => {
                self.matrix
                    .read_entry_range(entries.clone(), self.indptr, self.stats)
            }
        }?;
        check_values(&block.data)?;
        Ok(Some(block))
    }
}
