//! What an index was built from, recorded in the sidecar and checked before the copy is used: a
//! copy of another matrix would give wrong answers without any error, so any doubt means the
//! copy is ignored (the query then reads the rows, slower and right).
//!
//! The record holds the matrix's shape, stored entries and types, a CRC-32 of its `indptr`, and,
//! for a local source, the size and modification time of its metadata documents and `indptr`
//! files (a zarr directory) or of the whole file (`.h5ad`, zip): anndata rewrites every file of
//! an element it writes, so a matrix rewritten in place with the same shape (new values after a
//! normalisation) changes them. A remote source has no modification times here (the remote
//! layer does not keep ETags), so only the shape, types and `indptr` are compared.

use std::path::Path;
use std::time::UNIX_EPOCH;

use annql_store::AnnDataStore;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The attribute of the copy's group that holds its record.
pub const RECORD_ATTR: &str = "annql-index";

/// What a copy was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The matrix element's path in the source.
    pub matrix: String,
    /// (cells, genes).
    pub shape: (u64, u64),
    /// Stored entries.
    pub nnz: u64,
    /// Types of `data`, `indices`, `indptr`.
    pub dtypes: [String; 3],
    /// CRC-32 of the `indptr` values (as little-endian u64).
    pub indptr_crc32: u32,
    /// Local files the matrix is read from: (path relative to the source, size, mtime in ns).
    pub files: Vec<(String, u64, u128)>,
}

impl Provenance {
    /// The record of `matrix` in `store` (opened from `location`), whose `indptr` is `indptr`.
    pub fn of(store: &AnnDataStore, location: &str, matrix: &str, indptr: &[u64]) -> Result<Self> {
        let element = store.element(matrix)?;
        let (major, minor) = store.sparse_dims(element)?;
        let dtype = |a: &str| -> Result<String> {
            Ok(store
                .array_meta(&format!("{matrix}/{a}"))?
                .dtype
                .to_string())
        };
        Ok(Provenance {
            matrix: matrix.to_string(),
            shape: (major, minor),
            nnz: *indptr.last().unwrap_or(&0),
            dtypes: [dtype("data")?, dtype("indices")?, dtype("indptr")?],
            indptr_crc32: crc_of(indptr),
            files: local_files(location, matrix)?,
        })
    }

    /// The record as stored in the copy's attributes.
    pub fn to_json(&self) -> Value {
        json!({
            "version": 1,
            "matrix": self.matrix,
            "shape": [self.shape.0, self.shape.1],
            "nnz": self.nnz,
            "dtypes": self.dtypes,
            "indptr_crc32": self.indptr_crc32,
            "files": self.files.iter().map(|(p, size, mtime)| json!({
                "path": p, "size": size, "mtime_ns": mtime.to_string()
            })).collect::<Vec<_>>(),
        })
    }

