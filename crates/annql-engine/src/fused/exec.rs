//! [`FusedAggregateExec`]: runs a [`FusedAggregateNode`], and the planner that builds it.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use annql_store::ReadStats;
use annql_store::arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch,
    RecordBatchOptions, UInt32Array, make_array,
};
use annql_store::arrow::buffer::{Buffer, MutableBuffer, ScalarBuffer};
use annql_store::arrow::compute::{cast, concat_batches, take};
use annql_store::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use annql_store::arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, collect,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;
use rayon::prelude::*;

use super::kernel::{
    Accumulators, GeneSlots, Grid, NONE, RowBuckets, Scatter, SharedTiles, TILE_BITS, Value,
    channel_of, check_values, finish, row_tile_groups, tiled,
};
use super::rule::{FusedAggregateNode, describe};
use super::{FusedSpec, KeySource};
use crate::decode::{AnnTable, probe_batch};
use crate::error::store_err;
use crate::fetch::FetchMetrics;

/// Plans [`FusedAggregateNode`]s; everything else goes to DataFusion's planner.
#[derive(Debug, Default)]
pub struct FusedPlanner;

#[async_trait]
impl ExtensionPlanner for FusedPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<FusedAggregateNode>() else {
            return Ok(None);
        };
        let matrix_schema = DFSchema::try_from(node.matrix.schema().as_ref().clone())?;
        let filters = node
            .matrix_filters
            .iter()
            .map(|f| session.create_physical_expr(f.clone(), &matrix_schema))
            .collect::<Result<Vec<_>>>()?;
        let mut inputs = physical_inputs.iter().cloned();
        let obs = node.spec.obs_key.and_then(|_| inputs.next());
        let var = node.spec.var_key.and_then(|_| inputs.next());
        Ok(Some(Arc::new(FusedAggregateExec::try_new(
            node.spec.clone(),
            node.matrix.clone(),
            filters,
            obs,
            var,
            Arc::new(node.schema.as_arrow().clone()),
        )?)))
    }
}

/// A query planner with annql's extension planners.
#[derive(Debug, Default)]
pub struct AnnQueryPlanner;

#[async_trait]
impl QueryPlanner for AnnQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(FusedPlanner)])
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}

/// The fused group-by operator: one output partition; its children (obs and var sides) are
/// read whole, then the matrix blocks are folded in parallel.
#[derive(Debug)]
pub struct FusedAggregateExec {
    spec: Arc<FusedSpec>,
    matrix: Arc<AnnTable>,
    matrix_filters: Vec<Arc<dyn PhysicalExpr>>,
    obs: Option<Arc<dyn ExecutionPlan>>,
    var: Option<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
    metrics: ExecutionPlanMetricsSet,
    cache: Arc<PlanProperties>,
}

impl FusedAggregateExec {
    /// Builds the operator.
    pub fn try_new(
        spec: FusedSpec,
        matrix: Arc<AnnTable>,
        matrix_filters: Vec<Arc<dyn PhysicalExpr>>,
        obs: Option<Arc<dyn ExecutionPlan>>,
        var: Option<Arc<dyn ExecutionPlan>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            spec: Arc::new(spec),
            matrix,
            matrix_filters,
            obs,
            var,
            schema,
            metrics: ExecutionPlanMetricsSet::new(),
            cache,
        })
    }

    /// What the operator computes.
    pub fn spec(&self) -> &FusedSpec {
        &self.spec
    }
}

