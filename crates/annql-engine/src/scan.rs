//! [`AnnDataScanExec`]: the leaf operator that streams a table's blocks, reading only what the
//! query needs.
//!
//! Row pruning happens before any chunk is read: predicates on the major-axis id (`obs_id` for
//! CSR and dataframes, `var_id` for CSC) — static ones from the query, and the dynamic filters a
//! hash join pushes down once its build side (e.g. the filtered `obs`) is known — are evaluated on
//! the candidate ids of each block. Blocks with no surviving id are skipped; the others read only
//! the span of surviving rows. Categorical predicates are evaluated once per category and applied
//! by code. Everything else is evaluated on the decoded batch.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use annql_store::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions,
};
use annql_store::arrow::compute::{and_kleene, filter_record_batch};
use annql_store::arrow::datatypes::SchemaRef;
use annql_store::{ReadStats, SparseCarry};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Statistics, stats::Precision};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

use crate::decode::probe_batch;
use crate::fetch::FetchMetrics;
use crate::pushdown::CodeFilter;
use crate::table::AnnTable;

// TODO(merge): `fused/exec.rs` reaches these as `crate::scan::…`; re-exported at the old path
// until it imports `crate::blocks` (then a plain `use`).
pub(crate) use crate::blocks::{prefer_columns, selected_spans};

/// The parameters of a scan: plain data, so a plan can be shipped to another executor.
#[derive(Debug, Clone)]
pub struct ScanParams {
    /// Output columns, as indices into the table schema.
    pub projection: Vec<usize>,
    /// Major-axis blocks, grouped into partitions.
    pub partitions: Vec<Vec<Range<u64>>>,
    /// Stop after this many rows (per partition).
    pub limit: Option<usize>,
}

/// Scans one AnnData table.
#[derive(Debug)]
pub struct AnnDataScanExec {
    table: Arc<AnnTable>,
    params: ScanParams,
    /// Static predicates from the query, on the table schema; all are applied exactly.
    filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Which of `filters` depend on the major id alone (applied before reading).
    id_filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Categorical predicates applied by code.
    code_filters: Vec<Arc<CodeFilter>>,
    /// The rest, applied to decoded batches.
    batch_filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Dynamic filters pushed by joins, on the output schema; used to prune rows only.
    dynamic_filters: Vec<Arc<dyn PhysicalExpr>>,
    /// Row count: exact for an unfiltered table (answers `count(*)` without a scan), an upper
    /// bound otherwise (lets join planning put the smaller side first).
    row_count: Precision<usize>,
    metrics: ExecutionPlanMetricsSet,
    /// Network gauges of a remote store, started by the first partition.
    fetch: Arc<std::sync::OnceLock<Option<FetchMetrics>>>,
    cache: Arc<PlanProperties>,
}

