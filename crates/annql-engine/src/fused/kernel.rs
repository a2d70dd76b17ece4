//! Group × slot accumulators and the loops that fold sparse blocks into them.
//!
//! A cell maps to a group (`row_group`), a gene to a slot (`gene_slot`); an entry (cell, gene,
//! value) lands in cell `group * slots + slot`. Only the statistics some aggregate needs are
//! allocated, and an unfiltered sparse sum keeps a bitmap of touched cells instead of counts.

use annql_store::SparseBlock;
use annql_store::arrow::array::{Array, ArrayRef, AsArray};
use annql_store::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::error::{DataFusionError, Result};

use super::{AggFunc, AggSpec, ValueFilter};

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
        match (&self.seen, &self.channels[0].count) {
            (Some(seen), _) => seen[k >> 6] & (1 << (k & 63)) != 0,
            (None, Some(count)) => count[k] > 0,
            (None, None) => false,
        }
    }

    /// Stored entries in grid cell `k` (channel 0 must keep counts).
    pub fn stored(&self, k: usize) -> u64 {
        self.channels[0]
            .count
            .as_ref()
            .map_or(0, |c| u64::from(c[k]))
    }

    /// Hints the CPU to fetch grid cell `k` of every running sum and count.
    #[inline(always)]
    fn prefetch(&self, k: usize) {
        for ch in &self.channels {
            if let Some(s) = &ch.sum {
                prefetch_line(s.as_ptr().wrapping_add(k).cast());
            }
            if let Some(c) = &ch.count {
                prefetch_line(c.as_ptr().wrapping_add(k).cast());
            }
        }
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
        macro_rules! with_values {
            ($($t:ty),*) => {
                match block.data.data_type() {
                    $(dt if dt == &<$t as annql_store::arrow::datatypes::ArrowPrimitiveType>::DATA_TYPE => {
                        let values = block.data.as_primitive::<$t>().values();
                        self.fold_typed(block, row_major, row_group, genes, slots, |e| values[e] as f64);
                    })*
                    DataType::Boolean => {
                        let values = block.data.as_boolean();
                        self.fold_typed(block, row_major, row_group, genes, slots, |e| f64::from(u8::from(values.value(e))));
                    }
                    other => {
                        return Err(DataFusionError::NotImplemented(format!(
                            "fused aggregate over values of type {other}"
                        )));
                    }
                }
            };
        }
        with_values!(
            Float32Type,
            Float64Type,
            Int8Type,
            Int16Type,
            Int32Type,
            Int64Type,
            UInt8Type,
            UInt16Type,
            UInt32Type,
            UInt64Type
        );
        Ok(())
    }

    /// Picks the [`Sink`] for these accumulators and folds the block through it. The common
    /// shapes (a plain sum; a sum with counts, for zero-aware means) get their own loop, free of
    /// the per-entry tests of which statistics and filters apply.
    #[inline(always)]
    fn fold_typed(
        &mut self,
        block: &SparseBlock,
        row_major: bool,
        row_group: &[u32],
        genes: &GeneSlots,
        slots: usize,
        value: impl Fn(usize) -> f64,
    ) {
        let fold = Fold {
            block,
            row_major,
            row_group,
            gene_slot: genes.slot,
            picked: genes.picked.as_deref(),
            prefetch: self.len.saturating_mul(8) > PREFETCH_MIN_BYTES,
            slots,
        };
        if let [ch] = self.channels.as_mut_slice()
            && ch.filter.is_none()
            && ch.sumsq.is_none()
            && ch.min.is_none()
            && ch.max.is_none()
            && let Some(sum) = ch.sum.as_deref_mut()
        {
            match (&mut self.seen, ch.count.as_deref_mut()) {
                (Some(seen), None) => return fold.run(&mut SumSeen { sum, seen }, value),
                (None, Some(count)) => return fold.run(&mut SumCount { sum, count }, value),
                _ => {}
            }
        }
        fold.run(self, value);
    }
}

/// Where the entries of a fold land: one grid cell `k` at a time.
trait Sink {
    /// Asks for grid cell `k` ahead of its use.
    fn prefetch(&self, k: usize);
    /// Adds one entry of value `v` to grid cell `k`.
    fn add(&mut self, k: usize, v: f64);
}

impl Sink for Accumulators {
    #[inline(always)]
    fn prefetch(&self, k: usize) {
        Accumulators::prefetch(self, k);
    }
    #[inline(always)]
    fn add(&mut self, k: usize, v: f64) {
        Accumulators::add(self, k, v);
    }
}

