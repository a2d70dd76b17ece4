//! A collection (or the cells and genes of it its predicates keep) written as one AnnData:
//! annql's `concat_on_disk`. The result is what `anndata.concat(datasets, join="outer",
//! fill_value=0, label="dataset")` gives, restricted as `adata[obs_mask, var_mask]`: obs with
//! the harmonised columns and the `dataset` column, var the union of genes (in the collection's
//! order), every matrix the collection has written as CSR, dataset after dataset, block by block.

use std::sync::Arc;

use annql_store::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use annql_store::arrow::compute::{cast, concat_batches, take};
use annql_store::arrow::datatypes::{DataType, Int64Type};
use annql_store::{ReadStats, SparseCarry};
use annql_write::concat::{ArrowFrame, CsrBlock, CsrMatrixOut, dtype_of, write_frames};
use annql_write::{ExportOptions, ExportSummary};

use super::subset::ExportRequest;
use super::writable_output;
use crate::collection::CollectionSchemaProvider;
use crate::collection::union::UnionTable;
use crate::context::QueryContext;
use crate::error::{Error, Result};
use crate::model::{OBS_ID, TableKind, VAR_ID};
use crate::select::{SelectAxis, select_rows};

/// Writes the cells and genes of the collection `request.dataset` its predicates keep as one
/// AnnData.
pub async fn export_collection(
    session: &dyn QueryContext,
    schema: Arc<CollectionSchemaProvider>,
    request: ExportRequest,
) -> Result<ExportSummary> {
    let out = writable_output(session, &request.out, request.options.overwrite)?;
    let ds = crate::select::quote_ident(&request.dataset);
    let keep = |axis, predicate: &Option<String>| {
        let dataset = request.dataset.clone();
        let predicate = predicate.clone();
        async move {
            match predicate {
                None => Ok(None),
                Some(p) => select_rows(session, &dataset, axis, &p)
                    .await
                    .map(Some)
                    .map_err(|source| Error::Predicate {
                        axis: axis.name(),
                        source: Box::new(source),
                    }),
            }
        }
    };
    let cells = keep(SelectAxis::Obs, &request.obs).await?;
    let genes = keep(SelectAxis::Var, &request.var).await?;
    let obs = frame(session, &format!("{ds}.obs"), OBS_ID, cells.as_deref()).await?;
    let var = frame(session, &format!("{ds}.var"), VAR_ID, genes.as_deref()).await?;
    let collection = schema.collection().clone();
    // Collection cell → kept or not; collection gene → its column in the output, or none.
    let mut cell_kept = vec![cells.is_none(); collection.n_obs as usize];
    for &c in cells.iter().flatten() {
        cell_kept[c as usize] = true;
    }
    let mut gene_column = vec![-1_i64; collection.n_vars() as usize];
    match &genes {
        None => gene_column
            .iter_mut()
            .enumerate()
            .for_each(|(i, c)| *c = i as i64),
        Some(ids) => ids
            .iter()
            .enumerate()
            .for_each(|(i, &g)| gene_column[g as usize] = i as i64),
    }
    let matrices: Vec<Arc<UnionTable>> = schema
        .union_tables()
        .filter(|t| matches!(t.kind, TableKind::Matrix { dense: false, .. }))
        .collect();
    let n_cols = var.index.len() as u64;
    let options: ExportOptions = request.options;
    crate::schedule::blocking(move || -> Result<ExportSummary> {
        let mut outs = Vec::new();
        for table in &matrices {
            outs.push(matrix_out(table, &cell_kept, &gene_column, n_cols)?);
        }
        Ok(write_frames(&out, &options, &obs, &var, outs)?)
    })
    .await
    .map_err(|e| Error::Internal(format!("the export thread failed: {e}")))?
}

/// A table's rows in id order (those of `keep`, if given) as an Arrow dataframe: the `<axis>_name`
/// column is the index, the id column is left out.
async fn frame(
    session: &dyn QueryContext,
    table: &str,
    id: &str,
    keep: Option<&[u64]>,
) -> Result<ArrowFrame> {
    let batches = session
        .collect(&format!("SELECT * FROM {table} ORDER BY {id}"))
        .await?;
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => return Err(Error::Statement(format!("{table} is empty"))),
    };
    let all =
        concat_batches(&schema, &batches).map_err(datafusion::error::DataFusionError::from)?;
    let all = match keep {
        None => all,
        Some(rows) => {
            let idx = UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
            let columns = all
                .columns()
                .iter()
                .map(|c| take(c, &idx, None))
                .collect::<Result<Vec<_>, _>>()
                .map_err(datafusion::error::DataFusionError::from)?;
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(datafusion::error::DataFusionError::from)?
        }
    };
    let name = format!("{}_name", &id[..3]);
    let index_at = schema
        .index_of(&name)
        .map_err(|_| Error::Internal(format!("{table} has no {name}")))?;
    let columns = schema
        .fields()
        .iter()
        .zip(all.columns())
        .filter(|(f, _)| f.name() != id && *f.name() != name)
        .map(|(f, c)| (f.name().clone(), c.clone()))
        .collect();
    Ok(ArrowFrame {
        index: all.column(index_at).clone(),
        columns,
    })
}

