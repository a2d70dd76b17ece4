//! `annql scheduler` and `annql executor`: Apache Ballista's processes with annql's planner and
//! codecs (docs/distributed.md).

use annql_cluster::{
    ExecutorOptions, SchedulerOptions, parse_host_port, run_executor, run_scheduler,
};

use crate::args::{ExecutorArgs, Options, SchedulerArgs};
use crate::error::{CliError, Result};
use crate::script::storage_options;

/// Runs a scheduler until stopped.
#[allow(clippy::print_stderr)]
pub async fn scheduler(options: &Options, args: SchedulerArgs) -> Result<()> {
    eprintln!("annql scheduler listening on {}", args.bind);
    run_scheduler(SchedulerOptions {
        bind: args.bind,
        external_host: args.external_host,
        executor_timeout_seconds: args.executor_timeout,
        storage: storage_options(options)?,
    })
    .await?;
    Ok(())
}

/// Runs an executor until stopped.
pub async fn executor(options: &Options, args: ExecutorArgs) -> Result<()> {
    let (host, port) = parse_host_port(&args.scheduler).ok_or_else(|| {
        CliError::Usage(format!(
            "--scheduler expects HOST:PORT, got {:?}",
            args.scheduler
        ))
    })?;
    let defaults = ExecutorOptions::default();
    run_executor(ExecutorOptions {
        scheduler_host: host,
        scheduler_port: port,
        bind_host: args.bind_host,
        external_host: args.external_host,
        flight_port: args.flight_port,
        grpc_port: args.grpc_port,
        vcores: args.vcores.unwrap_or(defaults.vcores),
        work_dir: args.work_dir,
        heartbeat_seconds: args.heartbeat,
        // `--memory-limit 0`: Ballista's default, a share of the machine's memory.
        memory_limit: options.memory_limit.map(|m| m as u64),
        storage: storage_options(options)?,
    })
    .await?;
    Ok(())
}
