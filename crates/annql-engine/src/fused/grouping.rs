//! The fold's first stage: the obs side read whole and turned into a cell → group map, the var
//! side into a gene → slot map, and the matrix scan's own `obs_id`/`var_id` predicates applied
//! to both. What the fold then reads and where each entry lands follow from these maps alone.

use std::collections::HashMap;
use std::sync::Arc;

use annql_store::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use annql_store::arrow::compute::{cast, concat_batches};
use annql_store::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use annql_store::arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{ExecutionPlan, collect};

use super::kernel::NONE;
use crate::decode::probe_batch;
use crate::model::OBS_ID;

/// Cells or genes mapped to groups or slots, with a representative row per group for its keys.
pub(super) struct Grouping {
    /// Group (or slot) per position on the axis, or [`NONE`].
    pub(super) of: Vec<u32>,
    /// Positions on the axis taken per group (cells per group; genes per slot).
    pub(super) members: Vec<u64>,
    /// Row of the side's batch that represents each group.
    pub(super) first_row: Vec<u32>,
    /// The id (position on the axis) of each group's representative, for `GROUP BY obs_id`.
    pub(super) ids: Vec<i64>,
    /// The side's rows (obs or var), when there is such a side.
    pub(super) batch: Option<RecordBatch>,
}

/// Reads every partition of a side into one batch.
pub(super) async fn collect_side(
    plan: &Arc<dyn ExecutionPlan>,
    ctx: &Arc<TaskContext>,
) -> Result<RecordBatch> {
    let batches = collect(plan.clone(), ctx.clone()).await?;
    Ok(concat_batches(&plan.schema(), &batches)?)
}

/// Maps every position of an axis (`len` of them) to a group: by the side's key columns (plus its
/// id when `by_id`), by the id alone when there is no side but `by_id`, else one group for all.
pub(super) fn group(
    side: Option<RecordBatch>,
    id_column: Option<usize>,
    keys: &[usize],
    by_id: bool,
    len: u64,
) -> Result<Grouping> {
    let len = usize::try_from(len)
        .map_err(|_| DataFusionError::ResourcesExhausted("axis too long".into()))?;
    let (Some(batch), Some(id_col)) = (side, id_column) else {
        if by_id {
            return Ok(Grouping {
                of: (0..len as u32).collect(),
                members: vec![1; len],
                first_row: (0..len as u32).collect(),
                ids: (0..len as i64).collect(),
                batch: None,
            });
        }
        return Ok(Grouping {
            of: vec![0; len],
            members: vec![len as u64],
            first_row: vec![0],
            ids: vec![0],
            batch: None,
        });
    };
    let ids = cast(batch.column(id_col), &DataType::Int64)?;
    let ids = ids.as_primitive::<Int64Type>();
    let mut key_cols: Vec<ArrayRef> = keys.iter().map(|&k| batch.column(k).clone()).collect();
    if by_id {
        key_cols.push(batch.column(id_col).clone());
    }
    let mut of = vec![NONE; len];
    let mut members = Vec::new();
    let mut first_row = Vec::new();
    let mut group_ids = Vec::new();
    // Group of each valid row first, then placement on the axis.
    let mut row_groups: Vec<(usize, u32)> = Vec::with_capacity(batch.num_rows());
    if key_cols.is_empty() {
        if batch.num_rows() > 0 {
            members.push(0);
            first_row.push(0);
            group_ids.push(ids.value(0));
        }
        row_groups.extend(
            (0..batch.num_rows())
                .filter(|&r| ids.is_valid(r))
                .map(|r| (r, 0)),
        );
    } else {
        let fields = key_cols
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let rows = RowConverter::new(fields)?.convert_columns(&key_cols)?;
        let mut index: HashMap<&[u8], u32> = HashMap::new();
        for row in (0..batch.num_rows()).filter(|&r| ids.is_valid(r)) {
            let next = index.len() as u32;
            let g = *index.entry(rows.row(row).data()).or_insert_with(|| {
                members.push(0);
                first_row.push(row as u32);
                group_ids.push(ids.value(row));
                next
            });
            row_groups.push((row, g));
        }
    }
    for (row, g) in row_groups {
        let id = ids.value(row);
        let slot = usize::try_from(id)
            .ok()
            .filter(|&i| i < len)
            .ok_or_else(|| DataFusionError::Execution(format!("id {id} outside 0..{len}")))?;
        if of[slot] != NONE {
            return Err(DataFusionError::Execution(format!(
                "id {id} appears twice on one side of a fused aggregate"
            )));
        }
        of[slot] = g;
        members[g as usize] += 1;
    }
    Ok(Grouping {
        of,
        members,
        first_row,
        ids: group_ids,
        batch: Some(batch),
    })
}

/// The matrix scan's own `obs_id`/`var_id` predicates drop cells and genes.
pub(super) fn apply_matrix_filters(
    schema: &SchemaRef,
    filters: &[Arc<dyn PhysicalExpr>],
    cells: &mut Grouping,
    genes: &mut Grouping,
) -> Result<()> {
    for f in filters {
        let cols = datafusion::physical_expr::utils::collect_columns(f);
        let Some(col) = cols.iter().next() else {
            continue;
        };
        let target = if col.name() == OBS_ID {
            &mut *cells
        } else {
            &mut *genes
        };
        let ids = Int64Array::from_iter_values(0..target.of.len() as i64);
        let batch = probe_batch(schema, col.index(), Arc::new(ids))?;
        let mask = f.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("filter is not boolean".into()))?;
        for (i, slot) in target.of.iter_mut().enumerate() {
            if *slot != NONE && !(mask.is_valid(i) && mask.value(i)) {
                target.members[*slot as usize] -= 1;
                *slot = NONE;
            }
        }
    }
    Ok(())
}

/// Leaves only the cells of `rows` in their groups (a row slice of a split aggregation): the
/// others are dropped as a matrix filter drops them, so the fold reads only the slice's blocks
/// and dense counts are the slice's.
pub(super) fn keep_rows(cells: &mut Grouping, rows: std::ops::Range<usize>) {
    for (i, slot) in cells.of.iter_mut().enumerate() {
        if *slot != NONE && !rows.contains(&i) {
            cells.members[*slot as usize] -= 1;
            *slot = NONE;
        }
    }
}