impl DisplayAs for FusedAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FusedAggregateExec: {}", describe(&self.spec))?;
        if !self.matrix_filters.is_empty() {
            let filters: Vec<String> = self.matrix_filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", matrix_filters=[{}]", filters.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for FusedAggregateExec {
    fn name(&self) -> &str {
        "FusedAggregateExec"
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in &self.matrix_filters {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.obs.iter().chain(self.var.iter()).collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut it = children.into_iter();
        let obs = self.obs.as_ref().and_then(|_| it.next());
        let var = self.var.as_ref().and_then(|_| it.next());
        Ok(Arc::new(Self {
            spec: self.spec.clone(),
            matrix: self.matrix.clone(),
            matrix_filters: self.matrix_filters.clone(),
            obs,
            var,
            schema: self.schema.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
            cache: self.cache.clone(),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "FusedAggregateExec has one partition, asked for {partition}"
            )));
        }
        let run = Run {
            spec: self.spec.clone(),
            matrix: self.matrix.clone(),
            matrix_filters: self.matrix_filters.clone(),
            obs: self.obs.clone(),
            var: self.var.clone(),
            schema: self.schema.clone(),
            metrics: self.metrics.clone(),
            context,
        };
        let schema = self.schema.clone();
        let stream = futures::stream::once(run.go()).flat_map(|r| match r {
            Ok(batches) => futures::stream::iter(batches).boxed(),
            Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Everything one execution needs, moved into its future.
struct Run {
    spec: Arc<FusedSpec>,
    matrix: Arc<AnnTable>,
    matrix_filters: Vec<Arc<dyn PhysicalExpr>>,
    obs: Option<Arc<dyn ExecutionPlan>>,
    var: Option<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
    metrics: ExecutionPlanMetricsSet,
    context: Arc<TaskContext>,
}

/// Cells or genes mapped to groups or slots, with a representative row per group for its keys.
struct Grouping {
    /// Group (or slot) per position on the axis, or [`NONE`].
    of: Vec<u32>,
    /// Positions on the axis taken per group (cells per group; genes per slot).
    members: Vec<u64>,
    /// Row of the side's batch that represents each group.
    first_row: Vec<u32>,
    /// The id (position on the axis) of each group's representative, for `GROUP BY obs_id`.
    ids: Vec<i64>,
    /// The side's rows (obs or var), when there is such a side.
    batch: Option<RecordBatch>,
}

/// Sets the drop flag when the output stream goes away, so worker threads stop.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Run {
    async fn go(self) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
        let n_obs = self.axis_len(true)?;
        let n_var = self.axis_len(false)?;
        let obs_keys: Vec<usize> = self
            .spec
            .keys
            .iter()
            .filter_map(|k| match k {
                KeySource::Obs(i) => Some(*i),
                _ => None,
            })
            .collect();
        let var_keys: Vec<usize> = self
            .spec
            .keys
            .iter()
            .filter_map(|k| match k {
                KeySource::Var(i) => Some(*i),
                _ => None,
            })
            .collect();
        let by_obs_id = self.spec.keys.contains(&KeySource::MatrixRow);
        let by_var_id = self.spec.keys.contains(&KeySource::MatrixCol);
        let obs_side = match &self.obs {
            Some(plan) => Some(collect_side(plan, &self.context).await?),
            None => None,
        };
        let var_side = match &self.var {
            Some(plan) => Some(collect_side(plan, &self.context).await?),
            None => None,
        };
        let mut cells = group(obs_side, self.spec.obs_key, &obs_keys, by_obs_id, n_obs)?;
        let mut genes = group(var_side, self.spec.var_key, &var_keys, by_var_id, n_var)?;
        self.apply_matrix_filters(&mut cells, &mut genes)?;
        let groups = cells.members.len();
        let slots = genes.members.len();
        let len = groups.checked_mul(slots).ok_or_else(|| {
            DataFusionError::ResourcesExhausted("fused aggregate grid too large".into())
        })?;
        let threads = self.context.session_config().target_partitions().max(1);
        // A tiled grid is shared by the workers; smaller ones are one per worker plus the merge.
        let grid_bytes = Accumulators::bytes(len, &self.spec.aggs, self.spec.dense);
        let bytes = if tiled(len, &self.spec.aggs, self.spec.dense) {
            // The grid, and a window of decoded blocks (f64 values at most).
            grid_bytes + WINDOW_ENTRIES * 12
        } else {
            grid_bytes * (threads + 1)
        };
        let reservation =
            MemoryConsumer::new("FusedAggregateExec").register(self.context.memory_pool());
        reservation.try_grow(bytes)?;
        let grid = self.fold(&cells, &genes, slots, len, threads).await?;
        Ok(Box::new(Output::new(self, cells, genes, grid, reservation)))
    }

    /// Cells (`rows`) or genes of the matrix.
    fn axis_len(&self, rows: bool) -> Result<u64> {
        let e = self
            .matrix
            .store
            .element(&self.matrix.def.path)
            .map_err(store_err)?;
        let (major, minor) = self.matrix.store.sparse_dims(e).map_err(store_err)?;
        let len = if rows != self.matrix.column_major {
            major
        } else {
            minor
        };
        // The axis's grouping holds a group, an id and a first row per position (24 bytes),
        // sized from the declared shape: within the read limit.
        let what = format!("grouping the {len} positions of an axis");
        self.matrix
            .store
            .check_alloc(&self.matrix.def.path, &what, len.saturating_mul(24))
            .map_err(store_err)?;
        Ok(len)
    }

    /// The matrix scan's own `obs_id`/`var_id` predicates drop cells and genes.
    fn apply_matrix_filters(&self, cells: &mut Grouping, genes: &mut Grouping) -> Result<()> {
        let schema = self.matrix.schema();
        for f in &self.matrix_filters {
            let cols = datafusion::physical_expr::utils::collect_columns(f);
            let Some(col) = cols.iter().next() else {
                continue;
            };
            let target = if col.name() == "obs_id" {
                &mut *cells
            } else {
                &mut *genes
            };
            let ids = Int64Array::from_iter_values(0..target.of.len() as i64);
            let batch = probe_batch(&schema, col.index(), Arc::new(ids))?;
            let mask = f.evaluate(&batch)?.into_array(batch.num_rows())?;
            let mask = mask
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Internal("filter is not boolean".into()))?;
            for (i, slot) in target.of.iter_mut().enumerate() {
                if *slot != NONE && !(mask.is_valid(i) && mask.value(i)) {
                    target.members[*slot as usize] -= 1;
                    *slot = NONE;
                }
            }
        }
        Ok(())
    }

    /// Reads the matrix blocks that hold selected cells (CSR) or genes (CSC) and folds them,
    /// one accumulator set per worker thread, or one shared grid of tiles when the grid is larger
    /// than the caches (see [`tiled`]).
    async fn fold(
        &self,
        cells: &Grouping,
        genes: &Grouping,
        slots: usize,
        len: usize,
        threads: usize,
    ) -> Result<Grid> {
        // Few genes of many cells: read the genes' columns of the CSC copy, if there is one.
        let matrix = match self.matrix.csc_copy() {
            Some(copy) if !self.matrix.column_major && prefer_columns(&cells.of, &genes.of) => {
                MetricBuilder::new(&self.metrics)
                    .global_counter("csc_copy_used")
                    .add(1);
                copy.clone()
            }
            _ => self.matrix.clone(),
        };
        matrix.check_first_read()?;
        let major_sel = if matrix.column_major {
            &genes.of
        } else {
            &cells.of
        };
        let max_gap = if matrix.column_major { 0 } else { u64::MAX };
        let stats = ReadStats::new_shared();
        // Cells of a CSR matrix are read in jobs of whole chunks (each chunk decoded once); the
        // genes of a CSC copy as runs of columns.
        let (blocks, indptr): (Vec<Job>, Vec<u64>) = match chunk_jobs(&matrix, major_sel, &stats)? {
            Some((entries, indptr)) => (entries.into_iter().map(Job::Entries).collect(), indptr),
            None => (
                crate::scan::selected_spans(
                    major_sel.iter().map(|&g| g != NONE),
                    matrix.block_rows,
                    max_gap,
                )
                .into_iter()
                .map(Job::Major)
                .collect(),
                Vec::new(),
            ),
        };
        matrix.progress.plan(blocks.len());
        let spec = self.spec.clone();
        let row_group = cells.of.clone();
        let gene_slot = genes.of.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let worker_stats = stats.clone();
        let chunks = MetricBuilder::new(&self.metrics).global_counter("chunks_read");
        let bytes = MetricBuilder::new(&self.metrics).global_counter("bytes_read");
        let read = MetricBuilder::new(&self.metrics).global_counter("blocks_read");
        // Wall time of a tiled CSR fold's phases: decoding windows, bucketing rows, adding them.
        let decode_time = MetricBuilder::new(&self.metrics).subset_time("decode_time", 0);
        let bucket_time = MetricBuilder::new(&self.metrics).subset_time("bucket_time", 0);
        let add_time = MetricBuilder::new(&self.metrics).subset_time("add_time", 0);
        let nblocks = blocks.len();
        let fetch = FetchMetrics::start(&matrix.store, &self.metrics);
        let grid = tokio::task::spawn_blocking(move || -> Result<Grid> {
            let next = AtomicUsize::new(0);
            let genes = GeneSlots::new(&gene_slot);
            let row_major = !matrix.column_major;
            // The next job's block, or None when the jobs are done or the query was dropped.
            let read = |i: usize| -> Result<Option<annql_store::SparseBlock>> {
                if i >= blocks.len() || cancel.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                let block = match &blocks[i] {
                    Job::Major(rows) => {
                        matrix
                            .store
                            .read_sparse(&matrix.def.path, rows.clone(), &worker_stats)
                    }
                    Job::Entries(entries) => matrix.store.read_sparse_entries(
                        &matrix.def.path,
                        entries.clone(),
                        &indptr,
                        &worker_stats,
                    ),
                }
                .map_err(store_err)?;
                check_values(&block.data)?;
                Ok(Some(block))
            };
            let workers = threads.min(nblocks.max(1));
            if tiled(len, &spec.aggs, spec.dense) {
                // One grid, in tiles: no per-thread copies of a grid that may be hundreds of MB,
                // and no merge.
                let tile_groups = row_tile_groups(slots);
                let tile_len = if row_major {
                    tile_groups * slots
                } else {
                    1 << TILE_BITS
                };
                let tiles = SharedTiles::new(len, tile_len, &spec.aggs, spec.dense);
                if row_major {
                    // Windows of blocks decoded in parallel, their rows bucketed by tile, then
                    // the tiles added to in parallel, each by one thread (see `RowBuckets`).
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(workers)
                        .build()
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    let mut buckets = RowBuckets::default();
                    let value_type = matrix.schema().field(2).data_type().clone();
                    let mut windows = Vec::new();
                    let mut start = 0;
                    while start < blocks.len() {
                        let (mut end, mut entries) = (start, 0);
                        while end < blocks.len() && entries < WINDOW_ENTRIES {
                            entries += blocks[end].entries();
                            end += 1;
                        }
                        windows.push((start..end, entries));
                        start = end;
                    }
                    let largest = windows.iter().map(|w| w.1).max().unwrap_or(0);
                    let mut arena = Arena::new(&value_type, &blocks, largest);
                    for (range, _) in windows {
                        let (start, end) = (range.start, range.end);
                        let decoding = decode_time.timer();
                        let window = match &mut arena {
                            Some(arena) => {
                                arena.fill(&blocks[start..end], &pool, |i| read(start + i))?
                            }
                            None => pool.install(|| {
                                (start..end)
                                    .into_par_iter()
                                    .map(read)
                                    .collect::<Result<Option<Vec<_>>>>()
                            })?,
                        };
                        // None: the query was dropped.
                        decoding.done();
                        let Some(window) = window else { break };
                        window.iter().for_each(|_| matrix.progress.step());
                        let bucketing = bucket_time.timer();
                        buckets.fill(&window, &row_group, tile_groups, tiles.count());
                        let todo: Vec<usize> = buckets.tiles().collect();
                        bucketing.done();
                        let _adding = add_time.timer();
                        pool.install(|| {
                            todo.into_par_iter().try_for_each(|i| {
                                tiles.with(i, |tile| {
                                    tile.add_rows(
                                        &window,
                                        buckets.bucket(i),
                                        &row_group,
                                        &genes,
                                        slots,
                                        i * tile_groups,
                                    )
                                })?
                            })
                        })?;
                        drop(window);
                        if let Some(arena) = &mut arena {
                            arena.reclaim();
                        }
                    }
                } else {
                    // Each worker buckets a block's entries by tile and adds each bucket under
                    // its tile's lock, starting at a different tile than the other workers and
                    // skipping tiles another holds.
                    let work = |t: usize| -> Result<()> {
                        let mut scatter = Scatter::default();
                        let mut pending: Vec<usize> = Vec::new();
                        while let Some(block) = read(next.fetch_add(1, Ordering::Relaxed))? {
                            scatter.fill(&block, row_major, &row_group, &genes, slots, len)?;
                            drop(block);
                            pending.clear();
                            pending.extend(scatter.buckets().map(|(i, _)| i));
                            let start = pending.len() * t / workers;
                            pending.rotate_left(start);
                            while !pending.is_empty() {
                                let before = pending.len();
                                pending.retain(|&i| {
                                    tiles
                                        .try_with(i, |tile| tile.add_entries(scatter.bucket(i)))
                                        .is_none()
                                });
                                if pending.len() == before
                                    && let Some(&i) = pending.first()
                                {
                                    tiles.with(i, |tile| tile.add_entries(scatter.bucket(i)))?;
                                    pending.remove(0);
                                }
                            }
                            matrix.progress.step();
                        }
                        Ok(())
                    };
                    run_workers(workers, &work)?;
                }
                return tiles.into_grid();
            }
            let work = |_: usize| -> Result<Accumulators> {
                let mut acc = Accumulators::new(len, &spec.aggs, spec.dense);
                while let Some(block) = read(next.fetch_add(1, Ordering::Relaxed))? {
                    acc.fold(&block, row_major, &row_group, &genes, slots)?;
                    matrix.progress.step();
                }
                Ok(acc)
            };
            let mut merged: Option<Accumulators> = None;
            for r in run_workers(workers, &work)? {
                match &mut merged {
                    Some(m) => m.merge(r),
                    None => merged = Some(r),
                }
            }
            Ok(Grid::whole(merged.unwrap_or_else(|| {
                Accumulators::new(len, &spec.aggs, spec.dense)
            })))
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
}

/// Runs `work` on `n` scoped threads (given their index) and returns their results in order, or
/// the first error.
fn run_workers<T: Send>(n: usize, work: &(impl Fn(usize) -> Result<T> + Sync)) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|t| s.spawn(move || work(t))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DataFusionError::Internal(
                        "fused aggregate worker panicked".into(),
                    ))
                })
            })
            .collect()
    })
}

