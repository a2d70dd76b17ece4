//! zarr v2 and v3 outputs, written with zarrs in the layout anndata 0.12 (zarr-python 3.1)
//! writes, so anndata reads them as its own.
//!
//! Arrays grow along the first axis: appended rows are buffered until a whole unit is there — one
//! shard when sharded, `chunks_per_shard` chunks otherwise — and each unit is encoded by zarrs
//! (its chunks, or the inner chunks of its shard, in parallel) and written; `close_array` writes
//! the remainder (the last chunk padded with the fill value, as zarr does) and then the metadata
//! with the final shape. Memory is one unit per open array. `finish` writes the consolidated
//! metadata (v2 `.zmetadata`, v3 `consolidated_metadata` in the root `zarr.json`) anndata reads
//! a store through.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annql_store::arrow::array::{Array as _, ArrayRef};
use serde_json::Value;
use zarrs::array::{Array, ArrayMetadata, ArraySubset};

use super::{ArrayId, ArraySpec, Attrs, Chunking, Sink};
use crate::error::{Error, Result};

mod buffer;
mod meta;
mod store;
#[cfg(test)]
mod tests;

use buffer::Values;
use meta::{Consolidated, Grid, Layout};
use store::DirStore;

/// A zarr directory store being written.
pub struct ZarrSink {
    root: PathBuf,
    layout: Layout,
    chunking: Chunking,
    store: DirStore,
    /// Paths of the groups written ("" is the root): parents must exist before children.
    groups: HashSet<String>,
    /// Paths of every node written or open, to refuse a second node at one path.
    nodes: HashSet<String>,
    root_attrs: Option<Attrs>,
    arrays: Vec<Option<OpenArray>>,
    consolidated: Consolidated,
}

/// An array being appended to.
struct OpenArray {
    path: String,
    spec: ArraySpec,
    attrs: Attrs,
    /// zarrs' array over a store rooted at the array's directory (so any node name zarr allows,
    /// even one zarrs' node paths refuse, is written).
    array: Array<DirStore>,
    geometry: Geometry,
    /// Rows already stored (a multiple of `unit_rows`).
    stored_rows: u64,
    values: Values,
}

/// How an array's rows are cut into chunks, stored objects and store calls.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Elements per row (the product of the inner axes).
    row_elems: u64,
    /// Rows per chunk.
    chunk_rows: u64,
    /// Rows per stored object: a chunk, or a shard when sharded.
    object_rows: u64,
    /// Rows buffered before a store call (a multiple of `object_rows`).
    unit_rows: u64,
}

impl ZarrSink {
    /// Creates the store directory at `path` (zarr format `version`, sharded arrays if asked).
    pub fn create(path: &Path, version: u8, sharded: bool, chunking: &Chunking) -> Result<Self> {
        let layout = match (version, sharded) {
            (2, false) => Layout::V2,
            (3, sharded) => Layout::V3 { sharded },
            _ => {
                return Err(Error::Internal(format!(
                    "no zarr format {version} (sharded: {sharded})"
                )));
            }
        };
        if chunking.chunk_len == 0
            || chunking.target_chunk_elements == 0
            || chunking.chunks_per_shard == 0
        {
            return Err(Error::Refused {
                element: String::new(),
                reason: format!("chunk sizes must be positive: {chunking:?}"),
            });
        }
        std::fs::create_dir(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(ZarrSink {
            root: path.to_path_buf(),
            layout,
            chunking: chunking.clone(),
            store: DirStore::new(path),
            groups: HashSet::new(),
            nodes: HashSet::new(),
            root_attrs: None,
            arrays: Vec::new(),
            consolidated: Consolidated::default(),
        })
    }

    /// Checks a new node's path: well-formed names, a new path, and an existing parent group.
    fn check_new_node(&self, path: &str) -> Result<()> {
        const RESERVED: [&str; 5] = [".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"];
        if path.is_empty() {
            return Ok(());
        }
        for name in path.split('/') {
            if name.is_empty() || name == "." || name == ".." || RESERVED.contains(&name) {
                return Err(Error::Refused {
                    element: path.to_string(),
                    reason: format!("'{name}' cannot name a zarr node"),
                });
            }
        }
        if self.nodes.contains(path) {
            return Err(Error::Internal(format!("zarr node '{path}' written twice")));
        }
        let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        if !self.groups.contains(parent) {
            return Err(Error::Internal(format!(
                "zarr node '{path}' written before its parent group '{parent}'"
            )));
        }
        Ok(())
    }

    /// Writes a JSON document at a store key.
    fn write_json(&self, key: &str, doc: &Value) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(doc)
            .map_err(|e| Error::Internal(format!("metadata of {key} not serialisable: {e}")))?;
        self.store
            .write(key, &bytes)
            .map_err(|(path, source)| Error::Io { path, source })
    }

