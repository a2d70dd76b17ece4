//! Binding: a table definition's schema and column sources worked out from its store's metadata,
//! with the checks of [`crate::check`] — one function per table kind, and the block size each
//! kind is scanned in.

use std::sync::Arc;

use annql_store::arrow::datatypes::{DataType, Field};
use annql_store::{AnnDataStore, DType, Element, Encoding};
use datafusion::error::{DataFusionError, Result};

use super::{Note, Source};
use crate::check;
use crate::decode::arrow_type;
use crate::error::store_err;
use crate::model::{Axis, TableDef, VALUE};

/// A table's columns and block layout as bound from metadata, before it becomes an
/// [`AnnTable`](super::AnnTable).
pub(super) struct Layout {
    pub(super) fields: Vec<Field>,
    pub(super) sources: Vec<Source>,
    /// Why the whole table cannot be read, if it cannot.
    pub(super) unmapped: Option<Note>,
    /// Length of the axis scans are partitioned along.
    pub(super) major_len: u64,
    /// Whether the major axis is the matrix's column axis (CSC).
    pub(super) column_major: bool,
    /// Rows per block.
    pub(super) block_rows: u64,
}

impl Layout {
    fn new() -> Self {
        Self {
            fields: Vec::new(),
            sources: Vec::new(),
            unmapped: None,
            major_len: 0,
            column_major: false,
            block_rows: FRAME_ROWS,
        }
    }
}

/// A dataframe (`obs`, `var`, a dataframe in obsm/varm): the row id, then each column; a column
/// that cannot be read keeps its reason.
pub(super) fn frame(
    store: &AnnDataStore,
    def: &TableDef,
    element: &Element,
    axis: Axis,
    with_names: bool,
) -> Layout {
    let mut t = Layout::new();
    t.fields
        .push(Field::new(id_name(axis, ""), DataType::Int64, false));
    t.sources.push(Source::RowId);
    // A dataframe in obsm/varm must also be as long as its axis.
    let axis_rows = check::axis_len(store, def.axes[0].as_deref());
    let frame = check::frame(store, element)
        .and_then(|(index, rows)| match axis_rows {
            Some((want, axis_index)) if want != rows => Err(check::malformed(
                store,
                &element.path,
                format!("has {rows} rows but '/{axis_index}' has {want}"),
            )),
            _ => Ok((index, rows)),
        })
        .map_err(Arc::new);
    let index = match &frame {
        Ok((index, _)) => index.clone(),
        // Only to list the columns of a dataframe that cannot be read.
        Err(_) => element.index_column().unwrap_or("_index").to_string(),
    };
    for name in column_names(element, &index) {
        let is_index = name == index;
        if is_index && !with_names {
            continue;
        }
        let sql = if is_index {
            format!("{}_name", axis.name())
        } else {
            name.clone()
        };
        let path = format!("{}/{name}", element.path);
        let column = match (&frame, element.child(&name)) {
            (Err(note), _) => Err(note.clone()),
            (Ok(_), None) => Err(Arc::new(check::malformed(
                store,
                &path,
                "listed in the dataframe's 'column-order' but not stored",
            ))),
            (Ok((index, rows)), Some(child)) => {
                let index_path = format!("{}/{index}", element.path);
                check::column(store, &sql, child, *rows, &index_path)
                    .map(|field| (field, child))
                    .map_err(Arc::new)
            }
        };
        match column {
            Ok((field, child)) => {
                t.fields.push(field);
                t.sources.push(Source::Column(Box::new(child.clone())));
                // A string chunk decodes only whole: blocks span its chunks, or each
                // block would decode the chunks it touches again. (A categorical's
                // group has no chunks of its own: only block sizing is skipped.)
                if child.dtype == Some(DType::String)
                    && let Ok(meta) = store.array_meta(&child.path)
                    && let Some(chunk) = meta.chunk_len()
                {
                    t.block_rows = t.block_rows.max(chunk.min(MAX_FRAME_ROWS));
                }
            }
            Err(note) => {
                // Its type where it has one (a column of the wrong length), so that
                // queries naming it plan and reach the scan, which refuses them. A
                // type that cannot be read (a dtype annql does not have, a column not
                // stored) is a Float64 placeholder, not Null: `sum(col)` or `avg(col)`
                // on Null fails in planning with a message naming neither the store
                // nor the column, while numbers plan and reach the scan. The error
                // itself is `note`, kept in `Source::Unmapped`, raised by any read.
                let dt = element
                    .child(&name)
                    .and_then(|c| check::column_type(store, c).ok())
                    .unwrap_or(DataType::Float64);
                t.fields.push(Field::new(sql, dt, true));
                t.sources.push(Source::Unmapped(note));
            }
        }
    }
    match frame {
        Ok((_, rows)) => t.major_len = rows,
        Err(note) => t.unmapped = Some(note),
    }
    t
}

