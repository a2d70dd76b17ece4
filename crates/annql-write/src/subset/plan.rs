//! Planning the reads of a cut: runs of source rows read together, the rows kept from each, and
//! the renumbering of kept positions along an axis.

use std::ops::Range;
use std::sync::Arc;

use annql_store::DType;
use annql_store::arrow::array::{ArrayRef, UInt64Array};

use crate::error::{Error, Result};
use crate::select::Rows;

/// A run of source rows read together, and which of them are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    /// Source rows read.
    pub range: Range<u64>,
    /// Offsets (from `range.start`) of the kept rows, increasing; `None`: every row is kept.
    pub keep: Option<Vec<u64>>,
}

impl Block {
    /// The kept offsets, `0..len` when every row is kept.
    pub fn kept(&self) -> Vec<u64> {
        match &self.keep {
            Some(k) => k.clone(),
            None => (0..self.range.end - self.range.start).collect(),
        }
    }
}

/// The blocks of at most `per_block` source rows covering the kept rows of an axis of `len` rows;
/// rows between kept ones are read only within a block (runs with nothing kept are not read).
pub(crate) struct Blocks<'a> {
    rows: &'a Rows,
    len: u64,
    per_block: u64,
    pos: u64,
}

impl<'a> Blocks<'a> {
    pub(crate) fn new(rows: &'a Rows, len: u64, per_block: u64) -> Self {
        Blocks {
            rows,
            len,
            per_block: per_block.max(1),
            pos: 0,
        }
    }
}

impl Iterator for Blocks<'_> {
    type Item = Block;

    fn next(&mut self) -> Option<Block> {
        match self.rows {
            Rows::All => {
                if self.pos >= self.len {
                    return None;
                }
                let end = (self.pos + self.per_block).min(self.len);
                let range = self.pos..end;
                self.pos = end;
                Some(Block { range, keep: None })
            }
            Rows::Some(ids) => {
                let start = self.pos as usize;
                let first = *ids.get(start)?;
                let mut end = start + 1;
                while end < ids.len() && ids[end] - first < self.per_block {
                    end += 1;
                }
                self.pos = end as u64;
                let range = first..ids[end - 1] + 1;
                let keep = if (end - start) as u64 == range.end - range.start {
                    None
                } else {
                    Some(ids[start..end].iter().map(|&i| i - first).collect())
                };
                Some(Block { range, keep })
            }
        }
    }
}

/// Checks a selection along an axis of `len` rows (strictly increasing ids below `len`).
pub(crate) fn check_rows(axis: &'static str, rows: &Rows, len: u64) -> Result<()> {
    if let Rows::Some(ids) = rows {
        Rows::try_new(axis, ids.clone(), len)?;
    }
    Ok(())
}

/// New positions of the kept rows of an axis: a bitmap with the count of kept rows before each
/// 64-row word, so a lookup is one popcount and the map costs 1.5 bits per source row.
pub(crate) enum Remap {
    /// Every row kept, in place.
    All,
    /// Some rows kept.
    Some { words: Vec<u64>, before: Vec<u64> },
}

impl Remap {
    pub(crate) fn new(rows: &Rows, len: u64) -> Remap {
        let Rows::Some(ids) = rows else {
            return Remap::All;
        };
        let mut words = vec![0u64; len.div_ceil(64) as usize];
        for &i in ids {
            words[(i / 64) as usize] |= 1 << (i % 64);
        }
        let mut before = Vec::with_capacity(words.len());
        let mut count = 0;
        for w in &words {
            before.push(count);
            count += u64::from(w.count_ones());
        }
        Remap::Some { words, before }
    }

    /// The new position of source row `i`, if it is kept.
    #[inline]
    pub(crate) fn get(&self, i: u64) -> Option<u64> {
        match self {
            Remap::All => Some(i),
            Remap::Some { words, before } => {
                let w = (i / 64) as usize;
                let bit = i % 64;
                let word = *words.get(w)?;
                (word >> bit & 1 == 1)
                    .then(|| before[w] + u64::from((word & ((1u64 << bit) - 1)).count_ones()))
            }
        }
    }
}

