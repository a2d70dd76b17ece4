//! The table's reads: a block of its major axis as record batches of its full schema (dataframe
//! rows, embedding rows, matrix entries, `uns` leaves), reading only the columns a query needs.

use std::ops::Range;
use std::sync::Arc;

use annql_store::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, StringArray, UInt32Array,
    new_null_array,
};
use annql_store::arrow::compute::take;
use annql_store::arrow::datatypes::DataType;
use annql_store::{AnnDataStore, Element, Encoding, ReadStats, SparseCarry};
use datafusion::error::{DataFusionError, Result};

use super::{AnnTable, Source};
use crate::check;
use crate::decode::{apply_keep, densify, json_values};
use crate::error::{Error, store_err};
use crate::model::TableKind;

impl AnnTable {
    /// Reads `major` of the table into a batch of the full schema; only the columns in `needed`
    /// are read (others are null), `keep` (one flag per major position) drops rows and
    /// `minor_keep` (one flag per minor position, matrices only) drops entries.
    pub(crate) fn read_block(
        &self,
        major: Range<u64>,
        needed: &[bool],
        keep: Option<&[bool]>,
        minor_keep: Option<&[bool]>,
        carry: &mut SparseCarry,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<RecordBatch>> {
        match &self.def.kind {
            TableKind::Frame { .. } | TableKind::Embedding { .. } => {
                Ok(vec![self.read_rows(major, needed, keep, stats)?])
            }
            TableKind::Matrix { .. } => {
                self.read_entries(major, needed, keep, minor_keep, carry, stats)
            }
            TableKind::Uns => Ok(vec![self.read_uns(needed)?]),
        }
    }

    fn read_rows(
        &self,
        rows: Range<u64>,
        needed: &[bool],
        keep: Option<&[bool]>,
        stats: &Arc<ReadStats>,
    ) -> Result<RecordBatch> {
        let n = (rows.end - rows.start) as usize;
        let mut dense = None;
        let mut columns = Vec::with_capacity(self.sources.len());
        for (i, source) in self.sources.iter().enumerate() {
            let field = self.schema.field(i);
            if !needed[i] {
                columns.push(new_null_array(field.data_type(), n));
                continue;
            }
            let array: ArrayRef = match source {
                Source::RowId => Arc::new(Int64Array::from_iter_values(
                    rows.start as i64..rows.end as i64,
                )),
                Source::Column(e) => self
                    .store
                    .read_column(e, rows.clone(), stats)
                    .map_err(store_err)?,
                Source::Component(c) => {
                    if dense.is_none() {
                        dense = Some(
                            self.store
                                .read_dense_rows(&self.def.path, rows.clone(), stats)
                                .map_err(store_err)?,
                        );
                    }
                    let block = dense
                        .as_ref()
                        .ok_or_else(|| DataFusionError::Internal("dense block".into()))?;
                    let ncols = block.ncols as u32;
                    let idx =
                        UInt32Array::from_iter_values((0..n as u32).map(|r| r * ncols + *c as u32));
                    take(&block.values, &idx, None)?
                }
                Source::Unmapped(note) => {
                    return Err(Error::Unmapped {
                        what: format!("column {}.{}", self.def.name, field.name()),
                        source: note.clone(),
                    }
                    .into());
                }
                _ => {
                    return Err(DataFusionError::Internal(
                        "matrix source in a row table".into(),
                    ));
                }
            };
            columns.push(array);
        }
        let batch = RecordBatch::try_new_with_options(
            self.work_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        apply_keep(batch, keep)
    }

    /// Reads the stored entries of `major`, keeping rows where `keep` is set and entries whose
    /// minor id is set in `minor_keep` (a join's gene selection), before building any column: a
    /// batch per part of the block as it lies in the decoded chunks (see
    /// `AnnDataStore::read_sparse_parts`).
    fn read_entries(
        &self,
        major: Range<u64>,
        needed: &[bool],
        keep: Option<&[bool]>,
        minor_keep: Option<&[bool]>,
        carry: &mut SparseCarry,
        stats: &Arc<ReadStats>,
    ) -> Result<Vec<RecordBatch>> {
        let element = self.store.element(&self.def.path).map_err(store_err)?;
        if element.encoding == Encoding::Array {
            // A dense matrix: its non-zero entries.
            let row_ok = |r: usize| keep.is_none_or(|k| k[r]);
            let minor_ok = |c: usize| minor_keep.is_none_or(|m| m.get(c).copied().unwrap_or(false));
            let block = self
                .store
                .read_dense_rows(&self.def.path, major.clone(), stats)
                .map_err(store_err)?;
            let as_f64 = annql_store::arrow::compute::cast(&block.values, &DataType::Float64)?;
            let f = as_f64
                .as_any()
                .downcast_ref::<annql_store::arrow::array::Float64Array>()
                .ok_or_else(|| DataFusionError::Internal("cast to f64".into()))?;
            let ncols = block.ncols as usize;
            let (mut idx, mut mj, mut mn) = (Vec::new(), Vec::new(), Vec::new());
            for (pos, v) in f.values().iter().enumerate() {
                let (r, c) = (pos / ncols, pos % ncols);
                if (*v != 0.0 || self.is_dense()) && row_ok(r) && minor_ok(c) {
                    idx.push(pos as u32);
                    mj.push(major.start as i64 + r as i64);
                    mn.push(c as i64);
                }
            }
            let values = take(&block.values, &UInt32Array::from(idx), None)?;
            return Ok(vec![self.entries_batch(mj, mn, values, needed)?]);
        }
        let parts = if self.column_major && minor_keep.is_some() {
            // A CSC copy's columns are read for a selection of genes, in runs far apart: only
            // the run's entries are decoded (in a sharded copy, only the inner chunks they are
            // in), not whole stored chunks for the next block to share.
            vec![
                self.store
                    .read_sparse(&self.def.path, major.clone(), stats)
                    .map_err(store_err)?,
            ]
        } else {
            self.store
                .read_sparse_parts(&self.def.path, major.clone(), carry, stats)
                .map_err(store_err)?
        };
        let mut batches = Vec::with_capacity(parts.len());
        for part in &parts {
            let at = (part.major.start - major.start) as usize;
            let keep = keep.map(|k| &k[at..at + (part.major.end - part.major.start) as usize]);
            let (mj, mn, values) = self.part_entries(part, keep, minor_keep)?;
            if !values.is_empty() {
                batches.push(self.entries_batch(mj, mn, values, needed)?);
            }
        }
        Ok(batches)
    }

    /// The (major ids, minor ids, values) a part of a sparse block yields.
    fn part_entries(
        &self,
        block: &annql_store::SparseBlock,
        keep: Option<&[bool]>,
        minor_keep: Option<&[bool]>,
    ) -> Result<(Vec<i64>, Vec<i64>, ArrayRef)> {
        let start = block.major.start as i64;
        if self.is_dense() {
            let minor_len = self.minor_len().unwrap_or(0) as usize;
            return densify(block, minor_len, keep, minor_keep);
        }
        if keep.is_none() && minor_keep.is_none() {
            let mut mj = Vec::with_capacity(block.nnz());
            for (r, w) in block.indptr.windows(2).enumerate() {
                mj.extend(std::iter::repeat_n(
                    start + r as i64,
                    (w[1] - w[0]) as usize,
                ));
            }
            let mn = block.indices.iter().map(|&i| i64::from(i)).collect();
            return Ok((mj, mn, block.data.clone()));
        }
        let row_ok = |r: usize| keep.is_none_or(|k| k[r]);
        let minor_ok = |c: usize| minor_keep.is_none_or(|m| m.get(c).copied().unwrap_or(false));
        let (mut idx, mut mj, mut mn) = (Vec::new(), Vec::new(), Vec::new());
        for (r, w) in block.indptr.windows(2).enumerate() {
            if !row_ok(r) {
                continue;
            }
            for e in w[0] as usize..w[1] as usize {
                let c = block.indices[e];
                if minor_ok(c as usize) {
                    idx.push(e as u32);
                    mj.push(start + r as i64);
                    mn.push(i64::from(c));
                }
            }
        }
        Ok((mj, mn, take(&block.data, &UInt32Array::from(idx), None)?))
    }

    /// A batch of entries in the table's (row, column, value) layout.
    fn entries_batch(
        &self,
        major_ids: Vec<i64>,
        minor_ids: Vec<i64>,
        values: ArrayRef,
        needed: &[bool],
    ) -> Result<RecordBatch> {
        let (rows, cols) = if self.column_major {
            (minor_ids, major_ids)
        } else {
            (major_ids, minor_ids)
        };
        let n = values.len();
        let columns: Vec<ArrayRef> = vec![
            if needed[0] {
                Arc::new(Int64Array::from(rows))
            } else {
                new_null_array(&DataType::Int64, n)
            },
            if needed[1] {
                Arc::new(Int64Array::from(cols))
            } else {
                new_null_array(&DataType::Int64, n)
            },
            if needed[2] {
                values
            } else {
                new_null_array(self.schema.field(2).data_type(), n)
            },
        ];
        Ok(RecordBatch::try_new_with_options(
            self.work_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// The leaves of `uns`; their values (read only when `needed`) as JSON text. A value that
    /// cannot be read is an error naming the leaf, never a NULL.
    fn read_uns(&self, needed: &[bool]) -> Result<RecordBatch> {
        let uns = self.store.element(&self.def.path).map_err(store_err)?;
        let (mut paths, mut types, mut values) = (Vec::new(), Vec::new(), Vec::new());
        // Leaves of the dict tree; a dataframe (or any encoded group) is one entry, not its parts.
        let mut leaves = Vec::new();
        collect_uns_leaves(uns, &mut leaves);
        let with_values = needed.get(2).copied().unwrap_or(true);
        for e in leaves {
            let rel = e
                .path
                .strip_prefix(&format!("{}/", uns.path))
                .unwrap_or(&e.path);
            paths.push(rel.to_string());
            types.push(e.encoding.name().to_string());
            values.push(if with_values {
                Some(uns_value(&self.store, e)?)
            } else {
                None
            });
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(paths)),
            Arc::new(StringArray::from(types)),
            Arc::new(StringArray::from(values)),
        ];
        Ok(RecordBatch::try_new(self.work_schema.clone(), columns)?)
    }
}

fn collect_uns_leaves<'a>(e: &'a Element, out: &mut Vec<&'a Element>) {
    for c in &e.children {
        if c.encoding == Encoding::Dict {
            collect_uns_leaves(c, out);
        } else {
            out.push(c);
        }
    }
}

/// Small scalars and arrays of `uns` as JSON text; anything larger or nested is described instead.
/// An element that cannot be read (a damaged chunk, an unknown encoding or version) is an error.
fn uns_value(store: &AnnDataStore, e: &Element) -> Result<String> {
    const MAX_VALUES: u64 = 10_000;
    check::encoding(store, e).map_err(store_err)?;
    let stats = ReadStats::new_shared();
    Ok(match e.encoding {
        Encoding::String | Encoding::NumericScalar | Encoding::Array | Encoding::StringArray
            if e.shape.iter().product::<u64>() <= MAX_VALUES && e.shape.len() <= 1 =>
        {
            let len = e.shape.first().copied().unwrap_or(1);
            let a = store
                .read_array(&e.path, 0..len, &stats)
                .map_err(store_err)?;
            let v = json_values(&a)?;
            if e.shape.is_empty() {
                // A scalar: the one value of a 0-D read.
                v.get(0)
                    .cloned()
                    .ok_or_else(|| {
                        store_err(check::malformed(store, &e.path, "a scalar with no value"))
                    })?
                    .to_string()
            } else {
                v.to_string()
            }
        }
        Encoding::Categorical
        | Encoding::NullableInteger
        | Encoding::NullableBoolean
        | Encoding::NullableStringArray
            if e.shape.first().copied().unwrap_or(0) <= MAX_VALUES =>
        {
            let len = e.shape.first().copied().unwrap_or(0);
            let a = store.read_column(e, 0..len, &stats).map_err(store_err)?;
            // Categories as their labels; values of a type with no text form stay as they are
            // (the JSON writer writes them in their own form).
            let a = annql_store::arrow::compute::cast(&a, &DataType::Utf8).unwrap_or(a);
            json_values(&a)?.to_string()
        }
        Encoding::Null => "null".into(),
        _ => format!(
            "\"<{} {}>\"",
            e.encoding.name(),
            e.shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("x")
        ),
    })
}
