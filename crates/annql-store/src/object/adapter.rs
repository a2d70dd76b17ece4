//! [`ObjectStorage`]: a zarr store under a URL, presented to zarrs as readable, listable storage.
//! Reads are answered from the [`ChunkCache`] first and the rest fetched (see [`super::fetch`]);
//! listings are delimited, one request per group.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, GetOptions, ObjectStore, ObjectStoreScheme};
use url::Url;
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, StorePrefixes,
};

use super::cache::{CacheKey, ChunkCache, FetchStats};
use super::fetch::{block_on, fetch_ranges};
use super::options::StorageOptions;
use crate::error::{Error, Result};

/// A zarr store under a URL, read through `object_store`.
pub struct ObjectStorage {
    url: String,
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    cache: Option<Arc<ChunkCache>>,
    stats: Arc<FetchStats>,
    coalesce: u64,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// Connects to the store at `url` (`https://…/atlas.zarr`, `s3://bucket/atlas.zarr`, `gs://…`,
    /// `az://…`). Nothing is fetched yet.
    pub fn open(url: &str, options: &StorageOptions) -> Result<Self> {
        let remote = |reason: String| Error::Remote {
            url: url.to_string(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| remote(format!("not a valid URL: {e}")))?;
        let (scheme, root) = ObjectStoreScheme::parse(&parsed)
            .map_err(|e| remote(format!("unsupported location: {e}")))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Http => {
                // An http:// URL is itself the consent to plain HTTP.
                let client = options
                    .client_options()
                    .with_allow_http(parsed.scheme().eq_ignore_ascii_case("http"));
                let mut b = object_store::http::HttpBuilder::new()
                    .with_url(url.trim_end_matches('/'))
                    .with_client_options(client)
                    .with_retry(options.retry());
                for (k, v) in &options.backend {
                    let key: ClientConfigKey = k
                        .parse()
                        .map_err(|_| option_error(k, v, "not an HTTP client option"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| remote(e.to_string()))?)
            }
            ObjectStoreScheme::AmazonS3 => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_client_options(options.client_options())
                    .with_retry(options.retry());
                for (k, v) in &options.backend {
                    let key: object_store::aws::AmazonS3ConfigKey = k
                        .parse()
                        .map_err(|_| option_error(k, v, "not an S3 option"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| remote(e.to_string()))?)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_client_options(options.client_options())
                    .with_retry(options.retry());
                for (k, v) in &options.backend {
                    let key: object_store::gcp::GoogleConfigKey = k
                        .parse()
                        .map_err(|_| option_error(k, v, "not a GCS option"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| remote(e.to_string()))?)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_client_options(options.client_options())
                    .with_retry(options.retry());
                for (k, v) in &options.backend {
                    let key: object_store::azure::AzureConfigKey = k
                        .parse()
                        .map_err(|_| option_error(k, v, "not an Azure option"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| remote(e.to_string()))?)
            }
            other => return Err(remote(format!("{other:?} is not object storage"))),
        };
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::limit::LimitStore::new(
            store,
            options.concurrency,
        ));
        // The HTTP store is rooted at the URL itself; the others at the bucket.
        let root = match scheme {
            ObjectStoreScheme::Http => ObjectPath::default(),
            _ => root,
        };
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            store,
            root,
            cache: options.cache.then(ChunkCache::shared),
            stats: Arc::default(),
            coalesce: options.coalesce,
        })
    }

    /// The names directly under this location, one level deep (objects and "directories", as
    /// `ls` shows them): how a glob over object storage finds its stores. Not available over
    /// plain HTTP, which has no listing.
    pub fn list_children(&self) -> Result<Vec<String>> {
        let remote = |reason: String| Error::Remote {
            url: self.url.clone(),
            reason,
        };
        if self.url.starts_with("http://") || self.url.starts_with("https://") {
            return Err(remote(
                "HTTP has no listing: name the stores (a list, or a collection file)".into(),
            ));
        }
        let (store, prefix) = (self.store.clone(), self.root.clone());
        let listing =
            super::fetch::block_on(async move { store.list_with_delimiter(Some(&prefix)).await })
                .map_err(|e| remote(e.to_string()))?
                .map_err(|e| remote(format!("cannot list: {e}")))?;
        let names = listing
            .common_prefixes
            .iter()
            .chain(listing.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        Ok(names)
    }

    /// What this store fetched so far.
    pub fn stats(&self) -> &Arc<FetchStats> {
        &self.stats
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.root.as_ref().is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.root.as_ref()))
        }
    }

    fn cache_key(&self, key: &StoreKey, range: &ByteRange) -> CacheKey {
        let range = match *range {
            ByteRange::FromStart(o, Some(l)) => (0, o, l),
            ByteRange::FromStart(o, None) => (1, o, 0),
            ByteRange::Suffix(l) => (2, l, 0),
        };
        CacheKey {
            object: format!("{}/{}", self.url, key.as_str()),
            range,
        }
    }

    fn storage_error(&self, key: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Other(format!("{}/{key}: {e}", self.url))
    }

    /// Fetches `ranges` of one object: bounded ranges coalesced, open-ended ones one by one.
    /// None when the object does not exist.
    fn fetch(
        &self,
        key: &StoreKey,
        ranges: &[ByteRange],
    ) -> Result<Option<Vec<Bytes>>, StorageError> {
        let store = self.store.clone();
        let path = self.path(key.as_str());
        let stats = self.stats.clone();
        let coalesce = self.coalesce;
        let ranges = ranges.to_vec();
        let answer = block_on(fetch_ranges(store, path, ranges, stats, coalesce))?;
        match answer {
            Ok(parts) => Ok(Some(parts)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.storage_error(key.as_str(), e)),
        }
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let store = self.store.clone();
        let base = self.path(prefix.trim_end_matches('/'));
        let root = self.root.clone();
        let listed = block_on(async move {
            let prefix = (!base.as_ref().is_empty()).then_some(base);
            store
                .list(prefix.as_ref())
                .map_ok(|m| m.location)
                .try_collect::<Vec<_>>()
                .await
                .map(|paths| {
                    paths
                        .into_iter()
                        .filter_map(|p| relative(&root, &p))
                        .collect::<Vec<_>>()
                })
        })?;
        listed.map_err(|e| self.storage_error(prefix, e))
    }
}

