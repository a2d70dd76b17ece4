//! Tiled grids over CSC blocks (a CSC copy's genes): each worker buckets a block's entries by
//! the tile they land in ([`Scatter`]) and adds each bucket under its tile's lock, starting at
//! a different tile than the other workers and skipping tiles another holds.

use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::Result;

use super::Pass;
use crate::fused::kernel::{Scatter, SharedTiles};
use crate::schedule::run_workers;

/// Folds `pass` into `tiles`, a shared grid of `2^TILE_BITS`-cell tiles.
pub(super) fn fold(pass: &Pass, tiles: &SharedTiles) -> Result<()> {
    let (len, workers) = (pass.len, pass.workers);
    let row_major = pass.row_major();
    let next = AtomicUsize::new(0);
    let work = |t: usize| -> Result<()> {
        let mut scatter = Scatter::default();
        let mut pending: Vec<usize> = Vec::new();
        while let Some(block) = pass.read(next.fetch_add(1, Ordering::Relaxed))? {
            scatter.fill(
                &block,
                row_major,
                pass.row_group,
                pass.genes,
                pass.slots,
                len,
            )?;
            drop(block);
            pending.clear();
            pending.extend(scatter.buckets().map(|(i, _)| i));
            let start = pending.len() * t / workers;
            pending.rotate_left(start);
            while !pending.is_empty() {
                let before = pending.len();
                pending.retain(|&i| {
                    tiles
                        .try_with(i, |tile| tile.add_entries(scatter.bucket(i)))
                        .is_none()
                });
                if pending.len() == before
                    && let Some(&i) = pending.first()
                {
                    tiles.with(i, |tile| tile.add_entries(scatter.bucket(i)))?;
                    pending.remove(0);
                }
            }
            pass.matrix.progress.step();
        }
        Ok(())
    };
    run_workers("fused aggregate", workers, &work)?;
    Ok(())
}
