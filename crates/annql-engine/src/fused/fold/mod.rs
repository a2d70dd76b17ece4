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
use super::kernel::{
    Accumulators, GeneSlots, Grid, NONE, SharedTiles, TILE_BITS, check_values, row_tile_groups,
    tiled,
};
use super::source::MatrixPart;
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

/// What [`choose_fold`] decided: the matrices to read and how to add their blocks.
pub(super) struct FoldPlan {
    /// The matrices (one per dataset of a collection), each the table or its CSC copy.
    parts: Vec<PartPlan>,
    strategy: Strategy,
    /// Slots per group.
    slots: usize,
    /// Cells of the grid (groups × slots).
    len: usize,
}

/// One matrix of a fold: the table or its CSC copy, with its cells' groups and genes' slots.
struct PartPlan {
    matrix: Arc<AnnTable>,
    /// Whether `matrix` is the table's CSC copy.
    csc_copy: bool,
    cells: Vec<u32>,
    genes: Vec<u32>,
}

/// Stored entries decoded before they are added to a tiled grid: 32 Mi entries (256 MiB of f32
/// values and u32 indices). The larger the window, the more rows each tile takes per visit, and
/// the fewer times the grid streams through the caches.
const WINDOW_ENTRIES: usize = 1 << 25;

/// Chooses, for each matrix of `parts`, the table or its CSC copy, and the one strategy that
/// folds them all into a grid of `len` cells, `slots` per group.
pub(super) fn choose_fold(
    spec: &FusedSpec,
    parts: Vec<MatrixPart>,
    slots: usize,
    len: usize,
) -> FoldPlan {
    let parts: Vec<PartPlan> = parts
        .into_iter()
        .map(|p| {
            // Few genes of many cells: read the genes' columns of the CSC copy, if there is one.
            let (matrix, csc_copy) = match p.matrix.csc_copy() {
                Some(copy) if !p.matrix.column_major && prefer_columns(&p.cells, &p.genes) => {
                    (copy.clone(), true)
                }
                _ => (p.matrix.clone(), false),
            };
            PartPlan {
                matrix,
                csc_copy,
                cells: p.cells,
                genes: p.genes,
            }
        })
        .collect();
    // One grid for every matrix: tiles of CSC entries take CSR blocks too, not the reverse.
    let strategy = if !tiled(len, &spec.aggs, spec.dense) {
        Strategy::PerWorker
    } else if parts.iter().all(|p| !p.matrix.column_major) {
        Strategy::RowWindows
    } else {
        Strategy::LockedTiles
    };
    FoldPlan {
        parts,
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

/// Reads the blocks that hold selected cells (CSR) or genes (CSC) of each matrix and folds them
/// as `plan` says, into one grid, on up to `threads` workers off the async runtime.
pub(super) async fn run(
    plan: FoldPlan,
    spec: &Arc<FusedSpec>,
    threads: usize,
    metrics: &ExecutionPlanMetricsSet,
) -> Result<Grid> {
    let FoldPlan {
        parts,
        strategy,
        slots,
        len,
    } = plan;
    let copies = parts.iter().filter(|p| p.csc_copy).count();
    if copies > 0 {
        MetricBuilder::new(metrics)
            .global_counter("csc_copy_used")
            .add(copies);
    }
    let spec = spec.clone();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let chunks = MetricBuilder::new(metrics).global_counter("chunks_read");
    let bytes = MetricBuilder::new(metrics).global_counter("bytes_read");
    let read = MetricBuilder::new(metrics).global_counter("blocks_read");
    let times = PhaseTimes {
        decode: MetricBuilder::new(metrics).subset_time("decode_time", 0),
        bucket: MetricBuilder::new(metrics).subset_time("bucket_time", 0),
        add: MetricBuilder::new(metrics).subset_time("add_time", 0),
    };
    let fetches: Vec<_> = parts
        .iter()
        .filter_map(|p| FetchMetrics::start(&p.matrix.store, metrics))
        .collect();
    let grid = schedule::blocking(move || -> Result<Grid> {
        let target = Target::new(strategy, len, slots, &spec);
        let mut merged: Option<Accumulators> = None;
        for part in &parts {
            part.matrix.check_first_read()?;
            let stats = ReadStats::new_shared();
            // Cells of a CSR matrix are read in jobs of whole chunks (each chunk decoded once);
            // the genes of a CSC copy as runs of columns.
            let (jobs, indptr) = jobs::plan(&part.matrix, &part.cells, &part.genes, &stats)?;
            part.matrix.progress.plan(jobs.len());
            let genes = GeneSlots::new(&part.genes);
            let pass = Pass {
                matrix: &part.matrix,
                jobs: &jobs,
                indptr: &indptr,
                cancel: &cancel,
                stats: &stats,
                spec: &spec,
                row_group: &part.cells,
                genes: &genes,
                slots,
                len,
                workers: threads.min(jobs.len().max(1)),
            };
            match &target {
                Target::PerWorker => {
                    let acc = per_worker::fold(&pass)?;
                    match &mut merged {
                        Some(m) => m.merge(acc),
                        None => merged = Some(acc),
                    }
                }
                Target::Tiles(tiles) if strategy == Strategy::RowWindows => {
                    windows::fold(&pass, &times, tiles)?
                }
                Target::Tiles(tiles) => locked_tiles::fold(&pass, tiles)?,
            }
            chunks.add(stats.key_count());
            bytes.add(stats.bytes() as usize);
            read.add(jobs.len());
        }
        match target {
            Target::PerWorker => {
                Ok(Grid::whole(merged.unwrap_or_else(|| {
                    Accumulators::new(len, &spec.aggs, spec.dense)
                })))
            }
            Target::Tiles(tiles) => tiles.into_grid(),
        }
    })
    .await
    .map_err(|e| DataFusionError::External(Box::new(e)))??;
    for f in fetches {
        f.update();
    }
    Ok(grid)
}

/// Where a fold's matrices are added: per-worker grids merged after each matrix, or one grid of
/// tiles shared by every matrix.
enum Target {
    PerWorker,
    Tiles(SharedTiles),
}

impl Target {
    fn new(strategy: Strategy, len: usize, slots: usize, spec: &FusedSpec) -> Self {
        match strategy {
            Strategy::PerWorker => Target::PerWorker,
            Strategy::RowWindows => Target::Tiles(SharedTiles::new(
                len,
                row_tile_groups(slots) * slots,
                &spec.aggs,
                spec.dense,
            )),
            Strategy::LockedTiles => Target::Tiles(SharedTiles::new(
                len,
                1 << TILE_BITS,
                &spec.aggs,
                spec.dense,
            )),
        }
    }
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