impl AnnDataScanExec {
    /// Plans a scan of `table` with exact `filters` (on the table schema).
    pub fn try_new(
        table: Arc<AnnTable>,
        params: ScanParams,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        code_filters: Vec<Arc<CodeFilter>>,
    ) -> Result<Self> {
        let schema = Arc::new(table.schema().project(&params.projection)?);
        let major = table.major_id_column();
        let (mut id_filters, mut batch_filters) = (Vec::new(), Vec::new());
        for f in filters
            .iter()
            .filter(|f| !code_filters.iter().any(|c| Arc::ptr_eq(c.expr(), f)))
        {
            let cols = collect_columns(f);
            if major.is_some_and(|m| !cols.is_empty() && cols.iter().all(|c| c.index() == m)) {
                id_filters.push(f.clone());
            } else {
                batch_filters.push(f.clone());
            }
        }
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(params.partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            table,
            params,
            filters,
            id_filters,
            code_filters,
            batch_filters,
            dynamic_filters: Vec::new(),
            row_count: Precision::Absent,
            metrics: ExecutionPlanMetricsSet::new(),
            fetch: Arc::default(),
            cache,
        })
    }

    /// Declares the number of rows of the table; exact only if the scan has no filter or limit.
    pub fn with_row_count(mut self, rows: Option<u64>) -> Self {
        let exact = self.filters.is_empty() && self.params.limit.is_none();
        self.row_count = match rows {
            Some(n) if exact => Precision::Exact(n as usize),
            Some(n) => {
                Precision::Inexact(self.params.limit.map_or(n as usize, |l| l.min(n as usize)))
            }
            None => Precision::Absent,
        };
        self
    }

    /// The table scanned.
    pub fn table(&self) -> &Arc<AnnTable> {
        &self.table
    }

    /// The scan parameters.
    pub fn params(&self) -> &ScanParams {
        &self.params
    }

    /// Dynamic filters absorbed from joins.
    pub fn dynamic_filters(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.dynamic_filters
    }

    fn with_dynamic_filters(&self, dynamic_filters: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        Self {
            table: self.table.clone(),
            params: self.params.clone(),
            filters: self.filters.clone(),
            id_filters: self.id_filters.clone(),
            code_filters: self.code_filters.clone(),
            batch_filters: self.batch_filters.clone(),
            dynamic_filters,
            row_count: self.row_count,
            metrics: ExecutionPlanMetricsSet::new(),
            fetch: Arc::default(),
            cache: self.cache.clone(),
        }
    }

    /// Which table columns must be decoded: the projection and what the batch filters use.
    fn needed_columns(&self) -> Vec<bool> {
        let mut needed = vec![false; self.table.schema().fields().len()];
        for &i in &self.params.projection {
            needed[i] = true;
        }
        for f in &self.batch_filters {
            for c in collect_columns(f) {
                needed[c.index()] = true;
            }
        }
        for c in &self.code_filters {
            needed[c.column()] = true;
        }
        needed
    }
}

impl DisplayAs for AnnDataScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.table.schema();
        let names: Vec<&str> = self
            .params
            .projection
            .iter()
            .map(|&i| schema.field(i).name().as_str())
            .collect();
        let blocks: usize = self.params.partitions.iter().map(Vec::len).sum();
        let def = self.table.def();
        write!(
            f,
            "AnnDataScanExec: table={}, element=/{}, projection=[{}]",
            def.name,
            def.path,
            names.join(", ")
        )?;
        let show = |v: &[Arc<dyn PhysicalExpr>]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        if !self.id_filters.is_empty() {
            write!(f, ", row_selection=[{}]", show(&self.id_filters))?;
        }
        if !self.code_filters.is_empty() {
            let c: Vec<String> = self
                .code_filters
                .iter()
                .map(|c| c.expr().to_string())
                .collect();
            write!(f, ", categorical_filters=[{}]", c.join(" AND "))?;
        }
        if !self.batch_filters.is_empty() {
            write!(f, ", filters=[{}]", show(&self.batch_filters))?;
        }
        if !self.dynamic_filters.is_empty() && t != DisplayFormatType::TreeRender {
            write!(
                f,
                ", dynamic_row_selection=[{}]",
                show(&self.dynamic_filters)
            )?;
        }
        if let Some(l) = self.params.limit {
            write!(f, ", limit={l}")?;
        }
        write!(
            f,
            ", blocks={blocks}, partitions={}",
            self.params.partitions.len()
        )
    }
}

