//! [`AnnDataStore`]: an opened store — its element tree, its storage, and what reads cost.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;

use crate::element::{Element, Encoding, build_tree};
use crate::error::{Error, Result};
use crate::limits::{ChunkGuard, ReadLimit};
use crate::metadata::{ArrayMeta, Damaged, Node, ZarrFormat, read_hierarchy};
use crate::object::{FetchStats, ObjectStorage, StorageOptions, is_remote};
use crate::read::ZArray;
use crate::storage::{ReadStats, Storage, open_local_within};

/// A zarrs array opened once, with what its encoded chunks are checked for.
pub(crate) type OpenedArray = (Arc<ZArray>, Arc<ChunkGuard>);

/// An AnnData (or MuData) store opened lazily: metadata is read, no chunk is.
pub struct AnnDataStore {
    name: String,
    storage: Storage,
    format: ZarrFormat,
    consolidated: bool,
    nodes: BTreeMap<String, Node>,
    damaged: Damaged,
    root: Element,
    totals: Arc<ReadStats>,
    fetches: Option<Arc<FetchStats>>,
    limit: ReadLimit,
    arrays: Mutex<HashMap<String, OpenedArray>>,
    categories: Mutex<HashMap<String, ArrayRef>>,
}

impl std::fmt::Debug for AnnDataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnDataStore")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("consolidated", &self.consolidated)
            .finish_non_exhaustive()
    }
}

