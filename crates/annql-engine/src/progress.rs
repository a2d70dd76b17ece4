//! [`Progress`]: the blocks the running queries of a session have planned and scanned, for
//! progress bars.
//!
//! A room of its own at the bottom of the engine: the session creates the counter, every bound
//! table holds it, and the operators that read blocks (the scan, the fused aggregation) count
//! into it — none of them owns it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Blocks planned and scanned by the running queries of a session, for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress {
    /// (blocks done, blocks planned) since the last reset.
    pub fn get(&self) -> (u64, u64) {
        (self.done.load(Relaxed), self.total.load(Relaxed))
    }

    /// Starts counting afresh (before a statement).
    pub fn reset(&self) {
        self.done.store(0, Relaxed);
        self.total.store(0, Relaxed);
    }

    /// Counts `blocks` more blocks to read.
    pub(crate) fn plan(&self, blocks: usize) {
        self.total.fetch_add(blocks as u64, Relaxed);
    }

    /// Counts one block read.
    pub(crate) fn step(&self) {
        self.done.fetch_add(1, Relaxed);
    }

    /// Sets both counts (work measured otherwise than in blocks: a gene index's entries).
    pub(crate) fn set(&self, done: u64, total: u64) {
        self.total.store(total, Relaxed);
        self.done.store(done, Relaxed);
    }
}
