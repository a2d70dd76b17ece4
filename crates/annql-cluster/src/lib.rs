//! annql's plans on Apache Ballista: the scheduler and executors are Ballista's, started with
//! annql's codecs, rules and planner, and a session's queries are submitted to them.
//!
//! A query is planned on the client as usual, and its logical plan (AnnData tables as
//! addresses) goes to the scheduler, which optimises it with annql's rules — the fused
//! aggregation split into partial states per row slice ([`annql_engine::fused::FusedSplitRule`])
//! — plans it, gives each partition of annql's operators its own task ([`slice`]) and cuts it
//! into stages. Executors open the stores by path or URL and run the tasks; the client fetches
//! the results.

/// A session whose queries run on a cluster.
pub mod client;
/// The extension codecs of every process.
pub mod codec;
/// The error type.
pub mod error;
/// The scheduler and executor processes.
pub mod process;
/// Jobs whose stages Ballista ran again reported as failed, not answered.
pub mod rerun;
/// One task per partition of annql's operators.
pub mod slice;

pub use client::{Cluster, connect, parse_address, parse_host_port};
pub use error::{Error, Result};
pub use process::{ExecutorOptions, SchedulerOptions, run_executor, run_scheduler};
