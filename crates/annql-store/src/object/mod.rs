//! Stores in object storage — HTTP(S), S3, GCS, Azure — read in place through `object_store`.
//!
//! Every read becomes byte-range requests: zarrs asks for whole chunks or, in sharded arrays, for
//! a shard's index and then only the inner chunks a query needs. [`ObjectStorage`] answers from
//! a shared, byte-bounded [`ChunkCache`] first, coalesces the ranges it must fetch
//! (`object_store::coalesce_ranges`), caps concurrent requests, and counts what it fetched in
//! [`FetchStats`]. Retries with backoff come from `object_store`'s client; a response shorter
//! than the range asked for is an error, never a short chunk.
//!
//! Its rooms, from the caller down: the options a store is reached with ([`options`]), the
//! adapter that presents a bucket as zarrs storage ([`adapter`]), the fetcher that turns ranges
//! into coalesced GETs ([`fetch`]), and the process-wide cache with the fetch counters
//! ([`cache`]).

/// How a remote store is reached: `object_store` settings plus annql's own.
mod options;

/// [`ObjectStorage`]: zarrs's storage traits over an `object_store`, answered from the cache first.
mod adapter;

/// Byte ranges into GET requests, coalesced and checked, on annql's own I/O runtime.
mod fetch;

/// The process-wide chunk cache and the counters of what was fetched.
mod cache;

pub use adapter::ObjectStorage;
pub use cache::{ChunkCache, FetchSnapshot, FetchStats};
pub use options::{StorageOptions, parse_bytes};

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
}