/// A matrix of the collection as the output's CSR matrix: every dataset's kept rows, in order,
/// their kept genes mapped to the output's columns.
fn matrix_out<'a>(
    table: &'a UnionTable,
    cell_kept: &'a [bool],
    gene_column: &'a [i64],
    n_cols: u64,
) -> Result<CsrMatrixOut<'a>> {
    let collection = &table.collection;
    let first = table.members[0].table();
    let path = first.def().path.clone();
    let value_type = table.schema().field(2).data_type().clone();
    let dtype = dtype_of(&value_type).ok_or_else(|| {
        Error::Statement(format!(
            "{}: values of type {value_type} cannot be written",
            table.name
        ))
    })?;
    for (m, t) in table.members.iter().enumerate() {
        if t.table().column_major {
            return Err(Error::Statement(format!(
                "dataset '{}': {} is stored CSC; a collection is written from CSR matrices",
                collection.members[m].name, table.name
            )));
        }
    }
    // (dataset, next row) of the walk.
    let mut at = (0usize, 0u64);
    let blocks = move || -> annql_write::Result<Option<CsrBlock>> {
        loop {
            let (m, row) = at;
            let Some(member) = collection.members.get(m) else {
                return Ok(None);
            };
            let t = table.members[m].table();
            if row >= member.n_obs {
                at = (m + 1, 0);
                continue;
            }
            let end = (row + t.block_rows.max(1)).min(member.n_obs);
            at = (m, end);
            let start = member.obs_start as usize;
            let keep: Vec<bool> = (row..end).map(|r| cell_kept[start + r as usize]).collect();
            if !keep.iter().any(|&k| k) {
                continue;
            }
            let map = &collection.genes.to_global[m];
            let local_cols: Vec<i64> = map.iter().map(|&g| gene_column[g as usize]).collect();
            let minor: Vec<bool> = local_cols.iter().map(|&c| c >= 0).collect();
            let block =
                read(t, row..end, &keep, &minor, &local_cols, &value_type).map_err(|e| {
                    annql_write::Error::Refused {
                        element: format!("{} of dataset '{}'", t.def().path, member.name),
                        reason: e.to_string(),
                    }
                })?;
            return Ok(Some(block));
        }
    };
    Ok(CsrMatrixOut {
        path,
        n_cols,
        dtype,
        blocks: Box::new(blocks),
    })
}

/// Rows `rows` of a dataset's matrix: the kept ones, with their kept entries.
fn read(
    t: &crate::AnnTable,
    rows: std::ops::Range<u64>,
    keep: &[bool],
    minor: &[bool],
    columns: &[i64],
    value_type: &DataType,
) -> Result<CsrBlock> {
    t.check_first_read()?;
    let needed = [true, true, true];
    let batches = t.read_block(
        rows.clone(),
        &needed,
        Some(keep),
        Some(minor),
        &mut SparseCarry::default(),
        &ReadStats::new_shared(),
    )?;
    let kept_rows: Vec<u64> = rows
        .clone()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(r, _)| r)
        .collect();
    let mut lengths = vec![0u64; kept_rows.len()];
    let (mut indices, mut values): (Vec<i64>, Vec<ArrayRef>) = (Vec::new(), Vec::new());
    for b in &batches {
        let obs = cast(b.column(0), &DataType::Int64)
            .map_err(datafusion::error::DataFusionError::from)?;
        let var = cast(b.column(1), &DataType::Int64)
            .map_err(datafusion::error::DataFusionError::from)?;
        for (o, v) in obs
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .zip(var.as_primitive::<Int64Type>().values())
        {
            let at = kept_rows.partition_point(|&r| (r as i64) < *o);
            if kept_rows.get(at) != Some(&(*o as u64)) {
                return Err(Error::Internal(format!("row {o} was not asked for")));
            }
            lengths[at] += 1;
            indices.push(columns[*v as usize]);
        }
        values
            .push(cast(b.column(2), value_type).map_err(datafusion::error::DataFusionError::from)?);
    }
    let refs: Vec<&dyn Array> = values.iter().map(|a| a.as_ref()).collect();
    let values = if refs.is_empty() {
        annql_store::arrow::array::new_empty_array(value_type)
    } else {
        annql_store::arrow::compute::concat(&refs)
            .map_err(datafusion::error::DataFusionError::from)?
    };
    Ok(CsrBlock {
        row_lengths: lengths,
        indices,
        values,
    })
}
