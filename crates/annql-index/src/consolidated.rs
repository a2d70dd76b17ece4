//! The consolidated metadata of zarr stores the index edits (a sidecar's when copies are carried
//! over, the source's in place): read a document, and keep its entries in the order zarr-python
//! needs.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The JSON document at `path`.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|source| Error::io("read", path, source))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadSidecar {
        path: path.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })
}

/// Sorts consolidated entries by path: zarr-python groups the entries of one parent only when
/// they are adjacent.
pub(crate) fn sort_entries(entries: &mut Map<String, Value>) {
    let sorted: Map<String, Value> = std::mem::take(entries)
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    *entries = sorted;
}
