//! Opening a zarrs array: once per path (cached), from the metadata read at open, with the chunk
//! shape checked against the read limit before any chunk is fetched, and zarrs's refusals sorted
//! into unsupported and malformed.

use std::sync::Arc;

use zarrs::array::Array;
use zarrs::storage::ReadableStorageTraits;

use super::{OpenedArray, Reader};
use crate::error::{Error, Result};
use crate::limits::{ChunkGuard, bytes_of};
use crate::metadata::{ArrayMeta, DType};
use crate::rooted::RootedStorage;

impl Reader {
    /// The zarrs array at `path` (cached) with its chunk guard, refusing a chunk shape that one
    /// read could not decode within the read limit.
    pub(super) fn zarray(&self, path: &str) -> Result<OpenedArray> {
        // A poisoned cache lock only costs a rebuild of the array (and it is then not cached).
        if let Some(a) = self.arrays.lock().ok().and_then(|c| c.get(path).cloned()) {
            return Ok(a);
        }
        let meta = self.array_meta(path)?;
        let decoded = self.decoded_chunk_bytes(path, meta)?;
        let metadata: zarrs::array::ArrayMetadata = serde_json::from_value(meta.document.clone())
            .map_err(|e| {
            self.malformed(
                path,
                &format!("array metadata does not follow the zarr spec: {e}"),
            )
        })?;
        let mut storage: Arc<dyn ReadableStorageTraits> = self.storage().clone();
        let mut node = format!("/{path}");
        if !zarrs::node::NodePath::validate(&node) {
            // A name zarr v3 reserves (anndata 0.7's `__categories`): open it at the root of a
            // view rooted at its node, which zarrs accepts.
            storage = Arc::new(RootedStorage::new(storage, path));
            node = "/".to_string();
        }
        let array = Array::new_with_metadata(storage, &node, metadata)
            .map_err(|e| self.array_refused(path, &meta.dtype, &e))?;
        let guard = ChunkGuard::from_document(&meta.document, decoded);
        let opened = (Arc::new(array), Arc::new(guard));
        if let Ok(mut cache) = self.arrays.lock() {
            cache.insert(path.to_string(), opened.clone());
        }
        Ok(opened)
    }

    /// Most bytes one (inner) chunk of the array decodes to, checked against the read limit; for a
    /// sharded array also its shard index (16 bytes per inner chunk). Variable-length strings
    /// are bounded by the limit itself (their size is known only once decoded).
    fn decoded_chunk_bytes(&self, path: &str, meta: &ArrayMeta) -> Result<u64> {
        let doc = &meta.document;
        let shape_of = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_array())
                .and_then(|dims| {
                    dims.iter().try_fold(1u64, |acc, c| {
                        c.as_u64().filter(|&c| c > 0).map(|c| acc.saturating_mul(c))
                    })
                })
                .ok_or_else(|| self.malformed(path, "declared chunk shape is missing or zero"))
        };
        let outer = shape_of(
            doc.get("chunks")
                .or_else(|| doc.pointer("/chunk_grid/configuration/chunk_shape")),
        )?;
        let sharding = doc
            .pointer("/codecs/0")
            .filter(|c| c.get("name").and_then(|n| n.as_str()) == Some("sharding_indexed"));
        let elements = match sharding {
            Some(codec) => {
                let inner = shape_of(codec.pointer("/configuration/chunk_shape"))?;
                self.check_alloc(
                    path,
                    "the index of a shard of the declared chunk shape",
                    bytes_of(outer.div_ceil(inner), 16),
                )?;
                inner
            }
            None => outer,
        };
        let what = format!(
            "a chunk of the declared chunk shape ({elements} {} values)",
            meta.dtype
        );
        match meta.dtype.size() {
            Some(size) => {
                let bytes = bytes_of(elements, size as u64);
                self.check_alloc(path, &what, bytes)?;
                Ok(bytes)
            }
            None => {
                // At least an 8-byte offset per string.
                self.check_alloc(path, &what, bytes_of(elements, 8))?;
                Ok(self.read_limit().bytes())
            }
        }
    }

    /// zarrs's refusal of the array at `path`, sorted: unsupported for a data type, codec or
    /// feature zarrs does not have; malformed for metadata the zarr spec does not allow (a bad
    /// fill value, chunk grid or codec configuration).
    fn array_refused(
        &self,
        path: &str,
        dtype: &DType,
        e: &zarrs::array::ArrayCreateError,
    ) -> Error {
        use zarrs::array::ArrayCreateError as E;
        use zarrs::plugin::PluginCreateError as P;
        let unsupported = match e {
            E::AdditionalFieldUnsupportedError(_) | E::UnsupportedZarrV2Array(_) => true,
            // zarrs refuses names zarr v3 reserves (anndata 0.7's `__categories`), which are
            // valid in the stores annql reads.
            E::NodePathError(_) => true,
            // `Other` is how zarrs's codecs refuse a configuration variant they lack...
            E::DataTypeCreateError(p)
            | E::CodecsCreateError(p)
            | E::StorageTransformersCreateError(p) => {
                matches!(p, P::Unsupported(_) | P::Other(_))
            }
            // ...and how its chunk grids refuse a chunk shape that does not fit the array.
            E::ChunkGridCreateError(p) | E::ChunkKeyEncodingCreateError(p) => {
                matches!(p, P::Unsupported(_))
            }
            _ => false,
        };
        if unsupported {
            self.unsupported(path, &dtype.to_string(), &e.to_string())
        } else {
            self.malformed(path, &format!("invalid array metadata: {e}"))
        }
    }
}
