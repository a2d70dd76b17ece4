//! Stage `decode`: store values turned into Arrow arrays and batches — the Arrow type of a store
//! dtype, a sparse block's entries zero-filled or filtered, batches probed with one column, small
//! arrays as JSON.
//!
//! Pure functions of the values read, below [`crate::table`] (whose reads call them) and
//! [`crate::check`] (which asks for the Arrow type of a dtype): nothing here reads a store.

use std::sync::Arc;

use annql_store::DType;
use annql_store::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, UInt32Array, new_null_array,
};
use annql_store::arrow::compute::take;
use annql_store::arrow::datatypes::{DataType, Schema};
use datafusion::error::{DataFusionError, Result};

/// The Arrow type a store element type maps to.
pub(crate) fn arrow_type(dtype: &DType) -> Option<DataType> {
    dtype.arrow_type()
}

/// The same schema with every field nullable.
pub(crate) fn nullable(schema: &Schema) -> Schema {
    Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

/// A batch of `schema` (made nullable) whose column `column` is `values` and every other column
/// null: enough to evaluate a predicate that reads only that column.
pub(crate) fn probe_batch(schema: &Schema, column: usize, values: ArrayRef) -> Result<RecordBatch> {
    let schema = Arc::new(nullable(schema));
    let n = values.len();
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == column {
                values.clone()
            } else {
                new_null_array(f.data_type(), n)
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// An array as a JSON array of its values.
pub(crate) fn json_values(a: &ArrayRef) -> Result<serde_json::Value> {
    let mut buf = Vec::new();
    let batch = RecordBatch::try_from_iter([("v", a.clone())])?;
    let mut writer = annql_store::arrow::json::ArrayWriter::new(&mut buf);
    writer.write(&batch)?;
    writer.finish()?;
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(serde_json::Value::Array(
        rows.into_iter()
            // The JSON writer leaves out null values: a row without "v" is a null.
            .map(|r| r.get("v").cloned().unwrap_or(serde_json::Value::Null))
            .collect(),
    ))
}

/// The kept rows × kept minor positions of a sparse block, zeros included: (major ids, minor
/// ids, values). Each row is scattered into a slot per kept minor position, so the cost is
/// O(rows × kept + stored), whatever the order of `indices` within a row.
pub(crate) fn densify(
    block: &annql_store::SparseBlock,
    minor_len: usize,
    keep: Option<&[bool]>,
    minor_keep: Option<&[bool]>,
) -> Result<(Vec<i64>, Vec<i64>, ArrayRef)> {
    let minors: Vec<u32> = (0..minor_len as u32)
        .filter(|&c| minor_keep.is_none_or(|m| m.get(c as usize).copied().unwrap_or(false)))
        .collect();
    let mut slot = vec![u32::MAX; minor_len];
    for (i, &c) in minors.iter().enumerate() {
        slot[c as usize] = i as u32;
    }
    // Absent entries are taken as nulls, then filled with a 0 of the matrix's type.
    let zero = u32::MAX;
    let rows = block.indptr.len().saturating_sub(1);
    let kept_rows = (0..rows).filter(|&r| keep.is_none_or(|k| k[r])).count();
    let n = kept_rows * minors.len();
    let (mut mj, mut mn, mut idx) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut row = vec![zero; minors.len()];
    for r in (0..rows).filter(|&r| keep.is_none_or(|k| k[r])) {
        row.fill(zero);
        for e in block.indptr[r] as usize..block.indptr[r + 1] as usize {
            let s = slot[block.indices[e] as usize];
            if s != u32::MAX {
                row[s as usize] = e as u32;
            }
        }
        let id = (block.major.start + r as u64) as i64;
        mj.extend(std::iter::repeat_n(id, minors.len()));
        mn.extend(minors.iter().map(|&c| i64::from(c)));
        idx.extend(row.iter().map(|&e| (e != zero).then_some(e)));
    }
    let zero_value =
        annql_store::arrow::compute::cast(&Int64Array::from(vec![0_i64]), block.data.data_type())?;
    let taken = take(&block.data, &UInt32Array::from(idx), None)?;
    let stored = annql_store::arrow::compute::is_not_null(&taken)?;
    let values = annql_store::arrow::compute::kernels::zip::zip(
        &stored,
        &taken,
        &annql_store::arrow::array::Scalar::new(zero_value),
    )?;
    Ok((mj, mn, values))
}

pub(crate) fn apply_keep(batch: RecordBatch, keep: Option<&[bool]>) -> Result<RecordBatch> {
    match keep {
        None => Ok(batch),
        Some(k) => {
            let mask = annql_store::arrow::array::BooleanArray::from(k.to_vec());
            Ok(annql_store::arrow::compute::filter_record_batch(
                &batch, &mask,
            )?)
        }
    }
}
