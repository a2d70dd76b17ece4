//! Grids too large for the caches, cut into tiles: the tiles shared by a fold's workers, and
//! the buckets (of CSR rows, or of entries) that let each tile be added to while it sits in
//! cache.

use std::sync::Mutex;

use annql_store::SparseBlock;
use annql_store::arrow::array::{ArrayRef, AsArray};
use annql_store::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::error::{DataFusionError, Result};

use super::accumulators::Accumulators;
#[cfg(test)]
use super::accumulators::{Value, finish};
use super::walk::{Fold, GeneSlots};
use super::{NONE, Sink};
use crate::fused::AggSpec;

/// Grid cells per tile of a CSC fold's [`Grid`] too large for the caches: 512 KiB of sums, which stay in a
/// core's L2 cache while a bucket of entries is added; few enough tiles that appending to every
/// bucket does not thrash the caches either.
pub(crate) const TILE_BITS: u32 = 16;

/// Cells per tile of a CSR fold's [`Grid`], rounded to whole groups (at least one): 256 KiB of
/// sums, half a core's L2 cache, so a tile stays cached while the rows bucketed for it are added.
const ROW_TILE_CELLS: usize = 1 << 15;

/// Groups per tile of a CSR fold's [`Grid`] with `slots` slots per group.
pub(crate) fn row_tile_groups(slots: usize) -> usize {
    (ROW_TILE_CELLS / slots.max(1)).max(1)
}

/// The rows of a window of CSR blocks, bucketed by the tile of the grid their group falls in.
///
/// A grid larger than the caches costs a cache (and TLB) miss per entry when entries are added
/// where they fall, and bucketing every entry by tile ([`Scatter`]) costs a copy of each. A row's
/// entries all land in its group's cells, so bucketing rows is enough; over a window of many
/// blocks, each tile then takes the rows of its groups while it sits in cache.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowBuckets {
    /// Per tile: (block in the window, row position in the block), in block order.
    buckets: Vec<Vec<(u32, u32)>>,
}

impl RowBuckets {
    /// Buckets the grouped rows of `blocks` by tile of `tile_groups` groups, of `tiles` tiles.
    pub(crate) fn fill(
        &mut self,
        blocks: &[SparseBlock],
        row_group: &[u32],
        tile_groups: usize,
        tiles: usize,
    ) {
        self.buckets.resize_with(tiles, Vec::new);
        self.buckets.iter_mut().for_each(Vec::clear);
        for (b, block) in blocks.iter().enumerate() {
            let start = block.major.start as usize;
            for (m, w) in block.indptr.windows(2).enumerate() {
                let g = row_group[start + m];
                if g != NONE && w[0] < w[1] {
                    self.buckets[g as usize / tile_groups].push((b as u32, m as u32));
                }
            }
        }
    }

    /// The rows bucketed for tile `t`.
    pub(crate) fn bucket(&self, t: usize) -> &[(u32, u32)] {
        &self.buckets[t]
    }

    /// The tiles that received rows.
    pub(crate) fn tiles(&self) -> impl Iterator<Item = usize> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(t, _)| t)
    }
}

/// Grids up to this size stay in a core's cache: each thread folds into a grid of its own, with
/// entries added where they fall, and the grids merge at the end.
const TILED_MIN_BYTES: usize = 2 << 20;

/// Whether a grid of `len` cells for `aggs` is too large for the caches, and is folded as one
/// shared [`Grid`] of tiles fed through a [`RowBuckets`] (CSR) or [`Scatter`] (CSC) per thread.
pub(crate) fn tiled(len: usize, aggs: &[AggSpec], dense: bool) -> bool {
    Accumulators::bytes(len, aggs, dense) > TILED_MIN_BYTES
}

/// A block's entries bucketed by the tile of the grid they land in. A grid larger than the caches
/// costs a cache (and TLB) miss per entry when entries are added where they fall; bucketed, each
/// tile is then added to while it sits in cache (radix-partitioned aggregation).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scatter {
    /// Per tile: the entries' cells (relative to the tile's start) and values.
    buckets: Vec<Vec<(u32, f64)>>,
}

impl Scatter {
    /// Buckets the entries of `block` (see [`Accumulators::fold`]) for a grid of `len` cells.
    pub(crate) fn fill(
        &mut self,
        block: &SparseBlock,
        row_major: bool,
        row_group: &[u32],
        genes: &GeneSlots,
        slots: usize,
        len: usize,
    ) -> Result<()> {
        self.buckets.resize_with((len >> TILE_BITS) + 1, Vec::new);
        self.buckets.iter_mut().for_each(Vec::clear);
        let fold = Fold::new(block, row_major, row_group, genes, slots);
        with_values!(&block.data, value => fold.run(self, value));
        Ok(())
    }

    /// The entries bucketed for tile `t`.
    pub(crate) fn bucket(&self, t: usize) -> &[(u32, f64)] {
        &self.buckets[t]
    }

