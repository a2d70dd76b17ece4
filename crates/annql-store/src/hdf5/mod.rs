//! HDF5 files (`.h5ad`, `.h5mu`) as a virtual zarr v2 store, read with the pure-Rust
//! `hdf5-reader` crate.
//!
//! Everything above the storage layer speaks zarr keys, so an HDF5 file is presented as one (the
//! kerchunk idea): groups become `.zgroup`s, datasets `.zarray`s, attributes `.zattrs`, all
//! gathered in a synthesised `.zmetadata`. Chunk keys map to byte ranges of the file:
//! - a chunked dataset has one zarr chunk per HDF5 chunk, located through the chunk index (read
//!   once per dataset, on first use) and decoded here through the dataset's filter pipeline
//!   (shuffle, fletcher32, szip, nbit, scale-offset from hdf5-reader; deflate from [`deflate`],
//!   which checks every stream's Adler-32; LZF from [`lzf`]). Checksums are never skipped: a
//!   chunk whose Fletcher-32 or Adler-32 does not match fails the read;
//! - a contiguous dataset (h5ad's default for dense arrays and dataframe columns) is cut into
//!   virtual chunks of whole rows, read by positional reads of just their bytes;
//! - strings (variable-length from the global heap, or fixed-length) are re-encoded per chunk as
//!   vlen-utf8, h5py's enum booleans are presented as `|b1`.
//!
//! The store, the element tree, the Arrow reads and the read accounting are then the zarr ones,
//! unchanged. Zarr chunks carry no compressor: the bytes a read reports are decoded bytes.
//! Reads share nothing mutable but hdf5-reader's caches (behind its own locks), so zarrs decodes
//! chunks on many threads at once.

mod convert;
mod deflate;
mod lzf;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hdf5_reader::btree_v1::BTreeV1Key;
use hdf5_reader::chunk_index::ChunkEntry;
use hdf5_reader::group::Group;
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::messages::filter_pipeline::FilterDescription;
use hdf5_reader::messages::layout::{ChunkIndexing, DataLayout};
use hdf5_reader::{Dataset, FilterRegistry, Hdf5File, OpenOptions};
use serde_json::{Map, Value, json};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, StorePrefixes,
};

use crate::error::{Error, Result};
use crate::limits::{describe_range, range_within};
pub(crate) use convert::vlen_utf8;
use convert::{Values, attribute_json, fixed_string, zarr_dtype};

/// Elements per virtual chunk of a contiguous numeric dataset (whole rows, at least one row).
const CONTIGUOUS_CHUNK_ELEMENTS: u64 = 1 << 20;
/// Elements per virtual chunk of a contiguous string dataset (each resolves a heap object).
const CONTIGUOUS_STRING_CHUNK: u64 = 1 << 16;
/// Most objects (groups and datasets) a file may hold: bounds the work of a hostile file.
const MAX_OBJECTS: usize = 1_000_000;
/// Largest decoded chunk annql accepts from a file.
const MAX_CHUNK_BYTES: u64 = 1 << 32;
/// Deepest nesting of groups walked: AnnData nests a few levels; a file nesting thousands of
/// groups would otherwise exhaust the stack.
const MAX_DEPTH: usize = 128;
/// Most chunk keys a listing enumerates (listing is for tools; reads never list).
const MAX_LISTED_CHUNKS: u64 = 1 << 24;

/// An HDF5 file presented as a read-only zarr v2 store (see the module documentation).
pub struct Hdf5Storage {
    path: PathBuf,
    /// Metadata keys (`.zgroup`, `.zarray`, `.zattrs`, `.zmetadata`) and their JSON.
    meta: BTreeMap<String, Bytes>,
    /// Datasets by node path (`X/data`).
    arrays: BTreeMap<String, Arc<H5Array>>,
}

/// A dataset and how its zarr chunks are produced.
struct H5Array {
    file: Hdf5File,
    dataset: Dataset,
    shape: Vec<u64>,
    /// The zarr chunk shape (HDF5's for chunked datasets, whole rows otherwise).
    chunks: Vec<u64>,
    /// Elements in one zarr chunk, and in one row (the axes after the first): the products of
    /// dimensions taken from the file, checked once when the dataset is opened.
    chunk_elements: u64,
    row: u64,
    /// Bytes per stored element (a heap reference for vlen strings).
    elem_size: usize,
    values: Values,
    source: Source,
    /// The filters that decode its chunks (deflate bounded by the chunk size).
    registry: FilterRegistry,
}

