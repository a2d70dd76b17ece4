//! [`FusedAggregateExec`], the physical operator that runs a [`FusedAggregateNode`], and the
//! extension planner that builds it from the node.
//!
//! The operator reads its children (the obs and var sides) whole, groups the matrix's axes by
//! them ([`super::grouping`]), folds the matrix's blocks into a grid of accumulators
//! ([`super::fold`]) and streams the grid out as batches ([`super::output`]).

use std::fmt;
use std::sync::Arc;

use annql_store::arrow::array::RecordBatch;
use annql_store::arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;

use super::fold::{choose_fold, run};
use super::grouping::{Grouping, apply_matrix_filters, collect_side, group, keep_rows};
use super::output::Output;
use super::rule::{FusedAggregateNode, describe};
use super::source::FusedMatrix;
use super::{FusedSpec, KeySource};

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

/// The fused group-by operator: one output partition per row slice of the matrix (one, unless a
/// cluster split it); its children (obs and var sides) are read whole, then the slice's blocks
/// are folded in parallel.
#[derive(Debug)]
pub struct FusedAggregateExec {
    spec: Arc<FusedSpec>,
    matrix: FusedMatrix,
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
        matrix: FusedMatrix,
        matrix_filters: Vec<Arc<dyn PhysicalExpr>>,
        obs: Option<Arc<dyn ExecutionPlan>>,
        var: Option<Arc<dyn ExecutionPlan>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(spec.slices.max(1)),
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

    /// The matrix it folds.
    pub fn matrix(&self) -> &FusedMatrix {
        &self.matrix
    }

    /// The matrix scan's own predicates (on `obs_id`/`var_id`), on the matrix's schema.
    pub fn matrix_filters(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.matrix_filters
    }
}

impl DisplayAs for FusedAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FusedAggregateExec: {}", describe(&self.spec))?;
        if let Some(n) = self.matrix.datasets() {
            write!(f, ", datasets={n}")?;
        }
        if let Some(copy) = self.matrix.csc_copy_location() {
            // Used when the selection keeps few genes (EXPLAIN ANALYZE: csc_copy_used).
            write!(f, ", csc_copy={copy}")?;
        }
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
        let slices = self.spec.slices.max(1);
        if partition >= slices {
            return Err(DataFusionError::Internal(format!(
                "FusedAggregateExec has {slices} partitions, asked for {partition}"
            )));
        }
        let run = Run {
            slice: partition,
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
    /// The row slice this partition folds.
    slice: usize,
    spec: Arc<FusedSpec>,
    matrix: FusedMatrix,
    matrix_filters: Vec<Arc<dyn PhysicalExpr>>,
    obs: Option<Arc<dyn ExecutionPlan>>,
    var: Option<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
    metrics: ExecutionPlanMetricsSet,
    context: Arc<TaskContext>,
}

impl Run {
    async fn go(self) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
        let (cells, genes) = self.groupings().await?;
        let groups = cells.members.len();
        let slots = genes.members.len();
        let len = groups.checked_mul(slots).ok_or_else(|| {
            DataFusionError::ResourcesExhausted("fused aggregate grid too large".into())
        })?;
        let threads = self.context.session_config().target_partitions().max(1);
        let parts = self.matrix.parts(&cells.of, &genes.of);
        let fold = choose_fold(&self.spec, parts, slots, len);
        let reservation =
            MemoryConsumer::new("FusedAggregateExec").register(self.context.memory_pool());
        reservation.try_grow(fold.bytes(&self.spec, threads))?;
        let grid = run(fold, &self.spec, threads, &self.metrics).await?;
        Ok(Box::new(Output::new(
            self.spec,
            self.schema,
            self.context.session_config().batch_size(),
            (cells, genes),
            grid,
            reservation,
        )))
    }

    /// Cells by the obs side's keys (or their ids) and genes by the var side's, less the cells
    /// and genes the matrix scan's own predicates drop.
    async fn groupings(&self) -> Result<(Grouping, Grouping)> {
        let (n_obs, n_var) = self.matrix.shape()?;
        self.matrix.check_axis(n_obs.max(n_var))?;
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
        let schema = self.matrix.schema();
        apply_matrix_filters(&schema, &self.matrix_filters, &mut cells, &mut genes)?;
        if self.spec.slices > 1 {
            let rows = self.matrix.slice(self.slice, self.spec.slices, n_obs);
            keep_rows(&mut cells, rows);
        }
        Ok((cells, genes))
    }
}
