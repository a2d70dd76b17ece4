//! [`SessionBuilder`]: a session's settings, set once.

use std::sync::{Arc, Mutex};

use annql_store::StorageOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::AnnSession;
use crate::error::Result;
use crate::export::WritePolicy;
use crate::fused::FusedAggregateRule;
use crate::planner::AnnQueryPlanner;

/// Settings for a session, set once through [`SessionBuilder`].
#[derive(Debug, Clone)]
pub struct SessionBuilder {
    target_partitions: usize,
    memory_limit: Option<usize>,
    batch_size: usize,
    fused: bool,
    information_schema: bool,
    storage: StorageOptions,
    read_limit: Option<u64>,
    write_policy: WritePolicy,
}

impl Default for SessionBuilder {
    fn default() -> Self {
        Self {
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            memory_limit: None,
            batch_size: 8192,
            fused: true,
            information_schema: true,
            storage: StorageOptions::default(),
            read_limit: None,
            write_policy: WritePolicy::default(),
        }
    }
}

impl SessionBuilder {
    /// Parallel partitions per scan (default: the number of cores).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.target_partitions = n.max(1);
        self
    }

    /// Caps the memory DataFusion operators may reserve (sorts and joins spill or fail beyond it).
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Rows per batch for DataFusion's own operators.
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Whether group-by aggregates over a matrix run as the fused sparse pass (default on); off,
    /// DataFusion's own joins and aggregates compute the same answers.
    pub fn with_fused_aggregate(mut self, on: bool) -> Self {
        self.fused = on;
        self
    }

    /// Whether DataFusion's own `information_schema` answers (default on). The PostgreSQL-wire
    /// server turns it off and registers one with PostgreSQL's type names instead.
    pub fn with_information_schema(mut self, on: bool) -> Self {
        self.information_schema = on;
        self
    }

    /// How remote stores attached without options of their own are reached (endpoint,
    /// credentials, cache…); `ATTACH … (key value)` options are applied on top.
    pub fn with_storage_options(mut self, options: StorageOptions) -> Self {
        self.storage = options;
        self
    }

    /// The most one read of an attached store may allocate (a decoded chunk, a row block, a
    /// category table, a zip member; default 1 GiB): what a file declares beyond it is an error
    /// naming the element, never an allocation (see `annql_store::limits`). Applies over
    /// [`with_storage_options`](Self::with_storage_options) and `ATTACH` options.
    pub fn with_read_limit(mut self, bytes: u64) -> Self {
        self.read_limit = Some(bytes);
        self
    }

    /// Where `COPY dataset TO …` and other exports may write (default: anywhere).
    pub fn with_write_policy(mut self, policy: WritePolicy) -> Self {
        self.write_policy = policy;
        self
    }

    /// Builds the session.
    pub fn build(self) -> Result<AnnSession> {
        let config = SessionConfig::new()
            .with_target_partitions(self.target_partitions)
            .with_batch_size(self.batch_size)
            .with_information_schema(self.information_schema)
            .with_default_catalog_and_schema("annql", "public")
            // Spans on columns, so "column not found" errors say where the column is.
            .set_bool("datafusion.sql_parser.collect_spans", true);
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = self.memory_limit {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc()?)
            .with_default_features()
            .with_query_planner(Arc::new(AnnQueryPlanner))
            .with_physical_optimizer_rule(Arc::new(crate::coop::CooperativeJoins));
        if self.fused {
            state = state.with_optimizer_rule(Arc::new(FusedAggregateRule));
        }
        let ctx = SessionContext::new_with_state(state.build());
        Ok(AnnSession {
            ctx,
            attached: Mutex::default(),
            collections: Mutex::default(),
            sources: Mutex::default(),
            progress: Arc::default(),
            rewriters: Mutex::default(),
            storage: match self.read_limit {
                Some(bytes) => self.storage.with_read_limit(bytes),
                None => self.storage,
            },
            write_policy: self.write_policy,
            remote: None,
        })
    }
}