/// Where a dataset's bytes are.
enum Source {
    /// One run of bytes at `address`.
    Contiguous { address: u64 },
    /// Chunks found through an index; `entries` is read on first use.
    Chunked {
        index_address: u64,
        dims: Vec<u32>,
        indexing: Option<ChunkIndexing>,
        filters: Vec<FilterDescription>,
        entries: OnceLock<Result<HashMap<Vec<u64>, ChunkEntry>, String>>,
    },
    /// Stored in the object header itself.
    Compact(Bytes),
    /// Never written: every chunk is the fill value.
    Unallocated,
    /// A storage annql does not read (external files), with the reason.
    Unsupported(String),
}

impl Hdf5Storage {
    /// Opens the file and reads its whole hierarchy (object headers and attributes; no data).
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |element: &str, source| Error::Hdf5 {
            path: path.to_path_buf(),
            element: element.to_string(),
            source,
        };
        let options = OpenOptions::default()
            // annql decodes chunks itself and caches nothing: keep the library's cache small.
            .with_chunk_cache_bytes(1 << 20)
            .with_filter_registry(registry(None));
        let file = Hdf5File::open_with_options(path, options).map_err(|e| fail("", e))?;
        guarded(path, "", || Self::from_file(path, file))?
    }

    fn from_file(path: &Path, file: Hdf5File) -> Result<Self> {
        let fail = |element: &str, source| Error::Hdf5 {
            path: path.to_path_buf(),
            element: element.to_string(),
            source,
        };
        let root = file.root_group().map_err(|e| fail("", e))?;
        // First pass: every object and its path, so object references resolve to paths.
        let mut objects: Vec<(String, Object)> = Vec::new();
        let mut seen = HashSet::new();
        collect(&root, "", 0, &mut objects, &mut seen).map_err(|(p, e)| fail(&p, e))?;
        if objects.len() > MAX_OBJECTS {
            return Err(Error::UnsupportedSource {
                path: path.to_path_buf(),
                reason: format!("more than {MAX_OBJECTS} objects in the file"),
            });
        }
        let by_address: HashMap<u64, String> = objects
            .iter()
            .map(|(p, o)| (o.address(), format!("/{p}")))
            .collect();
        let offset_size = file.superblock().offset_size;
        let mut documents = Map::new();
        let mut arrays = BTreeMap::new();
        let key = |dir: &str, name: &str| {
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        for (node, object) in &objects {
            let attrs = match object {
                Object::Group(g) => g.attributes().map_err(|e| fail(node, e))?,
                Object::Dataset(d) => d.attributes(),
            };
            let mut json = Map::new();
            for a in &attrs {
                if let Some(v) =
                    attribute_json(a, &by_address, offset_size).map_err(|e| fail(node, e))?
                {
                    json.insert(a.name.clone(), v);
                }
            }
            let attrs = json;
            match object {
                Object::Group(_) => {
                    documents.insert(key(node, ".zgroup"), json!({"zarr_format": 2}));
                }
                Object::Dataset(d) => {
                    let (array, doc) = H5Array::new(&file, d).map_err(|e| fail(node, e))?;
                    documents.insert(key(node, ".zarray"), doc);
                    arrays.insert(node.clone(), Arc::new(array));
                }
            }
            documents.insert(key(node, ".zattrs"), Value::Object(attrs));
        }
        let mut meta = BTreeMap::new();
        for (k, doc) in &documents {
            meta.insert(k.clone(), Bytes::from(doc.to_string().into_bytes()));
        }
        let consolidated = json!({"zarr_consolidated_format": 1, "metadata": documents});
        meta.insert(
            ".zmetadata".into(),
            Bytes::from(consolidated.to_string().into_bytes()),
        );
        Ok(Self {
            path: path.to_path_buf(),
            meta,
            arrays,
        })
    }

    /// The bytes of `key`: a metadata document or a chunk (`None` where nothing is stored).
    fn value(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        if let Some(doc) = self.meta.get(key) {
            return Ok(Some(doc.clone()));
        }
        let Some((array, index)) = self.chunk_of(key) else {
            return Ok(None);
        };
        let (node, _) = key.rsplit_once('/').unwrap_or(("", key));
        let out = catch_unwind(AssertUnwindSafe(|| array.chunk(&index)))
            .unwrap_or_else(|_| Err("the HDF5 reader panicked on this chunk".into()));
        out.map(|b| b.map(Bytes::from)).map_err(|e| {
            StorageError::Other(format!(
                "{}: HDF5 dataset '/{node}', chunk {}: {e}",
                self.path.display(),
                key.rsplit('/').next().unwrap_or(key)
            ))
        })
    }

    /// The array and chunk grid index a chunk key names, if it names one inside the grid.
    fn chunk_of(&self, key: &str) -> Option<(&H5Array, Vec<u64>)> {
        let (node, chunk) = key.rsplit_once('/')?;
        let array = self.arrays.get(node)?;
        // A key that does not parse as a chunk index names no chunk (as a key outside the grid).
        let index: Vec<u64> = if array.shape.is_empty() {
            (chunk == "0").then(Vec::new)?
        } else {
            chunk
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?
        };
        let grid = array.grid();
        (index.len() == grid.len() && index.iter().zip(&grid).all(|(i, n)| i < n))
            .then_some((array.as_ref(), index))
    }

    /// Every key: metadata, then each array's chunk grid (refused beyond [`MAX_LISTED_CHUNKS`]).
    fn keys(&self) -> Result<Vec<String>, StorageError> {
        let mut keys: BTreeSet<String> = self.meta.keys().cloned().collect();
        for (node, array) in &self.arrays {
            if array.shape.is_empty() {
                keys.insert(format!("{node}/0"));
                continue;
            }
            let grid = array.grid();
            let total = product(&grid)
                .filter(|&n| n <= MAX_LISTED_CHUNKS)
                .ok_or_else(|| {
                    StorageError::Other(format!(
                        "{}: HDF5 dataset '/{node}' has too many chunks to list ({grid:?})",
                        self.path.display()
                    ))
                })?;
            for linear in 0..total {
                let mut rest = linear;
                let mut parts = vec![0u64; grid.len()];
                for (d, n) in grid.iter().enumerate().rev() {
                    parts[d] = rest % n;
                    rest /= n;
                }
                let chunk = parts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(".");
                keys.insert(format!("{node}/{chunk}"));
            }
        }
        Ok(keys.into_iter().collect())
    }
}

