//! Honest pushdown: where a table's scan applies each filter — decided once, by
//! [`place_filter`] — and categorical predicates evaluated per category then applied by code (no
//! string comparison per row).
//!
//! The provider (`supports_filters_pushdown`), the scan (which list a filter joins, and the
//! label EXPLAIN prints it under) and the fused rule (which matrix filters it can take) all ask
//! [`place_filter`]; none decides on its own.

use std::collections::BTreeSet;
use std::sync::Arc;

use annql_store::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use annql_store::arrow::compute::{cast, take};
use annql_store::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr_common::physical_expr::is_volatile;

use crate::decode::probe_batch;
use crate::table::AnnTable;

/// Where a table's scan applies a filter.
///
/// Every placement but [`Unsupported`](Self::Unsupported) is exact: the scan evaluates each
/// predicate it is given over the columns it decodes, so any deterministic predicate over the
/// table's own columns is exact. Volatile predicates (`random()`) must see every row once, in the
/// plan's own FilterExec: unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterPlacement {
    /// Reads the major-axis id alone (`obs_id` of CSR matrices and dataframes, `var_id` of CSC):
    /// evaluated on each block's candidate ids, so that rows are dropped before any chunk is read.
    RowSelection,
    /// Reads one categorical column: evaluated once per category, then applied by code
    /// ([`CodeFilter`]).
    CategoricalCodes,
    /// Anything else over the table's columns: evaluated on the decoded batches.
    BatchFilter {
        /// Whether it reads the minor-axis id alone (genes of a CSR matrix): it then also drops
        /// entries before their columns are built.
        on_minor_id: bool,
    },
    /// Not the scan's to apply (a volatile predicate, a column not of this table): left to the
    /// plan's FilterExec.
    Unsupported,
}

impl FilterPlacement {
    /// The label the scan's line in EXPLAIN lists such filters under.
    pub fn label(self) -> &'static str {
        match self {
            FilterPlacement::RowSelection => "row_selection",
            FilterPlacement::CategoricalCodes => "categorical_filters",
            FilterPlacement::BatchFilter { .. } => "filters",
            // Not printed by the scan: the plan's FilterExec shows it.
            FilterPlacement::Unsupported => "unsupported",
        }
    }

    /// What the scan promises DataFusion for such a filter.
    pub fn pushdown(self) -> TableProviderFilterPushDown {
        match self {
            FilterPlacement::Unsupported => TableProviderFilterPushDown::Unsupported,
            _ => TableProviderFilterPushDown::Exact,
        }
    }

    /// Whether the filter reads one id column alone (the major or the minor one): a selection of
    /// cells or genes, which an operator reading by id can apply before reading.
    pub fn selects_ids(self) -> bool {
        matches!(
            self,
            FilterPlacement::RowSelection | FilterPlacement::BatchFilter { on_minor_id: true }
        )
    }
}

/// Where `table`'s scan applies `expr` (a filter on the table's columns, as the provider gets it).
pub fn place_filter(expr: &Expr, table: &AnnTable) -> FilterPlacement {
    let schema = table.schema();
    let columns = logical_columns(expr, &schema);
    placement(
        columns.as_ref(),
        expr.is_volatile(),
        &schema,
        IdColumns::of(table),
    )
}

/// [`place_filter`] for the same filter once planned (on the table's schema), as the scan gets it.
pub(crate) fn place_physical(expr: &Arc<dyn PhysicalExpr>, table: &AnnTable) -> FilterPlacement {
    let columns = collect_columns(expr).iter().map(|c| c.index()).collect();
    let schema = table.schema();
    placement(
        Some(&columns),
        is_volatile(expr),
        &schema,
        IdColumns::of(table),
    )
}

/// How a table scan treats a filter, knowing only the table's schema: [`place_filter`]'s answer
/// to DataFusion.
pub fn classify_filter(expr: &Expr, schema: &SchemaRef) -> TableProviderFilterPushDown {
    let columns = logical_columns(expr, schema);
    placement(
        columns.as_ref(),
        expr.is_volatile(),
        schema,
        IdColumns::default(),
    )
    .pushdown()
}