/// A plain sum, with a bitmap of the cells that received entries.
struct SumSeen<'a> {
    sum: &'a mut [f64],
    seen: &'a mut [u64],
}

impl Sink for SumSeen<'_> {
    #[inline(always)]
    fn prefetch(&self, k: usize) {
        prefetch_line(self.sum.as_ptr().wrapping_add(k).cast());
    }
    #[inline(always)]
    fn add(&mut self, k: usize, v: f64) {
        self.sum[k] += v;
        self.seen[k >> 6] |= 1 << (k & 63);
    }
}

/// A sum with stored-entry counts (zero-aware means, sparse averages).
struct SumCount<'a> {
    sum: &'a mut [f64],
    count: &'a mut [u32],
}

impl Sink for SumCount<'_> {
    #[inline(always)]
    fn prefetch(&self, k: usize) {
        prefetch_line(self.sum.as_ptr().wrapping_add(k).cast());
        prefetch_line(self.count.as_ptr().wrapping_add(k).cast());
    }
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
}

impl<'a> GeneSlots<'a> {
    /// The slots of `slot`, listing the kept genes when they are few.
    pub fn new(slot: &'a [u32]) -> Self {
        let mut picked = Vec::new();
        for (gene, &s) in slot.iter().enumerate() {
            if s != NONE {
                if picked.len() == FEW_GENES {
                    return Self { slot, picked: None };
                }
                picked.push(gene as u32);
            }
        }
        Self {
            slot,
            picked: Some(picked),
        }
    }
}

/// Up to this many kept genes, a CSR row with sorted indices is searched for each of them
/// instead of being walked entry by entry.
pub const FEW_GENES: usize = 16;

/// Grids up to this size stay in cache, where prefetching only costs.
const PREFETCH_MIN_BYTES: usize = 4 << 20;

/// One block's fold: the block and the maps from its axes to groups and slots.
struct Fold<'a> {
    block: &'a SparseBlock,
    row_major: bool,
    row_group: &'a [u32],
    gene_slot: &'a [u32],
    /// The few kept genes, ascending (see [`GeneSlots`]).
    picked: Option<&'a [u32]>,
    /// Whether to prefetch grid cells (grids larger than the caches).
    prefetch: bool,
    slots: usize,
}

impl Fold<'_> {
    #[inline(always)]
    fn run(&self, sink: &mut impl Sink, value: impl Fn(usize) -> f64) {
        let (row_group, gene_slot, slots) = (self.row_group, self.gene_slot, self.slots);
        let start = self.block.major.start as usize;
        let (indptr, indices) = (&self.block.indptr, &self.block.indices);
        for m in 0..indptr.len().saturating_sub(1) {
            let entries = indptr[m] as usize..indptr[m + 1] as usize;
            if self.row_major {
                let g = row_group[start + m];
                if g == NONE {
                    continue;
                }
                let base = g as usize * slots;
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
                        continue;
                    }
                }
                let end = entries.end;
                for e in entries {
                    // A cell's entries land across its group's row of the grid, far larger than
                    // the caches: ask for the line a few entries ahead while this one is added.
                    if self.prefetch && e + PREFETCH_AHEAD < end {
                        let ahead = gene_slot[indices[e + PREFETCH_AHEAD] as usize];
                        if ahead != NONE {
                            sink.prefetch(base + ahead as usize);
                        }
                    }
                    let s = gene_slot[indices[e] as usize];
                    if s != NONE {
                        sink.add(base + s as usize, value(e));
                    }
                }
            } else {
                let s = gene_slot[start + m];
                if s == NONE {
                    continue;
                }
                for e in entries {
                    let g = row_group[indices[e] as usize];
                    if g != NONE {
                        sink.add(g as usize * slots + s as usize, value(e));
                    }
                }
            }
        }
    }
}

/// Hints the CPU to fetch the cache line at `p`. (The one `unsafe` in annql: std has no safe
/// prefetch, and the fold is bound by these misses.)
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_line(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many entries ahead [`Accumulators::fold`] prefetches grid cells.
const PREFETCH_AHEAD: usize = 32;

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
        AggFunc::Sum => Value::Float(sum),
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
    use annql_store::arrow::array::Float32Array;
    use datafusion::logical_expr::Operator;
    use std::sync::Arc;

    fn block() -> SparseBlock {
        // 3 cells × 3 genes: row 0 = [1, 0, 2], row 1 = [0, 3, 0], row 2 = [4, 0, 0].
        SparseBlock {
            major: 0..3,
            indptr: vec![0, 2, 3, 4],
            indices: vec![0, 2, 1, 0],
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
            indices: vec![2, 0, 0, 0, 2],
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