/// The product of dimensions read from a file, `None` when it overflows.
fn product(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
}

/// A contiguous chunk whose position in the file overflows a 64-bit offset.
const BEYOND_FILE: &str = "the dataset's bytes lie beyond any file offset";

/// The filters annql decodes: hdf5-reader's built-ins, deflate replaced by annql's (which checks
/// the Adler-32; its output bounded by `deflate_limit` where known), plus LZF.
fn registry(deflate_limit: Option<usize>) -> FilterRegistry {
    let limit = deflate_limit.unwrap_or(usize::try_from(MAX_CHUNK_BYTES).unwrap_or(usize::MAX));
    let mut registry = FilterRegistry::new();
    registry.register(
        hdf5_reader::filters::FILTER_DEFLATE,
        Box::new(move |_, data, _| deflate::inflate(data, limit)),
    );
    registry.register(lzf::FILTER_LZF, Box::new(lzf::lzf_filter));
    registry
}

/// Runs `f`, turning a panic inside the HDF5 reader into an error naming the file.
fn guarded<T>(path: &Path, element: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Error::Hdf5 {
        path: path.to_path_buf(),
        element: element.to_string(),
        source: hdf5_reader::error::Error::Other("the HDF5 reader panicked".into()),
    })
}

/// A group or dataset found by the walk.
enum Object {
    Group(Group),
    Dataset(Box<Dataset>),
}

impl Object {
    fn address(&self) -> u64 {
        match self {
            Object::Group(g) => g.address(),
            Object::Dataset(d) => d.address(),
        }
    }
}

