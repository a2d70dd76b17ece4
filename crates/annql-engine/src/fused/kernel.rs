//! Group × slot accumulators and the loops that fold sparse blocks into them.
//!
//! A cell maps to a group (`row_group`), a gene to a slot (`gene_slot`); an entry (cell, gene,
//! value) lands in cell `group * slots + slot`. Only the statistics some aggregate needs are
//! allocated, and an unfiltered sparse sum tells touched cells by sums that left −0.0 (and a
//! bitmap for stored −0.0s) instead of counts.

use std::sync::Mutex;

use annql_store::SparseBlock;
use annql_store::arrow::array::{Array, ArrayRef, AsArray};
use annql_store::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::error::{DataFusionError, Result};

use super::{AggFunc, AggSpec, ValueFilter};

/// Runs `$body` with `$value` bound to a function from entry position to value as `f64`, for
/// every value type a matrix may store.
macro_rules! with_values {
    ($data:expr, $value:ident => $body:expr) => {{
        let data: &ArrayRef = $data;
        macro_rules! typed {
            ($t:ty) => {{
                let values = data.as_primitive::<$t>().values();
                let $value = |e: usize| values[e] as f64;
                $body
            }};
        }
        match data.data_type() {
            DataType::Float32 => typed!(Float32Type),
            DataType::Float64 => typed!(Float64Type),
            DataType::Int8 => typed!(Int8Type),
            DataType::Int16 => typed!(Int16Type),
            DataType::Int32 => typed!(Int32Type),
            DataType::Int64 => typed!(Int64Type),
            DataType::UInt8 => typed!(UInt8Type),
            DataType::UInt16 => typed!(UInt16Type),
            DataType::UInt32 => typed!(UInt32Type),
            DataType::UInt64 => typed!(UInt64Type),
            DataType::Boolean => {
                let values = data.as_boolean();
                let $value = |e: usize| f64::from(u8::from(values.value(e)));
                $body
            }
            other => {
                return Err(DataFusionError::NotImplemented(format!(
                    "fused aggregate over values of type {other}"
                )));
            }
        }
    }};
}

/// The touched cells of one set of accumulators, with the slices found once: the result walks
/// every cell of a grid, and [`Accumulators::touched`] finds them again for each.
#[derive(Debug, Clone, Copy)]
pub enum Touched<'a> {
    /// The seen bitmap, and the sums starting at −0.0 when the grid keeps them.
    Seen {
        /// Cells that received an entry (a plain sum's: only −0.0 entries).
        seen: &'a [u64],
        /// The sums, whose cells hold −0.0 until an entry other than −0.0 arrives.
        sum: Option<&'a [f64]>,
    },
    /// Stored-entry counts.
    Counted(&'a [u32]),
    /// Nothing records touches (no cell is).
    Never,
}

impl Touched<'_> {
    /// Whether cell `k` received any entry.
    #[inline]
    pub fn get(&self, k: usize) -> bool {
        match self {
            Touched::Seen { seen, sum } => {
                let summed = match sum {
                    Some(s) => s[k].to_bits() != NEG_ZERO,
                    None => false,
                };
                // `|`, not `||`: both are cheap, and a branch on the first would mispredict.
                (seen[k >> 6] & (1 << (k & 63)) != 0) | summed
            }
            Touched::Counted(count) => count[k] > 0,
            Touched::Never => false,
        }
    }
}

/// Marks a cell or gene that no group or slot takes.
pub const NONE: u32 = u32::MAX;

/// The statistics of one channel: the entries passing one FILTER clause (or all of them).
#[derive(Debug, Clone)]
pub struct Channel {
    /// Entries must pass this to count here.
    pub filter: Option<ValueFilter>,
    /// Stored entries per cell of the grid.
    pub count: Option<Vec<u32>>,
    /// Sum of values.
    pub sum: Option<Vec<f64>>,
    /// Sum of squared values.
    pub sumsq: Option<Vec<f64>>,
    /// Smallest value.
    pub min: Option<Vec<f64>>,
    /// Largest value.
    pub max: Option<Vec<f64>>,
}

/// The accumulators of one thread.
#[derive(Debug, Clone)]
pub struct Accumulators {
    /// Number of grid cells (groups × slots).
    pub len: usize,
    /// Grid cells touched by at least one entry, when channel 0 keeps no counts.
    pub seen: Option<Vec<u64>>,
    /// Channel 0 is unfiltered; the others have one FILTER clause each.
    pub channels: Vec<Channel>,
}

/// Which channel each aggregate reads.
pub fn channel_of(aggs: &[AggSpec]) -> (Vec<Option<ValueFilter>>, Vec<usize>) {
    let mut filters = vec![None];
    let mut of = Vec::with_capacity(aggs.len());
    for a in aggs {
        let i = match filters.iter().position(|f| *f == a.filter) {
            Some(i) => i,
            None => {
                filters.push(a.filter);
                filters.len() - 1
            }
        };
        of.push(i);
    }
    (filters, of)
}