/// Reads every partition of a side into one batch.
async fn collect_side(
    plan: &Arc<dyn ExecutionPlan>,
    ctx: &Arc<TaskContext>,
) -> Result<RecordBatch> {
    let batches = collect(plan.clone(), ctx.clone()).await?;
    Ok(concat_batches(&plan.schema(), &batches)?)
}

/// Maps every position of an axis (`len` of them) to a group: by the side's key columns (plus its
/// id when `by_id`), by the id alone when there is no side but `by_id`, else one group for all.
fn group(
    side: Option<RecordBatch>,
    id_column: Option<usize>,
    keys: &[usize],
    by_id: bool,
    len: u64,
) -> Result<Grouping> {
    let len = usize::try_from(len)
        .map_err(|_| DataFusionError::ResourcesExhausted("axis too long".into()))?;
    let (Some(batch), Some(id_col)) = (side, id_column) else {
        if by_id {
            return Ok(Grouping {
                of: (0..len as u32).collect(),
                members: vec![1; len],
                first_row: (0..len as u32).collect(),
                ids: (0..len as i64).collect(),
                batch: None,
            });
        }
        return Ok(Grouping {
            of: vec![0; len],
            members: vec![len as u64],
            first_row: vec![0],
            ids: vec![0],
            batch: None,
        });
    };
    let ids = cast(batch.column(id_col), &DataType::Int64)?;
    let ids = ids.as_primitive::<Int64Type>();
    let mut key_cols: Vec<ArrayRef> = keys.iter().map(|&k| batch.column(k).clone()).collect();
    if by_id {
        key_cols.push(batch.column(id_col).clone());
    }
    let mut of = vec![NONE; len];
    let mut members = Vec::new();
    let mut first_row = Vec::new();
    let mut group_ids = Vec::new();
    // Group of each valid row first, then placement on the axis.
    let mut row_groups: Vec<(usize, u32)> = Vec::with_capacity(batch.num_rows());
    if key_cols.is_empty() {
        if batch.num_rows() > 0 {
            members.push(0);
            first_row.push(0);
            group_ids.push(ids.value(0));
        }
        row_groups.extend(
            (0..batch.num_rows())
                .filter(|&r| ids.is_valid(r))
                .map(|r| (r, 0)),
        );
    } else {
        let fields = key_cols
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let rows = RowConverter::new(fields)?.convert_columns(&key_cols)?;
        let mut index: HashMap<&[u8], u32> = HashMap::new();
        for row in (0..batch.num_rows()).filter(|&r| ids.is_valid(r)) {
            let next = index.len() as u32;
            let g = *index.entry(rows.row(row).data()).or_insert_with(|| {
                members.push(0);
                first_row.push(row as u32);
                group_ids.push(ids.value(row));
                next
            });
            row_groups.push((row, g));
        }
    }
    for (row, g) in row_groups {
        let id = ids.value(row);
        let slot = usize::try_from(id)
            .ok()
            .filter(|&i| i < len)
            .ok_or_else(|| DataFusionError::Execution(format!("id {id} outside 0..{len}")))?;
        if of[slot] != NONE {
            return Err(DataFusionError::Execution(format!(
                "id {id} appears twice on one side of a fused aggregate"
            )));
        }
        of[slot] = g;
        members[g as usize] += 1;
    }
    Ok(Grouping {
        of,
        members,
        first_row,
        ids: group_ids,
        batch: Some(batch),
    })
}

