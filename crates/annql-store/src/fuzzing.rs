//! Entry points for the cargo-fuzz targets in `fuzz/` and for the tests that replay their corpora.
//!
//! Each entry point builds a store from arbitrary bytes, opens it through annql's real code path
//! ([`AnnDataStore::open`] on a temporary file, or [`AnnDataStore::from_storage`] on an in-memory
//! store), walks the whole element tree and reads the first rows of every small element the
//! engine would read (dataframe columns, categoricals, nullable arrays, sparse and dense
//! matrices, scalars). Errors are the expected outcome for most inputs and are returned; a panic,
//! a hang or an allocation abort is the bug the fuzzer looks for.
//!
//! Elements whose declared shape or chunk holds more than [`MAX_READ_ELEMENTS`] values are
//! walked but not read: what one read may allocate from a declared shape is bounded by the
//! store's read limits, not by this harness, and a fuzzer stuck on one huge declared shape finds
//! nothing else.
//!
//! Input formats (the corpora in `fuzz/corpus/` are seeded by `fuzz/seed.py`):
//! - [`zarr_v2_metadata`], [`zarr_v3_metadata`], [`consolidated_metadata`]: store entries
//!   `key\nvalue`, separated by NUL bytes (JSON never holds a raw NUL);
//! - [`chunk_to_arrow`]: an array's metadata document, a NUL byte, then the bytes of its first
//!   chunk;
//! - [`zip_archive`], [`hdf5_file`]: the file's bytes.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use zarrs::storage::store::MemoryStore;
use zarrs::storage::{Bytes, StoreKey, WritableStorageTraits};

use crate::element::{Element, Encoding};
use crate::error::{Error, Result};
use crate::storage::{ReadStats, Storage};
use crate::store::AnnDataStore;

/// Largest declared array (and chunk), in values, that the harness reads.
pub const MAX_READ_ELEMENTS: u64 = 1 << 20;
/// Rows (or major-axis entries) read from the start of each element.
const ROWS: u64 = 8;

/// A zarr v2 store without consolidated metadata: only `.zgroup`, `.zarray`, `.zattrs` and chunk
/// keys are kept, so the hierarchy is walked document by document.
pub fn zarr_v2_metadata(data: &[u8]) -> Result<()> {
    let keep = |key: &str| {
        let file = key.rsplit('/').next().unwrap_or(key);
        file != ".zmetadata" && file != "zarr.json"
    };
    exercise(&memory_store(data, keep)?, "fuzz-v2.zarr")
}

/// A zarr v3 store: only `zarr.json` documents and chunk keys are kept.
pub fn zarr_v3_metadata(data: &[u8]) -> Result<()> {
    let keep = |key: &str| {
        let file = key.rsplit('/').next().unwrap_or(key);
        !matches!(file, ".zmetadata" | ".zgroup" | ".zarray" | ".zattrs")
    };
    exercise(&memory_store(data, keep)?, "fuzz-v3.zarr")
}

/// A store described by its consolidated metadata alone: `.zmetadata` (v2) or the root
/// `zarr.json` with its `consolidated_metadata` (v3), plus chunk keys.
pub fn consolidated_metadata(data: &[u8]) -> Result<()> {
    let keep = |key: &str| {
        let file = key.rsplit('/').next().unwrap_or(key);
        key == ".zmetadata"
            || key == "zarr.json"
            || !matches!(
                file,
                ".zmetadata" | ".zgroup" | ".zarray" | ".zattrs" | "zarr.json"
            )
    };
    exercise(&memory_store(data, keep)?, "fuzz-consolidated.zarr")
}

/// A `.zarr.zip` archive from bytes, opened from a temporary file.
pub fn zip_archive(data: &[u8]) -> Result<()> {
    with_file(data, "zarr.zip", |path| {
        let store = AnnDataStore::open(path)?;
        walk(&store);
        Ok(())
    })
}

/// An `.h5ad` file from bytes, opened from a temporary file: the HDF5 hierarchy becomes the
/// element tree, and small elements are read through the HDF5 chunk path.
pub fn hdf5_file(data: &[u8]) -> Result<()> {
    with_file(data, "h5ad", |path| {
        let store = AnnDataStore::open(path)?;
        walk(&store);
        Ok(())
    })
}