/// Walks the hierarchy below `group` (at node path `path`, `depth` groups down), depth first;
/// hard links to an object already seen are skipped, so cycles end, and nesting deeper than
/// [`MAX_DEPTH`] is refused.
fn collect(
    group: &Group,
    path: &str,
    depth: usize,
    out: &mut Vec<(String, Object)>,
    seen: &mut HashSet<u64>,
) -> std::result::Result<(), (String, hdf5_reader::error::Error)> {
    if !seen.insert(group.address()) || out.len() > MAX_OBJECTS {
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err((
            path.to_string(),
            hdf5_reader::error::Error::InvalidData(format!(
                "groups nested more than {MAX_DEPTH} deep"
            )),
        ));
    }
    out.push((path.to_string(), Object::Group(group.clone())));
    let (groups, datasets) = group.members().map_err(|e| (path.to_string(), e))?;
    let child = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}/{name}")
        }
    };
    for d in datasets {
        if seen.insert(d.address()) {
            out.push((child(d.name()), Object::Dataset(Box::new(d))));
        }
    }
    for g in groups {
        collect(&g, &child(g.name()), depth + 1, out, seen)?;
    }
    Ok(())
}

impl H5Array {
    /// The dataset's layout and its `.zarray` document.
    fn new(file: &Hdf5File, dataset: &Dataset) -> hdf5_reader::error::Result<(Self, Value)> {
        let header = file.get_or_parse_header(dataset.address())?;
        let shape = dataset.shape().to_vec();
        let (dtype, fill_value, filters_doc, values) = zarr_dtype(dataset.dtype());
        let elem_size = dataset.raw_element_size()?;
        if elem_size == 0 {
            return Err(hdf5_reader::error::Error::InvalidData(
                "the dataset's elements have a size of 0 bytes".into(),
            ));
        }
        let mut layout = None;
        let mut filters = Vec::new();
        let mut external = false;
        for message in &header.messages {
            match message {
                HdfMessage::DataLayout(l) => layout = Some(l.layout.clone()),
                HdfMessage::FilterPipeline(p) => filters = p.filters.clone(),
                HdfMessage::ExternalFiles(_) => external = true,
                _ => {}
            }
        }
        let offset_size = file.superblock().offset_size;
        let undefined = |address: u64| {
            address == u64::MAX || (offset_size < 8 && address == (1u64 << (8 * offset_size)) - 1)
        };
        let too_large = || {
            hdf5_reader::error::Error::InvalidData(format!(
                "dataset shape {shape:?} has more elements than a 64-bit count holds"
            ))
        };
        let row = product(&shape[shape.len().min(1)..])
            .ok_or_else(too_large)?
            .max(1);
        product(&shape).ok_or_else(too_large)?;
        let whole_rows = |per_chunk: u64| {
            let mut chunks = shape.clone();
            if let Some(first) = chunks.first_mut() {
                *first = (per_chunk / row).clamp(1, (*first).max(1));
            }
            chunks
        };
        let per_chunk = if values == Values::Plain {
            CONTIGUOUS_CHUNK_ELEMENTS
        } else {
            CONTIGUOUS_STRING_CHUNK
        };
        let (source, chunks) = match layout {
            _ if external => (
                Source::Unsupported("data stored in external files".into()),
                whole_rows(per_chunk),
            ),
            Some(DataLayout::Contiguous { address, .. }) if undefined(address) => {
                (Source::Unallocated, whole_rows(per_chunk))
            }
            Some(DataLayout::Contiguous { address, .. }) => {
                (Source::Contiguous { address }, whole_rows(per_chunk))
            }
            Some(DataLayout::Compact { data }) => {
                (Source::Compact(Bytes::from(data)), shape.clone())
            }
            Some(DataLayout::Chunked {
                address,
                mut dims,
                chunk_indexing,
                ..
            }) => {
                // Layout messages before version 4 append the element size as a last dimension.
                if dims.len() == shape.len() + 1 {
                    dims.pop();
                }
                let chunks: Vec<u64> = dims.iter().map(|&d| u64::from(d)).collect();
                if dims.len() != shape.len() || dims.contains(&0) {
                    return Err(hdf5_reader::error::Error::InvalidData(format!(
                        "chunk shape {dims:?} does not fit the dataset shape {shape:?}"
                    )));
                }
                let source = if undefined(address) {
                    Source::Unallocated
                } else {
                    Source::Chunked {
                        index_address: address,
                        dims,
                        indexing: chunk_indexing,
                        filters,
                        entries: OnceLock::new(),
                    }
                };
                (source, chunks)
            }
            None => {
                return Err(hdf5_reader::error::Error::InvalidData(
                    "dataset has no data layout message".into(),
                ));
            }
        };
        // Zarr wants positive chunk lengths, also along empty axes.
        let chunks: Vec<u64> = chunks.into_iter().map(|c| c.max(1)).collect();
        let chunk_elements = product(&chunks).ok_or_else(|| {
            hdf5_reader::error::Error::InvalidData(format!(
                "chunk shape {chunks:?} has more elements than a 64-bit count holds"
            ))
        })?;
        // A chunk beyond `MAX_CHUNK_BYTES` is refused when read; its limit here is moot.
        let chunk_bytes = chunks
            .iter()
            .try_fold(elem_size as u64, |n, &c| n.checked_mul(c))
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        let registry = registry(match &source {
            Source::Chunked { filters, .. } => deflate::output_limit(filters, chunk_bytes),
            _ => None,
        });
        let doc = json!({
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": dtype,
            "compressor": null,
            "fill_value": fill_value,
            "order": "C",
            "filters": filters_doc,
            "dimension_separator": ".",
        });
        let array = H5Array {
            file: file.clone(),
            dataset: dataset.clone(),
            shape,
            chunks,
            chunk_elements,
            row,
            elem_size,
            values,
            source,
            registry,
        };
        Ok((array, doc))
    }

