//! Stages `scan → decode`: range reads of an opened store's arrays into Arrow, through zarrs,
//! with chunk accounting.
//!
//! [`Reader`] holds what reads need of an opened store — its name, storage and element tree, the
//! read limit, the running totals and the caches of opened arrays and categories — and the
//! lookups every read starts with; [`AnnDataStore`](crate::AnnDataStore)'s read methods call
//! into it. The reads themselves, in pipeline order: opening a zarrs array ([`open`]), decoding
//! a range of it ([`array`]), and the encodings built on those — sparse matrices ([`sparse`])
//! and dataframe columns ([`column`]).

/// Opening a zarrs array once per path: chunk shapes checked against the read limit.
mod open;

/// Decoding ranges of one array into Arrow: values, index arrays, dense row blocks.
mod array;

/// CSR/CSC matrices: major-axis ranges, entry ranges, and sequential scans by chunk.
mod sparse;

/// Dataframe columns: plain, categorical (current and legacy) and nullable encodings.
mod column;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use zarrs::array::Array;
use zarrs::storage::ReadableStorageTraits;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::limits::{ChunkGuard, ReadLimit};
use crate::metadata::{ArrayMeta, Damaged, Node};
use crate::storage::{ReadStats, Storage};

pub use array::DenseBlock;
pub use sparse::{SparseBlock, SparseCarry};

/// A zarrs array over the store's storage (without accounting: each read wraps the storage in
/// its counters, see `Reader::retrieve_as`).
pub(crate) type ZArray = Array<dyn ReadableStorageTraits>;

/// A zarrs array opened once, with what its encoded chunks are checked for.
pub(crate) type OpenedArray = (Arc<ZArray>, Arc<ChunkGuard>);

/// What reads need of an opened store: its name, storage and element tree, what is damaged, the
/// read limit, the running totals, and the arrays and categories already opened.
pub(crate) struct Reader {
    name: String,
    storage: Storage,
    nodes: BTreeMap<String, Node>,
    damaged: Damaged,
    root: Element,
    totals: Arc<ReadStats>,
    limit: ReadLimit,
    arrays: Mutex<HashMap<String, OpenedArray>>,
    categories: Mutex<HashMap<String, ArrayRef>>,
}

impl Reader {
    /// A reader of the store `name` over `storage`, whose hierarchy is `nodes` (those in
    /// `damaged` unreadable) and element tree `root`.
    pub(crate) fn new(
        name: String,
        storage: Storage,
        nodes: BTreeMap<String, Node>,
        damaged: Damaged,
        root: Element,
        limit: ReadLimit,
    ) -> Self {
        Self {
            name,
            storage,
            nodes,
            damaged,
            root,
            totals: ReadStats::new_shared(),
            limit,
            arrays: Mutex::default(),
            categories: Mutex::default(),
        }
    }

    /// How the store is referred to in messages (its path or URL).
    #[inline]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The root element (`anndata` or `MuData`).
    #[inline]
    pub(crate) fn root(&self) -> &Element {
        &self.root
    }

    /// How many nodes (groups and arrays) the hierarchy holds.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The underlying storage.
    #[inline]
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Running totals of every read made through this store.
    #[inline]
    pub(crate) fn totals(&self) -> &Arc<ReadStats> {
        &self.totals
    }

    /// The most one read of this store may allocate.
    #[inline]
    pub(crate) fn read_limit(&self) -> ReadLimit {
        self.limit
    }

    /// The element at `path` (no leading slash needed).
    pub(crate) fn element(&self, path: &str) -> Result<&Element> {
        self.root.find(path).ok_or_else(|| Error::NotFound {
            store: self.name.clone(),
            path: path.trim_start_matches('/').to_string(),
        })
    }

    /// Refuses an allocation of `bytes` for `what` of the element at `path` above the read limit.
    pub(crate) fn check_alloc(&self, path: &str, what: &str, bytes: u64) -> Result<()> {
        self.limit.check(&self.name, path, what, bytes)
    }

    /// Why the metadata of the node at `path` (with `within`, of it or of any node below it)
    /// could not be read at open, as that element's error; None when it was read.
    pub(crate) fn damage(&self, path: &str, within: bool) -> Option<Error> {
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
    pub(crate) fn array_meta(&self, path: &str) -> Result<&ArrayMeta> {
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

    fn malformed(&self, path: &str, reason: &str) -> Error {
        Error::Malformed {
            store: self.name.clone(),
            path: path.trim_start_matches('/').to_string(),
            reason: reason.to_string(),
        }
    }

    fn unsupported(&self, path: &str, what: &str, reason: &str) -> Error {
        Error::Unsupported {
            store: self.name.clone(),
            path: path.trim_start_matches('/').to_string(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A decoding failure of the array at `path`.
    fn decode_error(&self, path: &str, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Decode {
            store: self.name().into(),
            path: path.into(),
            source,
        }
    }

    /// Checks a 1-D range against the array's length.
    fn check_range(&self, path: &str, len: u64, range: &Range<u64>) -> Result<()> {
        if range.start > range.end || range.end > len {
            return Err(Error::OutOfBounds {
                store: self.name().into(),
                path: path.into(),
                start: range.start,
                end: range.end,
                len,
            });
        }
        Ok(())
    }
}
