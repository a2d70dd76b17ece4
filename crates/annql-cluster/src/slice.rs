//! One task per partition of annql's operators.
//!
//! Ballista hands each task a copy of its stage's plan cut down to the task's partitions, and
//! it knows how to cut only its own readers and DataFusion's file and memory scans. An operator
//! it does not know keeps all its partitions, and the task would run every one of them: each
//! task would read the whole table, and the answer would count it once per task. So on the
//! scheduler, [`SlicePartitions`] replaces each of annql's multi-partition operators with a union
//! of [`PartitionSliceExec`]s, one per partition: a slice runs one partition of the operator
//! (held inside it, out of Ballista's sight), and has as its only input an empty one-partition memory scan
//! that Ballista can cut. A task that does not own the slice gets that scan cut to no partition, and
//! the slice then has none either.

use std::fmt;
use std::sync::Arc;

use annql_engine::AnnDataScanExec;
use annql_engine::fused::FusedAggregateExec;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::config::ConfigOptions;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};

/// Partition `partition` of `inner`, run when its gate has a partition.
#[derive(Debug)]
pub struct PartitionSliceExec {
    inner: Arc<dyn ExecutionPlan>,
    partition: usize,
    gate: Arc<dyn ExecutionPlan>,
    cache: Arc<PlanProperties>,
}

impl PartitionSliceExec {
    /// The slice of `inner` at `partition`, gated by `gate` (an empty scan of one partition,
    /// or none once Ballista cut it away).
    pub fn try_new(
        inner: Arc<dyn ExecutionPlan>,
        partition: usize,
        gate: Arc<dyn ExecutionPlan>,
    ) -> Result<Self> {
        let count = inner.output_partitioning().partition_count();
        if partition >= count {
            return Err(DataFusionError::Plan(format!(
                "a slice of partition {partition} of {} (which has {count})",
                inner.name()
            )));
        }
        let open = gate.output_partitioning().partition_count().min(1);
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(inner.schema()),
            Partitioning::UnknownPartitioning(open),
            inner.pipeline_behavior(),
            inner.boundedness(),
        ));
        Ok(Self {
            inner,
            partition,
            gate,
            cache,
        })
    }

    /// The operator sliced.
    pub fn inner(&self) -> &Arc<dyn ExecutionPlan> {
        &self.inner
    }

    /// Its partition this slice runs.
    pub fn partition(&self) -> usize {
        self.partition
    }
}

impl DisplayAs for PartitionSliceExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PartitionSliceExec: partition={} of ", self.partition)?;
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for PartitionSliceExec {
    fn name(&self) -> &str {
        "PartitionSliceExec"
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        // The sliced operator's expressions are its own; the slice has none.
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.gate]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [gate] = <[_; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!("PartitionSliceExec takes 1 child, got {}", c.len()))
        })?;
        Ok(Arc::new(Self::try_new(
            self.inner.clone(),
            self.partition,
            gate,
        )?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        // Always some (an operator without metrics gets an empty set, no error is dropped):
        // Ballista matches a stage's operators with its tasks' metrics one to one.
        Some(self.inner.metrics().unwrap_or_default())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.cache.output_partitioning().partition_count() {
            return Err(DataFusionError::Internal(format!(
                "PartitionSliceExec of partition {} asked for its partition {partition}",
                self.partition
            )));
        }
        self.inner.execute(self.partition, context)
    }
}

/// Replaces annql's operators with unions of their partitions' slices (see the module doc).
/// Appended to the scheduler's physical optimizer rules, so it sees the final plan.
#[derive(Debug, Default)]
pub struct SlicePartitions;

impl PhysicalOptimizerRule for SlicePartitions {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            if !(node.is::<AnnDataScanExec>() || node.is::<FusedAggregateExec>()) {
                return Ok(Transformed::no(node));
            }
            let count = node.output_partitioning().partition_count();
            if count == 0 {
                return Ok(Transformed::no(node));
            }
            // One empty partition: Ballista cuts memory scans to a task's partitions, and a
            // memory scan reports metrics on either side of the cut (a placeholder row does not,
            // and Ballista's metrics of the stage and of its tasks would then disagree).
            let gate = MemorySourceConfig::try_new_exec(&[vec![]], Arc::new(Schema::empty()), None)?
                as Arc<dyn ExecutionPlan>;
            let slices = (0..count)
                .map(|p| {
                    Ok(
                        Arc::new(PartitionSliceExec::try_new(node.clone(), p, gate.clone())?)
                            as Arc<dyn ExecutionPlan>,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let sliced = if slices.len() == 1 {
                slices
                    .into_iter()
                    .next()
                    .ok_or_else(|| DataFusionError::Internal("one slice expected".into()))?
            } else {
                UnionExec::try_new(slices)?
            };
            // The operator's own inputs travel inside the slices: nothing below is visited.
            Ok(Transformed::new(sliced, true, TreeNodeRecursion::Jump))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "annql_slice_partitions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
