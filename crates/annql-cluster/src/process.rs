//! The scheduler and executor processes: Ballista's, with annql's codecs, optimizer rules and
//! planner. Data stays where it is: every process opens the stores a plan names by their path
//! (on storage they all share) or URL, with its own credentials.

use std::net::SocketAddr;
use std::sync::Arc;

use annql_engine::address::StoreCache;
use annql_engine::fused::{FusedAggregateRule, FusedSplitRule};
use annql_engine::planner::AnnQueryPlanner;
use annql_store::StorageOptions;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::{
    ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions,
};
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::create_scheduler;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use crate::codec::{AnnLogicalCodec, AnnPhysicalCodec};
use crate::error::{Error, Result};
use crate::rerun::RerunGuard;
use crate::slice::SlicePartitions;

/// The codecs of one process, sharing its opened stores.
pub(crate) fn codecs(storage: StorageOptions) -> (Arc<AnnLogicalCodec>, Arc<AnnPhysicalCodec>) {
    let stores = Arc::new(StoreCache::new(storage));
    (
        Arc::new(AnnLogicalCodec::new(stores.clone())),
        Arc::new(AnnPhysicalCodec::new(stores)),
    )
}

/// How to run a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to listen on (gRPC); default loopback, port 50050.
    pub bind: SocketAddr,
    /// How executors and clients reach this scheduler, if not by the bound address.
    pub external_host: Option<String>,
    /// Seconds without a heartbeat before an executor is taken for dead (Ballista: 180).
    pub executor_timeout_seconds: u64,
    /// How remote stores are reached.
    pub storage: StorageOptions,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50050)),
            external_host: None,
            executor_timeout_seconds: 180,
            storage: StorageOptions::default(),
        }
    }
}

/// The state a scheduler plans a client's queries in: DataFusion's rules as Ballista runs them,
/// then annql's fused aggregation (split into partial states per row slice, one slice per
/// target partition) and its planner, and last the rule that gives each partition of annql's
/// operators its own task.
fn session_builder() -> ballista_scheduler::SessionBuilder {
    Arc::new(|config: SessionConfig| {
        Ok(SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(Arc::new(RuntimeEnvBuilder::new().build()?))
            .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
            .with_optimizer_rule(Arc::new(FusedAggregateRule))
            .with_optimizer_rule(Arc::new(FusedSplitRule))
            .with_query_planner(Arc::new(AnnQueryPlanner))
            .with_physical_optimizer_rule(Arc::new(SlicePartitions))
            .with_scalar_functions(ballista_scalar_functions())
            .with_aggregate_functions(ballista_aggregate_functions())
            .with_window_functions(ballista_window_functions())
            .build())
    })
}

/// Runs a scheduler until the process is stopped.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<()> {
    let (logical, physical) = codecs(options.storage.clone());
    let mut config = SchedulerConfig::default()
        .with_hostname(
            options
                .external_host
                .clone()
                .unwrap_or_else(|| options.bind.ip().to_string()),
        )
        .with_port(options.bind.port())
        .with_override_session_builder(session_builder());
    config.bind_host = options.bind.ip().to_string();
    config.executor_timeout_seconds = options.executor_timeout_seconds;
    config.expire_dead_executor_interval_seconds = (options.executor_timeout_seconds / 3).max(1);
    config.override_logical_codec = Some(logical);
    config.override_physical_codec = Some(physical);
    // Executors ask for work: with the scheduler pushing it, the slot of a task cancelled when
    // another executor died stayed taken and the job waited forever.
    config.scheduling_policy = TaskSchedulingPolicy::PullStaged;
    config.validate()?;
    let cluster = BallistaCluster::new_from_config(&config).await?;
    let config = Arc::new(config);
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config.clone()).await?;
    // Ballista's gRPC service, every call passed through the rerun guard (`crate::rerun`).
    let service = SchedulerGrpcServer::new(RerunGuard::new(scheduler))
        .max_encoding_message_size(config.grpc_server_max_encoding_message_size as usize)
        .max_decoding_message_size(config.grpc_server_max_decoding_message_size as usize);
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|e| Error::Serve(options.bind, e))?;
    log::info!("annql scheduler listening on {}", options.bind);
    // Served as Ballista serves it: through axum, which tells the service each caller's address
    // (an executor that does not name its host is reached at the address it called from).
    let routes = tonic::service::Routes::new(service).into_axum_router();
    axum::serve(
        listener,
        routes.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| Error::Serve(options.bind, e))
}

/// An executor's memory per vcore when none is given.
pub const DEFAULT_MEMORY_PER_VCORE: u64 = 2 << 30;

/// How to run an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's host.
    pub scheduler_host: String,
    /// The scheduler's port.
    pub scheduler_port: u16,
    /// Host to listen on; default loopback.
    pub bind_host: String,
    /// How the scheduler and other executors reach this one, if not by the bound host.
    pub external_host: Option<String>,
    /// Arrow Flight port: results and shuffle data are fetched from it (Ballista: 50051).
    pub flight_port: u16,
    /// gRPC port the scheduler pushes tasks to (Ballista: 50052).
    pub grpc_port: u16,
    /// Tasks run at once (default: the cores this process may use).
    pub vcores: usize,
    /// Where shuffle files are written (default: a temporary directory).
    pub work_dir: Option<String>,
    /// Seconds between heartbeats to the scheduler (Ballista: 60).
    pub heartbeat_seconds: u64,
    /// Memory the executor's tasks may hold together (split evenly between its vcores; sorts,
    /// joins and aggregates spill or fail beyond it). Default 2 GiB per vcore; 0: none (Ballista's
    /// share of the machine's memory).
    pub memory_limit: Option<u64>,
    /// How remote stores are reached.
    pub storage: StorageOptions,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            scheduler_host: "127.0.0.1".into(),
            scheduler_port: 50050,
            bind_host: "127.0.0.1".into(),
            external_host: None,
            flight_port: 50051,
            grpc_port: 50052,
            vcores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            work_dir: None,
            heartbeat_seconds: 60,
            memory_limit: None,
            storage: StorageOptions::default(),
        }
    }
}

/// Runs an executor until the process is stopped or the scheduler stops it.
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    if options.vcores == 0 {
        return Err(Error::Options(
            "an executor needs at least one vcore".into(),
        ));
    }
    let (logical, physical) = codecs(options.storage.clone());
    let config = ExecutorProcessConfig {
        scheduler_host: options.scheduler_host,
        scheduler_port: options.scheduler_port,
        // Retried every half second for this long: executors may start before the scheduler.
        scheduler_connect_timeout_seconds: 30,
        bind_host: options.bind_host,
        external_host: options.external_host,
        port: options.flight_port,
        grpc_port: options.grpc_port,
        vcores: options.vcores,
        work_dir: options.work_dir,
        executor_heartbeat_interval_seconds: options.heartbeat_seconds,
        // Bounded by default, as a session in one process is (`--memory-limit`).
        memory_pool_size: match options.memory_limit {
            Some(0) => None,
            Some(bytes) => Some(bytes),
            None => Some(DEFAULT_MEMORY_PER_VCORE * options.vcores as u64),
        },
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        ..Default::default()
    };
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}