    /// Chunks along each axis.
    fn grid(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunks)
            .map(|(&n, &c)| n.div_ceil(c))
            .collect()
    }

    /// The zarr bytes of chunk `index`, or `None` when the file holds nothing for it.
    fn chunk(&self, index: &[u64]) -> Result<Option<Vec<u8>>, String> {
        let elements = self.chunk_elements;
        let full_bytes = elements
            .checked_mul(self.elem_size as u64)
            .filter(|&b| b <= MAX_CHUNK_BYTES)
            .ok_or("chunk too large")?;
        let full_bytes = usize::try_from(full_bytes).map_err(|e| e.to_string())?;
        let storage = self.dataset_storage();
        let (raw, stored) = match &self.source {
            Source::Unallocated => return Ok(None),
            Source::Unsupported(reason) => return Err(reason.clone()),
            // The shape's product was checked when the dataset was opened.
            Source::Compact(data) => (data.to_vec(), product(&self.shape).unwrap_or(u64::MAX)),
            Source::Contiguous { .. } => {
                // Whole rows: a chunk is one byte run; the last one is short.
                let (offset, _, len) = self.contiguous_bytes(index).ok_or(BEYOND_FILE)?;
                let len = usize::try_from(len).map_err(|e| e.to_string())?;
                let bytes = storage.read_range(offset, len).map_err(|e| e.to_string())?;
                (bytes.to_vec(), len as u64 / self.elem_size as u64)
            }
            Source::Chunked {
                index_address,
                dims,
                indexing,
                filters,
                entries,
            } => {
                let entries = entries
                    .get_or_init(|| {
                        self.chunk_entries(*index_address, dims, indexing.as_ref())
                            .map_err(|e| format!("reading the chunk index: {e}"))
                    })
                    .as_ref()
                    .map_err(Clone::clone)?;
                let offsets: Vec<u64> =
                    index.iter().zip(&self.chunks).map(|(i, c)| i * c).collect();
                let Some(entry) = entries.get(&offsets) else {
                    return Ok(None);
                };
                let size = if entry.size == 0 && filters.is_empty() {
                    full_bytes as u64
                } else {
                    entry.size
                };
                if size > MAX_CHUNK_BYTES {
                    return Err(format!("stored chunk of {size} bytes is too large"));
                }
                let bytes = storage
                    .read_range(entry.address, size as usize)
                    .map_err(|e| e.to_string())?;
                let decoded = if filters.is_empty() {
                    bytes.to_vec()
                } else {
                    hdf5_reader::filters::apply_pipeline_with_limit(
                        &bytes,
                        filters,
                        entry.filter_mask,
                        self.elem_size,
                        Some(&self.registry),
                        Some(full_bytes),
                    )
                    .map_err(|e| e.to_string())?
                };
                if decoded.len() != full_bytes {
                    return Err(format!(
                        "decoded chunk has {} bytes, expected {full_bytes}",
                        decoded.len()
                    ));
                }
                (decoded, elements)
            }
        };
        let stored = usize::try_from(stored.min(elements)).map_err(|e| e.to_string())?;
        // `stored` is at most the chunk's elements, whose bytes fit `MAX_CHUNK_BYTES`.
        let stored_bytes = stored.saturating_mul(self.elem_size);
        if raw.len() < stored_bytes {
            return Err(format!(
                "{} bytes stored, expected {stored_bytes}",
                raw.len(),
            ));
        }
        let elements = usize::try_from(elements).map_err(|e| e.to_string())?;
        let in_bounds = self.in_bounds(index, elements);
        match &self.values {
            Values::Plain => {
                let mut raw = raw;
                raw.resize(full_bytes, 0);
                Ok(Some(raw))
            }
            Values::VlenString => {
                let strings = (0..elements)
                    .map(|i| {
                        if i >= stored || !in_bounds(i) {
                            return Ok(String::new());
                        }
                        let reference = &raw[i * self.elem_size..(i + 1) * self.elem_size];
                        let bytes = self
                            .dataset
                            .resolve_vlen_reference_bytes(reference, 1)
                            .map_err(|e| e.to_string())?;
                        Ok(String::from_utf8_lossy(&bytes).into_owned())
                    })
                    .collect::<Result<Vec<String>, String>>()?;
                vlen_utf8(&strings).map(Some)
            }
            Values::FixedString { len, padding } => {
                let strings: Vec<String> = (0..elements)
                    .map(|i| {
                        if i >= stored {
                            return String::new();
                        }
                        raw.get(i * len..(i + 1) * len)
                            .map_or_else(String::new, |b| fixed_string(b, *padding))
                    })
                    .collect();
                vlen_utf8(&strings).map(Some)
            }
            Values::Record(members) => {
                let packed: usize = members.iter().map(|(_, len)| len).sum();
                let mut out = vec![
                    0u8;
                    elements
                        .checked_mul(packed)
                        .ok_or("compound chunk too large")?
                ];
                for (i, record) in raw.chunks_exact(self.elem_size).take(stored).enumerate() {
                    let mut at = i * packed;
                    for &(offset, len) in members {
                        let member = record
                            .get(offset..offset + len)
                            .ok_or("compound member outside its element")?;
                        out[at..at + len].copy_from_slice(member);
                        at += len;
                    }
                }
                Ok(Some(out))
            }
            Values::Unreadable => Err("the data type is not readable".into()),
        }
    }

    /// Whether element `i` (row-major within chunk `index`) lies inside the dataset: edge chunks
    /// of a chunked dataset hold unused elements whose references must not be followed.
    fn in_bounds(&self, index: &[u64], _elements: usize) -> impl Fn(usize) -> bool + '_ {
        let origin: Vec<u64> = index.iter().zip(&self.chunks).map(|(i, c)| i * c).collect();
        move |i: usize| {
            let mut rest = i as u64;
            for d in (0..self.chunks.len()).rev() {
                let at = origin[d] + rest % self.chunks[d];
                if at >= self.shape[d] {
                    return false;
                }
                rest /= self.chunks[d];
            }
            true
        }
    }

    fn dataset_storage(&self) -> &dyn hdf5_reader::storage::Storage {
        self.file.storage()
    }

    /// All chunk locations of a chunked dataset, by chunk origin.
    fn chunk_entries(
        &self,
        index_address: u64,
        dims: &[u32],
        indexing: Option<&ChunkIndexing>,
    ) -> hdf5_reader::error::Result<HashMap<Vec<u64>, ChunkEntry>> {
        let storage = self.dataset_storage();
        let offset_size = self.file.superblock().offset_size;
        let length_size = self.file.superblock().length_size;
        let ndim = self.shape.len();
        let entries: Vec<ChunkEntry> = match indexing {
            None => hdf5_reader::btree_v1::collect_btree_v1_leaves_storage(
                storage,
                index_address,
                offset_size,
                length_size,
                Some(ndim as u32),
                dims,
                None,
            )?
            .into_iter()
            .filter_map(|(key, address)| match key {
                BTreeV1Key::RawData {
                    chunk_size,
                    filter_mask,
                    offsets,
                } => Some(ChunkEntry {
                    address,
                    size: u64::from(chunk_size),
                    filter_mask,
                    offsets: offsets.into_iter().take(ndim).collect(),
                }),
                BTreeV1Key::Group { .. } => None,
            })
            .collect(),
            Some(ChunkIndexing::SingleChunk {
                filtered_size,
                filters,
            }) => vec![hdf5_reader::chunk_index::single_chunk_entry(
                index_address,
                *filtered_size,
                *filters,
                ndim,
            )],
            Some(ChunkIndexing::BTreeV2) => {
                hdf5_reader::chunk_index::collect_v2_chunk_entries_storage(
                    storage,
                    index_address,
                    offset_size,
                    length_size,
                    ndim as u32,
                    dims,
                    None,
                )?
            }
            Some(ChunkIndexing::Implicit) => {
                hdf5_reader::chunk_index::collect_implicit_chunk_entries(
                    index_address,
                    &self.shape,
                    dims,
                    self.elem_size,
                    None,
                    storage.len(),
                )?
            }
            Some(ChunkIndexing::FixedArray { .. }) => {
                hdf5_reader::fixed_array::collect_fixed_array_chunk_entries_storage(
                    storage,
                    index_address,
                    offset_size,
                    length_size,
                    &self.shape,
                    dims,
                    None,
                )?
            }
            Some(ChunkIndexing::ExtensibleArray { .. }) => {
                hdf5_reader::extensible_array::collect_extensible_array_chunk_entries_storage(
                    storage,
                    index_address,
                    offset_size,
                    length_size,
                    &self.shape,
                    self.dataset.max_dims(),
                    dims,
                    None,
                )?
            }
        };
        Ok(entries
            .into_iter()
            .map(|e| (e.offsets.clone(), e))
            .collect())
    }
}

