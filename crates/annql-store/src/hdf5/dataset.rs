//! One HDF5 dataset as a zarr array: its layout read from the object header into a `.zarray`
//! document (HDF5's chunks for a chunked dataset, virtual chunks of whole rows for a contiguous
//! one), and each zarr chunk produced from the file — located through the chunk index, decoded
//! through the filter pipeline, and its strings and records re-encoded.

use std::collections::HashMap;
use std::sync::OnceLock;

use hdf5_reader::btree_v1::BTreeV1Key;
use hdf5_reader::chunk_index::ChunkEntry;
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::messages::filter_pipeline::FilterDescription;
use hdf5_reader::messages::layout::{ChunkIndexing, DataLayout};
use hdf5_reader::{Dataset, FilterRegistry, Hdf5File};
use serde_json::{Value, json};
use zarrs::storage::Bytes;

use super::convert::{Values, fixed_string, vlen_utf8, zarr_dtype};
use super::product;
use super::{deflate, lzf};

/// Elements per virtual chunk of a contiguous numeric dataset (whole rows, at least one row).
const CONTIGUOUS_CHUNK_ELEMENTS: u64 = 1 << 20;
/// Elements per virtual chunk of a contiguous string dataset (each resolves a heap object).
const CONTIGUOUS_STRING_CHUNK: u64 = 1 << 16;
/// Largest decoded chunk annql accepts from a file.
const MAX_CHUNK_BYTES: u64 = 1 << 32;

/// A dataset and how its zarr chunks are produced.
pub(super) struct H5Array {
    file: Hdf5File,
    dataset: Dataset,
    pub(super) shape: Vec<u64>,
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

/// A contiguous chunk whose position in the file overflows a 64-bit offset.
const BEYOND_FILE: &str = "the dataset's bytes lie beyond any file offset";

/// The filters annql decodes: hdf5-reader's built-ins, deflate replaced by annql's (which checks
/// the Adler-32; its output bounded by `deflate_limit` where known), plus LZF.
pub(super) fn registry(deflate_limit: Option<usize>) -> FilterRegistry {
    let limit = deflate_limit.unwrap_or(usize::try_from(MAX_CHUNK_BYTES).unwrap_or(usize::MAX));
    let mut registry = FilterRegistry::new();
    registry.register(
        hdf5_reader::filters::FILTER_DEFLATE,
        Box::new(move |_, data, _| deflate::inflate(data, limit)),
    );
    registry.register(lzf::FILTER_LZF, Box::new(lzf::lzf_filter));
    registry
}

impl H5Array {
    /// The dataset's layout and its `.zarray` document.
    pub(super) fn new(
        file: &Hdf5File,
        dataset: &Dataset,
    ) -> hdf5_reader::error::Result<(Self, Value)> {
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
    pub(super) fn grid(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunks)
            .map(|(&n, &c)| n.div_ceil(c))
            .collect()
    }

    /// The zarr bytes of chunk `index`, or `None` when the file holds nothing for it.
    pub(super) fn chunk(&self, index: &[u64]) -> Result<Option<Vec<u8>>, String> {
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

    pub(super) fn dataset_storage(&self) -> &dyn hdf5_reader::storage::Storage {
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
    pub(super) fn contiguous_span(&self, index: &[u64]) -> Option<(u64, u64, u64)> {
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
