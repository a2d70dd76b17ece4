//! `--in-place`: the copy written into the source itself as `layers/<name>_csc`, the layout the
//! engine reads without a sidecar (and anndata shows as one more layer). Only a local zarr
//! directory can take it; the copy is written beside its final place and renamed in, and the
//! store's consolidated metadata, if it has one, gains its entries (written aside and renamed).

use std::path::{Path, PathBuf};

use annql_store::AnnDataStore;
use annql_write::output::Staged;
use serde_json::Map;

use crate::consolidated::{read_json, sort_entries};
use crate::error::{Error, Result};

/// Where the copy of `matrix` goes inside the store at `location`: `layers/<name>_csc`.
pub(crate) fn target(location: &str, store: &AnnDataStore, matrix: &str) -> Result<PathBuf> {
    let refuse = |reason: String| Error::NotIndexable {
        element: matrix.to_string(),
        reason,
    };
    if annql_store::object::is_remote(location) || !Path::new(location).is_dir() {
        return Err(refuse(format!(
            "--in-place writes into a local zarr directory, and {location} is not one (build a \
             sidecar instead)"
        )));
    }
    let name = match matrix.strip_prefix("layers/") {
        Some(name) => name,
        None if matrix == "X" => "X",
        None => return Err(refuse("--in-place indexes X or layers/<name>".into())),
    };
    if store.element("layers").is_err() {
        return Err(refuse(format!(
            "{location} has no layers group to write into"
        )));
    }
    Ok(Path::new(location)
        .join("layers")
        .join(format!("{name}_csc")))
}

/// Renames the finished copy into place and adds it to the store's consolidated metadata.
pub(crate) fn install(staged: Staged, location: &str, store: &AnnDataStore) -> Result<()> {
    let tmp = staged.tmp().to_path_buf();
    let name = staged
        .out()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Internal("in-place copy without a name".into()))?;
    let prefix = format!("layers/{name}");
    // The consolidated entries of the copy, keyed as in the store.
    let mut entries = Map::new();
    let v2_meta = tmp.join(".zmetadata");
    if v2_meta.exists() {
        let doc = read_json(&v2_meta)?;
        for (key, value) in doc["metadata"].as_object().into_iter().flatten() {
            entries.insert(format!("{prefix}/{key}"), value.clone());
        }
        std::fs::remove_file(&v2_meta).map_err(|source| Error::io("remove", &v2_meta, source))?;
    } else {
        let root = read_json(&tmp.join("zarr.json"))?;
        for (key, value) in root["consolidated_metadata"]["metadata"]
            .as_object()
            .into_iter()
            .flatten()
        {
            entries.insert(format!("{prefix}/{key}"), value.clone());
        }
        let mut group = root.clone();
        if let Some(obj) = group.as_object_mut() {
            obj.remove("consolidated_metadata");
        }
        entries.insert(prefix.clone(), group);
    }
    staged.commit()?;
    if !store.consolidated() {
        return Ok(());
    }
    let root = Path::new(location);
    let (path, key) = if root.join(".zmetadata").is_file() {
        (root.join(".zmetadata"), "metadata")
    } else {
        (root.join("zarr.json"), "consolidated_metadata")
    };
    let mut doc = read_json(&path)?;
    let metadata = match key {
        "metadata" => doc["metadata"].as_object_mut(),
        _ => doc["consolidated_metadata"]["metadata"].as_object_mut(),
    }
    .ok_or_else(|| Error::BadSidecar {
        path: path.clone(),
        reason: "its consolidated metadata has no 'metadata' map".into(),
    })?;
    metadata.extend(entries);
    sort_entries(metadata);
    let bytes = serde_json::to_vec_pretty(&doc)
        .map_err(|e| Error::Internal(format!("consolidated metadata not serialisable: {e}")))?;
    let mut aside = path.clone().into_os_string();
    aside.push(".annql-tmp");
    let aside = PathBuf::from(aside);
    std::fs::write(&aside, bytes).map_err(|source| Error::io("write", &aside, source))?;
    std::fs::rename(&aside, &path).map_err(|source| Error::io("replace", &path, source))
}
