//! What a remote store fetched ([`FetchStats`], [`FetchSnapshot`]) and the process-wide
//! [`ChunkCache`] of fetched byte ranges that answers before any request is sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use zarrs::storage::Bytes;

use super::options::parse_bytes;

/// What a remote store fetched: requests sent, bytes received, and reads the cache answered.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub(super) requests: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) cache_hits: AtomicU64,
    pub(super) cache_bytes: AtomicU64,
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
pub(super) struct CacheKey {
    pub(super) object: String,
    pub(super) range: (u8, u64, u64),
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

    pub(super) fn get(&self, key: &CacheKey) -> Option<Bytes> {
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

    pub(super) fn insert(&self, key: CacheKey, bytes: Bytes) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
