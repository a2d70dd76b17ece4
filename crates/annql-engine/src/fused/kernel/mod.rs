//! The fused fold's kernel: group × slot accumulators and the loops that fold sparse blocks into
//! them, monomorphised per value type and per accumulator shape.
//!
//! A cell maps to a group (`row_group`), a gene to a slot (`gene_slot`); an entry (cell, gene,
//! value) lands in cell `group * slots + slot`. Only the statistics some aggregate needs are
//! allocated, and an unfiltered sparse sum tells touched cells by sums that left −0.0 (and a
//! bitmap for stored −0.0s) instead of counts.
//!
//! Stages, each below the next: [`walk`] maps one block's entries to grid cells (by the few
//! kept genes, by index when every gene is its own slot, or through the slot map);
//! [`accumulators`] adds them into the statistics of a grid, and finishes each cell's
//! aggregates; [`tiles`] splits a grid too large for the caches into tiles fed by buckets of
//! rows or entries.

use annql_store::arrow::array::{Array, ArrayRef};
use datafusion::error::{DataFusionError, Result};

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

/// The statistics of a grid and the finishing of its aggregates.
mod accumulators;
/// Tiles of grids larger than the caches, and the buckets that feed them.
mod tiles;
/// One block's entries mapped to grid cells.
mod walk;

pub(crate) use accumulators::{Accumulators, Value, channel_of, finish};
pub(crate) use tiles::{Grid, RowBuckets, Scatter, SharedTiles, TILE_BITS, row_tile_groups, tiled};
pub(crate) use walk::GeneSlots;

/// Marks a cell or gene that no group or slot takes.
pub(crate) const NONE: u32 = u32::MAX;

/// Where the entries of a fold land: one grid cell `k` at a time.
trait Sink {
    /// Adds one entry of value `v` to grid cell `k`.
    fn add(&mut self, k: usize, v: f64);
}

/// Null data arrays are not expected in a matrix; refuse them rather than read garbage.
pub(crate) fn check_values(data: &ArrayRef) -> Result<()> {
    if data.null_count() > 0 {
        return Err(DataFusionError::Execution(
            "matrix data array has nulls".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