/// A dense embedding (obsm/varm): the row id, then one column per component.
pub(super) fn embedding(
    store: &AnnDataStore,
    def: &TableDef,
    element: &Element,
    axis: Axis,
) -> Layout {
    let mut t = Layout::new();
    t.fields
        .push(Field::new(id_name(axis, ""), DataType::Int64, false));
    t.sources.push(Source::RowId);
    let rows = check::axis_len(store, def.axes[0].as_deref());
    match check::embedding(store, element, rows) {
        Ok(dt) => {
            let prefix = crate::model::sql_name(element.name());
            t.major_len = element.shape[0];
            // A 1-D array is one component.
            let components = element.shape.get(1).copied().unwrap_or(1);
            for i in 0..components {
                t.fields
                    .push(Field::new(format!("{prefix}_{i}"), dt.clone(), false));
                t.sources.push(Source::Component(i as usize));
            }
            t.block_rows = (TARGET_ENTRIES / components.max(1)).max(1);
        }
        Err(e) => t.unmapped = Some(Arc::new(e)),
    }
    t
}

/// A matrix (X, a layer, obsp/varp): row id, column id, value.
pub(super) fn matrix(
    store: &AnnDataStore,
    def: &TableDef,
    element: &Element,
    rows: Axis,
    cols: Axis,
) -> Result<Layout> {
    let mut t = Layout::new();
    let (r, c) = if rows == cols { ("_1", "_2") } else { ("", "") };
    t.fields
        .push(Field::new(id_name(rows, r), DataType::Int64, false));
    t.fields
        .push(Field::new(id_name(cols, c), DataType::Int64, false));
    t.sources
        .extend([Source::MatrixRow, Source::MatrixCol, Source::MatrixValue]);
    let axes = [
        check::axis_len(store, def.axes[0].as_deref()),
        check::axis_len(store, def.axes[1].as_deref()),
    ];
    match check::matrix(store, element, axes) {
        Ok(dt) => {
            t.fields.push(Field::new(VALUE, dt, false));
            (t.major_len, t.column_major, t.block_rows) = matrix_blocks(store, element)?;
        }
        Err(e) => {
            // The stored type where known, else a number: queries naming the
            // table plan and reach the scan, which refuses them with the reason.
            let dt = element.dtype.as_ref().and_then(arrow_type);
            t.fields
                .push(Field::new(VALUE, dt.unwrap_or(DataType::Float64), true));
            t.unmapped = Some(Arc::new(e));
        }
    }
    Ok(t)
}

/// `uns`: one row per leaf (path, type, value).
pub(super) fn uns(store: &AnnDataStore, element: &Element) -> Layout {
    let mut t = Layout::new();
    for (i, n) in ["path", "type", "value"].iter().enumerate() {
        t.fields.push(Field::new(*n, DataType::Utf8, i == 2));
        t.sources.push(Source::Uns);
    }
    if let Err(e) = check::encoding(store, element) {
        t.unmapped = Some(Arc::new(e));
    }
    t.major_len = 1;
    t.block_rows = 1;
    t
}

/// A dataframe's column names in table order: the index, then `column-order`, then any other
/// stored column; each once.
fn column_names(frame: &Element, index: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    std::iter::once(index.to_string())
        .chain(frame.column_order())
        .chain(frame.children.iter().map(|c| c.name().to_string()))
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// The major-axis length, orientation (CSC: column-major) and rows per block of a matrix that
/// passed [`check::matrix`].
fn matrix_blocks(store: &AnnDataStore, element: &Element) -> Result<(u64, bool, u64)> {
    let [n_rows, n_cols] = element.shape[..] else {
        return Err(DataFusionError::Internal(format!(
            "matrix /{} passed its checks without a 2-D shape",
            element.path
        )));
    };
    let column_major = element.encoding == Encoding::CscMatrix;
    let major_len = if column_major { n_cols } else { n_rows };
    let minor_len = if column_major { n_rows } else { n_cols };
    let (nnz, chunk) = match element.encoding {
        Encoding::Array => (n_rows.saturating_mul(n_cols), 0),
        _ => {
            let data = store
                .array_meta(&format!("{}/data", element.path))
                .map_err(store_err)?;
            // Without a declared chunk length, blocks are sized by entries alone.
            (data.shape[0], data.chunk_len().unwrap_or(0))
        }
    };
    let per_major = (nnz / major_len.max(1)).max(1).min(minor_len.max(1));
    // Blocks span several data chunks, so a chunk shared by two blocks (and decoded by both) is
    // the exception rather than the rule.
    let block_rows = (TARGET_ENTRIES.max(4 * chunk) / per_major).max(1);
    Ok((major_len, column_major, block_rows))
}

fn id_name(axis: Axis, suffix: &str) -> String {
    format!("{}_id{suffix}", axis.name())
}

/// Target stored entries per matrix batch (and rows per frame batch): large enough to amortise
/// per-batch work, small enough to keep memory per partition bounded.
const TARGET_ENTRIES: u64 = 1 << 20;
const FRAME_ROWS: u64 = 1 << 16;

/// Largest block of dataframe rows, however its string columns are chunked.
const MAX_FRAME_ROWS: u64 = 1 << 22;