impl AnnDataStore {
    /// Opens a store: a local zarr directory, `.zarr.zip` archive or `.h5ad` file, or a zarr
    /// store's URL (`https://`, `s3://`, `gs://`, `az://`) with default [`StorageOptions`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &StorageOptions::default())
    }

    /// Opens a store, reaching a remote one with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: &StorageOptions) -> Result<Self> {
        let path = path.as_ref();
        let location = path.to_string_lossy();
        if let Some(local) = location.strip_prefix("file://") {
            return Self::open_with(local, options);
        }
        if !is_remote(&location) {
            let storage = open_local_within(path, options.read_limit())?;
            return Self::from_storage_within(storage, path.display(), options.read_limit());
        }
        if location.ends_with(".h5ad") || location.ends_with(".h5mu") {
            return Err(Error::Remote {
                url: location.into_owned(),
                reason: "remote HDF5 files are not supported (the HDF5 reader needs a local \
                         file); download it, or convert it to zarr with anndata"
                    .into(),
            });
        }
        let object = ObjectStorage::open(&location, options)?;
        let fetches = object.stats().clone();
        let mut store = Self::from_storage_within(
            Arc::new(object),
            location.trim_end_matches('/'),
            options.read_limit(),
        )?;
        if !store.consolidated {
            log::warn!(
                "{}: no consolidated metadata, so opening read {} metadata documents one by one \
                 ({} requests); consolidate it (zarr.consolidate_metadata) to open in one",
                store.name,
                store.nodes.len(),
                fetches.requests()
            );
        }
        store.fetches = Some(fetches);
        Ok(store)
    }

    /// Opens a store over any storage, with the default [`ReadLimit`]; `name` is how errors and
    /// plans refer to it.
    pub fn from_storage(storage: Storage, name: impl Into<String>) -> Result<Self> {
        Self::from_storage_within(storage, name.into(), ReadLimit::default())
    }

    /// Opens a store over any storage, no read of it allocating more than `limit`.
    pub fn from_storage_within(
        storage: Storage,
        name: impl std::fmt::Display,
        limit: ReadLimit,
    ) -> Result<Self> {
        let name = name.to_string();
        let hierarchy = read_hierarchy(&storage, &name)?;
        // A store written before anndata 0.7 is read through its modern reading.
        let (storage, nodes) = crate::legacy::modernize(storage, &name, hierarchy.nodes)?;
        let root = build_tree(&name, &nodes)?;
        Ok(Self {
            name,
            storage,
            format: hierarchy.format,
            consolidated: hierarchy.consolidated,
            nodes,
            damaged: hierarchy.damaged,
            root,
            totals: ReadStats::new_shared(),
            fetches: None,
            limit,
            arrays: Mutex::default(),
            categories: Mutex::default(),
        })
    }

    /// How the store is referred to in messages (its path or URL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Zarr format 2 or 3.
    pub fn format(&self) -> ZarrFormat {
        self.format
    }

    /// Whether metadata came from one consolidated document.
    pub fn consolidated(&self) -> bool {
        self.consolidated
    }

    /// The root element (`anndata` or `MuData`).
    pub fn root(&self) -> &Element {
        &self.root
    }

    /// The AnnData objects in the store: the root, or each `mod/<name>` of a MuData store.
    pub fn anndatas(&self) -> Vec<&Element> {
        match self.root.encoding {
            Encoding::MuData => self
                .root
                .child("mod")
                .map(|m| {
                    m.children
                        .iter()
                        .filter(|c| c.encoding == Encoding::AnnData)
                        .collect()
                })
                // A MuData store without `mod` holds no AnnData objects.
                .unwrap_or_default(),
            _ => vec![&self.root],
        }
    }

    /// The element at `path` (no leading slash needed).
    pub fn element(&self, path: &str) -> Result<&Element> {
        self.root.find(path).ok_or_else(|| Error::NotFound {
            store: self.name.clone(),
            path: path.trim_start_matches('/').to_string(),
        })
    }

    /// Running totals of every read made through this store.
    pub fn totals(&self) -> &Arc<ReadStats> {
        &self.totals
    }

    /// What a remote store fetched over the network (None for local stores).
    pub fn fetches(&self) -> Option<&Arc<FetchStats>> {
        self.fetches.as_ref()
    }

    /// The most one read of this store may allocate.
    pub fn read_limit(&self) -> ReadLimit {
        self.limit
    }

    /// Refuses an allocation of `bytes` for `what` of the element at `path` above the read limit:
    /// for callers that size buffers from the store's declared shapes (the engine's block
    /// lists, id columns and lookup tables).
    pub fn check_alloc(&self, path: &str, what: &str, bytes: u64) -> Result<()> {
        self.limit.check(&self.name, path, what, bytes)
    }

    /// The underlying storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Why the metadata of the node at `path` (with `within`, of it or of any node below it)
    /// could not be read at open, as that element's error; None when it was read. Such a node
    /// is an empty group in the tree: whoever reads it asks here first.
    pub fn damage(&self, path: &str, within: bool) -> Option<Error> {
        let path = path.trim_matches('/');
        let (at, reason) = if within {
            let below = format!("{path}/");
            self.damaged
                .iter()
                .find(|(p, _)| path.is_empty() || p.as_str() == path || p.starts_with(&below))?
        } else {
            self.damaged.get_key_value(path)?
        };
        Some(Error::Malformed {
            store: self.name.clone(),
            path: at.clone(),
            reason: format!("its metadata cannot be read: {reason}"),
        })
    }

    /// Shape and dtype of the array node at `path`.
    pub fn array_meta(&self, path: &str) -> Result<&ArrayMeta> {
        let path = path.trim_start_matches('/');
        if let Some(e) = self.damage(path, false) {
            return Err(e);
        }
        match self.nodes.get(path) {
            Some(Node { array: Some(a), .. }) => Ok(a),
            Some(_) => Err(self.malformed(path, "expected an array, found a group")),
            None => Err(Error::Malformed {
                store: self.name.clone(),
                path: path.to_string(),
                reason: "array is missing from the store".into(),
            }),
        }
    }

    pub(crate) fn arrays_cache(&self) -> &Mutex<HashMap<String, OpenedArray>> {
        &self.arrays
    }

    pub(crate) fn categories_cache(&self) -> &Mutex<HashMap<String, ArrayRef>> {
        &self.categories
    }

    pub(crate) fn malformed(&self, path: &str, reason: &str) -> Error {
        Error::Malformed {
            store: self.name.clone(),
            path: path.trim_start_matches('/').to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn unsupported(&self, path: &str, what: &str, reason: &str) -> Error {
        Error::Unsupported {
            store: self.name.clone(),
            path: path.trim_start_matches('/').to_string(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}