/// One array's metadata document and the bytes of its first chunk, decoded into Arrow through
/// the reads the engine makes (values, index offsets, dense rows). The array sits at `X` of an
/// AnnData store, zarr v3 when the document says `"zarr_format": 3`, v2 otherwise.
pub fn chunk_to_arrow(data: &[u8]) -> Result<()> {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (doc, chunk) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let store = MemoryStore::new();
    let anndata = json!({"encoding-type": "anndata", "encoding-version": "0.1.0"});
    let array = json!({"encoding-type": "array", "encoding-version": "0.2.0"});
    // Only routing: a document that is not JSON goes to the v2 path, whose parser reports it.
    let parsed: Option<Value> = serde_json::from_slice(doc).ok();
    let chunk_keys: &[&str] = match parsed {
        Some(Value::Object(mut v3)) if v3.get("zarr_format") == Some(&json!(3)) => {
            let root = json!({"zarr_format": 3, "node_type": "group", "attributes": anndata});
            put(&store, "zarr.json", root.to_string().as_bytes())?;
            v3.entry("attributes").or_insert(array);
            put(
                &store,
                "X/zarr.json",
                Value::Object(v3).to_string().as_bytes(),
            )?;
            &[
                "X/c/0", "X/c/0/0", "X/c.0", "X/c.0.0", "X/0", "X/0.0", "X/0/0",
            ]
        }
        _ => {
            put(&store, ".zgroup", br#"{"zarr_format": 2}"#)?;
            put(&store, ".zattrs", anndata.to_string().as_bytes())?;
            put(&store, "X/.zarray", doc)?;
            put(&store, "X/.zattrs", array.to_string().as_bytes())?;
            &["X/0", "X/0.0", "X/0/0", "X/0.0.0"]
        }
    };
    for key in chunk_keys {
        put(&store, key, chunk)?;
    }
    let store = AnnDataStore::from_storage(Arc::new(store), "fuzz-chunk.zarr")?;
    let stats = ReadStats::new_shared();
    let meta = store.array_meta("X")?.clone();
    if !small(&store, "X") {
        return Ok(());
    }
    let rows = first_rows(meta.shape.first().copied().unwrap_or(1));
    let values = store.read_array("X", rows.clone(), &stats);
    let offsets = store.read_offsets("X", rows.clone(), &stats);
    let dense = store.read_dense_rows("X", rows, &stats);
    values.and(offsets).and(dense).map(|_| ())
}

/// Opens an in-memory store of the `key\nvalue` entries of `data` that `keep` accepts.
fn memory_store(data: &[u8], keep: impl Fn(&str) -> bool) -> Result<Storage> {
    let store = MemoryStore::new();
    for entry in data.split(|&b| b == 0) {
        let split = entry
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(entry.len());
        // A key that is not UTF-8 or not a valid zarr key cannot be stored: the entry is not
        // part of the store (as a file a directory listing would not show).
        let Ok(key) = std::str::from_utf8(&entry[..split]) else {
            continue;
        };
        if key.is_empty() || !keep(key) {
            continue;
        }
        let value = entry.get(split + 1..).unwrap_or_default();
        if StoreKey::new(key).is_ok() {
            put(&store, key, value)?;
        }
    }
    Ok(Arc::new(store))
}

fn put(store: &MemoryStore, key: &str, value: &[u8]) -> Result<()> {
    let storage_error = |source| Error::Storage {
        store: "fuzz".into(),
        key: key.into(),
        source,
    };
    let key = StoreKey::new(key).map_err(|e| storage_error(e.into()))?;
    store
        .set(&key, Bytes::copy_from_slice(value))
        .map_err(storage_error)
}

fn exercise(storage: &Storage, name: &str) -> Result<()> {
    let store = AnnDataStore::from_storage(storage.clone(), name)?;
    walk(&store);
    Ok(())
}

/// Walks every element, reading the small ones; read errors are expected and dropped.
fn walk(store: &AnnDataStore) {
    let stats = ReadStats::new_shared();
    let _anndatas = store.anndatas();
    for element in store.root().walk() {
        let _description = element.describe();
        let _columns = element.column_order();
        // Errors are the expected answer to most fuzzed inputs; only panics matter here.
        let _ = read(store, element, &stats);
    }
}

/// Reads the first rows of `element` the way the engine does, if its arrays are small.
fn read(store: &AnnDataStore, element: &Element, stats: &Arc<ReadStats>) -> Result<()> {
    let path = element.path.as_str();
    let sub = |name: &str| format!("{path}/{name}");
    match &element.encoding {
        Encoding::CsrMatrix | Encoding::CscMatrix => {
            if !["indptr", "indices", "data"]
                .iter()
                .all(|a| small(store, &sub(a)))
            {
                return Ok(());
            }
            let (major, _) = store.sparse_dims(element)?;
            let rows = first_rows(major);
            store.sparse_nnz(path, rows.clone(), stats)?;
            store.read_sparse(path, rows.clone(), stats)?;
            let mut carry = crate::SparseCarry::default();
            store.read_sparse_parts(path, rows, &mut carry, stats)?;
            let _chunk = store.sparse_chunk_len(path);
        }
        Encoding::Array | Encoding::StringArray | Encoding::NumericScalar | Encoding::String => {
            if !small(store, path) {
                return Ok(());
            }
            let len = element.shape.first().copied().unwrap_or(1);
            store.read_column(element, first_rows(len), stats)?;
            if element.shape.len() == 2 {
                store.read_dense_rows(path, first_rows(len), stats)?;
            }
        }
        Encoding::Categorical
        | Encoding::NullableInteger
        | Encoding::NullableBoolean
        | Encoding::NullableStringArray => {
            let parts = ["codes", "categories", "values", "mask"];
            if !parts.iter().all(|a| small(store, &sub(a))) {
                return Ok(());
            }
            let first = ["codes", "values"]
                .iter()
                .find_map(|a| store.array_meta(&sub(a)).ok());
            let len = first.and_then(|m| m.shape.first().copied()).unwrap_or(0);
            store.read_column(element, first_rows(len), stats)?;
        }
        Encoding::LegacyCategorical => {
            let categories = element.legacy_categories_path();
            if !small(store, path) || !categories.is_none_or(|c| small(store, &c)) {
                return Ok(());
            }
            let len = element.shape.first().copied().unwrap_or(0);
            store.read_column(element, first_rows(len), stats)?;
        }
        _ => {}
    }
    Ok(())
}

/// Whether the array at `path` is small enough to read (a missing array is: its read fails).
fn small(store: &AnnDataStore, path: &str) -> bool {
    let Ok(meta) = store.array_meta(path) else {
        return true;
    };
    let values = meta
        .shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n));
    let chunk = meta
        .document
        .get("chunks")
        .or_else(|| {
            meta.document
                .pointer("/chunk_grid/configuration/chunk_shape")
        })
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .try_fold(1u64, |acc, n| acc.checked_mul(n.as_u64()?))
        });
    values.is_some_and(|n| n <= MAX_READ_ELEMENTS) && chunk.is_none_or(|n| n <= MAX_READ_ELEMENTS)
}

fn first_rows(len: u64) -> Range<u64> {
    0..len.min(ROWS)
}

/// Writes `data` to a fresh temporary file named `*.{extension}`, runs `f` on it, removes it.
fn with_file(
    data: &[u8],
    extension: &str,
    f: impl FnOnce(&std::path::Path) -> Result<()>,
) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path: PathBuf =
        std::env::temp_dir().join(format!("annql-fuzz-{}-{n}.{extension}", std::process::id()));
    std::fs::write(&path, data).map_err(|source| Error::Open {
        path: path.clone(),
        source,
    })?;
    let out = f(&path);
    // The file is scratch: failing to remove it leaves litter in the temp directory, not a
    // wrong answer, and the input's own outcome is what the caller needs.
    let _ = std::fs::remove_file(&path);
    out
}