impl Accumulators {
    /// Empty accumulators for a grid of `len` cells, holding what `aggs` need.
    pub fn new(len: usize, aggs: &[AggSpec], dense: bool) -> Self {
        let (filters, of) = channel_of(aggs);
        let mut channels: Vec<Channel> = filters
            .iter()
            .map(|&filter| Channel {
                filter,
                count: None,
                sum: None,
                sumsq: None,
                min: None,
                max: None,
            })
            .collect();
        for (a, &c) in aggs.iter().zip(&of) {
            let ch = &mut channels[c];
            // Counts decide NULLs and denominators; an unfiltered sparse sum/min/max needs none.
            let counted =
                !matches!(a.func, AggFunc::Sum | AggFunc::Min | AggFunc::Max) || c != 0 || dense;
            if counted {
                ch.count.get_or_insert_with(|| vec![0; len]);
            }
            match a.func {
                AggFunc::Sum | AggFunc::Avg => {
                    ch.sum.get_or_insert_with(|| vec![0.0; len]);
                }
                AggFunc::Min => {
                    ch.min.get_or_insert_with(|| vec![f64::INFINITY; len]);
                }
                AggFunc::Max => {
                    ch.max.get_or_insert_with(|| vec![f64::NEG_INFINITY; len]);
                }
                AggFunc::Count => {}
                AggFunc::VarSamp | AggFunc::VarPop | AggFunc::StddevSamp | AggFunc::StddevPop => {
                    ch.sum.get_or_insert_with(|| vec![0.0; len]);
                    ch.sumsq.get_or_insert_with(|| vec![0.0; len]);
                }
            }
        }
        if dense {
            channels[0].count.get_or_insert_with(|| vec![0; len]);
        }
        let seen = channels[0]
            .count
            .is_none()
            .then(|| vec![0_u64; len.div_ceil(64)]);
        // Beside the bitmap, sums start at −0.0: adding any value but −0.0 leaves another bit
        // pattern, so a plain sum marks only −0.0 values as seen (see [`SumSeen`]).
        if seen.is_some()
            && let Some(sum) = &mut channels[0].sum
        {
            sum.fill(-0.0);
        }
        Self {
            len,
            seen,
            channels,
        }
    }

    /// Bytes held, for the memory pool.
    pub fn bytes(len: usize, aggs: &[AggSpec], dense: bool) -> usize {
        let probe = Self::new(0, aggs, dense);
        let per_cell: usize = probe
            .channels
            .iter()
            .map(|c| {
                4 * usize::from(c.count.is_some())
                    + 8 * (usize::from(c.sum.is_some())
                        + usize::from(c.sumsq.is_some())
                        + usize::from(c.min.is_some())
                        + usize::from(c.max.is_some()))
            })
            .sum();
        len * per_cell + probe.seen.map_or(0, |_| len.div_ceil(8))
    }

    /// Whether grid cell `k` received any entry.
    pub fn touched(&self, k: usize) -> bool {
        self.touched_cells().get(k)
    }

