//! The storage a pre-0.7 store is read through: the stored keys, plus the chunks of the virtual
//! arrays the modern element tree names (one per field of a structured array, string views of
//! fixed-length byte strings), plus stored subtrees under new names (`raw.X` as `raw/X`).
//!
//! A virtual chunk `k` is cut from chunk `k` of its source: the source chunk is decoded through
//! zarrs as raw records (`|V<itemsize>`, same chunk keys and codecs as stored), then each record's
//! field bytes are copied out, or decoded to strings and written as vlen-utf8. Virtual chunks carry
//! no compressor.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use zarrs::array::{Array, ArrayBytes};
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
};

use super::records::{Kind, decode_number, decode_string};
use crate::hdf5::vlen_utf8;
use crate::limits::{describe_range, range_within};
use crate::metadata::ArrayMeta;
use crate::storage::Storage;

/// A stored array read as raw records: a structured array, or fixed-length strings.
pub(crate) struct Source {
    /// Its node path in the stored hierarchy.
    path: String,
    array: Array<dyn ReadableStorageTraits>,
    /// Bytes per record.
    itemsize: usize,
    /// Records along the first axis, and per chunk (1 and 1 for a 0-d array).
    len: u64,
    chunk_len: u64,
    zero_d: bool,
    /// The last chunk decoded: the columns of one record array are read one after another.
    last: Mutex<Option<(u64, Bytes)>>,
}

impl Source {
    /// The stored array at `path` (a zarr v2 document), viewed as records of `itemsize` bytes.
    pub(crate) fn open(
        inner: &Storage,
        path: &str,
        meta: &ArrayMeta,
        itemsize: usize,
    ) -> Result<Self, String> {
        let doc = &meta.document;
        let zero_d = meta.shape.is_empty();
        if meta.shape.len() > 1 {
            return Err(format!("{}-d record arrays are not read", meta.shape.len()));
        }
        let chunk_len = if zero_d {
            1
        } else {
            doc.pointer("/chunks/0")
                .and_then(Value::as_u64)
                .filter(|&c| c > 0 && c.saturating_mul(itemsize as u64) <= 1 << 31)
                .ok_or("chunk shape is missing, zero or too large")?
        };
        // The fill value, where the stored one is the bytes of one record; zeros otherwise.
        let fill = doc
            .get("fill_value")
            .filter(|f| {
                f.as_str()
                    .is_some_and(|s| s.len() == itemsize.div_ceil(3) * 4)
            })
            .cloned()
            .unwrap_or_else(|| json!(vec![0u8; itemsize]));
        let mut view = doc.clone();
        if let Some(obj) = view.as_object_mut() {
            obj.insert("dtype".into(), json!(format!("|V{itemsize}")));
            obj.insert("fill_value".into(), fill);
            obj.insert("filters".into(), Value::Null);
        }
        let metadata: zarrs::array::ArrayMetadata =
            serde_json::from_value(view).map_err(|e| e.to_string())?;
        let storage: Arc<dyn ReadableStorageTraits> = inner.clone();
        let array = Array::new_with_metadata(storage, &format!("/{path}"), metadata)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            path: path.to_string(),
            array,
            itemsize,
            len: meta.shape.first().copied().unwrap_or(1),
            chunk_len,
            zero_d,
            last: Mutex::new(None),
        })
    }

    /// Chunks along the first axis.
    pub(crate) fn chunks(&self) -> u64 {
        self.len.div_ceil(self.chunk_len)
    }

    /// The records of chunk `k`, `chunk_len` of them (the last chunk padded as stored).
    fn records(&self, k: u64) -> Result<Bytes, String> {
        if let Ok(last) = self.last.lock()
            && let Some((at, bytes)) = last.as_ref()
            && *at == k
        {
            return Ok(bytes.clone());
        }
        let index: Vec<u64> = if self.zero_d { vec![] } else { vec![k] };
        // A panic in a zarrs decoder on damaged chunk bytes is that chunk's error (see
        // `AnnDataStore::retrieve_as`).
        let bytes: ArrayBytes<'static> =
            catch_unwind(AssertUnwindSafe(|| self.array.retrieve_chunk(&index)))
                .map_err(|_| {
                    format!(
                        "array '/{}', chunk {k}: the zarr decoder failed on damaged chunk data",
                        self.path
                    )
                })?
                .map_err(|e| format!("array '/{}', chunk {k}: {e}", self.path))?;
        let bytes = bytes
            .into_fixed()
            .map_err(|e| format!("array '/{}', chunk {k}: {e}", self.path))?;
        let expected = self.chunk_len as usize * self.itemsize;
        if bytes.len() != expected {
            return Err(format!(
                "array '/{}', chunk {k}: decoded {} bytes, expected {expected}",
                self.path,
                bytes.len()
            ));
        }
        let bytes = Bytes::from(bytes.into_owned());
        if let Ok(mut last) = self.last.lock() {
            *last = Some((k, bytes.clone()));
        }
        Ok(bytes)
    }
}

/// One array of the modern tree cut out of a source's records.
pub(crate) struct Virtual {
    pub(crate) source: Arc<Source>,
    /// Where the value sits in a record, and how many values of `kind` it holds (a sub-array).
    pub(crate) offset: usize,
    pub(crate) kind: Kind,
    pub(crate) count: usize,
    /// Unsigned categorical codes are widened to `int64` (annql's dictionaries take signed keys).
    pub(crate) widen: bool,
}

