//! Joins yield to the runtime between their output batches.
//!
//! One input batch of a join can fan out into thousands of output batches, all computed within
//! a single poll of the task that drives the join. DataFusion's own cooperation
//! (`EnsureCooperative`) spends a task's tokio budget only where batches enter the plan, so such a
//! task may not return to the runtime for many seconds — and a dropped or cancelled query stops
//! only when its tasks yield. [`CooperativeJoins`] wraps each join (and unnest, the other
//! operator whose output outgrows its input) in DataFusion's [`CooperativeExec`], which spends
//! budget per output batch. It is a plain DataFusion node, so plans still serialize.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::unnest::UnnestExec;

/// Wraps every join and unnest in a [`CooperativeExec`] (see the module docs).
#[derive(Debug, Default)]
pub struct CooperativeJoins;

impl PhysicalOptimizerRule for CooperativeJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Children are wrapped from their parent, so a second run sees them under their
        // CooperativeExec and leaves them.
        let plan = plan
            .transform_up(|node| {
                if node.is::<CooperativeExec>()
                    || !node.children().iter().any(|c| fans_out(c.as_ref()))
                {
                    return Ok(Transformed::no(node));
                }
                let children = node
                    .children()
                    .into_iter()
                    .map(|c| {
                        if fans_out(c.as_ref()) {
                            Arc::new(CooperativeExec::new(c.clone())) as Arc<dyn ExecutionPlan>
                        } else {
                            c.clone()
                        }
                    })
                    .collect();
                Ok(Transformed::yes(node.replace_children(
                    children,
                    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                )?))
            })
            .data()?;
        Ok(if fans_out(plan.as_ref()) {
            Arc::new(CooperativeExec::new(plan))
        } else {
            plan
        })
    }

    fn name(&self) -> &str {
        "cooperative_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether a node's output can be far larger than its input.
fn fans_out(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<HashJoinExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<CrossJoinExec>()
        || plan.is::<SortMergeJoinExec>()
        || plan.is::<SymmetricHashJoinExec>()
        || plan.is::<PiecewiseMergeJoinExec>()
        || plan.is::<UnnestExec>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn every_join_gets_one_cooperative_parent() -> Result<()> {
        let ctx = SessionContext::new();
        let plan = ctx
            .sql(
                "SELECT count(*) FROM (VALUES (1, 2), (2, 3)) a(k, v) \
                 JOIN (VALUES (1, 5), (2, 6)) b(k, w) ON a.k = b.k \
                 JOIN (VALUES (1), (2)) c(k) ON b.k = c.k",
            )
            .await?
            .create_physical_plan()
            .await?;
        let rule = CooperativeJoins;
        let once = rule.optimize(plan, &ConfigOptions::default())?;
        let twice = rule.optimize(once.clone(), &ConfigOptions::default())?;
        let text = displayable(twice.as_ref()).indent(false).to_string();
        assert_eq!(text, displayable(once.as_ref()).indent(false).to_string());
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let joins: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].starts_with("HashJoinExec"))
            .collect();
        assert_eq!(joins.len(), 2, "{text}");
        for i in joins {
            assert_eq!(lines[i - 1], "CooperativeExec", "{text}");
        }
        Ok(())
    }
}