/// Which columns of a table hold its axis ids.
#[derive(Debug, Clone, Copy, Default)]
struct IdColumns {
    major: Option<usize>,
    minor: Option<usize>,
}

impl IdColumns {
    fn of(table: &AnnTable) -> Self {
        Self {
            major: table.major_id_column(),
            minor: table.minor_id_column(),
        }
    }
}

/// The schema positions of the columns `expr` reads; None if one is not a column of `schema`.
fn logical_columns(expr: &Expr, schema: &Schema) -> Option<BTreeSet<usize>> {
    expr.column_refs()
        .iter()
        .map(|c| schema.index_of(&c.name).ok())
        .collect()
}

/// The decision itself, on what it depends on: the columns a filter reads (None: one is not the
/// table's), whether it is volatile, the column types and which columns are ids.
fn placement(
    columns: Option<&BTreeSet<usize>>,
    volatile: bool,
    schema: &Schema,
    ids: IdColumns,
) -> FilterPlacement {
    let Some(columns) = columns else {
        return FilterPlacement::Unsupported;
    };
    if volatile {
        return FilterPlacement::Unsupported;
    }
    let only = |id: Option<usize>| {
        id.is_some_and(|id| !columns.is_empty() && columns.iter().all(|&c| c == id))
    };
    if only(ids.major) {
        return FilterPlacement::RowSelection;
    }
    let one_categorical = match columns.iter().collect::<Vec<_>>()[..] {
        [&c] => matches!(schema.field(c).data_type(), DataType::Dictionary(..)),
        _ => false,
    };
    if one_categorical {
        FilterPlacement::CategoricalCodes
    } else {
        FilterPlacement::BatchFilter {
            on_minor_id: only(ids.minor),
        }
    }
}

/// The same expression with column qualifiers removed (for evaluation on a bare table: the
/// fused aggregation's matrix filters, a collection dataset's share of a predicate).
pub(crate) fn unqualify(e: Expr) -> Result<Expr> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    e.transform(|e| {
        Ok(match e {
            Expr::Column(c) => Transformed::yes(Expr::Column(
                datafusion::common::Column::new_unqualified(c.name),
            )),
            other => Transformed::no(other),
        })
    })
    .map(|t| t.data)
}

/// A predicate over one categorical (dictionary) column, decided once per category.
#[derive(Debug)]
pub struct CodeFilter {
    expr: Arc<dyn PhysicalExpr>,
    column: usize,
    /// The predicate's value for each code, then for a missing value (null code) last.
    per_code: BooleanArray,
}

impl CodeFilter {
    /// Builds the per-code table if `expr` reads exactly one dictionary column of `schema`;
    /// `categories` are that column's dictionary values.
    pub fn try_new(
        expr: &Arc<dyn PhysicalExpr>,
        schema: &SchemaRef,
        categories: impl Fn(usize) -> Result<ArrayRef>,
    ) -> Result<Option<Self>> {
        let cols = collect_columns(expr);
        let [col] = cols.iter().collect::<Vec<_>>()[..] else {
            return Ok(None);
        };
        let field = schema.field(col.index());
        let DataType::Dictionary(key_type, _) = field.data_type() else {
            return Ok(None);
        };
        let values = categories(col.index())?;
        let n = values.len();
        // One row per category plus a null row, as a dictionary of the column's own type.
        let keys: ArrayRef = Arc::new(UInt32Array::from_iter(
            (0..n as u32).map(Some).chain([None]),
        ));
        let keys = cast(&keys, key_type)?;
        let dict = annql_store::arrow::array::make_array(
            keys.to_data()
                .into_builder()
                .data_type(field.data_type().clone())
                .child_data(vec![values.to_data()])
                .build()?,
        );
        let probe = probe_batch(schema, col.index(), dict)?;
        let result = expr.evaluate(&probe)?.into_array(n + 1)?;
        let per_code = result
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Plan(format!("filter {expr} is not boolean")))?
            .clone();
        Ok(Some(Self {
            expr: expr.clone(),
            column: col.index(),
            per_code,
        }))
    }

    /// The predicate.
    pub fn expr(&self) -> &Arc<dyn PhysicalExpr> {
        &self.expr
    }

    /// The column index it reads.
    pub fn column(&self) -> usize {
        self.column
    }

    /// Evaluates on a batch by looking codes up in the per-code table.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let column = batch.column(self.column);
        let dict = column.as_any_dictionary_opt().ok_or_else(|| {
            DataFusionError::Internal("categorical column is not a dictionary".into())
        })?;
        let missing = (self.per_code.len() - 1) as u32;
        let keys = cast(dict.keys(), &DataType::UInt32)?;
        let keys = keys
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| DataFusionError::Internal("dictionary keys".into()))?;
        let lookup = UInt32Array::from_iter_values(keys.iter().map(|k| k.unwrap_or(missing)));
        let out = take(&self.per_code, &lookup, None)?;
        out.as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("take of booleans".into()))
    }
}

