//! Stores in object storage — HTTP(S), S3, GCS, Azure — read in place through `object_store`.
//!
//! Every read becomes byte-range requests: zarrs asks for whole chunks or, in sharded arrays, for
//! a shard's index and then only the inner chunks a query needs. [`ObjectStorage`] answers from
//! a shared, byte-bounded [`ChunkCache`] first, coalesces the ranges it must fetch
//! (`object_store::coalesce_ranges`), caps concurrent requests, and counts what it fetched in
//! [`FetchStats`]. Retries with backoff come from `object_store`'s client; a response shorter
//! than the range asked for is an error, never a short chunk.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, GetOptions, GetRange, ObjectStore,
    ObjectStoreScheme, RetryConfig,
};
use url::Url;
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, StorePrefixes,
};

use crate::error::{Error, Result};
use crate::limits::ReadLimit;

/// URL schemes served by object storage (anything else is a local path).
const REMOTE_SCHEMES: [&str; 10] = [
    "http", "https", "s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss",
];

/// Whether `location` names a store in object storage rather than a local path.
pub fn is_remote(location: &str) -> bool {
    location
        .split_once("://")
        .is_some_and(|(scheme, _)| REMOTE_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}

/// How a remote store is reached: `object_store` settings (endpoint, region, credentials…) plus
/// annql's own (cache, retries, timeouts, concurrency, coalescing).
///
/// Keys not listed in [`StorageOptions::set`] go to the backend's builder (`endpoint`, `region`,
/// `aws_access_key_id`, `skip_signature`, `allow_http`, …); credentials not given here come from
/// the usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
#[derive(Debug, Clone)]
pub struct StorageOptions {
    backend: Vec<(String, String)>,
    cache: bool,
    retries: usize,
    retry_timeout: Duration,
    timeout: Duration,
    connect_timeout: Duration,
    concurrency: usize,
    coalesce: u64,
    read_limit: ReadLimit,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            backend: Vec::new(),
            cache: true,
            retries: 3,
            retry_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            concurrency: 16,
            coalesce: 64 * 1024,
            read_limit: ReadLimit::default(),
        }
    }
}

impl StorageOptions {
    /// Options from `key = value` pairs (ATTACH options, a catalog line).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        Self::default().with_pairs(pairs)
    }

    /// These options with `pairs` applied on top (later keys win).
    pub fn with_pairs<K: AsRef<str>, V: AsRef<str>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut options = self.clone();
        for (k, v) in pairs {
            options.set(k.as_ref(), v.as_ref())?;
        }
        Ok(options)
    }

    /// Sets one option. annql's keys: `cache` (on/off), `retries`, `retry_timeout`, `timeout`,
    /// `connect_timeout` (seconds), `concurrency` (requests in flight), `coalesce` (bytes between
    /// ranges merged into one request), `anonymous` (no credentials: public buckets),
    /// `read_limit` (bytes one read may allocate, any store; default 1 GiB).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = |reason: &str| Error::Option {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let seconds = |v: &str| {
            // The parse error becomes the option error, which says what was expected.
            v.trim_end_matches('s')
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| bad("expected a number of seconds"))
        };
        let count = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| bad("expected a whole number"))
        };
        match key.to_ascii_lowercase().as_str() {
            "cache" => self.cache = parse_bool(value).ok_or_else(|| bad("expected on or off"))?,
            "retries" => self.retries = count(value)?,
            "retry_timeout" => self.retry_timeout = seconds(value)?,
            "timeout" => self.timeout = seconds(value)?,
            "connect_timeout" => self.connect_timeout = seconds(value)?,
            "concurrency" => self.concurrency = count(value)?.max(1),
            "coalesce" => {
                self.coalesce = parse_bytes(value).ok_or_else(|| bad("expected bytes"))?
            }
            "read_limit" => {
                let bytes = parse_bytes(value).filter(|&b| b > 0);
                self.read_limit = ReadLimit::new(bytes.ok_or_else(|| bad("expected bytes"))?)
            }
            "anonymous" => {
                if parse_bool(value).ok_or_else(|| bad("expected true or false"))? {
                    self.backend.push(("skip_signature".into(), "true".into()));
                }
            }
            other => self.backend.push((other.to_string(), value.to_string())),
        }
        Ok(())
    }

    /// These options with a read limit of `bytes`: no read (a chunk, a row block, a zip member,
    /// a category table) allocates more (see [`crate::limits`]).
    pub fn with_read_limit(mut self, bytes: u64) -> Self {
        self.read_limit = ReadLimit::new(bytes);
        self
    }

    /// The most one read may allocate.
    pub fn read_limit(&self) -> ReadLimit {
        self.read_limit
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.connect_timeout)
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: self.retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// `65536`, `64KB`, `512MiB`, `2g`.
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let digits = v.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = v[digits.len()..]
        .trim_end_matches("ib")
        .trim_end_matches('b');
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let n: f64 = digits.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * scale as f64) as u64)
}

