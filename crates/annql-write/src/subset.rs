//! Cutting a store's elements along a [`Selection`], as anndata's `adata[obs_mask, var_mask]`
//! does, streamed block by block into a [`Sink`](crate::Sink).
//!
//! Two threads share the work: a reader walks the source's element tree ([`tree`]), reads each
//! element block by block, cuts the block ([`frame`] for dataframes, [`matrix`] for sparse and
//! dense arrays) and sends what to write down a bounded channel ([`emit`]); the calling thread
//! drives the sink with it. The next block is read while the current one is written, and at most a
//! few blocks are in flight, so memory stays a small multiple of [`ExportOptions::block_bytes`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use annql_store::{AnnDataStore, Element, Encoding};

use crate::error::{Error, Result};
use crate::output::Staged;
use crate::select::Selection;
use crate::sink::{ArrayId, Chunking, Format, Sink};

pub(crate) mod emit;
pub(crate) mod frame;
mod matrix;
mod plan;
mod tree;

#[cfg(test)]
mod tests;

use emit::{Emitter, Op};

/// How an export writes.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Output format; `None` takes it from the output's extension.
    pub format: Option<Format>,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Chunk (and shard) sizes of the output's arrays.
    pub chunking: Chunking,
    /// Bytes of source values one block may hold (peak memory is a small multiple of it).
    pub block_bytes: usize,
    /// Set from another thread to stop the write; the output is then not created.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Elements left out of the output on purpose, as paths inside the AnnData (`obsm/awk`,
    /// `uns/rank_genes_groups`): what annql refuses to copy is otherwise an error, never dropped.
    pub exclude: Vec<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            format: None,
            overwrite: false,
            chunking: Chunking::default(),
            block_bytes: 128 << 20,
            cancel: None,
            exclude: Vec::new(),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The output path.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Cells written.
    pub n_obs: u64,
    /// Genes written.
    pub n_vars: u64,
}

/// Writes the cells and genes of the AnnData at `root` ("" for the store's root, `mod/rna` for a
/// MuData modality) of `store` selected by `selection` as a new AnnData at `out`.
pub fn export(
    store: &AnnDataStore,
    root: &str,
    selection: &Selection,
    out: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    let format = match &options.format {
        Some(f) => f.clone(),
        None => Format::from_path(out).ok_or_else(|| Error::Io {
            path: out.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no output format: name the output .h5ad or .zarr, or give the format",
            ),
        })?,
    };
    let anndata = anndata_at(store, root)?;
    let staged = Staged::begin(out, options.overwrite)?;
    let sink = crate::sink::create(&format, staged.tmp(), &options.chunking)?;
    let (n_obs, n_vars) = export_into(store, anndata, selection, sink, options, out)?;
    cancelled(options, out)?;
    let path = staged.commit()?;
    Ok(ExportSummary {
        path,
        format,
        n_obs,
        n_vars,
    })
}

/// The AnnData element at `root`: the store's root, or a MuData modality.
fn anndata_at<'s>(store: &'s AnnDataStore, root: &str) -> Result<&'s Element> {
    let element = store.element(root)?;
    if element.encoding != Encoding::AnnData {
        return Err(Error::Refused {
            element: root.to_string(),
            reason: format!(
                "not an AnnData but a {} element (export the store's root or a MuData \
                 modality 'mod/<name>')",
                element.encoding.name()
            ),
        });
    }
    Ok(element)
}

/// Cuts `anndata` along `selection` into `sink` and finishes it; `out` names the output in errors.
/// Returns the cells and genes written.
pub(crate) fn export_into(
    store: &AnnDataStore,
    anndata: &Element,
    selection: &Selection,
    sink: Box<dyn Sink>,
    options: &ExportOptions,
    out: &Path,
) -> Result<(u64, u64)> {
    // Two blocks queued besides the one being read and the one being written.
    let (tx, rx) = sync_channel::<Op>(2);
    let cancel = options.cancel.as_deref();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut emitter = Emitter::new(tx, cancel, out, options.block_bytes);
            tree::write_anndata(&mut emitter, store, anndata, selection, &options.exclude)
        });
        let written = drive(sink, rx, cancel, out);
        let read = reader
            .join()
            .map_err(|_| Error::Internal("the export's reader thread panicked".into()))?;
        match (read, written) {
            // The writer's failure (or cancellation) stopped the reader: report the writer's.
            (_, Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(e),
            (Ok(shape), Ok(())) => Ok(shape),
        }
    })
}

/// The writer's side: applies what the reader sends to the sink until the reader is done, then
/// finishes the sink. Returning early drops `rx`, which stops the reader at its next send.
fn drive(
    mut sink: Box<dyn Sink>,
    rx: Receiver<Op>,
    cancel: Option<&AtomicBool>,
    out: &Path,
) -> Result<()> {
    if !apply(sink.as_mut(), rx, cancel, out)? {
        // The reader failed or stopped: its error is what the caller sees; the partial output is
        // removed with the temporary.
        return Ok(());
    }
    cancelled_flag(cancel, out)?;
    sink.finish()
}

/// Applies what the reader sends to `sink` until the reader hangs up; whether it sent
/// [`Op::Done`] (everything). Returning early drops `rx`, which stops the reader.
pub(crate) fn apply(
    sink: &mut dyn Sink,
    rx: Receiver<Op>,
    cancel: Option<&AtomicBool>,
    out: &Path,
) -> Result<bool> {
    let mut ids: Vec<Option<ArrayId>> = Vec::new();
    let mut complete = false;
    for op in rx {
        cancelled_flag(cancel, out)?;
        match op {
            Op::Group { path, attrs } => sink.group(&path, &attrs)?,
            Op::Open {
                handle,
                path,
                spec,
                attrs,
            } => {
                let id = sink.open_array(&path, &spec, &attrs)?;
                if ids.len() <= handle {
                    ids.resize(handle + 1, None);
                }
                ids[handle] = Some(id);
            }
            Op::Append { handle, values } => sink.append(array_id(&ids, handle)?, &values)?,
            Op::Close { handle } => sink.close_array(array_id(&ids, handle)?)?,
            Op::Done => complete = true,
        }
    }
    Ok(complete)
}

fn array_id(ids: &[Option<ArrayId>], handle: usize) -> Result<ArrayId> {
    ids.get(handle)
        .copied()
        .flatten()
        .ok_or_else(|| Error::Internal(format!("array handle {handle} used before it was opened")))
}

fn cancelled(options: &ExportOptions, out: &Path) -> Result<()> {
    cancelled_flag(options.cancel.as_deref(), out)
}

fn cancelled_flag(cancel: Option<&AtomicBool>, out: &Path) -> Result<()> {
    match cancel {
        Some(flag) if flag.load(Ordering::Relaxed) => Err(Error::Cancelled(out.to_path_buf())),
        _ => Ok(()),
    }
}