    /// The tiles that received entries, with their entries.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = (usize, &[(u32, f64)])> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(t, b)| (t, b.as_slice()))
    }
}

impl Sink for Scatter {
    #[inline(always)]
    fn add(&mut self, k: usize, v: f64) {
        self.buckets[k >> TILE_BITS].push(((k & ((1 << TILE_BITS) - 1)) as u32, v));
    }
}

/// The folded result: one set of accumulators for the whole grid, or tiles (see [`tiled`]):
/// of whole groups for CSR folds ([`RowBuckets`]), of `2^TILE_BITS` cells for CSC ones
/// ([`Scatter`]).
#[derive(Debug, Clone)]
pub(crate) struct Grid {
    /// Number of cells.
    pub(crate) len: usize,
    /// The tiles, in cell order, each of as many cells as the first but the last (which may hold
    /// fewer); one when the grid is not tiled.
    tiles: Vec<Accumulators>,
}

impl Grid {
    /// A grid of one set of accumulators.
    pub(crate) fn whole(acc: Accumulators) -> Self {
        Self {
            len: acc.len,
            tiles: vec![acc],
        }
    }

    /// The accumulators of tile `t`.
    pub(crate) fn tile(&self, t: usize) -> &Accumulators {
        &self.tiles[t]
    }

    /// The accumulators holding cell `k`, and its position there.
    #[cfg(test)]
    fn at(&self, k: usize) -> (&Accumulators, usize) {
        let tile_len = self.tiles[0].len;
        (&self.tiles[k / tile_len], k % tile_len)
    }

    /// Whether cell `k` received any entry.
    #[cfg(test)]
    pub(crate) fn touched(&self, k: usize) -> bool {
        let (acc, k) = self.at(k);
        acc.touched(k)
    }

    /// The final value of `agg` for cell `k` (see [`finish`]).
    #[cfg(test)]
    pub(crate) fn finish(&self, channel: usize, agg: &AggSpec, k: usize, zeros: u64) -> Value {
        let (acc, k) = self.at(k);
        finish(acc, channel, agg, k, zeros)
    }
}

/// The tiles of a grid shared by a fold's workers, each behind its own lock and allocated by the
/// first worker that adds to it. A grid of hundreds of MB then has its pages first touched by all
/// workers, in the fold, not by one before it starts; and tiles no entry reaches cost nothing
/// until the fold ends.
#[derive(Debug)]
pub(crate) struct SharedTiles {
    len: usize,
    tile_len: usize,
    aggs: Vec<AggSpec>,
    dense: bool,
    tiles: Vec<Mutex<Option<Accumulators>>>,
}

impl SharedTiles {
    /// Unallocated tiles of `tile_len` cells for a grid of `len` cells holding what `aggs` need.
    pub(crate) fn new(len: usize, tile_len: usize, aggs: &[AggSpec], dense: bool) -> Self {
        let tile_len = tile_len.max(1);
        Self {
            len,
            tile_len,
            aggs: aggs.to_vec(),
            dense,
            tiles: (0..len.div_ceil(tile_len))
                .map(|_| Mutex::new(None))
                .collect(),
        }
    }

    /// Number of tiles.
    pub(crate) fn count(&self) -> usize {
        self.tiles.len()
    }

    /// The empty accumulators of tile `t`.
    fn empty(&self, t: usize) -> Accumulators {
        let cells = self.tile_len.min(self.len - t * self.tile_len);
        Accumulators::new(cells, &self.aggs, self.dense)
    }

    /// Runs `f` on tile `t`, waiting for its lock.
    pub(crate) fn with<R>(&self, t: usize, f: impl FnOnce(&mut Accumulators) -> R) -> Result<R> {
        let mut tile = self.tiles[t].lock().map_err(|_| poisoned())?;
        Ok(f(tile.get_or_insert_with(|| self.empty(t))))
    }

    /// Runs `f` on tile `t` if no other worker holds it; None if one does.
    pub(crate) fn try_with<R>(
        &self,
        t: usize,
        f: impl FnOnce(&mut Accumulators) -> R,
    ) -> Option<R> {
        // Held by another worker (or poisoned, which `with` reports): the caller takes another
        // tile and comes back to this one through `with`.
        let mut tile = self.tiles[t].try_lock().ok()?;
        Some(f(tile.get_or_insert_with(|| self.empty(t))))
    }

    /// The folded grid; tiles no entry reached are empty.
    pub(crate) fn into_grid(mut self) -> Result<Grid> {
        let tiles = std::mem::take(&mut self.tiles)
            .into_iter()
            .enumerate()
            .map(|(t, tile)| {
                let tile = tile.into_inner().map_err(|_| poisoned())?;
                Ok(tile.unwrap_or_else(|| self.empty(t)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Grid {
            len: self.len,
            tiles,
        })
    }
}

/// A tile whose worker panicked while holding it.
fn poisoned() -> DataFusionError {
    DataFusionError::Internal("a fused aggregate tile was poisoned".into())
}