    /// Reads a record back; `sidecar` names the store in the error.
    pub fn from_json(doc: &Value, sidecar: &Path) -> Result<Self> {
        let bad = |what: &str| Error::BadSidecar {
            path: sidecar.to_path_buf(),
            reason: format!("its record has no valid '{what}'"),
        };
        let u = |v: &Value, what: &str| v.as_u64().ok_or_else(|| bad(what));
        let s = |v: &Value, what: &str| v.as_str().map(str::to_string).ok_or_else(|| bad(what));
        if doc["version"].as_u64() != Some(1) {
            return Err(bad("version (1)"));
        }
        let dtypes = doc["dtypes"].as_array().ok_or_else(|| bad("dtypes"))?;
        let dtype = |i: usize| dtypes.get(i).map_or(Err(bad("dtypes")), |v| s(v, "dtypes"));
        let files = doc["files"]
            .as_array()
            .ok_or_else(|| bad("files"))?
            .iter()
            .map(|f| {
                let mtime = s(&f["mtime_ns"], "files")?
                    .parse::<u128>()
                    .map_err(|_| bad("files"))?;
                Ok((s(&f["path"], "files")?, u(&f["size"], "files")?, mtime))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Provenance {
            matrix: s(&doc["matrix"], "matrix")?,
            shape: (u(&doc["shape"][0], "shape")?, u(&doc["shape"][1], "shape")?),
            nnz: u(&doc["nnz"], "nnz")?,
            dtypes: [dtype(0)?, dtype(1)?, dtype(2)?],
            indptr_crc32: u(&doc["indptr_crc32"], "indptr_crc32")? as u32,
            files,
        })
    }

    /// How `current` (the source as it is now) differs from this record, if it does: the first
    /// difference found, in words. Files are compared only when `current` was taken from a local
    /// source (a copy built from a local path may be served with its source over HTTP).
    pub fn difference(&self, current: &Provenance, local: bool) -> Option<String> {
        if self.matrix != current.matrix {
            return Some(format!(
                "it indexes '{}', not '{}'",
                self.matrix, current.matrix
            ));
        }
        if self.shape != current.shape || self.nnz != current.nnz {
            return Some(format!(
                "it was built for a {}×{} matrix of {} entries; the source's is {}×{} with {}",
                self.shape.0, self.shape.1, self.nnz, current.shape.0, current.shape.1, current.nnz
            ));
        }
        if self.dtypes != current.dtypes {
            return Some(format!(
                "it was built for types {:?}; the source's are {:?}",
                self.dtypes, current.dtypes
            ));
        }
        if self.indptr_crc32 != current.indptr_crc32 {
            return Some("the source's indptr has changed".into());
        }
        if !local {
            return None;
        }
        for (path, size, mtime) in &self.files {
            match current.files.iter().find(|(p, ..)| p == path) {
                None => return Some(format!("the source's file {path} is gone")),
                Some((_, s, m)) if s != size || m != mtime => {
                    return Some(format!("the source's file {path} has changed since"));
                }
                Some(_) => {}
            }
        }
        if let Some((path, ..)) = current
            .files
            .iter()
            .find(|(p, ..)| !self.files.iter().any(|(q, ..)| q == p))
        {
            return Some(format!("the source has a new file {path}"));
        }
        None
    }
}

/// CRC-32 of `indptr` as little-endian u64 values.
pub fn crc_of(indptr: &[u64]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for chunk in indptr.chunks(8192) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        hasher.update(&bytes);
    }
    hasher.finalize()
}

/// The files a local source reads `matrix` from: the whole file of an `.h5ad` or zip store; in
/// a zarr directory, the metadata documents of the matrix and its arrays, and every `indptr`
/// file. Empty for a URL.
fn local_files(location: &str, matrix: &str) -> Result<Vec<(String, u64, u128)>> {
    if annql_store::object::is_remote(location) {
        return Ok(Vec::new());
    }
    let root = Path::new(location);
    let stamp = |path: &Path, name: String| -> Result<(String, u64, u128)> {
        let meta = std::fs::metadata(path).map_err(|source| Error::io("read", path, source))?;
        let mtime = meta
            .modified()
            .map_err(|source| Error::io("read", path, source))?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok((name, meta.len(), mtime))
    };
    let meta = std::fs::metadata(root).map_err(|source| Error::io("read", root, source))?;
    if !meta.is_dir() {
        return Ok(vec![stamp(root, String::new())?]);
    }
    let mut files = Vec::new();
    for dir in ["", "/data", "/indices", "/indptr"] {
        for doc in [".zattrs", ".zgroup", ".zarray", "zarr.json"] {
            let rel = format!("{matrix}{dir}/{doc}");
            let path = root.join(&rel);
            if path.is_file() {
                files.push(stamp(&path, rel)?);
            }
        }
    }
    let mut stack = vec![root.join(format!("{matrix}/indptr"))];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::io("list", &dir, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::io("list", &dir, source))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| Error::Internal(format!("{} outside its store", path.display())))?
                    .to_string_lossy()
                    .into_owned();
                if !files.iter().any(|(p, ..)| *p == rel) {
                    files.push(stamp(&path, rel)?);
                }
            }
        }
    }
    files.sort();
    Ok(files)
}