    /// Which cells received entries, as a view to test many cells through (see [`Touched`]).
    pub fn touched_cells(&self) -> Touched<'_> {
        match (&self.seen, &self.channels[0].count) {
            (Some(seen), _) => Touched::Seen {
                seen,
                sum: self.channels[0].sum.as_deref(),
            },
            (None, Some(count)) => Touched::Counted(count),
            (None, None) => Touched::Never,
        }
    }

    /// Stored entries in grid cell `k` (channel 0 must keep counts).
    pub fn stored(&self, k: usize) -> u64 {
        self.channels[0]
            .count
            .as_ref()
            .map_or(0, |c| u64::from(c[k]))
    }

    #[inline(always)]
    fn add(&mut self, k: usize, v: f64) {
        if let Some(seen) = &mut self.seen {
            seen[k >> 6] |= 1 << (k & 63);
        }
        for ch in &mut self.channels {
            if let Some(f) = &ch.filter
                && !f.test(v)
            {
                continue;
            }
            if let Some(c) = &mut ch.count {
                c[k] += 1;
            }
            if let Some(s) = &mut ch.sum {
                s[k] += v;
            }
            if let Some(s) = &mut ch.sumsq {
                s[k] += v * v;
            }
            if let Some(m) = &mut ch.min {
                m[k] = m[k].min(v);
            }
            if let Some(m) = &mut ch.max {
                m[k] = m[k].max(v);
            }
        }
    }

    /// Reads these accumulators through once, in order, so that the adds that follow (at random
    /// cells) find them in cache: a sequential read streams at memory bandwidth, while the same
    /// lines missed one by one in random order wait on memory latency each.
    fn warm(&self) {
        /// One load per 64-byte line; `black_box` keeps the compiler from dropping the loads.
        fn lines<T: Copy>(v: &Option<Vec<T>>) {
            let step = (64 / size_of::<T>()).max(1);
            for x in v.iter().flat_map(|v| v.iter().step_by(step)) {
                std::hint::black_box(*x);
            }
        }
        lines(&self.seen);
        for ch in &self.channels {
            lines(&ch.count);
            lines(&ch.sum);
            lines(&ch.sumsq);
            lines(&ch.min);
            lines(&ch.max);
        }
    }

    /// Folds another thread's accumulators into these.
    pub fn merge(&mut self, other: Self) {
        fn zip<T: Copy>(a: &mut Option<Vec<T>>, b: Option<Vec<T>>, f: impl Fn(T, T) -> T) {
            if let (Some(a), Some(b)) = (a, b) {
                for (x, y) in a.iter_mut().zip(b) {
                    *x = f(*x, y);
                }
            }
        }
        zip(&mut self.seen, other.seen, |a, b| a | b);
        for (a, b) in self.channels.iter_mut().zip(other.channels) {
            zip(&mut a.count, b.count, |x, y| x + y);
            zip(&mut a.sum, b.sum, |x, y| x + y);
            zip(&mut a.sumsq, b.sumsq, |x, y| x + y);
            zip(&mut a.min, b.min, f64::min);
            zip(&mut a.max, b.max, f64::max);
        }
    }

    /// Folds one block in. `row_major`: the block's major axis is cells (CSR); otherwise genes.
    pub fn fold(
        &mut self,
        block: &SparseBlock,
        row_major: bool,
        row_group: &[u32],
        genes: &GeneSlots,
        slots: usize,
    ) -> Result<()> {
        let fold = Fold::new(block, row_major, row_group, genes, slots);
        with_values!(&block.data, value => self.fold_typed(&fold, value));
        Ok(())
    }

    /// Adds entries `(cell, value)` of a bucket (cells relative to these accumulators).
    pub fn add_entries(&mut self, entries: &[(u32, f64)]) {
        self.feed(Entries(entries));
    }

    /// Adds CSR rows `rows` — (block in `blocks`, row position in it), ordered by block — whose
    /// groups start at `first_group`, the first group of these accumulators (a tile's).
    pub fn add_rows(
        &mut self,
        blocks: &[SparseBlock],
        rows: &[(u32, u32)],
        row_group: &[u32],
        genes: &GeneSlots,
        slots: usize,
        first_group: usize,
    ) -> Result<()> {
        self.warm();
        for run in rows.chunk_by(|a, b| a.0 == b.0) {
            let block = &blocks[run[0].0 as usize];
            let mut fold = Fold::new(block, true, row_group, genes, slots);
            fold.first_group = first_group;
            let rows = run.iter().map(|r| r.1 as usize);
            with_values!(&block.data, value => self.feed(Rows { fold: &fold, rows, value }));
        }
        Ok(())
    }

    /// Folds a block through the [`Sink`] that fits these accumulators.
    #[inline(always)]
    fn fold_typed(&mut self, fold: &Fold<'_>, value: impl Fn(usize) -> f64) {
        self.feed(BlockFold { fold, value });
    }

    /// Runs `add` against the [`Sink`] for these accumulators. The common shapes (a plain sum; a
    /// sum with counts, for zero-aware means) get their own loop, free of the per-entry tests of
    /// which statistics and filters apply.
    #[inline(always)]
    fn feed(&mut self, add: impl SinkUser) {
        if let [ch] = self.channels.as_mut_slice()
            && ch.filter.is_none()
            && ch.sumsq.is_none()
            && ch.min.is_none()
            && ch.max.is_none()
            && let Some(sum) = ch.sum.as_deref_mut()
        {
            match (&mut self.seen, ch.count.as_deref_mut()) {
                (Some(seen), None) => return add.with(&mut SumSeen { sum, seen }),
                (None, Some(count)) => return add.with(&mut SumCount { sum, count }),
                _ => {}
            }
        }
        add.with(self);
    }
}

/// Something that adds entries to a [`Sink`] of any type (the loops are monomorphised per sink).
trait SinkUser {
    fn with<S: Sink>(self, sink: &mut S);
}

/// A block's entries, as its [`Fold`] walks them.
struct BlockFold<'a, F> {
    fold: &'a Fold<'a>,
    value: F,
}

impl<F: Fn(usize) -> f64> SinkUser for BlockFold<'_, F> {
    #[inline(always)]
    fn with<S: Sink>(self, sink: &mut S) {
        self.fold.run(sink, self.value);
    }
}

/// Rows of one block, as its [`Fold`] walks them.
struct Rows<'a, I, F> {
    fold: &'a Fold<'a>,
    rows: I,
    value: F,
}

impl<I: Iterator<Item = usize>, F: Fn(usize) -> f64> SinkUser for Rows<'_, I, F> {
    #[inline(always)]
    fn with<S: Sink>(self, sink: &mut S) {
        self.fold.run_rows(self.rows, sink, self.value);
    }
}

/// A bucket of entries already mapped to cells.
struct Entries<'a>(&'a [(u32, f64)]);

impl SinkUser for Entries<'_> {
    #[inline(always)]
    fn with<S: Sink>(self, sink: &mut S) {
        for &(k, v) in self.0 {
            sink.add(k as usize, v);
        }
    }
}

/// Grid cells per tile of a CSC fold's [`Grid`] too large for the caches: 512 KiB of sums, which stay in a
/// core's L2 cache while a bucket of entries is added; few enough tiles that appending to every
/// bucket does not thrash the caches either.
pub const TILE_BITS: u32 = 16;