/// What a remote store fetched: requests sent, bytes received, and reads the cache answered.
#[derive(Debug, Default)]
pub struct FetchStats {
    requests: AtomicU64,
    bytes: AtomicU64,
    cache_hits: AtomicU64,
    cache_bytes: AtomicU64,
}

impl FetchStats {
    /// Requests sent to the server: ranged GETs after coalescing, HEADs and listings (a listing
    /// that pages counts once; retries are not counted).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes received.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Ranges answered from the chunk cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// Bytes answered from the chunk cache.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes.load(Ordering::Relaxed)
    }

    /// The counters now, to subtract from a later snapshot.
    pub fn snapshot(&self) -> FetchSnapshot {
        FetchSnapshot {
            requests: self.requests(),
            bytes: self.bytes(),
            cache_hits: self.cache_hits(),
            cache_bytes: self.cache_bytes(),
        }
    }
}

/// A copy of [`FetchStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FetchSnapshot {
    /// Requests sent.
    pub requests: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Ranges answered from the cache.
    pub cache_hits: u64,
    /// Bytes answered from the cache.
    pub cache_bytes: u64,
}

impl FetchSnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &FetchSnapshot) -> FetchSnapshot {
        FetchSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            cache_hits: self.cache_hits.saturating_sub(earlier.cache_hits),
            cache_bytes: self.cache_bytes.saturating_sub(earlier.cache_bytes),
        }
    }
}

/// Which bytes of which object a cache entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CacheKey {
    object: String,
    range: (u8, u64, u64),
}

/// A process-wide LRU of fetched byte ranges, bounded by their total size, so repeated queries —
/// in one session or across a server's connections — do not refetch chunks.
#[derive(Debug)]
pub struct ChunkCache {
    capacity: u64,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    size: u64,
    tick: u64,
    entries: HashMap<CacheKey, (Bytes, u64)>,
    by_age: BTreeMap<u64, CacheKey>,
}

impl ChunkCache {
    /// A cache holding at most `capacity` bytes (0 keeps nothing).
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            state: Mutex::default(),
        }
    }

    /// The process's cache: `ANNQL_CACHE_SIZE` bytes (`256MiB` by default, `0` turns it off).
    pub fn shared() -> Arc<ChunkCache> {
        static SHARED: OnceLock<Arc<ChunkCache>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                // Unset (or not unicode) means the default; a value that does not parse is
                // reported and the default used (the cache is a process-wide setting made once).
                let capacity = std::env::var("ANNQL_CACHE_SIZE")
                    .ok()
                    .map_or(256 << 20, |v| {
                        parse_bytes(&v).unwrap_or_else(|| {
                        log::warn!(
                            "ANNQL_CACHE_SIZE='{v}' is not a size (e.g. 512MiB, 0): using 256MiB"
                        );
                        256 << 20
                    })
                    });
                Arc::new(ChunkCache::new(capacity))
            })
            .clone()
    }

    /// Bytes held now.
    pub fn size(&self) -> u64 {
        self.state.lock().map(|s| s.size).unwrap_or(0)
    }

    /// Bytes it may hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn get(&self, key: &CacheKey) -> Option<Bytes> {
        // A poisoned lock (a reader panicked holding it) makes every read a miss: the bytes are
        // then fetched again, never made up.
        let mut state = self.state.lock().ok()?;
        state.tick += 1;
        let tick = state.tick;
        let (bytes, age) = state.entries.get_mut(key)?;
        let (bytes, old) = (bytes.clone(), std::mem::replace(age, tick));
        state.by_age.remove(&old);
        state.by_age.insert(tick, key.clone());
        Some(bytes)
    }

    fn insert(&self, key: CacheKey, bytes: Bytes) {
        let len = bytes.len() as u64;
        if len > self.capacity / 4 {
            // One huge range would flush everything else.
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.tick += 1;
        let tick = state.tick;
        if let Some((old, age)) = state.entries.insert(key.clone(), (bytes, tick)) {
            state.size -= old.len() as u64;
            state.by_age.remove(&age);
        }
        state.by_age.insert(tick, key);
        state.size += len;
        while state.size > self.capacity {
            let Some((_, oldest)) = state.by_age.pop_first() else {
                break;
            };
            if let Some((b, _)) = state.entries.remove(&oldest) {
                state.size -= b.len() as u64;
            }
        }
    }
}

/// The runtime that drives object-store futures for zarrs' synchronous reads. It is separate
/// from any runtime the caller runs in (DataFusion's, the server's), so a blocking read never
/// waits on its own worker thread.
fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("annql-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Remote {
            url: String::new(),
            reason: format!("cannot start the I/O runtime: {e}"),
        })
}

