//! `annql index --check`: what a sidecar holds and whether each copy still matches its source.

use std::path::Path;

use annql_store::{AnnDataStore, StorageOptions};

use crate::error::{Error, Result};
use crate::provenance::Provenance;
use crate::sidecar::GeneIndex;

/// One copy of a sidecar, checked against its source.
#[derive(Debug, Clone)]
pub struct CopyStatus {
    /// The matrix's path.
    pub matrix: String,
    /// What it was built from.
    pub provenance: Provenance,
    /// Why it would be ignored, if it would be.
    pub stale: Option<String>,
}

/// Checks every copy of the sidecar at `sidecar` against the source at `location`.
pub fn check(location: &str, storage: &StorageOptions, sidecar: &Path) -> Result<Vec<CopyStatus>> {
    let at = sidecar.to_string_lossy();
    let index = GeneIndex::open(&at, storage)?.ok_or_else(|| Error::Missing(sidecar.into()))?;
    let source = AnnDataStore::open_with(location, storage)?;
    let mut out = Vec::new();
    for matrix in index.matrices() {
        let copy = index
            .copy_of(&matrix)?
            .ok_or_else(|| Error::Internal(format!("'{matrix}' listed but not found")))?;
        let stale = match copy.stale(&source, location) {
            Ok(stale) => stale,
            // A source that no longer has the matrix (or cannot read it) makes the copy unusable:
            // that is the answer to give, with the reason.
            Err(e) => Some(e.to_string()),
        };
        out.push(CopyStatus {
            matrix,
            provenance: copy.provenance.clone(),
            stale,
        });
    }
    Ok(out)
}