    /// The geometry of a new array: rows per chunk, per stored object, per store call.
    fn geometry(&self, path: &str, spec: &ArraySpec) -> Result<Geometry> {
        let row_elems = spec.inner.iter().product::<u64>();
        if spec.scalar {
            return Ok(Geometry {
                row_elems,
                chunk_rows: 1,
                object_rows: 1,
                unit_rows: 1,
            });
        }
        let mut chunk_rows = if spec.inner.is_empty() {
            self.chunking.chunk_len
        } else {
            (self.chunking.target_chunk_elements / row_elems.max(1)).max(1)
        };
        // A short array gets one chunk of its length, as zarr-python gives it.
        let chunks_needed = |chunk_rows: u64| {
            spec.len_hint
                .map_or(u64::MAX, |n| n.div_ceil(chunk_rows).max(1))
        };
        if let Some(n) = spec.len_hint {
            chunk_rows = chunk_rows.min(n.max(1));
        }
        let per_unit = self
            .chunking
            .chunks_per_shard
            .min(chunks_needed(chunk_rows));
        let unit_rows = chunk_rows
            .checked_mul(per_unit)
            .ok_or_else(|| Error::Refused {
                element: path.to_string(),
                reason: format!("a shard of {per_unit} chunks of {chunk_rows} rows is too large"),
            })?;
        let object_rows = match self.layout {
            Layout::V3 { sharded: true } => unit_rows,
            _ => chunk_rows,
        };
        Ok(Geometry {
            row_elems,
            chunk_rows,
            object_rows,
            unit_rows,
        })
    }

    /// The metadata grid of an array of `len` rows.
    fn grid(&self, spec: &ArraySpec, geometry: &Geometry, len: u64) -> Grid {
        if spec.scalar {
            return Grid {
                shape: vec![],
                chunk: vec![],
                shard: None,
            };
        }
        let inner = spec.inner.iter().map(|&n| n.max(1));
        let shape = std::iter::once(len).chain(spec.inner.iter().copied());
        let sharded = matches!(self.layout, Layout::V3 { sharded: true });
        let first = |rows| std::iter::once(rows).chain(inner.clone()).collect();
        Grid {
            shape: shape.collect(),
            chunk: first(geometry.chunk_rows),
            shard: sharded.then(|| first(geometry.object_rows)),
        }
    }

    /// The array's metadata document (v2 `.zarray`, v3 `zarr.json`).
    fn array_doc(
        &self,
        path: &str,
        spec: &ArraySpec,
        geometry: &Geometry,
        attrs: &Attrs,
        len: u64,
    ) -> Result<Value> {
        let grid = self.grid(spec, geometry, len);
        let doc = match self.layout {
            Layout::V2 => meta::zarray(&spec.dtype, &grid),
            Layout::V3 { .. } => meta::array_v3(&spec.dtype, &grid, attrs),
        };
        doc.ok_or_else(|| refused_dtype(path, spec))
    }

    /// zarrs' error on the array at `element`: the I/O failure under it when there was one.
    fn zarr_error(
        &self,
        a: &OpenArray,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        match a.array.storage().take_failure() {
            Some((path, source)) => Error::Io { path, source },
            None => Error::Zarr {
                path: self.root.clone(),
                element: a.path.clone(),
                source: Box::new(source),
            },
        }
    }

