//! `annql export`: a subset of a dataset written as a new AnnData store (docs/export.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annql_engine::export::{ExportChoices, ExportRequest, export_subset, format_name};

use crate::args::{ExportArgs, Options};
use crate::error::{CliError, Result};
use crate::script::{dataset_spec, open_session};

/// Writes the cells (`--obs`) and genes (`--var`) of the dataset to `--output`, printing what was
/// written. Ctrl-C stops the write; the writer then removes its temporary and nothing is left at
/// the output path.
#[allow(clippy::print_stdout)]
pub async fn run(options: &Options, args: ExportArgs) -> Result<()> {
    let (dataset, _) = dataset_spec(&args.source);
    let session = open_session(options, std::slice::from_ref(&args.source))?;
    let choices = ExportChoices {
        format: args.format.map(|f| f.name().to_string()),
        zarr_version: None,
        overwrite: args.overwrite,
        chunk_len: args.chunk_len,
        shard_chunks: args.shard_chunks,
        exclude: args.exclude,
    };
    let mut export_options = choices.to_options(&args.output)?;
    let cancel = Arc::new(AtomicBool::new(false));
    export_options.cancel = Some(cancel.clone());
    // Ctrl-C sets the writer's flag; the export is awaited to its end either way, so its
    // temporary is gone before the process exits.
    let interrupted = crate::interrupt::wakeup().notified();
    let watcher = tokio::spawn(async move {
        interrupted.await;
        cancel.store(true, Ordering::SeqCst);
    });
    let written = export_subset(
        &session,
        ExportRequest {
            dataset,
            obs: args.obs,
            var: args.var,
            out: args.output,
            options: export_options,
        },
    )
    .await;
    watcher.abort();
    let summary = match written {
        Err(annql_engine::Error::Write(annql_write::Error::Cancelled(_))) => {
            return Err(CliError::Cancelled);
        }
        other => other?,
    };
    println!(
        "wrote {} ({}): {} cells × {} genes",
        summary.path.display(),
        format_name(&summary.format),
        summary.n_obs,
        summary.n_vars
    );
    Ok(())
}
