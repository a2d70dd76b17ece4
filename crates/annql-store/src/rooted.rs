//! A view of a store rooted at one array's node, so that zarrs can open an array whose path it
//! refuses: zarr v3 reserves names starting with `__`, but anndata 0.7 kept a dataframe's
//! categories in a `__categories` group, and anndata still reads those stores. The array is opened
//! at the view's root, and every key the view is asked for is read at `<node>/<key>` below.

use std::sync::Arc;

use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{MaybeBytesIterator, ReadableStorageTraits, StorageError, StoreKey};

/// Keys of `inner` below `node`, seen as keys of a store whose root is `node`.
pub(crate) struct RootedStorage {
    inner: Arc<dyn ReadableStorageTraits>,
    /// The node's path in `inner`, without leading or trailing `/`.
    node: String,
}

impl RootedStorage {
    pub(crate) fn new(inner: Arc<dyn ReadableStorageTraits>, node: &str) -> Self {
        Self {
            inner,
            node: node.trim_matches('/').to_string(),
        }
    }

    fn key(&self, key: &StoreKey) -> Result<StoreKey, StorageError> {
        StoreKey::new(format!("{}/{}", self.node, key.as_str())).map_err(StorageError::from)
    }
}

impl ReadableStorageTraits for RootedStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        self.inner.get_partial_many(&self.key(key)?, byte_ranges)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size_key(&self.key(key)?)
    }

    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

#[cfg(test)]
mod tests {
    use zarrs::storage::store::MemoryStore;
    use zarrs::storage::{Bytes, WritableStorageTraits};

    use super::*;

    #[test]
    fn keys_are_read_below_the_node() -> Result<(), StorageError> {
        let store = Arc::new(MemoryStore::new());
        store.set(
            &StoreKey::new("obs/__categories/c/0")?,
            Bytes::from_static(b"abc"),
        )?;
        let rooted = RootedStorage::new(store, "/obs/__categories/c/");
        let got = rooted.get(&StoreKey::new("0")?)?;
        assert_eq!(got.as_deref(), Some(&b"abc"[..]));
        assert_eq!(rooted.size_key(&StoreKey::new("0")?)?, Some(3));
        assert_eq!(rooted.get(&StoreKey::new("1")?)?, None);
        Ok(())
    }
}