impl H5Array {
    /// For a contiguous numeric dataset, where chunk `index` starts in the file, its length as a
    /// zarr chunk, and how many of those bytes the file holds (the last chunk is short).
    fn contiguous_span(&self, index: &[u64]) -> Option<(u64, u64, u64)> {
        if self.values != Values::Plain {
            return None;
        }
        self.contiguous_bytes(index)
    }

    /// For a contiguous dataset, where chunk `index` starts in the file, its full length in
    /// bytes, and how many of those the file holds; `None` when that arithmetic overflows (the
    /// dataset's address and sizes come from the file).
    fn contiguous_bytes(&self, index: &[u64]) -> Option<(u64, u64, u64)> {
        let Source::Contiguous { address } = self.source else {
            return None;
        };
        let elem = self.elem_size as u64;
        let rows_per = self.chunks.first().copied().unwrap_or(1);
        let first_row = index.first().copied().unwrap_or(0).checked_mul(rows_per)?;
        let rows = rows_per.min(
            self.shape
                .first()
                .copied()
                .unwrap_or(1)
                .saturating_sub(first_row),
        );
        let row_bytes = self.row.checked_mul(elem)?;
        let full = self.chunk_elements.checked_mul(elem)?;
        let start = address.checked_add(first_row.checked_mul(row_bytes)?)?;
        Some((start, full, rows.checked_mul(row_bytes)?))
    }
}