/// [`crate::scan::prefer_columns`] for cell → group and gene → slot maps.
fn prefer_columns(cells: &[u32], genes: &[u32]) -> bool {
    let kept = |of: &[u32]| of.iter().filter(|&&g| g != NONE).count() as u64;
    crate::scan::prefer_columns(
        kept(cells),
        cells.len() as u64,
        kept(genes),
        genes.len() as u64,
    )
}

/// A unit of work of the fused fold.
enum Job {
    /// A major-axis range (rows, or columns of a CSC copy), read with its `indptr` slice.
    Major(Range<u64>),
    /// A chunk-aligned range of stored entries (read with the matrix's whole `indptr`).
    Entries(Range<u64>),
}

/// Two buffers (indices and values) a fold's windows of decoded chunks are copied into, reused
/// from window to window. Holding a window's hundreds of MB in per-chunk allocations and freeing
/// them after every window makes the allocator return the pages and the kernel zero them again
/// for the next window, which costs more than copying each chunk once it is decoded (its own
/// buffers are then reused by the next chunk the thread decodes). The buffers are allocated once,
/// for the largest window, as zeroed memory fresh from the OS: their pages are first touched by
/// the decoding workers' copies, in parallel, rather than cleared by one thread up front.
struct Arena {
    value_type: DataType,
    /// Bytes per value.
    width: usize,
    indices: MutableBuffer,
    values: MutableBuffer,
    /// The buffers while a window's blocks point into them.
    frozen: Option<(Buffer, Buffer)>,
}

