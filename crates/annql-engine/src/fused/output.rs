//! The fold's last stage: the grid read out into Arrow batches of the output schema, one row per
//! cell that received an entry (every cell of a selected group and slot, for dense semantics),
//! each group's keys taken from its representative row of the obs or var side.

use std::sync::Arc;

use annql_store::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use annql_store::arrow::compute::{cast, take};
use annql_store::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;

use super::grouping::Grouping;
use super::kernel::{Accumulators, Grid, Value, channel_of, finish};
use super::{AggFunc, FusedSpec, KeySource};

/// Streams the result grid in batches, skipping empty cells.
pub(super) struct Output {
    spec: Arc<FusedSpec>,
    schema: SchemaRef,
    cells: Grouping,
    genes: Grouping,
    grid: Grid,
    channels: Vec<usize>,
    /// The next cell to look at; `None` once the grid is done.
    next: Option<Cell>,
    batch_size: usize,
    _reservation: MemoryReservation,
}

/// A grid cell located by its group, slot, tile and position in the tile. The output walks the
/// grid by stepping these, where dividing a cell number by slots and tile length for each of the
/// grid's (possibly tens of millions of) cells would cost more than everything else it does.
#[derive(Debug, Clone, Copy)]
struct Cell {
    group: usize,
    slot: usize,
    tile: usize,
    at: usize,
}

impl Output {
    /// The output of `grid`, in batches of `batch_size` rows; `reservation` shrinks to what the
    /// grid holds.
    pub(super) fn new(
        spec: Arc<FusedSpec>,
        schema: SchemaRef,
        batch_size: usize,
        (cells, genes): (Grouping, Grouping),
        grid: Grid,
        reservation: MemoryReservation,
    ) -> Self {
        // Only the merged accumulators stay.
        let held = Accumulators::bytes(grid.len, &spec.aggs, spec.dense);
        reservation.shrink(reservation.size().saturating_sub(held));
        let (_, channels) = channel_of(&spec.aggs);
        let next = (grid.len > 0).then_some(Cell {
            group: 0,
            slot: 0,
            tile: 0,
            at: 0,
        });
        Self {
            batch_size,
            spec,
            schema,
            cells,
            genes,
            grid,
            next,
            channels,
            _reservation: reservation,
        }
    }

    fn batch(&self, ks: &[Cell]) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, key) in self.spec.keys.iter().enumerate() {
            let want = self.schema.field(i).data_type();
            let col: ArrayRef = match key {
                KeySource::Obs(c) | KeySource::Var(c) => {
                    let side = if matches!(key, KeySource::Obs(_)) {
                        &self.cells
                    } else {
                        &self.genes
                    };
                    let rows = UInt32Array::from_iter_values(ks.iter().map(|k| {
                        side.first_row[if matches!(key, KeySource::Obs(_)) {
                            k.group
                        } else {
                            k.slot
                        }]
                    }));
                    let batch = side.batch.as_ref().ok_or_else(|| {
                        DataFusionError::Internal("fused aggregate key without its side".into())
                    })?;
                    take(batch.column(*c), &rows, None)?
                }
                KeySource::MatrixRow => Arc::new(Int64Array::from_iter_values(
                    ks.iter().map(|k| self.cells.ids[k.group]),
                )),
                KeySource::MatrixCol => Arc::new(Int64Array::from_iter_values(
                    ks.iter().map(|k| self.genes.ids[k.slot]),
                )),
            };
            columns.push(if col.data_type() == want {
                col
            } else {
                cast(&col, want)?
            });
        }
        for (j, agg) in self.spec.aggs.iter().enumerate() {
            let want = self.schema.field(self.spec.keys.len() + j).data_type();
            let value = |k: &Cell| {
                let tile = self.grid.tile(k.tile);
                let zeros = if self.spec.dense {
                    (self.cells.members[k.group] * self.genes.members[k.slot])
                        .saturating_sub(tile.stored(k.at))
                } else {
                    0
                };
                finish(tile, self.channels[j], agg, k.at, zeros)
            };
            let col: ArrayRef = if matches!(agg.func, AggFunc::Count) {
                Arc::new(Int64Array::from_iter(ks.iter().map(|k| match value(k) {
                    Value::Int(i) => Some(i),
                    _ => None,
                })))
            } else {
                Arc::new(Float64Array::from_iter(ks.iter().map(|k| match value(k) {
                    Value::Float(f) => Some(f),
                    _ => None,
                })))
            };
            columns.push(if col.data_type() == want {
                col
            } else {
                cast(&col, want)?
            });
        }
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(ks.len())),
        )?)
    }
}

impl Iterator for Output {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let (slots, groups, dense) = (
            self.genes.members.len(),
            self.cells.members.len(),
            self.spec.dense,
        );
        // Cells are written at `n` and kept by advancing it: no branch on whether a cell is
        // present, which is a coin toss per cell in a sparse grid.
        let first = self.next?;
        let (mut ks, mut n) = (vec![first; self.batch_size.max(1)], 0);
        while let Some(mut cell) = self.next
            && n < ks.len()
        {
            // Walk the rest of the cell's tile, with its touched cells looked up once.
            let tile = self.grid.tile(cell.tile);
            let touched = tile.touched_cells();
            loop {
                let present = if dense {
                    self.cells.members[cell.group] > 0 && self.genes.members[cell.slot] > 0
                } else {
                    touched.get(cell.at)
                };
                ks[n] = cell;
                n += usize::from(present);
                cell.slot += 1;
                if cell.slot == slots {
                    cell.slot = 0;
                    cell.group += 1;
                }
                cell.at += 1;
                if cell.at == tile.len || n == ks.len() {
                    break;
                }
            }
            if cell.at == tile.len {
                cell.at = 0;
                cell.tile += 1;
            }
            // The last tile ends with the last group.
            self.next = (cell.group < groups).then_some(cell);
        }
        ks.truncate(n);
        if ks.is_empty() {
            return None;
        }
        Some(self.batch(&ks))
    }
}
