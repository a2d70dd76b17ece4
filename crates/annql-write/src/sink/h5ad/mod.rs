//! `.h5ad` outputs (HDF5), written with hdf5-pure as anndata 0.12 + h5py write them: groups
//! and datasets carrying `encoding-type`/`encoding-version` as variable-length UTF-8 string
//! attributes, strings as variable-length UTF-8, bools as h5py's enum of int8, numeric types
//! kept, uns scalars as 0-d datasets, no compression (anndata's default).
//!
//! The file is created empty and edited in place (`File::open_rw`, bounded: no whole-file
//! copy in memory). How an array reaches the disk depends on what hdf5-pure can grow:
//! - a 1-D numeric or bool array (sparse `data`/`indices`/`indptr`, columns, masks) is held
//!   until it fills one chunk, then becomes a chunked dataset with an unlimited first axis that
//!   each block is appended to in place, a whole number of chunks at a time: memory stays at
//!   about one chunk plus one block whatever the array's length;
//! - strings are held until the array is closed: hdf5-pure refuses to append to a
//!   variable-length dataset. They are dataframe columns, categories and uns values, O(n_obs)
//!   or O(n_vars) strings at most;
//! - an n-D numeric or bool array (dense `X`, `obsm`) streams the same way as the rank-1 dataset of
//!   its flattened rows (hdf5-pure 0.47 appends to rank-1 datasets only), chunked by whole
//!   rows, and gets its n-D shape by an in-place rewrite of two header messages once the file
//!   is closed ([`reshape`]);
//! - 0-d arrays (uns scalars) hold their one value.
//!
//! hdf5-pure's attribute values cannot express an enum, so the bool `ordered` attribute of a
//! categorical comes from a template group h5py wrote (`bool_attr.h5`, made by
//! `make_bool_attr.py`), copied into place before the other attributes are set.

mod encode;
#[cfg(test)]
mod measure;
mod reshape;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use annql_store::DType;
use annql_store::arrow::array::ArrayRef;
use hdf5_pure::{
    AttrValue, Dataset, File, FileAccessProperties, FileBuilder, MaxExtent, MemoryStrategy,
    SyncPolicy,
};

use super::{ArrayId, ArraySpec, Attrs, Chunking, Sink};
use crate::error::{Error, Result};
use encode::Attr;

/// The longest chunk (in elements) a streamed dataset gets. hdf5-pure 0.47 stores a chunk
/// dimension of 65536 or more in 4 bytes where libhdf5 computes (and requires) 3, so h5py
/// refuses to open such a dataset ("stored chunk dimension encoding length does not match").
const MAX_CHUNK_LEN: u64 = 0xFFFF;

/// Two groups, `false` and `true`, each with only a numpy-bool `ordered` attribute.
const BOOL_ATTR_TEMPLATE: &[u8] = include_bytes!("bool_attr.h5");

/// An `.h5ad` file being written.
pub struct H5adSink {
    out: Output,
    /// The groups whose `ordered` attribute is copied (see the module doc).
    bool_template: File,
    chunking: Chunking,
    /// Open arrays by [`ArrayId`]; `None` once closed.
    arrays: Vec<Option<OpenArray>>,
    /// Groups created so far ("" is the root): a child's parent must be one of them.
    groups: HashSet<String>,
    /// Closed n-D arrays streamed flat: (path, final shape, rows per chunk).
    flattened: Vec<(String, Vec<u64>, u64)>,
}

/// The file being edited, with whether edits are staged and not yet committed.
struct Output {
    path: PathBuf,
    file: File,
    /// Groups, held datasets or attributes staged since the last commit. An in-place append
    /// refuses to run while its dataset's ancestors have staged edits, so appends commit first.
    staged: bool,
}

/// One open array and the values it has received.
struct OpenArray {
    /// Path inside the file, without a leading `/`.
    path: String,
    spec: ArraySpec,
    attrs: AttrValues,
    /// Values per row: the product of the inner axes.
    row_len: usize,
    /// Rows per chunk if the array streams (see [`chunk_rows`]).
    chunk_rows: Option<u64>,
    /// Rows received so far.
    rows: u64,
    body: Body,
}