impl Virtual {
    /// The `.zarray` document of the virtual array.
    pub(crate) fn document(&self, sub_shape: &[u64]) -> Value {
        let (dtype, fill, filters) = if self.widen {
            (json!("<i8"), json!(0), Value::Null)
        } else {
            self.kind.zarr_dtype()
        };
        let mut shape = vec![self.source.len];
        let mut chunks = vec![self.source.chunk_len];
        if self.source.zero_d {
            shape.clear();
            chunks.clear();
        }
        shape.extend_from_slice(sub_shape);
        chunks.extend_from_slice(sub_shape);
        json!({
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": dtype,
            "compressor": null,
            "fill_value": fill,
            "order": "C",
            "filters": filters,
            "dimension_separator": ".",
        })
    }

    /// The zarr chunk bytes of chunk `k`.
    pub(crate) fn chunk(&self, k: u64) -> Result<Vec<u8>, String> {
        let records = self.source.records(k)?;
        let size = self.kind.size();
        let width = size * self.count;
        let fields = records.chunks_exact(self.source.itemsize).map(|r| {
            r.get(self.offset..self.offset + width)
                .ok_or("field outside its record")
        });
        if self.kind.is_string() {
            let strings = fields
                .map(|f| {
                    f.map_err(String::from)
                        .and_then(|b| decode_string(b, &self.kind))
                })
                .collect::<Result<Vec<String>, String>>()?;
            return vlen_utf8(&strings);
        }
        let mut out = Vec::with_capacity(records.len() / self.source.itemsize * width);
        for f in fields {
            let f = f?;
            if self.widen {
                for v in f.chunks_exact(size) {
                    let v = decode_number(v, &self.kind).ok_or("not a number")?;
                    out.extend_from_slice(&(v as i64).to_le_bytes());
                }
            } else {
                out.extend_from_slice(f);
            }
        }
        Ok(out)
    }

    /// Every value as f64 (numbers only): the checks anndata makes at read time, made at open.
    pub(crate) fn numbers(&self) -> Result<Vec<f64>, String> {
        let mut out = Vec::new();
        for k in 0..self.source.chunks() {
            let records = self.source.records(k)?;
            for r in records.chunks_exact(self.source.itemsize) {
                if out.len() as u64 == self.source.len {
                    break;
                }
                let bytes = r
                    .get(self.offset..self.offset + self.kind.size())
                    .ok_or("field outside its record")?;
                out.push(decode_number(bytes, &self.kind).ok_or("not a number")?);
            }
        }
        Ok(out)
    }
}

/// The stored keys plus the virtual arrays and renamed subtrees.
pub(crate) struct LegacyStorage {
    inner: Storage,
    /// Virtual arrays by node path.
    virtuals: BTreeMap<String, Virtual>,
    /// Node path prefixes of the modern tree → where they are stored (`raw/X` → `raw.X`).
    aliases: Vec<(String, String)>,
    /// The store, for messages.
    name: String,
}

impl LegacyStorage {
    pub(crate) fn new(
        inner: Storage,
        virtuals: BTreeMap<String, Virtual>,
        aliases: Vec<(String, String)>,
        name: &str,
    ) -> Self {
        Self {
            inner,
            virtuals,
            aliases,
            name: name.to_string(),
        }
    }

    /// The stored key a key of the modern tree reads (itself unless under a renamed subtree).
    fn stored_key(&self, key: &str) -> Result<StoreKey, StorageError> {
        let stored = self
            .aliases
            .iter()
            .find_map(|(new, old)| {
                key.strip_prefix(new.as_str())
                    .filter(|rest| rest.starts_with('/'))
                    .map(|rest| format!("{old}{rest}"))
            })
            .unwrap_or_else(|| key.to_string());
        StoreKey::new(stored).map_err(|e| StorageError::Other(e.to_string()))
    }

    /// The chunk bytes of a virtual array's key, or None when the key names no virtual chunk.
    fn virtual_chunk(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let Some((node, chunk)) = key.rsplit_once('/') else {
            return Ok(None);
        };
        let Some(v) = self.virtuals.get(node) else {
            return Ok(None);
        };
        // Chunk "k" (or "k.0…" with a sub-array; "0" for a 0-d array).
        let mut parts = chunk.split('.');
        let k: Option<u64> = parts.next().and_then(|p| p.parse().ok());
        let Some(k) = k.filter(|&k| k < v.source.chunks() && parts.all(|p| p == "0")) else {
            return Ok(None);
        };
        v.chunk(k).map(|b| Some(Bytes::from(b))).map_err(|e| {
            StorageError::Other(format!(
                "{}: pre-0.7 element '/{node}', chunk {k}: {e}",
                self.name
            ))
        })
    }
}

impl ReadableStorageTraits for LegacyStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let Some(value) = self.virtual_chunk(key.as_str())? else {
            return self
                .inner
                .get_partial_many(&self.stored_key(key.as_str())?, byte_ranges);
        };
        let len = value.len() as u64;
        let out = byte_ranges
            .map(|range| {
                let Some((start, end)) = range_within(&range, len) else {
                    return Err(StorageError::Other(format!(
                        "{}: '{key}' holds {len} bytes, so {} of it cannot be read",
                        self.name,
                        describe_range(&range)
                    )));
                };
                Ok(value.slice(start as usize..end as usize))
            })
            .collect::<Vec<_>>();
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        match self.virtual_chunk(key.as_str())? {
            Some(v) => Ok(Some(v.len() as u64)),
            None => self.inner.size_key(&self.stored_key(key.as_str())?),
        }
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

/// Listing shows the stored keys: the virtual arrays exist in the element tree, which is built
/// once at open, not by listing.
impl ListableStorageTraits for LegacyStorage {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.inner.list()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.inner.list_prefix(prefix)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.inner.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.inner.size_prefix(prefix)
    }
}