impl Arena {
    /// An arena for windows of up to `entries` entries of chunk-aligned jobs over fixed-width
    /// values; None for other folds.
    fn new(value_type: &DataType, jobs: &[Job], entries: usize) -> Option<Self> {
        let width = value_type.primitive_width()?;
        jobs.iter()
            .all(|j| matches!(j, Job::Entries(_)))
            .then(|| Self {
                value_type: value_type.clone(),
                width,
                indices: MutableBuffer::from_len_zeroed(entries * 4),
                values: MutableBuffer::from_len_zeroed(entries * width),
                frozen: None,
            })
    }

    /// Reads `jobs` in parallel on `pool` (`read` gets a job's position in `jobs`) into the
    /// arena; the blocks point into it until [`Arena::reclaim`]. None if the query was dropped.
    fn fill(
        &mut self,
        jobs: &[Job],
        pool: &rayon::ThreadPool,
        read: impl Fn(usize) -> Result<Option<annql_store::SparseBlock>> + Sync,
    ) -> Result<Option<Vec<annql_store::SparseBlock>>> {
        let counts: Vec<usize> = jobs.iter().map(Job::entries).collect();
        let total: usize = counts.iter().sum();
        let (width, value_type) = (self.width, self.value_type.clone());
        if self.indices.len() < total * 4 || self.values.len() < total * width {
            return Err(DataFusionError::Internal(format!(
                "a window of {total} entries overflows its arena"
            )));
        }
        // Each job's own slices of the two buffers.
        let mut slices = Vec::with_capacity(jobs.len());
        let (mut indices, mut values) = (
            &mut self.indices.as_slice_mut()[..total * 4],
            &mut self.values.as_slice_mut()[..total * width],
        );
        for &n in &counts {
            let (i, rest) = std::mem::take(&mut indices).split_at_mut(n * 4);
            let (v, more) = std::mem::take(&mut values).split_at_mut(n * width);
            slices.push((i, v));
            (indices, values) = (rest, more);
        }
        let heads = pool.install(|| {
            slices
                .into_par_iter()
                .enumerate()
                .map(|(j, (into_indices, into_values))| {
                    let Some(block) = read(j)? else {
                        return Ok(None);
                    };
                    if block.data.data_type() != &value_type {
                        return Err(DataFusionError::Internal(format!(
                            "job {j} decoded values of type {}, expected {value_type}",
                            block.data.data_type()
                        )));
                    }
                    let data = block.data.to_data();
                    let bytes = &data.buffers()[0].as_slice()
                        [data.offset() * width..(data.offset() + data.len()) * width];
                    let stored = block.indices.inner().as_slice();
                    if stored.len() != into_indices.len() || bytes.len() != into_values.len() {
                        return Err(DataFusionError::Internal(format!(
                            "job {j} decoded {} entries, expected {}",
                            block.nnz(),
                            counts[j]
                        )));
                    }
                    into_indices.copy_from_slice(stored);
                    into_values.copy_from_slice(bytes);
                    Ok(Some((block.major, block.indptr)))
                })
                .collect::<Result<Option<Vec<_>>>>()
        })?;
        let Some(heads) = heads else {
            return Ok(None);
        };
        let indices = Buffer::from(std::mem::replace(&mut self.indices, MutableBuffer::new(0)));
        let values = Buffer::from(std::mem::replace(&mut self.values, MutableBuffer::new(0)));
        let mut blocks = Vec::with_capacity(heads.len());
        let mut at = 0;
        for ((major, indptr), n) in heads.into_iter().zip(counts) {
            let data = ArrayData::try_new(
                self.value_type.clone(),
                n,
                None,
                0,
                vec![values.slice_with_length(at * width, n * width)],
                vec![],
            )?;
            blocks.push(annql_store::SparseBlock {
                major,
                indptr,
                indices: ScalarBuffer::new(indices.clone(), at, n),
                data: make_array(data),
            });
            at += n;
        }
        self.frozen = Some((indices, values));
        Ok(Some(blocks))
    }