    /// Encodes and stores the buffered rows (a whole unit, or the remainder at close, padded to
    /// whole objects), growing the array's shape to cover them.
    fn store_buffered(&self, a: &mut OpenArray) -> Result<()> {
        let g = a.geometry;
        let rows = a.values.len() as u64 / g.row_elems;
        if rows == 0 {
            return Ok(());
        }
        let objects = rows.div_ceil(g.object_rows);
        let padding = (objects * g.object_rows - rows) * g.row_elems;
        a.values.pad(to_usize(padding)?);
        let len = a.stored_rows + rows;
        let shape = self.grid(&a.spec, &g, len).shape;
        if let Err(e) = a.array.set_shape(shape) {
            return Err(self.zarr_error(a, e));
        }
        let first = a.stored_rows / g.object_rows;
        let ranges: Vec<_> = std::iter::once(first..first + objects)
            .chain(a.spec.inner.iter().map(|_| 0..1))
            .collect();
        let bytes = a
            .values
            .take()
            .map_err(|e| Error::Internal(format!("values of '{}': {e}", a.path)))?;
        if let Err(e) = a
            .array
            .store_chunks(&ArraySubset::new_with_ranges(&ranges), bytes)
        {
            return Err(self.zarr_error(a, e));
        }
        a.stored_rows = len;
        Ok(())
    }

    /// The array `id` if it is open.
    fn open(&mut self, id: ArrayId) -> Result<OpenArray> {
        self.arrays
            .get_mut(id.0)
            .and_then(Option::take)
            .ok_or_else(|| Error::Internal(format!("zarr array {} is not open", id.0)))
    }
}

fn refused_dtype(path: &str, spec: &ArraySpec) -> Error {
    Error::Refused {
        element: path.to_string(),
        reason: format!(
            "annql writes bool, integer, float and string arrays, not {:?}",
            spec.dtype
        ),
    }
}

fn to_usize(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::Internal(format!("{n} elements do not fit in memory")))
}

/// The store key of `name` inside node `path` ("" is the root).
fn key(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}/{name}")
    }
}

impl Sink for ZarrSink {
    fn group(&mut self, path: &str, attrs: &Attrs) -> Result<()> {
        self.check_new_node(path)?;
        if path.is_empty() && self.groups.contains("") {
            return Err(Error::Internal("zarr root group written twice".into()));
        }
        match self.layout {
            Layout::V2 => {
                let attrs = Value::Object(attrs.clone());
                self.write_json(&key(path, ".zgroup"), &meta::zgroup())?;
                self.write_json(&key(path, ".zattrs"), &attrs)?;
                self.consolidated.v2(key(path, ".zgroup"), meta::zgroup());
                self.consolidated.v2(key(path, ".zattrs"), attrs);
            }
            Layout::V3 { .. } => {
                let doc = meta::group_v3(attrs);
                self.write_json(&key(path, "zarr.json"), &doc)?;
                if path.is_empty() {
                    self.root_attrs = Some(attrs.clone());
                } else {
                    self.consolidated.v3(path, &doc);
                }
            }
        }
        self.groups.insert(path.to_string());
        self.nodes.insert(path.to_string());
        Ok(())
    }

    fn open_array(&mut self, path: &str, spec: &ArraySpec, attrs: &Attrs) -> Result<ArrayId> {
        if path.is_empty() {
            return Err(Error::Internal("a zarr array at the root".into()));
        }
        self.check_new_node(path)?;
        if spec.scalar && !spec.inner.is_empty() {
            return Err(Error::Internal(format!(
                "scalar '{path}' declared with inner axes {:?}",
                spec.inner
            )));
        }
        let values = Values::new(&spec.dtype).ok_or_else(|| refused_dtype(path, spec))?;
        let geometry = self.geometry(path, spec)?;
        let doc = self.array_doc(path, spec, &geometry, attrs, 0)?;
        let metadata: ArrayMetadata = serde_json::from_value(doc).map_err(|e| Error::Zarr {
            path: self.root.clone(),
            element: path.to_string(),
            source: Box::new(e),
        })?;
        let store = Arc::new(DirStore::new(&self.root.join(path)));
        let array = Array::new_with_metadata(store, "/", metadata).map_err(|e| Error::Zarr {
            path: self.root.clone(),
            element: path.to_string(),
            source: Box::new(e),
        })?;
        self.nodes.insert(path.to_string());
        self.arrays.push(Some(OpenArray {
            path: path.to_string(),
            spec: spec.clone(),
            attrs: attrs.clone(),
            array,
            geometry,
            stored_rows: 0,
            values,
        }));
        Ok(ArrayId(self.arrays.len() - 1))
    }

