//! Keeping the other copies of a sidecar when one matrix is indexed again: the new sidecar is
//! written whole into a temporary sibling, so the copies of the other matrices are linked into
//! it (hard links: no bytes copied, and the old sidecar stays intact until the rename) and their
//! entries added to its consolidated metadata.

use std::path::Path;

use annql_store::StorageOptions;
use serde_json::{Map, Value};

use crate::consolidated::{read_json, sort_entries};
use crate::error::{Error, Result};
use crate::sidecar::GeneIndex;

/// Links the copies `old` holds, other than `built`, into the new sidecar at `new`.
pub(crate) fn carry_over(old: &Path, new: &Path, built: &str) -> Result<()> {
    if !old.exists() {
        return Ok(());
    }
    let Some(index) = GeneIndex::open(&old.to_string_lossy(), &StorageOptions::default())? else {
        return Ok(());
    };
    let overlaps = |m: &str| {
        m == built || m.starts_with(&format!("{built}/")) || built.starts_with(&format!("{m}/"))
    };
    let keep: Vec<String> = index
        .matrices()
        .into_iter()
        .filter(|m| !overlaps(m))
        .collect();
    if keep.is_empty() {
        return Ok(());
    }
    let old_root = read_json(&old.join("zarr.json"))?;
    let mut new_root = read_json(&new.join("zarr.json"))?;
    let old_meta = consolidated(&old_root, old)?.clone();
    let new_meta = consolidated_mut(&mut new_root, new)?;
    for matrix in &keep {
        // Parent groups (`layers`) the new sidecar may not have yet.
        let mut parent = String::new();
        for name in matrix
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |s| s.1)
        {
            parent = if parent.is_empty() {
                name.to_string()
            } else {
                format!("{parent}/{name}")
            };
            if !new_meta.contains_key(&parent) {
                std::fs::create_dir_all(new.join(&parent))
                    .map_err(|source| Error::io("create", &new.join(&parent), source))?;
                link(
                    &old.join(&parent).join("zarr.json"),
                    &new.join(&parent).join("zarr.json"),
                )?;
                if let Some(doc) = old_meta.get(&parent) {
                    new_meta.insert(parent.clone(), doc.clone());
                }
            }
        }
        link_tree(&old.join(matrix), &new.join(matrix))?;
        for (key, doc) in &old_meta {
            if key == matrix || key.starts_with(&format!("{matrix}/")) {
                new_meta.insert(key.clone(), doc.clone());
            }
        }
    }
    sort_entries(new_meta);
    let bytes = serde_json::to_vec_pretty(&new_root)
        .map_err(|e| Error::Internal(format!("root metadata not serialisable: {e}")))?;
    let path = new.join("zarr.json");
    std::fs::write(&path, bytes).map_err(|source| Error::io("write", &path, source))
}

fn consolidated<'a>(root: &'a Value, sidecar: &Path) -> Result<&'a Map<String, Value>> {
    root["consolidated_metadata"]["metadata"]
        .as_object()
        .ok_or_else(|| no_consolidated(sidecar))
}

fn consolidated_mut<'a>(root: &'a mut Value, sidecar: &Path) -> Result<&'a mut Map<String, Value>> {
    root["consolidated_metadata"]["metadata"]
        .as_object_mut()
        .ok_or_else(|| no_consolidated(sidecar))
}

fn no_consolidated(sidecar: &Path) -> Error {
    Error::BadSidecar {
        path: sidecar.to_path_buf(),
        reason: "its root zarr.json has no consolidated metadata".into(),
    }
}

/// Hard-links every file under `from` to the same place under `to` (copies where linking fails).
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|source| Error::io("create", to, source))?;
    let entries = std::fs::read_dir(from).map_err(|source| Error::io("list", from, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list", from, source))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .map_err(|source| Error::io("read", &src, source))?;
        if kind.is_dir() {
            link_tree(&src, &dst)?;
        } else {
            link(&src, &dst)?;
        }
    }
    Ok(())
}

fn link(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    // A filesystem without hard links: copy instead (slower, same result).
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| Error::io("copy", from, source))
}
