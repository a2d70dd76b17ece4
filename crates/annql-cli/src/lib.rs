//! The `annql` command-line front-end: a SQL REPL over attached AnnData stores, batch runs of
//! query files with machine-readable output, and schema/plan inspection.
//!
//! Entry point: [`main`]. Stages: parse arguments ([`args`]) → open a session with the datasets →
//! run statements ([`script`]) → print results ([`output`]); interactive use goes through [`repl`].

/// Command-line arguments.
pub mod args;
/// Parquet and Arrow IPC result files, written as the batches arrive.
pub mod binary;
/// `annql scheduler` and `annql executor`: the processes of a cluster.
pub mod cluster;
/// The CLI's error type.
pub mod error;
/// `annql export`: a subset written as a new AnnData store.
pub mod export;
/// `annql index`: the gene index of a store, built, checked or removed.
pub mod index;
/// Ctrl-C: stops a running query or the printing of its result.
pub mod interrupt;
/// Result rendering as the batches arrive: aligned tables, CSV, JSON, NDJSON, Markdown.
pub mod output;
/// The interactive REPL with meta-commands and completion.
pub mod repl;
/// Splitting scripts into statements and running them.
pub mod script;
/// `annql serve`: the PostgreSQL-wire server.
pub mod serve;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command};
pub use error::{CliError, Result};

/// Runs the command with the process arguments; the exit code is non-zero on the first error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&CliError::Io(e));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Leave at once: work of a cancelled query may still be winding down in the background.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`annql ... | head`): not an error of ours.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stderr)]
fn report(e: &CliError) {
    eprintln!("annql: {e}");
    if e.is_not_a_store() {
        eprintln!("{}", args::DATASET_FORMS);
    }
}

async fn run(cli: Cli) -> Result<()> {
    // Warnings (a remote store without consolidated metadata) go to stderr; RUST_LOG overrides.
    let default_log = match cli.command {
        Some(Command::Serve(_)) => "warn,annql_server=info",
        _ => "warn",
    };
    // Fails only when a logger is installed already (by a program embedding this one): keep it.
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_log))
            .try_init();
    match cli.command {
        Some(Command::Run(run)) => script::run_batch(&cli.options, run).await,
        Some(Command::Schema { dataset }) => script::print_schema(&cli.options, &dataset),
        Some(Command::Serve(serve)) => serve::run(&cli.options, serve).await,
        Some(Command::Export(export)) => export::run(&cli.options, export).await,
        Some(Command::Index(index)) => index::run(&cli.options, index).await,
        Some(Command::Scheduler(args)) => cluster::scheduler(&cli.options, args).await,
        Some(Command::Executor(args)) => cluster::executor(&cli.options, args).await,
        Some(Command::Explain { datasets, sql }) => {
            script::explain(&cli.options, &datasets, &sql).await
        }
        None => repl::run(&cli.options, &cli.datasets).await,
    }
}