/// `location` relative to `root`, as a store key.
fn relative(root: &ObjectPath, location: &ObjectPath) -> Option<String> {
    if root.as_ref().is_empty() {
        return Some(location.as_ref().to_string());
    }
    location
        .as_ref()
        .strip_prefix(root.as_ref())
        .and_then(|rest| rest.strip_prefix('/'))
        .map(str::to_string)
}

fn option_error(key: &str, value: &str, reason: &str) -> Error {
    Error::Option {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl ReadableStorageTraits for ObjectStorage {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let ranges: Vec<ByteRange> = byte_ranges.collect();
        let mut out: Vec<Option<Bytes>> = vec![None; ranges.len()];
        let mut missing = Vec::new();
        for (i, range) in ranges.iter().enumerate() {
            match self
                .cache
                .as_ref()
                .and_then(|c| c.get(&self.cache_key(key, range)))
            {
                Some(bytes) => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .cache_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    out[i] = Some(bytes);
                }
                None => missing.push(i),
            }
        }
        if !missing.is_empty() {
            let wanted: Vec<ByteRange> = missing.iter().map(|&i| ranges[i]).collect();
            let Some(fetched) = self.fetch(key, &wanted)? else {
                return Ok(None);
            };
            for (&i, bytes) in missing.iter().zip(fetched) {
                if let Some(cache) = &self.cache {
                    // A copy of its own: the response buffer is freed once decoded, as without a
                    // cache, instead of living on in the allocator's pages until evicted.
                    cache.insert(
                        self.cache_key(key, &ranges[i]),
                        Bytes::copy_from_slice(&bytes),
                    );
                }
                out[i] = Some(bytes);
            }
        }
        let out: Vec<Result<Bytes, StorageError>> = out
            .into_iter()
            .map(|b| b.ok_or_else(|| self.storage_error(key.as_str(), "range was not fetched")))
            .collect();
        Ok(Some(Box::new(out.into_iter())))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        let store = self.store.clone();
        let path = self.path(key.as_str());
        let stats = self.stats.clone();
        let head = block_on(async move {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let options = GetOptions {
                head: true,
                ..Default::default()
            };
            store.get_opts(&path, options).await.map(|r| r.meta.size)
        })?;
        match head {
            Ok(size) => Ok(Some(size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.storage_error(key.as_str(), e)),
        }
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl ListableStorageTraits for ObjectStorage {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.list_prefix(&StorePrefix::root())
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        let mut keys = self.list_keys(prefix.as_str())?;
        keys.sort();
        keys.into_iter()
            .map(|k| StoreKey::new(k).map_err(|e| StorageError::Other(e.to_string())))
            .collect()
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        // One delimited listing per group, not a listing of every chunk below it.
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let store = self.store.clone();
        let base = self.path(prefix.as_str().trim_end_matches('/'));
        let root = self.root.clone();
        let listed = block_on(async move {
            let at = (!base.as_ref().is_empty()).then_some(base);
            store.list_with_delimiter(at.as_ref()).await.map(|l| {
                let keys: Vec<String> = l
                    .objects
                    .iter()
                    .filter_map(|m| relative(&root, &m.location))
                    .collect();
                let dirs: Vec<String> = l
                    .common_prefixes
                    .iter()
                    .filter_map(|p| relative(&root, p))
                    .collect();
                (keys, dirs)
            })
        })?;
        let (keys, dirs) = listed.map_err(|e| self.storage_error(prefix.as_str(), e))?;
        let keys = keys
            .into_iter()
            .map(|k| StoreKey::new(k).map_err(|e| StorageError::Other(e.to_string())))
            .collect::<Result<StoreKeys, _>>()?;
        let prefixes = dirs
            .into_iter()
            .map(|p| {
                StorePrefix::new(format!("{p}/")).map_err(|e| StorageError::Other(e.to_string()))
            })
            .collect::<Result<StorePrefixes, _>>()?;
        Ok(StoreKeysPrefixes::new(keys, prefixes))
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        let mut total = 0;
        for k in self.list_prefix(prefix)? {
            total += self.size_key(&k)?.unwrap_or(0);
        }
        Ok(total)
    }
}
