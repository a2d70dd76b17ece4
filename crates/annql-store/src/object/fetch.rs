//! From byte ranges to GET requests: bounded ranges coalesced (`object_store::coalesce_ranges`),
//! open-ended ones one by one, every body checked to be as long as asked for, all run on an I/O
//! runtime of annql's own and awaited from zarrs's synchronous reads.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use zarrs::storage::byte_range::ByteRange;
use zarrs::storage::{Bytes, StorageError};

use super::cache::FetchStats;
use crate::error::{Error, Result};

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
pub(super) fn block_on<T: Send + 'static>(
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

/// Fetches `ranges` of the object at `path`: bounded ranges coalesced (ranges less than
/// `coalesce` bytes apart merged into one request), open-ended ones one by one.
pub(super) async fn fetch_ranges(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    ranges: Vec<ByteRange>,
    stats: Arc<FetchStats>,
    coalesce: u64,
) -> object_store::Result<Vec<Bytes>> {
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
        return Ok(parts);
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
    Ok(parts)
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
