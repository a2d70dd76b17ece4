//! The accumulators of a grid: which statistics each channel keeps, the adds of the hot loop
//! (through the [`Sink`] that fits the accumulators' shape), merging, and the final value of
//! each aggregate.

use annql_store::SparseBlock;
use annql_store::arrow::array::{ArrayRef, AsArray};
use annql_store::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::error::{DataFusionError, Result};

use super::Sink;
use super::walk::{Fold, GeneSlots};
use crate::fused::{AggFunc, AggSpec, ValueFilter};

/// The touched cells of one set of accumulators, with the slices found once: the result walks
/// every cell of a grid, and [`Accumulators::touched`] finds them again for each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Touched<'a> {
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
    pub(crate) fn get(&self, k: usize) -> bool {
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

/// The statistics of one channel: the entries passing one FILTER clause (or all of them).
#[derive(Debug, Clone)]
pub(crate) struct Channel {
    /// Entries must pass this to count here.
    pub(crate) filter: Option<ValueFilter>,
    /// Stored entries per cell of the grid.
    pub(crate) count: Option<Vec<u32>>,
    /// Sum of values.
    pub(crate) sum: Option<Vec<f64>>,
    /// Sum of squared values.
    pub(crate) sumsq: Option<Vec<f64>>,
    /// Smallest value.
    pub(crate) min: Option<Vec<f64>>,
    /// Largest value.
    pub(crate) max: Option<Vec<f64>>,
}

/// The accumulators of one thread.
#[derive(Debug, Clone)]
pub(crate) struct Accumulators {
    /// Number of grid cells (groups × slots).
    pub(crate) len: usize,
    /// Grid cells touched by at least one entry, when channel 0 keeps no counts.
    pub(crate) seen: Option<Vec<u64>>,
    /// Channel 0 is unfiltered; the others have one FILTER clause each.
    pub(crate) channels: Vec<Channel>,
}

/// Which channel each aggregate reads.
pub(crate) fn channel_of(aggs: &[AggSpec]) -> (Vec<Option<ValueFilter>>, Vec<usize>) {
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
    pub(crate) fn new(len: usize, aggs: &[AggSpec], dense: bool) -> Self {
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
    pub(crate) fn bytes(len: usize, aggs: &[AggSpec], dense: bool) -> usize {
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
    #[cfg(test)]
    pub(crate) fn touched(&self, k: usize) -> bool {
        self.touched_cells().get(k)
    }

    /// Which cells received entries, as a view to test many cells through (see [`Touched`]).
    pub(crate) fn touched_cells(&self) -> Touched<'_> {
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
    pub(crate) fn stored(&self, k: usize) -> u64 {
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
    pub(crate) fn merge(&mut self, other: Self) {
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
    pub(crate) fn fold(
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
    pub(crate) fn add_entries(&mut self, entries: &[(u32, f64)]) {
        self.feed(Entries(entries));
    }

    /// Adds CSR rows `rows` — (block in `blocks`, row position in it), ordered by block — whose
    /// groups start at `first_group`, the first group of these accumulators (a tile's).
    pub(crate) fn add_rows(
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

/// The final value of `agg` for grid cell `k`, given `zeros` absent (zero) entries that take part
/// (dense semantics; 0 for sparse).
pub(crate) fn finish(
    acc: &Accumulators,
    channel: usize,
    agg: &AggSpec,
    k: usize,
    zeros: u64,
) -> Value {
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
pub(crate) enum Value {
    /// SQL NULL.
    Null,
    /// A count.
    Int(i64),
    /// Anything else, cast to the output type afterwards.
    Float(f64),
}