/// Where an open array's values are.
enum Body {
    /// Element bytes held in memory (little-endian, as written).
    Bytes(Vec<u8>),
    /// Strings held in memory.
    Strings(Vec<String>),
    /// A chunked dataset grown in place; `pending` holds less than one chunk's bytes.
    Streamed {
        dataset: Dataset,
        pending: Vec<u8>,
        chunk_bytes: usize,
    },
}

impl H5adSink {
    /// Creates the file at `path`, which must not exist.
    pub fn create(path: &Path, chunking: &Chunking) -> Result<Self> {
        if chunking.chunk_len == 0 {
            return Err(Error::Internal("h5ad sink: chunk_len is 0".into()));
        }
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::Exists(path.to_path_buf()),
                _ => io(e),
            })?;
        FileBuilder::new()
            .finish_to(BufWriter::new(created))
            .map_err(|e| hdf5_error(path, "", e))?;
        let access = FileAccessProperties::new()
            // One fsync when the file is closed: a failed write is discarded whole anyway
            // (it is a temporary sibling until renamed into place).
            .with_sync_policy(SyncPolicy::OnClose)
            .with_memory_strategy(MemoryStrategy::Bounded);
        let file = File::open_rw_with_options(path, access).map_err(|e| hdf5_error(path, "", e))?;
        let bool_template =
            File::from_bytes(BOOL_ATTR_TEMPLATE.to_vec()).map_err(|e| hdf5_error(path, "", e))?;
        Ok(H5adSink {
            out: Output {
                path: path.to_path_buf(),
                file,
                staged: false,
            },
            bool_template,
            chunking: chunking.clone(),
            arrays: Vec::new(),
            groups: HashSet::from([String::new()]),
            flattened: Vec::new(),
        })
    }

    /// Checks that the parent group of `path` was created (the sink's contract; hdf5-pure
    /// would only notice at the next commit, without naming the element).
    fn check_parent(&self, path: &str) -> Result<()> {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        if path.is_empty() || path.starts_with('/') || !self.groups.contains(parent) {
            return Err(Error::Internal(format!(
                "h5ad sink: '{path}' written before its parent group '{parent}'"
            )));
        }
        Ok(())
    }

    fn open(&mut self, id: ArrayId) -> Result<&mut OpenArray> {
        self.arrays
            .get_mut(id.0)
            .and_then(Option::as_mut)
            .ok_or_else(|| Error::Internal(format!("h5ad sink: array {} is not open", id.0)))
    }
}

impl Output {
    fn err(&self, element: &str) -> impl FnOnce(hdf5_pure::Error) -> Error + '_ {
        let element = element.to_string();
        move |e| hdf5_error(&self.path, &element, e)
    }

    /// Commits staged edits (so an in-place append may run).
    fn commit(&mut self, element: &str) -> Result<()> {
        if self.staged {
            self.file.commit().map_err(self.err(element))?;
            self.staged = false;
        }
        Ok(())
    }
}

/// hdf5-pure's error on `element` of the file at `path`; an OS error (a full disk, a
/// vanished directory) is reported as such.
fn hdf5_error(path: &Path, element: &str, e: hdf5_pure::Error) -> Error {
    match e {
        hdf5_pure::Error::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        source => Error::Hdf5 {
            path: path.to_path_buf(),
            element: element.to_string(),
            source,
        },
    }
}

/// Attributes as hdf5-pure writes them, by name.
type AttrValues = Vec<(String, AttrValue)>;

/// Splits `attrs` into hdf5-pure values and the bool `ordered` a template carries.
fn split_attrs(element: &str, attrs: &Attrs) -> Result<(AttrValues, Option<bool>)> {
    let mut values = Vec::new();
    let mut ordered = None;
    for (name, value) in attrs {
        match encode::attr(element, name, value)? {
            Attr::Value(v) => values.push((name.clone(), v)),
            Attr::Bool(b) if name == "ordered" => ordered = Some(b),
            Attr::Bool(_) => {
                return Err(Error::Refused {
                    element: element.to_string(),
                    reason: format!(
                        "bool attribute '{name}': only a group's 'ordered' can be written as a \
                         numpy bool"
                    ),
                });
            }
        }
    }
    Ok((values, ordered))
}