    /// Takes the buffers back once the window's blocks are dropped.
    fn reclaim(&mut self) {
        // A buffer still shared (it is not, once the blocks are dropped) is replaced, not reused.
        if let Some((indices, values)) = self.frozen.take() {
            let (i, v) = (indices.len(), values.len());
            self.indices = indices
                .into_mutable()
                .unwrap_or_else(|_| MutableBuffer::from_len_zeroed(i));
            self.values = values
                .into_mutable()
                .unwrap_or_else(|_| MutableBuffer::from_len_zeroed(v));
        }
    }
}

impl Job {
    /// Stored entries the job reads: exact for entry ranges, the scan's block target for row
    /// ranges (whose entries are known only once their `indptr` is read).
    fn entries(&self) -> usize {
        match self {
            Job::Entries(e) => (e.end - e.start) as usize,
            Job::Major(_) => 1 << 20,
        }
    }
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
    let store = &matrix.store;
    let path = &matrix.def.path;
    let element = store.element(path).map_err(store_err)?;
    if matrix.column_major || element.encoding != annql_store::Encoding::CsrMatrix {
        return Ok(None);
    }
    let Some(chunk) = store.sparse_chunk_len(path) else {
        return Ok(None);
    };
    let n_rows = selected.len() as u64;
    let indptr = store
        .read_offsets(&format!("{path}/indptr"), 0..n_rows + 1, stats)
        .map_err(store_err)?;
    if indptr.windows(2).any(|w| w[0] > w[1]) {
        return Err(DataFusionError::Execution(format!(
            "{}: element '{path}/indptr' is not non-decreasing",
            store.name()
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

/// Stored entries decoded before they are added to a tiled grid: 32 Mi entries (256 MiB of f32
/// values and u32 indices). The larger the window, the more rows each tile takes per visit, and
/// the fewer times the grid streams through the caches.
const WINDOW_ENTRIES: usize = 1 << 25;

/// Entries per chunk-aligned job of the fused fold: small chunks are grouped up to this, larger
/// ones are a job each (a one-chunk read decodes straight into its own buffer, with no copy into
/// a multi-chunk one).
const TARGET_JOB_ENTRIES: u64 = 1 << 18;

/// Streams the result grid in batches, skipping empty cells.
struct Output {
    spec: Arc<FusedSpec>,
    schema: SchemaRef,
    cells: Grouping,
    genes: Grouping,
    grid: Grid,
    channels: Vec<usize>,
    /// The next cell to look at; `None` once the grid is done.
    next: Option<Cell>,
    batch_size: usize,
    _reservation: MemoryReservation,
}

/// A grid cell located by its group, slot, tile and position in the tile. The output walks the
/// grid by stepping these, where dividing a cell number by slots and tile length for each of the
/// grid's (possibly tens of millions of) cells would cost more than everything else it does.
#[derive(Debug, Clone, Copy)]
struct Cell {
    group: usize,
    slot: usize,
    tile: usize,
    at: usize,
}

impl Output {
    fn new(
        run: Run,
        cells: Grouping,
        genes: Grouping,
        grid: Grid,
        reservation: MemoryReservation,
    ) -> Self {
        // Only the merged accumulators stay.
        let held = Accumulators::bytes(grid.len, &run.spec.aggs, run.spec.dense);
        reservation.shrink(reservation.size().saturating_sub(held));
        let (_, channels) = channel_of(&run.spec.aggs);
        let next = (grid.len > 0).then_some(Cell {
            group: 0,
            slot: 0,
            tile: 0,
            at: 0,
        });
        Self {
            batch_size: run.context.session_config().batch_size(),
            spec: run.spec,
            schema: run.schema,
            cells,
            genes,
            grid,
            next,
            channels,
            _reservation: reservation,
        }
    }

    fn batch(&self, ks: &[Cell]) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, key) in self.spec.keys.iter().enumerate() {
            let want = self.schema.field(i).data_type();
            let col: ArrayRef = match key {
                KeySource::Obs(c) | KeySource::Var(c) => {
                    let side = if matches!(key, KeySource::Obs(_)) {
                        &self.cells
                    } else {
                        &self.genes
                    };
                    let rows = UInt32Array::from_iter_values(ks.iter().map(|k| {
                        side.first_row[if matches!(key, KeySource::Obs(_)) {
                            k.group
                        } else {
                            k.slot
                        }]
                    }));
                    let batch = side.batch.as_ref().ok_or_else(|| {
                        DataFusionError::Internal("fused aggregate key without its side".into())
                    })?;
                    take(batch.column(*c), &rows, None)?
                }
                KeySource::MatrixRow => Arc::new(Int64Array::from_iter_values(
                    ks.iter().map(|k| self.cells.ids[k.group]),
                )),
                KeySource::MatrixCol => Arc::new(Int64Array::from_iter_values(
                    ks.iter().map(|k| self.genes.ids[k.slot]),
                )),
            };
            columns.push(if col.data_type() == want {
                col
            } else {
                cast(&col, want)?
            });
        }
        for (j, agg) in self.spec.aggs.iter().enumerate() {
            let want = self.schema.field(self.spec.keys.len() + j).data_type();
            let value = |k: &Cell| {
                let tile = self.grid.tile(k.tile);
                let zeros = if self.spec.dense {
                    (self.cells.members[k.group] * self.genes.members[k.slot])
                        .saturating_sub(tile.stored(k.at))
                } else {
                    0
                };
                finish(tile, self.channels[j], agg, k.at, zeros)
            };
            let col: ArrayRef = if matches!(agg.func, super::AggFunc::Count) {
                Arc::new(Int64Array::from_iter(ks.iter().map(|k| match value(k) {
                    Value::Int(i) => Some(i),
                    _ => None,
                })))
            } else {
                Arc::new(Float64Array::from_iter(ks.iter().map(|k| match value(k) {
                    Value::Float(f) => Some(f),
                    _ => None,
                })))
            };
            columns.push(if col.data_type() == want {
                col
            } else {
                cast(&col, want)?
            });
        }
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(ks.len())),
        )?)
    }
}

