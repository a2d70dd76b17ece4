//! Where the engine's work runs: blocking work off the async runtime, and parallel work on a
//! bounded number of worker threads.
//!
//! Queries are driven by tokio's runtime, whose worker threads must never block; store reads
//! and decoding do (file and network I/O, decompression). This is the one place that decides
//! which threads such work gets, so that a query's parallelism is the session's
//! `target_partitions` and nothing else: `crates/annql-engine/clippy.toml` forbids the other
//! ways of starting threads (`tokio::task::spawn_blocking`, `std::thread`, rayon's global pool
//! and pool builder) everywhere but here.
//!
//! - [`blocking`]: one piece of blocking work on tokio's blocking threads, awaited.
//! - [`run_workers`]: `n` scoped threads running the same loop (each pulling work itself),
//!   joined before returning.
//! - [`Workers`]: a pool of `n` threads for one query's parallel maps, dropped with it.

use datafusion::error::{DataFusionError, Result};
use rayon::iter::{
    FromParallelIterator, IndexedParallelIterator, IntoParallelIterator, ParallelIterator,
};
use tokio::task::JoinHandle;

/// Runs `work` on tokio's blocking threads, off the runtime's workers; await the handle for its
/// result (an error if the work panicked or the runtime shut down).
#[allow(clippy::disallowed_methods)] // the one place blocking work is started
pub(crate) fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    tokio::task::spawn_blocking(work)
}

/// Runs `work` on `n` scoped threads (given their index) and returns their results in order, or
/// the first error. A panic of a thread is an internal error naming `what` the workers run.
#[allow(clippy::disallowed_methods)] // the one place worker threads are started
pub(crate) fn run_workers<T: Send>(
    what: &str,
    n: usize,
    work: &(impl Fn(usize) -> Result<T> + Sync),
) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|t| s.spawn(move || work(t))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DataFusionError::Internal(format!("{what} worker panicked")))
                })
            })
            .collect()
    })
}

/// A pool of worker threads owned by one piece of work (a query's fold), for parallel maps whose
/// items are small and many; its threads end when it is dropped.
pub(crate) struct Workers {
    pool: rayon::ThreadPool,
}

impl Workers {
    /// A pool of `threads` threads.
    #[allow(clippy::disallowed_methods)] // the one place a thread pool is built
    pub(crate) fn try_new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Self { pool })
    }

    /// `f(position, item)` for every item, on the pool's threads, collected in order into `C`
    /// (a `Result` or `Option` of a `Vec` stops at the first error or `None`).
    #[allow(clippy::disallowed_methods)] // parallel iterators run here, on this pool
    pub(crate) fn map<P, R, C>(&self, items: P, f: impl Fn(usize, P::Item) -> R + Sync + Send) -> C
    where
        P: IntoParallelIterator + Send,
        P::Iter: IndexedParallelIterator,
        R: Send,
        C: FromParallelIterator<R> + Send,
    {
        self.pool.install(|| {
            items
                .into_par_iter()
                .enumerate()
                .map(|(i, x)| f(i, x))
                .collect()
        })
    }

    /// `f(item)` for every item, on the pool's threads, until the first error.
    #[allow(clippy::disallowed_methods)] // parallel iterators run here, on this pool
    pub(crate) fn try_for_each<P>(
        &self,
        items: P,
        f: impl Fn(P::Item) -> Result<()> + Sync + Send,
    ) -> Result<()>
    where
        P: IntoParallelIterator + Send,
    {
        self.pool.install(|| items.into_par_iter().try_for_each(f))
    }
}