/// Rows per chunk when an array grows on disk block by block (see the module doc): of a
/// fixed-size type (numeric or bool) and not 0-d. 1-D arrays get `chunk_len` rows (at most
/// [`MAX_CHUNK_LEN`]); n-D ones as many rows as make about `target_chunk_elements` values, at
/// least one (their layout is rewritten with libhdf5's dimension encoding, so
/// [`MAX_CHUNK_LEN`] does not bind them).
fn chunk_rows(spec: &ArraySpec, row_len: usize, chunking: &Chunking) -> Option<u64> {
    let fixed_size = !matches!(spec.dtype, DType::String | DType::Other(_));
    // A row length past u64 (not on any supported target) just keeps the array held.
    let row_len = u64::try_from(row_len).ok()?;
    if spec.scalar || !fixed_size || row_len == 0 {
        return None;
    }
    Some(if spec.inner.is_empty() {
        chunking.chunk_len.min(MAX_CHUNK_LEN)
    } else {
        (chunking.target_chunk_elements / row_len).max(1)
    })
}

impl Sink for H5adSink {
    fn group(&mut self, path: &str, attrs: &Attrs) -> Result<()> {
        if !path.is_empty() {
            self.check_parent(path)?;
        }
        let (values, ordered) = split_attrs(path, attrs)?;
        let out = &mut self.out;
        if path.is_empty() {
            if ordered.is_some() {
                return Err(Error::Refused {
                    element: "/".into(),
                    reason: "the root group cannot carry a bool 'ordered' attribute".into(),
                });
            }
            let root = out.file.root();
            for (name, value) in values {
                root.set_attr(&name, value).map_err(out.err(path))?;
            }
        } else if let Some(ordered) = ordered {
            // Copy the template group (bringing `ordered`), commit so the copy is a group the
            // session can address, then stage the other attributes on it.
            out.commit(path)?;
            let src = if ordered { "true" } else { "false" };
            out.file
                .copy_from(&self.bool_template, src, path)
                .map_err(out.err(path))?;
            out.file.commit().map_err(out.err(path))?;
            let group = out.file.group(path).map_err(out.err(path))?;
            for (name, value) in values {
                group.set_attr(&name, value).map_err(out.err(path))?;
            }
        } else {
            out.file
                .root()
                .create_group_with(path, |g| {
                    for (name, value) in values {
                        g.set_attr(&name, value);
                    }
                })
                .map_err(out.err(path))?;
        }
        out.staged = true;
        self.groups.insert(path.to_string());
        Ok(())
    }

    fn open_array(&mut self, path: &str, spec: &ArraySpec, attrs: &Attrs) -> Result<ArrayId> {
        self.check_parent(path)?;
        let (attrs, ordered) = split_attrs(path, attrs)?;
        if ordered.is_some() {
            return Err(Error::Refused {
                element: path.to_string(),
                reason: "a dataset cannot carry a bool 'ordered' attribute".into(),
            });
        }
        if spec.scalar && !spec.inner.is_empty() {
            return Err(Error::Internal(format!(
                "h5ad sink: 0-d array '{path}' given inner axes {:?}",
                spec.inner
            )));
        }
        let row_len = spec
            .inner
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
            .ok_or_else(|| Error::Refused {
                element: path.to_string(),
                reason: format!("inner shape {:?} is too large", spec.inner),
            })?;
        let chunk_rows = chunk_rows(spec, row_len, &self.chunking);
        let body = match spec.dtype {
            DType::String => Body::Strings(Vec::new()),
            _ => {
                encode::datatype(path, &spec.dtype)?;
                Body::Bytes(Vec::new())
            }
        };
        self.arrays.push(Some(OpenArray {
            path: path.to_string(),
            spec: spec.clone(),
            attrs,
            row_len,
            chunk_rows,
            rows: 0,
            body,
        }));
        Ok(ArrayId(self.arrays.len() - 1))
    }