impl ReadableStorageTraits for Hdf5Storage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let out_of_range = |range: &ByteRange, len: u64| {
            StorageError::Other(format!(
                "{}: '{key}' holds {len} bytes, so {} of it cannot be read",
                self.path.display(),
                describe_range(range)
            ))
        };
        // Contiguous numbers: read just the bytes asked for, never the whole chunk.
        if let Some((array, index)) = self.chunk_of(key.as_str())
            && let Some((offset, len, stored)) = array.contiguous_span(&index)
        {
            let storage = array.dataset_storage();
            let out = byte_ranges
                .map(|range| {
                    let Some((start, end)) = range_within(&range, len) else {
                        return Err(out_of_range(&range, len));
                    };
                    let have = end.min(stored).saturating_sub(start);
                    let mut buf = if have > 0 {
                        storage
                            .read_range(offset + start, have as usize)
                            .map_err(|e| {
                                StorageError::Other(format!(
                                    "{}: '{key}': {e}",
                                    self.path.display()
                                ))
                            })?
                            .to_vec()
                    } else {
                        Vec::new()
                    };
                    buf.resize((end - start) as usize, 0);
                    Ok(Bytes::from(buf))
                })
                .collect::<Vec<_>>();
            return Ok(Some(Box::new(out.into_iter())));
        }
        let Some(value) = self.value(key.as_str())? else {
            return Ok(None);
        };
        let len = value.len() as u64;
        let out = byte_ranges
            .map(|range| {
                let Some((start, end)) = range_within(&range, len) else {
                    return Err(out_of_range(&range, len));
                };
                Ok(value.slice(start as usize..end as usize))
            })
            .collect::<Vec<_>>();
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        if let Some((array, index)) = self.chunk_of(key.as_str())
            && let Some((_, len, _)) = array.contiguous_span(&index)
        {
            return Ok(Some(len));
        }
        Ok(self.value(key.as_str())?.map(|v| v.len() as u64))
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