/// Cells per tile of a CSR fold's [`Grid`], rounded to whole groups (at least one): 256 KiB of
/// sums, half a core's L2 cache, so a tile stays cached while the rows bucketed for it are added.
const ROW_TILE_CELLS: usize = 1 << 15;

/// Groups per tile of a CSR fold's [`Grid`] with `slots` slots per group.
pub fn row_tile_groups(slots: usize) -> usize {
    (ROW_TILE_CELLS / slots.max(1)).max(1)
}

/// The rows of a window of CSR blocks, bucketed by the tile of the grid their group falls in.
///
/// A grid larger than the caches costs a cache (and TLB) miss per entry when entries are added
/// where they fall, and bucketing every entry by tile ([`Scatter`]) costs a copy of each. A row's
/// entries all land in its group's cells, so bucketing rows is enough; over a window of many
/// blocks, each tile then takes the rows of its groups while it sits in cache.
#[derive(Debug, Clone, Default)]
pub struct RowBuckets {
    /// Per tile: (block in the window, row position in the block), in block order.
    buckets: Vec<Vec<(u32, u32)>>,
}

impl RowBuckets {
    /// Buckets the grouped rows of `blocks` by tile of `tile_groups` groups, of `tiles` tiles.
    pub fn fill(
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
    pub fn bucket(&self, t: usize) -> &[(u32, u32)] {
        &self.buckets[t]
    }

    /// The tiles that received rows.
    pub fn tiles(&self) -> impl Iterator<Item = usize> + '_ {
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
pub fn tiled(len: usize, aggs: &[AggSpec], dense: bool) -> bool {
    Accumulators::bytes(len, aggs, dense) > TILED_MIN_BYTES
}

/// A block's entries bucketed by the tile of the grid they land in. A grid larger than the caches
/// costs a cache (and TLB) miss per entry when entries are added where they fall; bucketed, each
/// tile is then added to while it sits in cache (radix-partitioned aggregation).
#[derive(Debug, Clone, Default)]
pub struct Scatter {
    /// Per tile: the entries' cells (relative to the tile's start) and values.
    buckets: Vec<Vec<(u32, f64)>>,
}

impl Scatter {
    /// Buckets the entries of `block` (see [`Accumulators::fold`]) for a grid of `len` cells.
    pub fn fill(
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
    pub fn bucket(&self, t: usize) -> &[(u32, f64)] {
        &self.buckets[t]
    }

    /// The tiles that received entries, with their entries.
    pub fn buckets(&self) -> impl Iterator<Item = (usize, &[(u32, f64)])> {
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
pub struct Grid {
    /// Number of cells.
    pub len: usize,
    /// The tiles, in cell order, each of as many cells as the first but the last (which may hold
    /// fewer); one when the grid is not tiled.
    tiles: Vec<Accumulators>,
}

impl Grid {
    /// A grid of one set of accumulators.
    pub fn whole(acc: Accumulators) -> Self {
        Self {
            len: acc.len,
            tiles: vec![acc],
        }
    }

    /// The accumulators of tile `t`.
    pub fn tile(&self, t: usize) -> &Accumulators {
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
    pub fn touched(&self, k: usize) -> bool {
        let (acc, k) = self.at(k);
        acc.touched(k)
    }

    /// The final value of `agg` for cell `k` (see [`finish`]).
    #[cfg(test)]
    pub fn finish(&self, channel: usize, agg: &AggSpec, k: usize, zeros: u64) -> Value {
        let (acc, k) = self.at(k);
        finish(acc, channel, agg, k, zeros)
    }
}

/// The tiles of a grid shared by a fold's workers, each behind its own lock and allocated by the
/// first worker that adds to it. A grid of hundreds of MB then has its pages first touched by all
/// workers, in the fold, not by one before it starts; and tiles no entry reaches cost nothing
/// until the fold ends.
#[derive(Debug)]
pub struct SharedTiles {
    len: usize,
    tile_len: usize,
    aggs: Vec<AggSpec>,
    dense: bool,
    tiles: Vec<Mutex<Option<Accumulators>>>,
}

impl SharedTiles {
    /// Unallocated tiles of `tile_len` cells for a grid of `len` cells holding what `aggs` need.
    pub fn new(len: usize, tile_len: usize, aggs: &[AggSpec], dense: bool) -> Self {
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
    pub fn count(&self) -> usize {
        self.tiles.len()
    }

    /// The empty accumulators of tile `t`.
    fn empty(&self, t: usize) -> Accumulators {
        let cells = self.tile_len.min(self.len - t * self.tile_len);
        Accumulators::new(cells, &self.aggs, self.dense)
    }

    /// Runs `f` on tile `t`, waiting for its lock.
    pub fn with<R>(&self, t: usize, f: impl FnOnce(&mut Accumulators) -> R) -> Result<R> {
        let mut tile = self.tiles[t].lock().map_err(|_| poisoned())?;
        Ok(f(tile.get_or_insert_with(|| self.empty(t))))
    }

    /// Runs `f` on tile `t` if no other worker holds it; None if one does.
    pub fn try_with<R>(&self, t: usize, f: impl FnOnce(&mut Accumulators) -> R) -> Option<R> {
        // Held by another worker (or poisoned, which `with` reports): the caller takes another
        // tile and comes back to this one through `with`.
        let mut tile = self.tiles[t].try_lock().ok()?;
        Some(f(tile.get_or_insert_with(|| self.empty(t))))
    }

    /// The folded grid; tiles no entry reached are empty.
    pub fn into_grid(mut self) -> Result<Grid> {
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

/// Where the entries of a fold land: one grid cell `k` at a time.
trait Sink {
    /// Adds one entry of value `v` to grid cell `k`.
    fn add(&mut self, k: usize, v: f64);
}

impl Sink for Accumulators {
    #[inline(always)]
    fn add(&mut self, k: usize, v: f64) {
        Accumulators::add(self, k, v);
    }
}

/// The bits of −0.0, where the sums of a grid without counts start.
const NEG_ZERO: u64 = 0x8000_0000_0000_0000;

/// A plain sum, whose cells start at −0.0. Adding any value but −0.0 to −0.0 gives another bit
/// pattern (x + −0.0 is x, and +0.0 for +0.0), so a cell was touched if its sum is not −0.0, or
/// if a −0.0 was added to it, which alone sets its bit in the bitmap: the hot loop writes the
/// sum only, with a branch that is never taken on real data.
struct SumSeen<'a> {
    sum: &'a mut [f64],
    seen: &'a mut [u64],
}

impl Sink for SumSeen<'_> {
    #[inline(always)]
    fn add(&mut self, k: usize, v: f64) {
        self.sum[k] += v;
        if v.to_bits() == NEG_ZERO {
            self.seen[k >> 6] |= 1 << (k & 63);
        }
    }
}

/// A sum with stored-entry counts (zero-aware means, sparse averages).
struct SumCount<'a> {
    sum: &'a mut [f64],
    count: &'a mut [u32],
}

impl Sink for SumCount<'_> {
    #[inline(always)]
    fn add(&mut self, k: usize, v: f64) {
        self.sum[k] += v;
        self.count[k] += 1;
    }
}

/// Genes mapped to slots; when a query keeps only a few genes, also their ids, ascending.
#[derive(Debug, Clone)]
pub struct GeneSlots<'a> {
    /// Slot per gene, or [`NONE`].
    pub slot: &'a [u32],
    /// The kept genes, when there are at most [`FEW_GENES`].
    pub picked: Option<Vec<u32>>,
    /// Every gene kept, in its own slot (`slot[g] == g`): an entry's gene is its slot, with no
    /// lookup between loading the index and adding to the grid.
    pub identity: bool,
}

impl<'a> GeneSlots<'a> {
    /// The slots of `slot`, listing the kept genes when they are few.
    pub fn new(slot: &'a [u32]) -> Self {
        let identity = slot.iter().enumerate().all(|(g, &s)| s as usize == g);
        let mut picked = Vec::new();
        for (gene, &s) in slot.iter().enumerate() {
            if s != NONE {
                if picked.len() == FEW_GENES {
                    return Self {
                        slot,
                        picked: None,
                        identity,
                    };
                }
                picked.push(gene as u32);
            }
        }
        Self {
            slot,
            picked: Some(picked),
            identity,
        }
    }
}

/// Up to this many kept genes, a CSR row with sorted indices is searched for each of them
/// instead of being walked entry by entry.
pub const FEW_GENES: usize = 16;

/// One block's fold: the block and the maps from its axes to groups and slots.
struct Fold<'a> {
    block: &'a SparseBlock,
    row_major: bool,
    row_group: &'a [u32],
    gene_slot: &'a [u32],
    /// The few kept genes, ascending (see [`GeneSlots`]).
    picked: Option<&'a [u32]>,
    /// Every gene in its own slot (see [`GeneSlots`]).
    identity: bool,
    slots: usize,
    /// The group the sink's cell 0 belongs to (a tile of a [`Grid`] starts past 0).
    first_group: usize,
}

impl<'a> Fold<'a> {
    fn new(
        block: &'a SparseBlock,
        row_major: bool,
        row_group: &'a [u32],
        genes: &'a GeneSlots,
        slots: usize,
    ) -> Self {
        Self {
            block,
            row_major,
            row_group,
            gene_slot: genes.slot,
            picked: genes.picked.as_deref(),
            identity: genes.identity,
            slots,
            first_group: 0,
        }
    }

    /// Adds the entries of CSR rows `rows` (positions in the block) to `sink`, whose cell 0 is
    /// that of group `first_group` (every row's group is at or past it).
    #[inline(always)]
    fn run_rows(
        &self,
        rows: impl Iterator<Item = usize>,
        sink: &mut impl Sink,
        value: impl Fn(usize) -> f64,
    ) {
        for m in rows {
            self.row(m, sink, &value);
        }
    }

    /// Adds CSR row `m` of the block (a position in it) to `sink`.
    #[inline(always)]
    fn row(&self, m: usize, sink: &mut impl Sink, value: &impl Fn(usize) -> f64) {
        let (indptr, indices) = (&self.block.indptr, &self.block.indices);
        let entries = indptr[m] as usize..indptr[m + 1] as usize;
        let g = self.row_group[self.block.major.start as usize + m];
        if g == NONE {
            return;
        }
        let base = (g as usize - self.first_group) * self.slots;
        let gene_slot = self.gene_slot;
        // A few genes of a row in gene order (as anndata writes them): search for each.
        if let Some(picked) = self.picked {
            let row = &indices[entries.clone()];
            if row.is_sorted() {
                for &gene in picked {
                    let mut j = row.partition_point(|&i| i < gene);
                    while j < row.len() && row[j] == gene {
                        let s = gene_slot[gene as usize];
                        sink.add(base + s as usize, value(entries.start + j));
                        j += 1;
                    }
                }
                return;
            }
        }
        // Every gene kept (a full pseudobulk): the index is the slot. The store checked each index
        // against the gene count, so `base + gene` stays inside the group's slots.
        if self.identity {
            for (e, &gene) in entries.clone().zip(&indices[entries]) {
                sink.add(base + gene as usize, value(e));
            }
            return;
        }
        for e in entries {
            let s = gene_slot[indices[e] as usize];
            if s != NONE {
                sink.add(base + s as usize, value(e));
            }
        }
    }

    #[inline(always)]
    fn run(&self, sink: &mut impl Sink, value: impl Fn(usize) -> f64) {
        let (row_group, gene_slot, slots) = (self.row_group, self.gene_slot, self.slots);
        let start = self.block.major.start as usize;
        let (indptr, indices) = (&self.block.indptr, &self.block.indices);
        let majors = indptr.len().saturating_sub(1);
        if self.row_major {
            return self.run_rows(0..majors, sink, value);
        }
        // A CSC block: a gene per major position, its cells' groups per entry.
        for m in 0..majors {
            let s = gene_slot[start + m];
            if s == NONE {
                continue;
            }
            for e in indptr[m] as usize..indptr[m + 1] as usize {
                let g = row_group[indices[e] as usize];
                if g != NONE {
                    sink.add(g as usize * slots + s as usize, value(e));
                }
            }
        }
    }
}

/// Null data arrays are not expected in a matrix; refuse them rather than read garbage.
pub fn check_values(data: &ArrayRef) -> Result<()> {
    if data.null_count() > 0 {
        return Err(DataFusionError::Execution(
            "matrix data array has nulls".into(),
        ));
    }
    Ok(())
}

/// The final value of `agg` for grid cell `k`, given `zeros` absent (zero) entries that take part
/// (dense semantics; 0 for sparse).
pub fn finish(acc: &Accumulators, channel: usize, agg: &AggSpec, k: usize, zeros: u64) -> Value {
    let ch = &acc.channels[channel];
    let zeros = match ch.filter {
        Some(f) if !f.test(0.0) => 0,
        _ => zeros,
    };
    let stored = ch.count.as_ref().map(|c| u64::from(c[k]));
    // Without counts this is channel 0 of a sparse query, where the cell exists only if touched.
    let n = stored.map_or(1, |s| s + zeros);
    let sum = ch.sum.as_ref().map_or(0.0, |s| s[k]);
    let sumsq = ch.sumsq.as_ref().map_or(0.0, |s| s[k]);
    let nf = n as f64;
    let var = |ddof: f64| {
        if nf - ddof <= 0.0 {
            None
        } else {
            Some(((sumsq - sum * sum / nf) / (nf - ddof)).max(0.0))
        }
    };
    match agg.func {
        AggFunc::Count => Value::Int(n as i64),
        _ if n == 0 => Value::Null,
        // + 0.0: a sum of −0.0 values alone (from the −0.0 a grid without counts starts at) is 0.
        AggFunc::Sum => Value::Float(sum + 0.0),
        AggFunc::Avg => Value::Float(sum / nf),
        AggFunc::Min => {
            let m = ch.min.as_ref().map_or(f64::INFINITY, |m| m[k]);
            Value::Float(if zeros > 0 { m.min(0.0) } else { m })
        }
        AggFunc::Max => {
            let m = ch.max.as_ref().map_or(f64::NEG_INFINITY, |m| m[k]);
            Value::Float(if zeros > 0 { m.max(0.0) } else { m })
        }
        AggFunc::VarSamp => var(1.0).map_or(Value::Null, Value::Float),
        AggFunc::VarPop => var(0.0).map_or(Value::Null, Value::Float),
        AggFunc::StddevSamp => var(1.0).map_or(Value::Null, |v| Value::Float(v.sqrt())),
        AggFunc::StddevPop => var(0.0).map_or(Value::Null, |v| Value::Float(v.sqrt())),
    }
}

/// One aggregate result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A count.
    Int(i64),
    /// Anything else, cast to the output type afterwards.
    Float(f64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use annql_store::arrow::array::{Float32Array, Float64Array};
    use datafusion::logical_expr::Operator;
    use std::sync::Arc;

    fn block() -> SparseBlock {
        // 3 cells × 3 genes: row 0 = [1, 0, 2], row 1 = [0, 3, 0], row 2 = [4, 0, 0].
        SparseBlock {
            major: 0..3,
            indptr: vec![0, 2, 3, 4],
            indices: vec![0, 2, 1, 0].into(),
            data: Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0])),
        }
    }