    fn append(&mut self, array: ArrayId, values: &ArrayRef) -> Result<()> {
        let arr = self.open(array)?;
        let n = values.len();
        // Rows of no values (an inner axis of length 0) carry no count: the length hint gives it.
        match n.checked_div(arr.row_len) {
            Some(rows) if n.is_multiple_of(arr.row_len) => arr.rows += rows as u64,
            None if n == 0 => {}
            _ => {
                return Err(Error::Internal(format!(
                    "h5ad sink: {n} values appended to '{}', rows of {} values",
                    arr.path, arr.row_len
                )));
            }
        }
        if arr.spec.scalar && arr.rows > 1 {
            return Err(Error::Internal(format!(
                "h5ad sink: more than one value appended to 0-d array '{}'",
                arr.path
            )));
        }
        match &mut arr.body {
            Body::Strings(held) => encode::push_strings(&arr.path, values, held)?,
            Body::Bytes(held) => encode::push_bytes(&arr.path, &arr.spec.dtype, values, held)?,
            Body::Streamed { pending, .. } => {
                encode::push_bytes(&arr.path, &arr.spec.dtype, values, pending)?
            }
        }
        let Some(mut arr) = self.arrays[array.0].take() else {
            return Err(Error::Internal("h5ad sink: array vanished".into()));
        };
        let result = grow(&mut self.out, &mut arr);
        self.arrays[array.0] = Some(arr);
        result
    }

    fn close_array(&mut self, array: ArrayId) -> Result<()> {
        self.open(array)?;
        let Some(arr) = self.arrays[array.0].take() else {
            return Err(Error::Internal("h5ad sink: array vanished".into()));
        };
        if arr.spec.scalar && arr.rows != 1 {
            return Err(Error::Internal(format!(
                "h5ad sink: 0-d array '{}' closed with {} values",
                arr.path, arr.rows
            )));
        }
        if let (Body::Streamed { .. }, Some(chunk_rows)) = (&arr.body, arr.chunk_rows)
            && !arr.spec.inner.is_empty()
        {
            let shape = std::iter::once(arr.rows).chain(arr.spec.inner.iter().copied());
            self.flattened
                .push((arr.path.clone(), shape.collect(), chunk_rows));
        }
        write_closed(&mut self.out, arr)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let mut sink = *self;
        if let Some(arr) = sink.arrays.iter().flatten().next() {
            return Err(Error::Internal(format!(
                "h5ad sink: array '{}' was never closed",
                arr.path
            )));
        }
        sink.out.commit("")?;
        let mut reshapes = Vec::new();
        for (element, shape, chunk_rows) in sink.flattened {
            reshapes.push(reshape::Reshape {
                header: header_address(&sink.out, &element)?,
                path: element,
                shape,
                chunk_rows,
            });
        }
        let Output { path, file, .. } = sink.out;
        file.close().map_err(|e| hdf5_error(&path, "", e))?;
        for r in &reshapes {
            reshape::apply(&path, r)?;
        }
        Ok(())
    }
}

