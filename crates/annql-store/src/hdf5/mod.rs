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
//!
//! Its rooms: the file opened and its metadata synthesised, with the storage traits, here; the
//! walk of its groups ([`walk`]); each dataset's layout and the decoding of its chunks
//! ([`dataset`]); and beneath those the type conversions ([`convert`]) and the two codecs
//! annql supplies itself ([`deflate`], [`lzf`]).

/// The walk of the file's groups: every object once, bounded in count and depth.
mod walk;

/// A dataset's layout and `.zarray` document, and its zarr chunks read and decoded.
mod dataset;

mod convert;
mod deflate;
mod lzf;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hdf5_reader::{Hdf5File, OpenOptions};
use serde_json::{Map, Value, json};
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, StorePrefixes,
};

use crate::error::{Error, Result};
use crate::limits::{describe_range, range_within};
use convert::attribute_json;
pub(crate) use convert::vlen_utf8;
use dataset::{H5Array, registry};
use walk::{MAX_OBJECTS, Object, collect};

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

/// Runs `f`, turning a panic inside the HDF5 reader into an error naming the file.
fn guarded<T>(path: &Path, element: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Error::Hdf5 {
        path: path.to_path_buf(),
        element: element.to_string(),
        source: hdf5_reader::error::Error::Other("the HDF5 reader panicked".into()),
    })
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
