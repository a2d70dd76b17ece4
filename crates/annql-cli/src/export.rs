//! `annql export`: a subset of a dataset written as a new AnnData store (docs/export.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annql_engine::export::{ExportChoices, ExportRequest, export_subset, format_name};
use annql_engine::export_aggregate::{AggFunc, AggregateRequest, export_aggregate};

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
    let rows = if args.aggregate.is_empty() {
        "cells"
    } else {
        "groups"
    };
    let written = if args.aggregate.is_empty() {
        export_subset(
            &session,
            ExportRequest {
                dataset,
                obs: args.obs,
                var: args.var,
                out: args.output,
                options: export_options,
            },
        )
        .await
    } else {
        let funcs = args
            .aggregate
            .iter()
            .map(|f| {
                AggFunc::from_name(f).ok_or_else(|| {
                    CliError::Usage(format!(
                        "unknown aggregate function '{f}' (sum, mean, count_nonzero, var)"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        export_aggregate(
            &session,
            AggregateRequest {
                dataset,
                by: args.by,
                funcs,
                layer: args.layer,
                obs: args.obs,
                var: args.var,
                x_from: None,
                out: args.output,
                options: export_options,
            },
        )
        .await
    };
    watcher.abort();
    let summary = match written {
        Err(annql_engine::Error::Write(annql_write::Error::Cancelled(_))) => {
            return Err(CliError::Cancelled);
        }
        other => other?,
    };
    println!(
        "wrote {} ({}): {} {rows} × {} genes",
        summary.path.display(),
        format_name(&summary.format),
        summary.n_obs,
        summary.n_vars
    );
    Ok(())
}
