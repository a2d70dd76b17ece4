//! Cutting a store's elements along a [`Selection`], as anndata's `adata[obs_mask, var_mask]`
//! does, streamed block by block into a [`Sink`](crate::Sink).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use annql_store::AnnDataStore;

use crate::error::{Error, Result};
use crate::select::Selection;
use crate::sink::{Chunking, Format};

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
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            format: None,
            overwrite: false,
            chunking: Chunking::default(),
            block_bytes: 128 << 20,
            cancel: None,
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
    let _ = (store, root, selection, out, options);
    Err(Error::Internal("export not written yet".into()))
}
