//! Which cells and genes a predicate keeps: `obs`/`var` predicates (ordinary SQL, subqueries
//! included) evaluated over a dataset's tables into sorted row ids, the input of exports and of
//! the matrices handed to Rust.

use datafusion::arrow::array::{Array, Int64Array};

use crate::context::QueryContext;
use crate::error::{Error, Result};
use crate::model::{OBS_ID, VAR_ID};

/// The axis a predicate selects along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectAxis {
    /// Cells: the predicate is over `<dataset>.obs`.
    Obs,
    /// Genes: the predicate is over `<dataset>.var`.
    Var,
}

impl SelectAxis {
    /// `obs` or `var`.
    pub fn name(self) -> &'static str {
        match self {
            SelectAxis::Obs => "obs",
            SelectAxis::Var => "var",
        }
    }
}

/// The 0-based ids (`obs_id`/`var_id`), in increasing order, of the rows of `dataset`'s `obs` or
/// `var` table where `predicate` (a SQL boolean expression over its columns) is true.
pub async fn select_rows(
    session: &dyn QueryContext,
    dataset: &str,
    axis: SelectAxis,
    predicate: &str,
) -> Result<Vec<u64>> {
    select_rows_in(session, dataset, axis.name(), axis, predicate).await
}

/// [`select_rows`] over another table of the same axis (`raw_var` for raw's genes).
pub async fn select_rows_in(
    session: &dyn QueryContext,
    dataset: &str,
    table: &str,
    axis: SelectAxis,
    predicate: &str,
) -> Result<Vec<u64>> {
    let id = match axis {
        SelectAxis::Obs => OBS_ID,
        SelectAxis::Var => VAR_ID,
    };
    let sql = format!(
        "SELECT {id} FROM {}.{table} WHERE ({predicate}) ORDER BY {id}",
        quote_ident(dataset)
    );
    let batches = session.collect(&sql).await?;
    let mut ids = Vec::new();
    for batch in &batches {
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::Internal(format!("{id} is not BIGINT")))?;
        if column.null_count() > 0 {
            return Err(Error::Internal(format!("{id} has NULLs")));
        }
        ids.extend(column.values().iter().map(|&v| v as u64));
    }
    Ok(ids)
}

/// `name` as a SQL identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