impl Iterator for Output {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let (slots, groups, dense) = (
            self.genes.members.len(),
            self.cells.members.len(),
            self.spec.dense,
        );
        // Cells are written at `n` and kept by advancing it: no branch on whether a cell is
        // present, which is a coin toss per cell in a sparse grid.
        let first = self.next?;
        let (mut ks, mut n) = (vec![first; self.batch_size.max(1)], 0);
        while let Some(mut cell) = self.next
            && n < ks.len()
        {
            // Walk the rest of the cell's tile, with its touched cells looked up once.
            let tile = self.grid.tile(cell.tile);
            let touched = tile.touched_cells();
            loop {
                let present = if dense {
                    self.cells.members[cell.group] > 0 && self.genes.members[cell.slot] > 0
                } else {
                    touched.get(cell.at)
                };
                ks[n] = cell;
                n += usize::from(present);
                cell.slot += 1;
                if cell.slot == slots {
                    cell.slot = 0;
                    cell.group += 1;
                }
                cell.at += 1;
                if cell.at == tile.len || n == ks.len() {
                    break;
                }
            }
            if cell.at == tile.len {
                cell.at = 0;
                cell.tile += 1;
            }
            // The last tile ends with the last group.
            self.next = (cell.group < groups).then_some(cell);
        }
        ks.truncate(n);
        if ks.is_empty() {
            return None;
        }
        Some(self.batch(&ks))
    }
}