/// The values at `positions` of `values` (a gather; positions are computed by the cut, so a
/// failure is a bug).
pub(crate) fn take(values: &ArrayRef, positions: Vec<u64>) -> Result<ArrayRef> {
    let indices = UInt64Array::from(positions);
    annql_store::arrow::compute::take(values.as_ref(), &indices, None)
        .map_err(|e| Error::Internal(format!("gathering kept values: {e}")))
}

/// Rows `rows` (offsets into a block) of a block of rows of `inner` values each, keeping the
/// values at `cols` within each row (all when `None`).
pub(crate) fn take_rows(
    values: &ArrayRef,
    inner: u64,
    rows: &[u64],
    cols: Option<&[u64]>,
) -> Result<ArrayRef> {
    let mut positions = Vec::with_capacity(rows.len() * cols.map_or(inner as usize, <[u64]>::len));
    for &r in rows {
        match cols {
            Some(cols) => positions.extend(cols.iter().map(|&c| r * inner + c)),
            None => positions.extend(r * inner..(r + 1) * inner),
        }
    }
    take(values, positions)
}

/// Bytes per value assumed when sizing blocks (strings: a typical short label).
pub(crate) fn value_bytes(dtype: &DType) -> u64 {
    dtype.size().map_or(64, |s| s as u64)
}

/// An Arrow array of `i64` values cast to `dtype` (values are known to fit).
pub(crate) fn ints_as(values: Vec<i64>, dtype: &DType) -> Result<ArrayRef> {
    use annql_store::arrow::datatypes::DataType;
    let to = match dtype {
        DType::Int8 => DataType::Int8,
        DType::Int16 => DataType::Int16,
        DType::Int32 => DataType::Int32,
        DType::Int64 => DataType::Int64,
        other => return Err(Error::Internal(format!("integer output of type {other}"))),
    };
    let array: ArrayRef = Arc::new(annql_store::arrow::array::Int64Array::from(values));
    annql_store::arrow::compute::cast(&array, &to)
        .map_err(|e| Error::Internal(format!("narrowing integers to {to}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_kept_rows_within_the_block_size() {
        let all: Vec<Block> = Blocks::new(&Rows::All, 7, 3).collect();
        assert_eq!(
            all.iter().map(|b| b.range.clone()).collect::<Vec<_>>(),
            vec![0..3, 3..6, 6..7]
        );
        assert!(all.iter().all(|b| b.keep.is_none()));
        let some = Rows::Some(vec![1, 2, 3, 9, 20, 21]);
        let blocks: Vec<Block> = Blocks::new(&some, 30, 4).collect();
        assert_eq!(
            blocks,
            vec![
                Block {
                    range: 1..4,
                    keep: None
                },
                Block {
                    range: 9..10,
                    keep: None
                },
                Block {
                    range: 20..22,
                    keep: None
                },
            ]
        );
        let gaps = Rows::Some(vec![0, 2, 5]);
        let blocks: Vec<Block> = Blocks::new(&gaps, 6, 10).collect();
        assert_eq!(blocks[0].range, 0..6);
        assert_eq!(blocks[0].keep, Some(vec![0, 2, 5]));
        assert_eq!(Blocks::new(&Rows::Some(vec![]), 6, 10).count(), 0);
    }

    #[test]
    fn remap_numbers_kept_rows_in_order() {
        let ids: Vec<u64> = vec![0, 63, 64, 65, 200];
        let remap = Remap::new(&Rows::Some(ids.clone()), 201);
        for (new, &old) in ids.iter().enumerate() {
            assert_eq!(remap.get(old), Some(new as u64));
        }
        assert_eq!(remap.get(1), None);
        assert_eq!(remap.get(199), None);
        assert_eq!(remap.get(500), None);
        assert_eq!(Remap::new(&Rows::All, 10).get(7), Some(7));
    }
}