    #[test]
    fn sums_by_group_and_slot() -> Result<()> {
        let aggs = [AggSpec {
            func: AggFunc::Sum,
            filter: None,
        }];
        let mut acc = Accumulators::new(2 * 3, &aggs, false);
        // Cells 0 and 2 in group 0, cell 1 in group 1; every gene its own slot.
        acc.fold(&block(), true, &[0, 1, 0], &GeneSlots::new(&[0, 1, 2]), 3)?;
        let sums = acc.channels[0].sum.clone().unwrap_or_default();
        assert_eq!(sums, vec![5.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
        assert!(acc.touched(0) && !acc.touched(1) && acc.touched(4));
        Ok(())
    }

    #[test]
    fn stored_zeros_of_either_sign_touch_their_cells() -> Result<()> {
        let aggs = [AggSpec {
            func: AggFunc::Sum,
            filter: None,
        }];
        // Row 0 stores −0.0 at gene 0 and +0.0 at gene 1; row 1 stores 2 and −2 at gene 2.
        let block = SparseBlock {
            major: 0..2,
            indptr: vec![0, 2, 4],
            indices: vec![0, 1, 2, 2].into(),
            data: Arc::new(Float64Array::from(vec![-0.0, 0.0, 2.0, -2.0])),
        };
        let slot = [0, 1, 2, 3];
        let mut acc = Accumulators::new(4, &aggs, false);
        acc.fold(&block, true, &[0, 0], &GeneSlots::new(&slot), 4)?;
        let touched: Vec<bool> = (0..4).map(|k| acc.touched(k)).collect();
        assert_eq!(touched, [true, true, true, false]);
        // Each sums to zero, reported as +0.0 as a sum from +0.0 would be.
        for k in 0..3 {
            match finish(&acc, 0, &aggs[0], k, 0) {
                Value::Float(v) => assert_eq!(v.to_bits(), 0.0_f64.to_bits(), "cell {k}"),
                other => panic!("cell {k}: {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn dense_mean_counts_zeros_and_filters_split_channels() -> Result<()> {
        let aggs = [
            AggSpec {
                func: AggFunc::Avg,
                filter: None,
            },
            AggSpec {
                func: AggFunc::Count,
                filter: Some(ValueFilter {
                    op: Operator::Gt,
                    constant: 1.5,
                }),
            },
        ];
        let mut acc = Accumulators::new(3, &aggs, true);
        // One group, every cell; gene 1 dropped.
        acc.fold(
            &block(),
            true,
            &[0, 0, 0],
            &GeneSlots::new(&[0, NONE, 2]),
            3,
        )?;
        let (_, of) = channel_of(&aggs);
        // Gene 0: values 1 and 4 over 3 cells → mean 5/3; one zero.
        let zeros = 3 - acc.stored(0);
        assert_eq!(
            finish(&acc, of[0], &aggs[0], 0, zeros),
            Value::Float(5.0 / 3.0)
        );
        assert_eq!(finish(&acc, of[1], &aggs[1], 0, zeros), Value::Int(1));
        Ok(())
    }

    #[test]
    fn few_genes_are_searched_in_sorted_rows_and_walked_in_unsorted_ones() -> Result<()> {
        let aggs = [AggSpec {
            func: AggFunc::Sum,
            filter: None,
        }];
        // Row 0 = [1, 0, 2] stored out of order, row 1 = [5, 5 (duplicate), 3] sorted.
        let block = SparseBlock {
            major: 0..2,
            indptr: vec![0, 2, 5],
            indices: vec![2, 0, 0, 0, 2].into(),
            data: Arc::new(Float32Array::from(vec![2.0, 1.0, 5.0, 5.0, 3.0])),
        };
        let genes = GeneSlots::new(&[0, NONE, 1]);
        assert_eq!(genes.picked.as_deref(), Some(&[0, 2][..]));
        let mut acc = Accumulators::new(2 * 2, &aggs, false);
        acc.fold(&block, true, &[0, 1], &genes, 2)?;
        let sums = acc.channels[0].sum.clone().unwrap_or_default();
        assert_eq!(sums, vec![1.0, 2.0, 10.0, 3.0]);
        // Past FEW_GENES kept genes nothing is listed, and every row is walked.
        let all: Vec<u32> = (0..FEW_GENES as u32 + 1).collect();
        assert!(GeneSlots::new(&all).picked.is_none());
        Ok(())
    }

    #[test]
    fn every_gene_kept_adds_by_index_as_the_slot_lookup_does() -> Result<()> {
        // 3 cells × 20 genes (more than FEW_GENES, so rows are walked), 2 groups.
        let genes = 20u32;
        let block = SparseBlock {
            major: 0..3,
            indptr: vec![0, 4, 5, 8],
            indices: vec![0, 3, 17, 19, 5, 1, 5, 19].into(),
            data: Arc::new(Float32Array::from(vec![
                1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0,
            ])),
        };
        let slot: Vec<u32> = (0..genes).collect();
        let by_index = GeneSlots::new(&slot);
        assert!(by_index.identity);
        assert!(!GeneSlots::new(&[0, NONE, 2]).identity);
        assert!(!GeneSlots::new(&[1, 0]).identity);
        let by_lookup = GeneSlots {
            identity: false,
            ..by_index.clone()
        };
        let aggs = [AggSpec {
            func: AggFunc::Sum,
            filter: None,
        }];
        let row_group = [1, 0, 1];
        let mut sums = Vec::new();
        for genes_of in [&by_index, &by_lookup] {
            let mut acc = Accumulators::new(2 * genes as usize, &aggs, false);
            acc.fold(&block, true, &row_group, genes_of, genes as usize)?;
            sums.push(acc.channels[0].sum.clone().unwrap_or_default());
        }
        assert_eq!(sums[0], sums[1]);
        // Group 1 (cells 0 and 2): gene 19 got 4 + 8.
        assert_eq!(sums[0][20 + 19], 12.0);
        assert_eq!(sums[0][5], 5.0);
        Ok(())
    }

    #[test]
    fn tiled_grids_give_the_sums_of_a_whole_one() -> Result<()> {
        // 2 groups × 300,000 slots: 4.8 MB of sums, past TILED_MIN_BYTES; 10 tiles of entries
        // (CSC folds), or 2 of rows, a group each (CSR folds).
        let slots = 300_000;
        let block = SparseBlock {
            major: 0..3,
            indptr: vec![0, 3, 4, 6],
            indices: vec![0, 150_000, 299_999, 299_999, 7, 150_000].into(),
            data: Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
        };
        let slot: Vec<u32> = (0..slots as u32).collect();
        let genes = GeneSlots::new(&slot);
        // Cells 0 and 2 in group 1, cell 1 in group 0.
        let row_group = [1, 0, 1];
        for aggs in [
            vec![AggSpec {
                func: AggFunc::Sum,
                filter: None,
            }],
            vec![AggSpec {
                func: AggFunc::Avg,
                filter: None,
            }],
            vec![
                AggSpec {
                    func: AggFunc::Sum,
                    filter: None,
                },
                AggSpec {
                    func: AggFunc::Count,
                    filter: Some(ValueFilter {
                        op: Operator::Gt,
                        constant: 2.5,
                    }),
                },
            ],
        ] {
            let len = 2 * slots;
            assert!(tiled(len, &aggs, false));
            let mut whole = Accumulators::new(len, &aggs, false);
            let tile_len = 1 << TILE_BITS;
            let tiles = SharedTiles::new(len, tile_len, &aggs, false);
            assert_eq!(tiles.count(), len.div_ceil(tile_len));
            let mut scatter = Scatter::default();
            // Tiles of whole groups, fed rows: one group per tile at this many slots.
            let tile_groups = row_tile_groups(slots);
            let row_tiles = SharedTiles::new(len, tile_groups * slots, &aggs, false);
            assert_eq!((tile_groups, row_tiles.count()), (1, 2));
            let mut rows = RowBuckets::default();
            // Folded twice: the buckets are emptied and reused.
            let window = [block.clone()];
            for _ in 0..2 {
                whole.fold(&block, true, &row_group, &genes, slots)?;
                scatter.fill(&block, true, &row_group, &genes, slots, len)?;
                for (t, entries) in scatter.buckets() {
                    tiles.with(t, |tile| tile.add_entries(entries))?;
                }
                rows.fill(&window, &row_group, tile_groups, row_tiles.count());
                for t in rows.tiles().collect::<Vec<_>>() {
                    let first = t * tile_groups;
                    row_tiles.with(t, |tile| {
                        tile.add_rows(&window, rows.bucket(t), &row_group, &genes, slots, first)
                    })??;
                }
            }
            let whole = Grid::whole(whole);
            for grid in [tiles.into_grid()?, row_tiles.into_grid()?] {
                let (_, of) = channel_of(&aggs);
                let mut touched = 0;
                for k in 0..len {
                    assert_eq!(grid.touched(k), whole.touched(k), "cell {k}");
                    touched += usize::from(grid.touched(k));
                    for (a, &c) in aggs.iter().zip(&of) {
                        assert_eq!(
                            grid.finish(c, a, k, 0),
                            whole.finish(c, a, k, 0),
                            "cell {k}"
                        );
                    }
                }
                assert_eq!(touched, 5);
                let sum = aggs.iter().position(|a| a.func == AggFunc::Sum);
                if let Some(j) = sum {
                    assert_eq!(
                        grid.finish(of[j], &aggs[j], slots + 150_000, 0),
                        Value::Float(16.0)
                    );
                    assert_eq!(grid.finish(of[j], &aggs[j], 299_999, 0), Value::Float(8.0));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn csc_blocks_map_cells_through_row_group() -> Result<()> {
        let aggs = [AggSpec {
            func: AggFunc::Max,
            filter: None,
        }];
        let mut acc = Accumulators::new(3, &aggs, false);
        // The same numbers read as 3 genes × 3 cells.
        acc.fold(&block(), false, &[0, 1, 2], &GeneSlots::new(&[0, 0, 0]), 1)?;
        assert_eq!(finish(&acc, 0, &aggs[0], 0, 0), Value::Float(4.0));
        assert_eq!(finish(&acc, 0, &aggs[0], 2, 0), Value::Float(2.0));
        Ok(())
    }
}
