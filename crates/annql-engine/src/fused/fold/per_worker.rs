//! Grids small enough for the caches: each worker folds the blocks it takes into accumulators
//! of its own, adding each entry where it falls, and the workers' grids merge at the end.

use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::Result;

use super::Pass;
use crate::fused::kernel::Accumulators;
use crate::schedule::run_workers;

/// Folds `pass` per worker and merges the workers' grids.
pub(super) fn fold(pass: &Pass) -> Result<Accumulators> {
    let (spec, len) = (pass.spec, pass.len);
    let next = AtomicUsize::new(0);
    let work = |_: usize| -> Result<Accumulators> {
        let mut acc = Accumulators::new(len, &spec.aggs, spec.dense);
        while let Some(block) = pass.read(next.fetch_add(1, Ordering::Relaxed))? {
            acc.fold(
                &block,
                pass.row_major(),
                pass.row_group,
                pass.genes,
                pass.slots,
            )?;
            pass.matrix.progress.step();
        }
        Ok(acc)
    };
    let mut merged: Option<Accumulators> = None;
    for r in run_workers("fused aggregate", pass.workers, &work)? {
        match &mut merged {
            Some(m) => m.merge(r),
            None => merged = Some(r),
        }
    }
    Ok(merged.unwrap_or_else(|| Accumulators::new(len, &spec.aggs, spec.dense)))
}
