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

    /// Hints the CPU to fetch grid cell `k` of every running sum and count. (The one `unsafe` in
    /// annql: std has no safe prefetch, and the fold is bound by these misses.)
    #[inline(always)]
    #[allow(unsafe_code)]
    fn prefetch(&self, k: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let hint = |p: *const i8| {
                // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p) }
            };
            for ch in &self.channels {
                if let Some(s) = &ch.sum {
                    hint(s.as_ptr().wrapping_add(k).cast());
                }
                if let Some(c) = &ch.count {
                    hint(c.as_ptr().wrapping_add(k).cast());
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = k;
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
        gene_slot: &[u32],
        slots: usize,
    ) -> Result<()> {
        macro_rules! with_values {
            ($($t:ty),*) => {
                match block.data.data_type() {
                    $(dt if dt == &<$t as annql_store::arrow::datatypes::ArrowPrimitiveType>::DATA_TYPE => {
                        let values = block.data.as_primitive::<$t>().values();
                        self.fold_typed(block, row_major, row_group, gene_slot, slots, |e| values[e] as f64);
                    })*
                    DataType::Boolean => {
                        let values = block.data.as_boolean();
                        self.fold_typed(block, row_major, row_group, gene_slot, slots, |e| f64::from(u8::from(values.value(e))));
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

    #[inline(always)]
    fn fold_typed(
        &mut self,
        block: &SparseBlock,
        row_major: bool,
        row_group: &[u32],
        gene_slot: &[u32],
        slots: usize,
        value: impl Fn(usize) -> f64,
    ) {
        let start = block.major.start as usize;
        let (indptr, indices) = (&block.indptr, &block.indices);
        for m in 0..indptr.len().saturating_sub(1) {
            let entries = indptr[m] as usize..indptr[m + 1] as usize;
            if row_major {
                let g = row_group[start + m];
                if g == NONE {
                    continue;
                }
                let base = g as usize * slots;
                let end = entries.end;
                for e in entries {
                    // A cell's entries land across its group's row of the grid, far larger than
                    // the caches: ask for the line a few entries ahead while this one is added.
                    if e + PREFETCH_AHEAD < end {
                        let ahead = gene_slot[indices[e + PREFETCH_AHEAD] as usize];
                        if ahead != NONE {
                            self.prefetch(base + ahead as usize);
                        }
                    }
                    let s = gene_slot[indices[e] as usize];
                    if s != NONE {
                        self.add(base + s as usize, value(e));
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
                        self.add(g as usize * slots + s as usize, value(e));
                    }
                }
            }
        }
    }
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
        acc.fold(&block(), true, &[0, 1, 0], &[0, 1, 2], 3)?;
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
        acc.fold(&block(), true, &[0, 0, 0], &[0, NONE, 2], 3)?;
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
    fn csc_blocks_map_cells_through_row_group() -> Result<()> {
        let aggs = [AggSpec {
            func: AggFunc::Max,
            filter: None,
        }];
        let mut acc = Accumulators::new(3, &aggs, false);
        // The same numbers read as 3 genes × 3 cells.
        acc.fold(&block(), false, &[0, 1, 2], &[0, 0, 0], 1)?;
        assert_eq!(finish(&acc, 0, &aggs[0], 0, 0), Value::Float(4.0));
        assert_eq!(finish(&acc, 0, &aggs[0], 2, 0), Value::Float(2.0));
        Ok(())
    }
}