trait AsDictionaryOpt {
    fn as_any_dictionary_opt(&self) -> Option<&dyn annql_store::arrow::array::AnyDictionaryArray>;
}

impl AsDictionaryOpt for ArrayRef {
    fn as_any_dictionary_opt(&self) -> Option<&dyn annql_store::arrow::array::AnyDictionaryArray> {
        annql_store::arrow::array::AsArray::as_any_dictionary_opt(self.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use annql_store::arrow::datatypes::Field;

    use super::*;
    use crate::model::{OBS_ID, VALUE, VAR_ID};

    fn place(
        columns: &[usize],
        volatile: bool,
        schema: &Schema,
        ids: IdColumns,
    ) -> FilterPlacement {
        placement(
            Some(&columns.iter().copied().collect()),
            volatile,
            schema,
            ids,
        )
    }

    #[test]
    fn placements_of_frame_filters() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let obs = Schema::new(vec![
            Field::new(OBS_ID, DataType::Int64, false),
            Field::new("cell_type", dict, true),
            Field::new("n_genes", DataType::Int64, true),
        ]);
        let ids = IdColumns {
            major: Some(0),
            minor: None,
        };
        let batch = FilterPlacement::BatchFilter { on_minor_id: false };
        assert_eq!(place(&[0], false, &obs, ids), FilterPlacement::RowSelection);
        assert_eq!(
            place(&[1], false, &obs, ids),
            FilterPlacement::CategoricalCodes
        );
        assert_eq!(place(&[2], false, &obs, ids), batch);
        assert_eq!(place(&[0, 1], false, &obs, ids), batch);
        assert_eq!(place(&[], false, &obs, ids), batch);
        assert_eq!(place(&[0], true, &obs, ids), FilterPlacement::Unsupported);
        assert_eq!(
            placement(None, false, &obs, ids),
            FilterPlacement::Unsupported
        );
        let labels = [
            FilterPlacement::RowSelection,
            FilterPlacement::CategoricalCodes,
            batch,
        ]
        .map(FilterPlacement::label);
        assert_eq!(labels, ["row_selection", "categorical_filters", "filters"]);
    }

    #[test]
    fn placements_of_matrix_filters() {
        let x = Schema::new(vec![
            Field::new(OBS_ID, DataType::Int64, false),
            Field::new(VAR_ID, DataType::Int64, false),
            Field::new(VALUE, DataType::Float32, false),
        ]);
        let csr = IdColumns {
            major: Some(0),
            minor: Some(1),
        };
        let csc = IdColumns {
            major: Some(1),
            minor: Some(0),
        };
        let on_minor = FilterPlacement::BatchFilter { on_minor_id: true };
        assert_eq!(place(&[0], false, &x, csr), FilterPlacement::RowSelection);
        assert_eq!(place(&[1], false, &x, csr), on_minor);
        assert_eq!(place(&[1], false, &x, csc), FilterPlacement::RowSelection);
        assert_eq!(place(&[0], false, &x, csc), on_minor);
        for (columns, ids) in [(&[0, 1][..], csr), (&[2], csr), (&[1, 2], csc)] {
            let p = place(columns, false, &x, ids);
            assert_eq!(p, FilterPlacement::BatchFilter { on_minor_id: false });
            assert!(!p.selects_ids(), "{columns:?}");
        }
        assert!(FilterPlacement::RowSelection.selects_ids() && on_minor.selects_ids());
    }
}