impl ExecutionPlan for AnnDataScanExec {
    fn name(&self) -> &str {
        "AnnDataScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self.filters.iter().chain(&self.dynamic_filters) {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: datafusion::physical_plan::execution_plan::ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema());
        if args.partition().is_none() {
            let rows = match (self.row_count, self.dynamic_filters.is_empty()) {
                (Precision::Exact(n), false) => Precision::Inexact(n),
                (p, _) => p,
            };
            stats = stats.with_num_rows(rows);
        }
        Ok(Arc::new(stats))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        // Filters arriving here (a join's dynamic filter, a FilterExec's predicate) are only used to
        // skip rows; they are reported as not pushed, so their owner still applies them exactly.
        let filters: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result
            .parent_filters
            .iter()
            .map(|f| f.filter.clone())
            .collect();
        let mut result = FilterPushdownPropagation {
            filters: vec![PushedDown::No; filters.len()],
            updated_node: None,
        };
        let id_names: Vec<String> = [self.table.major_id_column(), self.table.minor_id_column()]
            .into_iter()
            .flatten()
            .map(|i| self.table.schema().field(i).name().clone())
            .collect();
        let output = self.schema();
        // Usable: filters on one id column (the major one prunes rows, the minor one masks entries).
        let usable: Vec<_> = filters
            .into_iter()
            .filter(|f| {
                let cols = collect_columns(f);
                let names: std::collections::HashSet<&str> =
                    cols.iter().map(|c| c.name()).collect();
                phase == FilterPushdownPhase::Post
                    && names.len() == 1
                    && cols.iter().all(|c| {
                        id_names.iter().any(|n| n == c.name())
                            && output.field(c.index()).name() == c.name()
                    })
            })
            .collect();
        if !usable.is_empty() {
            let mut all = self.dynamic_filters.clone();
            all.extend(usable);
            result = result.with_updated_node(
                Arc::new(self.with_dynamic_filters(all)) as Arc<dyn ExecutionPlan>
            );
        }
        Ok(result)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let blocks = self
            .params
            .partitions
            .get(partition)
            .cloned()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("AnnDataScanExec has no partition {partition}"))
            })?;
        // The decoded block a partition holds until it is passed on counts against the session's
        // memory limit (a block that does not fit is an error, not an overrun).
        let reservation = Arc::new(std::sync::Mutex::new(
            MemoryConsumer::new(format!("AnnDataScanExec[{partition}]"))
                .register(context.memory_pool()),
        ));
        let metric =
            |name: &'static str| MetricBuilder::new(&self.metrics).counter(name, partition);
        let metrics = ScanMetrics {
            copy_reads: metric("csc_copy_reads"),
            bytes: metric("bytes_read"),
            chunks: metric("chunks_read"),
            requests: metric("requests"),
            blocks_read: metric("blocks_read"),
            blocks_pruned: metric("blocks_pruned"),
        };
        let span = match (blocks.first(), blocks.last()) {
            (Some(a), Some(b)) => a.start..b.end,
            _ => 0..0,
        };
        let state = Arc::new(ScanState {
            span,
            use_copy: std::sync::OnceLock::new(),
            table: self.table.clone(),
            needed: self.needed_columns(),
            projection: self.params.projection.clone(),
            output: self.schema(),
            id_filters: self.id_filters.clone(),
            code_filters: self.code_filters.clone(),
            batch_filters: self.batch_filters.clone(),
            stats: ReadStats::new_shared(),
            metrics,
            carry: Default::default(),
        });
        FetchMetrics::once(&self.fetch, &self.table.store, &self.metrics);
        let fetch = self.fetch.clone();
        let dynamic = self.dynamic_filters.clone();
        let limit = self.params.limit;
        let progress = self.table.progress.clone();
        progress.plan(blocks.len());
        let schema = self.schema();
        let mut emitted = 0usize;
        let stream = futures::stream::iter(blocks)
            .then(move |block| {
                let state = state.clone();
                let dynamic = dynamic.clone();
                let fetch = fetch.clone();
                let reservation = reservation.clone();
                async move {
                    // A join's filter is taken as it stands when the block is read: by then the
                    // join's build side is normally complete; if not, it prunes less, never wrongly.
                    let snapshots = dynamic
                        .iter()
                        .map(|f| snapshot_physical_expr(f.clone()))
                        .collect::<Result<Vec<_>>>()?;
                    let progress = state.table.progress.clone();
                    let result =
                        tokio::task::spawn_blocking(move || state.scan_block(block, &snapshots))
                            .await;
                    progress.step();
                    if let Some(Some(f)) = fetch.get() {
                        f.update();
                    }
                    let batches = result.map_err(|e| DataFusionError::External(Box::new(e)))??;
                    let bytes = batches.iter().map(|b| b.get_array_memory_size()).sum();
                    reservation
                        .lock()
                        .map_err(|_| DataFusionError::Internal("scan reservation poisoned".into()))?
                        .try_resize(bytes)?;
                    Ok(batches)
                }
            })
            .flat_map(|r: Result<Vec<RecordBatch>>| {
                futures::stream::iter(match r {
                    Ok(batches) => batches.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                })
            })
            .take_while(move |r| {
                let go = limit.is_none_or(|l| emitted < l);
                if let Ok(b) = r {
                    emitted += b.num_rows();
                }
                async move { go }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

struct ScanMetrics {
    /// Partitions that read the CSC copy instead of their rows.
    copy_reads: Count,
    bytes: Count,
    chunks: Count,
    requests: Count,
    blocks_read: Count,
    blocks_pruned: Count,
}

/// What one partition's stream needs to turn a block into a batch.
struct ScanState {
    /// The partition's whole major range.
    span: Range<u64>,
    /// Whether the partition reads the CSC copy instead of its blocks (decided at its first
    /// block, when the join filters are known; the copy is then read at once).
    use_copy: std::sync::OnceLock<bool>,
    table: Arc<AnnTable>,
    needed: Vec<bool>,
    projection: Vec<usize>,
    output: SchemaRef,
    id_filters: Vec<Arc<dyn PhysicalExpr>>,
    code_filters: Vec<Arc<CodeFilter>>,
    batch_filters: Vec<Arc<dyn PhysicalExpr>>,
    stats: Arc<ReadStats>,
    metrics: ScanMetrics,
    /// The entries decoded past the last block, which the partition's next block starts with
    /// (blocks are read in order, so a chunk two blocks share is decoded once).
    carry: std::sync::Mutex<SparseCarry>,
}

impl ScanState {
    fn scan_block(
        &self,
        block: Range<u64>,
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Vec<RecordBatch>> {
        self.table.check_first_read()?;
        if let Some(copy) = self.table.csc_copy() {
            match self.use_copy.get() {
                Some(true) => return Ok(Vec::new()),
                Some(false) => {}
                None => {
                    let batches = self.scan_copy(copy, dynamic)?;
                    // Blocks of a partition run one after another: nothing else sets it.
                    let _ = self.use_copy.set(batches.is_some());
                    if let Some(batches) = batches {
                        return Ok(batches);
                    }
                }
            }
        }
        self.scan_rows(block, dynamic)
    }

    /// Reads this partition's rows of the selected genes from the CSC copy, when the selection
    /// makes that cheaper than reading the rows (see [`prefer_columns`]); None otherwise.
    fn scan_copy(
        &self,
        copy: &Arc<AnnTable>,
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Option<Vec<RecordBatch>>> {
        let Some(genes) = self.minor_mask(dynamic)? else {
            return Ok(None);
        };
        let keep = self.prune(&self.span, dynamic)?;
        let n_cells = self.table.major_len as usize;
        let kept_cells = keep.as_ref().map_or(self.span.end - self.span.start, |k| {
            k.iter().filter(|&&b| b).count() as u64
        });
        let kept_genes = genes.iter().filter(|&&b| b).count() as u64;
        if !prefer_columns(kept_cells, n_cells as u64, kept_genes, genes.len() as u64) {
            return Ok(None);
        }
        copy.check_first_read()?;
        self.metrics.copy_reads.add(1);
        // The copy's minor axis is cells: those of this partition that survive the filters.
        let mut cells = vec![false; n_cells];
        for (i, c) in (self.span.start as usize..self.span.end as usize).enumerate() {
            cells[c] = keep.as_ref().is_none_or(|k| k[i]);
        }
        let mut out = Vec::new();
        for run in selected_spans(genes.iter().copied(), copy.block_rows, 0) {
            let before = (
                self.stats.bytes(),
                self.stats.requests(),
                self.stats.key_count(),
            );
            let gene_keep = &genes[run.start as usize..run.end as usize];
            let batches = copy.read_block(
                run,
                &self.needed,
                Some(gene_keep),
                Some(&cells),
                &mut *self.carry()?,
                &self.stats,
            )?;
            self.count_read(before);
            for batch in batches {
                out.extend(self.finish(batch)?);
            }
        }
        Ok(Some(out))
    }

    fn carry(&self) -> Result<std::sync::MutexGuard<'_, SparseCarry>> {
        self.carry
            .lock()
            .map_err(|_| DataFusionError::Internal("scan carry lock poisoned".into()))
    }

    fn count_read(&self, before: (u64, u64, usize)) {
        self.metrics.blocks_read.add(1);
        self.metrics
            .bytes
            .add((self.stats.bytes() - before.0) as usize);
        self.metrics
            .requests
            .add((self.stats.requests() - before.1) as usize);
        self.metrics.chunks.add(self.stats.key_count() - before.2);
    }

    fn scan_rows(
        &self,
        block: Range<u64>,
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Vec<RecordBatch>> {
        let keep = self.prune(&block, dynamic)?;
        let minor_keep = self.minor_mask(dynamic)?;
        if minor_keep.as_ref().is_some_and(|m| !m.iter().any(|&b| b)) {
            self.metrics.blocks_pruned.add(1);
            return Ok(Vec::new());
        }
        let span = match &keep {
            None => block.clone(),
            Some(k) => match (k.iter().position(|&b| b), k.iter().rposition(|&b| b)) {
                (Some(first), Some(last)) => {
                    block.start + first as u64..block.start + last as u64 + 1
                }
                _ => {
                    self.metrics.blocks_pruned.add(1);
                    return Ok(Vec::new());
                }
            },
        };
        let span_keep = keep.as_ref().map(|k| {
            let (a, b) = (
                (span.start - block.start) as usize,
                (span.end - block.start) as usize,
            );
            k[a..b].to_vec()
        });
        let before = (
            self.stats.bytes(),
            self.stats.requests(),
            self.stats.key_count(),
        );
        let batches = self.table.read_block(
            span,
            &self.needed,
            span_keep.as_deref(),
            minor_keep.as_deref(),
            &mut *self.carry()?,
            &self.stats,
        )?;
        self.count_read(before);
        let mut out = Vec::with_capacity(batches.len());
        for batch in batches {
            out.extend(self.finish(batch)?);
        }
        Ok(out)
    }

    /// Applies the filters left for decoded batches and projects.
    fn finish(&self, batch: RecordBatch) -> Result<Option<RecordBatch>> {
        let mut mask: Option<BooleanArray> = None;
        for c in &self.code_filters {
            mask = Some(combine(mask, c.evaluate(&batch)?)?);
        }
        for f in &self.batch_filters {
            let result = f.evaluate(&batch)?.into_array(batch.num_rows())?;
            let result = result
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Plan(format!("filter {f} is not boolean")))?
                .clone();
            mask = Some(combine(mask, result)?);
        }
        let batch = match mask {
            Some(m) => filter_record_batch(&batch, &m)?,
            None => batch,
        };
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let projected = batch.project(&self.projection)?;
        let options = RecordBatchOptions::new().with_row_count(Some(projected.num_rows()));
        Ok(Some(RecordBatch::try_new_with_options(
            self.output.clone(),
            projected.columns().to_vec(),
            &options,
        )?))
    }

    /// Which minor positions (genes of a CSR matrix) survive the join filters on the minor id.
    fn minor_mask(&self, dynamic: &[Arc<dyn PhysicalExpr>]) -> Result<Option<Vec<bool>>> {
        let (Some(minor), Some(len)) = (self.table.minor_id_column(), self.table.minor_len())
        else {
            return Ok(None);
        };
        let name = self.table.schema().field(minor).name().clone();
        let Ok(col) = self.output.index_of(&name) else {
            return Ok(None);
        };
        let on_minor: Vec<_> = dynamic
            .iter()
            .filter(|f| collect_columns(f).iter().all(|c| c.index() == col))
            .collect();
        // The query's own predicates on the minor id (applied to batches anyway) select too.
        let static_minor: Vec<_> = self
            .batch_filters
            .iter()
            .filter(|f| {
                let cols = collect_columns(f);
                !cols.is_empty() && cols.iter().all(|c| c.index() == minor)
            })
            .collect();
        if on_minor.is_empty() && static_minor.is_empty() {
            return Ok(None);
        }
        // One id per minor position, sized from the declared shape: within the read limit.
        let what = format!("the {len} ids of the minor axis");
        let bytes = len.saturating_mul(8);
        self.table
            .store
            .check_alloc(&self.table.def.path, &what, bytes)
            .map_err(crate::error::store_err)?;
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..len as i64));
        let mut mask = None;
        if !on_minor.is_empty() {
            let batch = probe_batch(&self.output, col, ids.clone())?;
            mask = mask_of(on_minor, &batch)?;
        }
        if !static_minor.is_empty() {
            let batch = probe_batch(&self.table.schema(), minor, ids)?;
            mask = and_flags(mask, mask_of(static_minor, &batch)?);
        }
        Ok(mask)
    }

    /// Which major positions of `block` survive the id predicates (None: all, without checking).
    fn prune(
        &self,
        block: &Range<u64>,
        dynamic: &[Arc<dyn PhysicalExpr>],
    ) -> Result<Option<Vec<bool>>> {
        if self.id_filters.is_empty() && dynamic.is_empty() {
            return Ok(None);
        }
        let Some(major) = self.table.major_id_column() else {
            return Ok(None);
        };
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
            block.start as i64..block.end as i64,
        ));
        let mut keep: Option<Vec<bool>> = None;
        if !self.id_filters.is_empty() {
            let batch = probe_batch(&self.table.schema(), major, ids.clone())?;
            keep = and_flags(keep, mask_of(&self.id_filters, &batch)?);
        }
        let name = self.table.schema().field(major).name().clone();
        if let Ok(col) = self.output.index_of(&name) {
            let on_major: Vec<_> = dynamic
                .iter()
                .filter(|f| collect_columns(f).iter().all(|c| c.index() == col))
                .collect();
            if !on_major.is_empty() {
                let batch = probe_batch(&self.output, col, ids)?;
                keep = and_flags(keep, mask_of(on_major, &batch)?);
            }
        }
        Ok(keep)
    }
}

/// Evaluates predicates on a batch and ANDs them into one flag per row (NULL counts as false).
fn mask_of<'a>(
    filters: impl IntoIterator<Item = &'a Arc<dyn PhysicalExpr>>,
    batch: &RecordBatch,
) -> Result<Option<Vec<bool>>> {
    let mut mask: Option<BooleanArray> = None;
    for f in filters {
        mask = Some(combine(
            mask,
            as_bool(f.evaluate(batch)?.into_array(batch.num_rows())?)?,
        )?);
    }
    Ok(mask.map(|m| m.iter().map(|v| v == Some(true)).collect()))
}

fn and_flags(a: Option<Vec<bool>>, b: Option<Vec<bool>>) -> Option<Vec<bool>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.iter().zip(&b).map(|(x, y)| *x && *y).collect()),
        (a, b) => a.or(b),
    }
}

fn as_bool(a: ArrayRef) -> Result<BooleanArray> {
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Plan("row filter is not boolean".into()))
}

fn combine(acc: Option<BooleanArray>, next: BooleanArray) -> Result<BooleanArray> {
    Ok(match acc {
        None => next,
        Some(a) => and_kleene(&a, &next)?,
    })
}