/// Runs `future` on the I/O runtime and waits for it from this (synchronous) thread.
fn block_on<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> std::result::Result<T, StorageError> {
    let runtime = io_runtime().map_err(|e| StorageError::Other(e.to_string()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        // A failed send means the waiting thread is gone: there is no one left to answer.
        let _ = tx.send(future.await);
    });
    rx.recv()
        .map_err(|_| StorageError::Other("the I/O task stopped before answering".into()))
}

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
        let answer = block_on(async move {
            let bounded: Option<Vec<Range<u64>>> = ranges
                .iter()
                .map(|r| match *r {
                    ByteRange::FromStart(o, Some(l)) => Some(o..o + l),
                    _ => None,
                })
                .collect();
            if let Some(bounded) = bounded {
                let parts = object_store::coalesce_ranges(
                    &bounded,
                    |r| {
                        let (store, path, stats) = (store.clone(), path.clone(), stats.clone());
                        async move { get(&*store, &path, GetRange::Bounded(r), &stats).await }
                    },
                    coalesce,
                )
                .await?;
                return Ok::<Vec<Bytes>, object_store::Error>(parts);
            }
            let mut parts = Vec::with_capacity(ranges.len());
            for r in ranges {
                let range = match r {
                    ByteRange::FromStart(0, None) => None,
                    ByteRange::FromStart(o, None) => Some(GetRange::Offset(o)),
                    ByteRange::FromStart(o, Some(l)) => Some(GetRange::Bounded(o..o + l)),
                    ByteRange::Suffix(l) => Some(GetRange::Suffix(l)),
                };
                parts.push(match range {
                    Some(range) => get(&*store, &path, range, &stats).await?,
                    None => get_all(&*store, &path, &stats).await?,
                });
            }
            Ok::<Vec<Bytes>, object_store::Error>(parts)
        })?;
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

/// One ranged GET; the body must be as long as the range says.
async fn get(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    range: GetRange,
    stats: &FetchStats,
) -> object_store::Result<Bytes> {
    let options = GetOptions {
        range: Some(range.clone()),
        ..Default::default()
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let result = store.get_opts(path, options).await?;
    let expected = result.range.end - result.range.start;
    let bytes = result.bytes().await?;
    stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    if bytes.len() as u64 != expected {
        return Err(short_body(path, expected, bytes.len()));
    }
    if let GetRange::Bounded(r) = &range
        && bytes.len() as u64 != r.end - r.start
    {
        return Err(short_body(path, r.end - r.start, bytes.len()));
    }
    Ok(bytes)
}

/// A whole-object GET, checked against the object's advertised size.
async fn get_all(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    stats: &FetchStats,
) -> object_store::Result<Bytes> {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let result = store.get_opts(path, GetOptions::default()).await?;
    let expected = result.meta.size;
    let bytes = result.bytes().await?;
    stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    if bytes.len() as u64 != expected {
        return Err(short_body(path, expected, bytes.len()));
    }
    Ok(bytes)
}

fn short_body(path: &ObjectPath, expected: u64, got: usize) -> object_store::Error {
    object_store::Error::Generic {
        store: "annql",
        source: format!("{path}: response body has {got} bytes, expected {expected} (truncated)")
            .into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_sizes() {
        assert!(is_remote("https://example.org/a.zarr"));
        assert!(is_remote("S3://bucket/a.zarr"));
        assert!(!is_remote("data/a.zarr"));
        assert!(!is_remote("file:///tmp/a.zarr"));
        assert_eq!(parse_bytes("64KB"), Some(64 << 10));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn options_are_checked() {
        let o = StorageOptions::from_pairs([("cache", "off"), ("retries", "0")]);
        assert!(o.as_ref().is_ok_and(|o| !o.cache && o.retries == 0));
        let err = StorageOptions::from_pairs([("retries", "many")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("retries") && err.contains("whole number"),
            "{err}"
        );
        let err = ObjectStorage::open(
            "s3://bucket/a.zarr",
            &StorageOptions::from_pairs([("no_such_option", "1")]).unwrap_or_default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("no_such_option"), "{err}");
    }

    #[test]
    fn cache_evicts_least_recently_used_by_bytes() {
        let cache = ChunkCache::new(40);
        let key = |n: u64| CacheKey {
            object: "s/k".into(),
            range: (0, n, 10),
        };
        for n in 0..4 {
            cache.insert(key(n), Bytes::from(vec![0u8; 10]));
        }
        assert_eq!(cache.size(), 40);
        assert!(cache.get(&key(0)).is_some()); // 0 is now the most recent
        cache.insert(key(4), Bytes::from(vec![0u8; 10]));
        assert!(cache.get(&key(1)).is_none(), "the oldest entry went");
        assert!(cache.get(&key(0)).is_some() && cache.get(&key(4)).is_some());
        assert_eq!(cache.size(), 40);
        cache.insert(key(9), Bytes::from(vec![0u8; 30])); // larger than a quarter: not kept
        assert!(cache.get(&key(9)).is_none());
    }
}