fn store_key(k: &str) -> Result<StoreKey, StorageError> {
    StoreKey::new(k).map_err(|e| StorageError::Other(e.to_string()))
}

impl ListableStorageTraits for Hdf5Storage {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.keys()?.iter().map(|k| store_key(k)).collect()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.keys()?
            .iter()
            .filter(|k| k.starts_with(prefix.as_str()))
            .map(|k| store_key(k))
            .collect()
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        let mut keys = StoreKeys::new();
        let mut prefixes = BTreeSet::new();
        for k in self
            .keys()?
            .iter()
            .filter(|k| k.starts_with(prefix.as_str()))
        {
            let rest = &k[prefix.as_str().len()..];
            match rest.split_once('/') {
                Some((dir, _)) => {
                    prefixes.insert(format!("{}{dir}/", prefix.as_str()));
                }
                None => keys.push(store_key(k)?),
            }
        }
        let prefixes = prefixes
            .into_iter()
            .map(|p| StorePrefix::new(p).map_err(|e| StorageError::Other(e.to_string())))
            .collect::<Result<StorePrefixes, _>>()?;
        Ok(StoreKeysPrefixes::new(keys, prefixes))
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        let mut total = 0;
        for k in self
            .keys()?
            .iter()
            .filter(|k| k.starts_with(prefix.as_str()))
        {
            total += self.size_key(&store_key(k)?)?.unwrap_or(0);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AnnDataStore;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/data")
            .join(name)
    }

    /// Every node of the h5ad fixture appears, with the same encoding, shape and dtype, as in
    /// the zarr v2 copy anndata wrote of the same object.
    #[test]
    fn h5ad_tree_equals_zarr_tree() -> Result<()> {
        let h5 = AnnDataStore::open(fixture("tiny.h5ad"))?;
        let zarr = AnnDataStore::open(fixture("tiny.v2.zarr"))?;
        let describe = |s: &AnnDataStore| {
            s.root()
                .walk()
                .iter()
                .map(|e| e.describe())
                .collect::<Vec<_>>()
        };
        assert_eq!(describe(&h5), describe(&zarr));
        Ok(())
    }

    /// A file nesting groups 200 deep (anndata's file with a chain of `uns/d/d/...` groups added
    /// by h5py; kept in the fuzz corpus) is refused with an error naming the depth, rather than
    /// walked until the stack runs out.
    #[test]
    fn deep_groups_are_refused() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/hdf5/deep-groups.h5ad");
        let err = AnnDataStore::open(&path).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("nested more than 128 deep"), "{err}");
        assert!(err.contains("deep-groups.h5ad"), "{err}");
    }
}
