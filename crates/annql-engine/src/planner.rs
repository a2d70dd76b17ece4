//! The session's query planner: DataFusion's physical planner with annql's extension planners
//! (today the fused aggregate's), so that the logical nodes annql's rules put in a plan become
//! annql's operators. Above the operators it plans, and used by the session alone.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::fused::FusedPlanner;

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