/// The address of the object header of `element`, read from an object reference (hdf5-pure
/// has no other way to tell it): a probe dataset is created, read and deleted again.
fn header_address(out: &Output, element: &str) -> Result<u64> {
    const PROBE: &str = "_annql_address_probe";
    let root = out.file.root();
    root.create_dataset(PROBE, |b| {
        b.with_path_references(&[element]);
    })
    .map_err(out.err(element))?;
    out.file.commit().map_err(out.err(element))?;
    let raw = out
        .file
        .dataset(PROBE)
        .and_then(|d| d.read_raw())
        .map_err(out.err(element))?;
    root.delete(PROBE).map_err(out.err(element))?;
    out.file.commit().map_err(out.err(element))?;
    let bytes: [u8; 8] = raw
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Internal(format!("h5ad sink: no reference to '{element}'")))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Moves a growing array's values to disk once there is at least a chunk of them: the first
/// time, creates its chunked dataset; then appends every whole chunk held.
fn grow(out: &mut Output, arr: &mut OpenArray) -> Result<()> {
    let Some(chunk_rows) = arr.chunk_rows else {
        return Ok(());
    };
    let chunk_len = chunk_rows * arr.row_len as u64;
    let es = encode::element_size(&arr.spec.dtype);
    let chunk_bytes = usize::try_from(chunk_len)
        .ok()
        .and_then(|c| c.checked_mul(es))
        .ok_or_else(|| Error::Internal(format!("h5ad sink: chunk of {chunk_len} too large")))?;
    if let Body::Bytes(held) = &mut arr.body
        && held.len() >= chunk_bytes
    {
        let pending = std::mem::take(held);
        let dtype = encode::datatype(&arr.path, &arr.spec.dtype)?;
        let mut attrs = std::mem::take(&mut arr.attrs);
        if !arr.spec.inner.is_empty() {
            // Room for the n-D messages (see `reshape`).
            let room = AttrValue::I64Array(vec![0; reshape::RESERVE_LEN]);
            attrs.push((reshape::RESERVE.to_string(), room));
        }
        out.commit(&arr.path)?;
        out.file
            .root()
            .create_dataset(&arr.path, |b| {
                b.with_dtype(dtype)
                    .with_shape(&[0])
                    .with_maxshape(&[MaxExtent::Unlimited])
                    .with_chunks(&[chunk_len]);
                for (name, value) in attrs {
                    b.set_attr(&name, value);
                }
            })
            .map_err(out.err(&arr.path))?;
        out.file.commit().map_err(out.err(&arr.path))?;
        let dataset = out.file.dataset(&arr.path).map_err(out.err(&arr.path))?;
        arr.body = Body::Streamed {
            dataset,
            pending,
            chunk_bytes,
        };
    }
    if let Body::Streamed {
        dataset,
        pending,
        chunk_bytes,
    } = &mut arr.body
    {
        let whole = pending.len() / *chunk_bytes * *chunk_bytes;
        if whole > 0 {
            out.commit(&arr.path)?;
            dataset
                .append_raw(&pending[..whole])
                .map_err(out.err(&arr.path))?;
            pending.drain(..whole);
        }
    }
    Ok(())
}

/// Writes what a closed array still holds: the tail of a streamed one, or the whole of a held
/// one as a dataset of its final shape.
fn write_closed(out: &mut Output, arr: OpenArray) -> Result<()> {
    let OpenArray {
        path,
        spec,
        attrs,
        row_len,
        rows,
        body,
        ..
    } = arr;
    let rows = match (row_len, spec.len_hint) {
        (0, Some(hint)) => hint,
        (0, None) => {
            return Err(Error::Internal(format!(
                "h5ad sink: '{path}' has rows of no values and no length hint to count them"
            )));
        }
        _ => rows,
    };
    let shape: Vec<u64> = if spec.scalar {
        Vec::new()
    } else {
        std::iter::once(rows)
            .chain(spec.inner.iter().copied())
            .collect()
    };
    let elements: u64 = shape.iter().product();
    let set_attrs = |b: &mut hdf5_pure::DatasetBuilder, attrs: AttrValues| {
        for (name, value) in attrs {
            b.set_attr(&name, value);
        }
    };
    match body {
        Body::Streamed {
            mut dataset,
            pending,
            ..
        } => {
            if !pending.is_empty() {
                out.commit(&path)?;
                dataset.append_raw(&pending).map_err(out.err(&path))?;
            }
            return Ok(());
        }
        Body::Bytes(bytes) => {
            let dtype = encode::datatype(&path, &spec.dtype)?;
            out.file
                .root()
                .create_dataset(&path, |b| {
                    if elements == 0 {
                        b.with_dtype(dtype);
                    } else {
                        b.with_raw_data(dtype, bytes, elements);
                    }
                    b.with_shape(&shape);
                    set_attrs(b, attrs);
                })
                .map_err(out.err(&path))?;
        }
        Body::Strings(strings) => {
            let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
            out.file
                .root()
                .create_dataset(&path, |b| {
                    b.with_vlen_strings(&refs).with_shape(&shape);
                    set_attrs(b, attrs);
                })
                .map_err(out.err(&path))?;
        }
    }
    out.staged = true;
    Ok(())
}
