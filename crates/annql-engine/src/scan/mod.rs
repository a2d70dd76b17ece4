//! [`AnnDataScanExec`]: the leaf operator that streams a table's blocks, reading only what the
//! query needs.
//!
//! Row pruning happens before any chunk is read: predicates on the major-axis id (`obs_id` for
//! CSR and dataframes, `var_id` for CSC) — static ones from the query, and the dynamic filters a
//! hash join pushes down once its build side (e.g. the filtered `obs`) is known — are evaluated on
//! the candidate ids of each block. Blocks with no surviving id are skipped; the others read only
//! the span of surviving rows. Categorical predicates are evaluated once per category and applied
//! by code. Everything else is evaluated on the decoded batch ([`crate::pushdown::place_filter`]
//! decides which). What a partition does to each block is [`partition`].

mod partition;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use annql_store::ReadStats;
use annql_store::arrow::array::RecordBatch;
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
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

use self::partition::{ScanMetrics, ScanState};
use crate::fetch::FetchMetrics;
use crate::pushdown::{CodeFilter, FilterPlacement, place_physical};
use crate::table::AnnTable;

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
    /// Those of `batch_filters` on the minor id alone, which also select entries.
    minor_filters: Vec<Arc<dyn PhysicalExpr>>,
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
        let (mut id_filters, mut batch_filters, mut minor_filters) =
            (Vec::new(), Vec::new(), Vec::new());
        for f in filters
            .iter()
            .filter(|f| !code_filters.iter().any(|c| Arc::ptr_eq(c.expr(), f)))
        {
            match place_physical(f, &table) {
                FilterPlacement::RowSelection => id_filters.push(f.clone()),
                placement => {
                    if placement == (FilterPlacement::BatchFilter { on_minor_id: true }) {
                        minor_filters.push(f.clone());
                    }
                    batch_filters.push(f.clone());
                }
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
            minor_filters,
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

    /// The static predicates, on the table schema (all applied exactly).
    pub fn filters(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.filters
    }

    /// Dynamic filters absorbed from joins.
    pub fn dynamic_filters(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.dynamic_filters
    }

    /// The same scan with `added` dynamic filters (a collection's scan hands each dataset the
    /// joins' filters it received, translated to the dataset's ids).
    pub(crate) fn with_added_dynamic_filters(&self, added: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        let mut all = self.dynamic_filters.clone();
        all.extend(added);
        self.with_dynamic_filters(all)
    }

    fn with_dynamic_filters(&self, dynamic_filters: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        Self {
            table: self.table.clone(),
            params: self.params.clone(),
            filters: self.filters.clone(),
            id_filters: self.id_filters.clone(),
            code_filters: self.code_filters.clone(),
            batch_filters: self.batch_filters.clone(),
            minor_filters: self.minor_filters.clone(),
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
        if let Some(copy) = self.table.csc_copy_location() {
            // Read instead of the rows when the selection keeps few genes (EXPLAIN ANALYZE:
            // csc_copy_reads).
            write!(f, ", csc_copy={copy}")?;
        }
        let show = |v: &[Arc<dyn PhysicalExpr>]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        if !self.id_filters.is_empty() {
            let label = FilterPlacement::RowSelection.label();
            write!(f, ", {label}=[{}]", show(&self.id_filters))?;
        }
        if !self.code_filters.is_empty() {
            let c: Vec<String> = self
                .code_filters
                .iter()
                .map(|c| c.expr().to_string())
                .collect();
            let label = FilterPlacement::CategoricalCodes.label();
            write!(f, ", {label}=[{}]", c.join(" AND "))?;
        }
        if !self.batch_filters.is_empty() {
            let label = FilterPlacement::BatchFilter { on_minor_id: false }.label();
            write!(f, ", {label}=[{}]", show(&self.batch_filters))?;
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
            minor_filters: self.minor_filters.clone(),
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
                        crate::schedule::blocking(move || state.scan_block(block, &snapshots))
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
