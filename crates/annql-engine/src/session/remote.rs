//! Where a session's queries run: in this process, or on a cluster that a front-end above the
//! engine connects to (`annql-cluster` runs them on Apache Ballista).

use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::provider::AnnDataTableProvider;

/// Runs a session's queries elsewhere.
pub trait RemoteRunner: Send + Sync + std::fmt::Debug {
    /// The context that executes plans remotely (its query planner submits them).
    fn context(&self) -> &SessionContext;

    /// Why `plan` cannot run remotely, if it cannot: it then runs in this process.
    fn why_local(&self, plan: &LogicalPlan) -> Option<String>;
}

/// Why a plan cannot be shipped to processes that open its tables again by address
/// ([`crate::address`]): a table that is not a store's (a collection's, an in-memory or system
/// table), or no store's table at all (nothing for a cluster to do).
pub fn why_not_shippable(plan: &LogicalPlan) -> Option<String> {
    let mut why = None;
    let mut stores = 0;
    // The closure never fails; a traversal error would only mean "no reason found".
    let walked = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            // A source that is no provider is not one a cluster can open: not shippable.
            let shippable = source_as_provider(&scan.source)
                .ok()
                .is_some_and(|p| p.downcast_ref::<AnnDataTableProvider>().is_some());
            if !shippable {
                why = Some(format!(
                    "{} is not a table of an AnnData store (collections, system and in-memory \
                     tables are read in this process)",
                    scan.table_name
                ));
                return Ok(TreeNodeRecursion::Stop);
            }
            stores += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Err(e) = walked {
        return Some(format!("the plan could not be inspected: {e}"));
    }
    why.or_else(|| (stores == 0).then(|| "the statement reads no dataset".to_string()))
}

/// A runner over a context, shipping only what [`why_not_shippable`] allows.
#[derive(Clone)]
pub struct ContextRunner {
    ctx: Arc<SessionContext>,
}

impl std::fmt::Debug for ContextRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextRunner")
            .field("session", &self.ctx.session_id())
            .finish()
    }
}

impl ContextRunner {
    /// Runs plans on `ctx`.
    pub fn new(ctx: SessionContext) -> Self {
        Self { ctx: Arc::new(ctx) }
    }
}

impl RemoteRunner for ContextRunner {
    fn context(&self) -> &SessionContext {
        &self.ctx
    }

    fn why_local(&self, plan: &LogicalPlan) -> Option<String> {
        why_not_shippable(plan)
    }
}

/// Makes the runner of each session a front-end opens (a server's connections): what
/// `--cluster` gives `annql serve`.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// The runner `session`'s queries run through.
    fn runner(&self, session: &super::AnnSession) -> crate::Result<Arc<dyn RemoteRunner>>;
}