    fn append(&mut self, id: ArrayId, values: &ArrayRef) -> Result<()> {
        let mut a = self.open(id)?;
        let result = self.append_to(&mut a, values);
        self.arrays[id.0] = Some(a);
        result
    }

    fn close_array(&mut self, id: ArrayId) -> Result<()> {
        let mut a = self.open(id)?;
        let len = if a.spec.scalar {
            if a.values.len() != 1 {
                return Err(Error::Internal(format!(
                    "scalar '{}' closed with {} values",
                    a.path,
                    a.values.len()
                )));
            }
            let bytes = a
                .values
                .take()
                .map_err(|e| Error::Internal(format!("values of '{}': {e}", a.path)))?;
            if let Err(e) = a.array.store_chunk(&[], bytes) {
                return Err(self.zarr_error(&a, e));
            }
            0
        } else if a.geometry.row_elems == 0 {
            // Rows without elements carry no data: the length is the one announced.
            a.spec.len_hint.ok_or_else(|| {
                Error::Internal(format!("'{}' has empty rows and no length", a.path))
            })?
        } else {
            self.store_buffered(&mut a)?;
            a.stored_rows
        };
        let doc = self.array_doc(&a.path, &a.spec, &a.geometry, &a.attrs, len)?;
        match self.layout {
            Layout::V2 => {
                let attrs = Value::Object(a.attrs.clone());
                self.write_json(&key(&a.path, ".zarray"), &doc)?;
                self.write_json(&key(&a.path, ".zattrs"), &attrs)?;
                self.consolidated.v2(key(&a.path, ".zarray"), doc);
                self.consolidated.v2(key(&a.path, ".zattrs"), attrs);
            }
            Layout::V3 { .. } => {
                self.write_json(&key(&a.path, "zarr.json"), &doc)?;
                self.consolidated.v3(&a.path, &doc);
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if let Some(a) = self.arrays.iter().flatten().next() {
            return Err(Error::Internal(format!(
                "zarr array '{}' was never closed",
                a.path
            )));
        }
        if !self.groups.contains("") {
            return Err(Error::Internal(
                "the zarr root group was never written".into(),
            ));
        }
        let consolidated = std::mem::take(&mut self.consolidated);
        match self.layout {
            Layout::V2 => self.write_json(".zmetadata", &consolidated.zmetadata()),
            Layout::V3 { .. } => {
                // Set when the root group was written, which was checked above.
                let attrs = self.root_attrs.take().unwrap_or_default();
                self.write_json("zarr.json", &consolidated.root_v3(&attrs))
            }
        }
    }
}

impl ZarrSink {
    /// Buffers `values` (whole rows) and stores every unit they fill.
    fn append_to(&self, a: &mut OpenArray, values: &ArrayRef) -> Result<()> {
        let n = values.len() as u64;
        if a.spec.scalar {
            if a.values.len() as u64 + n > 1 {
                return Err(Error::Internal(format!(
                    "more than one value appended to scalar '{}'",
                    a.path
                )));
            }
            return a
                .values
                .push(&a.spec.dtype, values)
                .map_err(|e| Error::Internal(format!("values of '{}': {e}", a.path)));
        }
        let g = a.geometry;
        if g.row_elems == 0 || !n.is_multiple_of(g.row_elems) {
            if n == 0 {
                return Ok(());
            }
            return Err(Error::Internal(format!(
                "a block of {n} values is not whole rows of {} elements for '{}'",
                g.row_elems, a.path
            )));
        }
        let unit = g.unit_rows * g.row_elems;
        let mut offset = 0;
        while offset < n {
            let room = unit - a.values.len() as u64;
            let take = room.min(n - offset);
            let block = if take == n {
                values.clone()
            } else {
                values.slice(to_usize(offset)?, to_usize(take)?)
            };
            a.values
                .push(&a.spec.dtype, &block)
                .map_err(|e| Error::Internal(format!("values of '{}': {e}", a.path)))?;
            offset += take;
            if a.values.len() as u64 == unit {
                self.store_buffered(a)?;
            }
        }
        Ok(())
    }
}
