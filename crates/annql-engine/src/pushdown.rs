//! Honest pushdown: which predicates a scan applies exactly, and categorical predicates evaluated
//! per category then applied by code (no string comparison per row).

use std::sync::Arc;

use annql_store::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use annql_store::arrow::compute::{cast, take};
use annql_store::arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;

/// How a table scan treats a filter.
///
/// Exact: the scan evaluates every predicate it is given over the columns it decodes, so any
/// deterministic predicate over the table's own columns is exact. Volatile predicates (`random()`)
/// must see every row once, in the plan's own FilterExec: unsupported.
pub fn classify_filter(expr: &Expr, schema: &SchemaRef) -> TableProviderFilterPushDown {
    let columns = expr.column_refs();
    let known = columns
        .iter()
        .all(|c| schema.field_with_name(&c.name).is_ok());
    if known && !expr.is_volatile() {
        TableProviderFilterPushDown::Exact
    } else {
        TableProviderFilterPushDown::Unsupported
    }
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
        let probe = crate::decode::probe_batch(schema, col.index(), dict)?;
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
