//! What binding needs to know about the attached datasets: their tables, columns with a coarse
//! type, and gene names. Loaded from a DataFusion session, or built by hand (tests).

use std::collections::BTreeMap;

use annql_engine::datafusion::arrow::array::{Array, AsArray};
use annql_engine::datafusion::arrow::compute::cast;
use annql_engine::datafusion::arrow::datatypes::DataType;
use annql_engine::datafusion::common::TableReference;
use annql_engine::datafusion::prelude::SessionContext;

use crate::ast::Pipeline;
use crate::error::Result;

/// The coarse types the binder checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Boolean.
    Bool,
    /// Any integer or float.
    Num,
    /// Strings and categoricals of strings.
    Str,
    /// Anything else (dates, lists): passed through unchecked.
    Other,
    /// `null`, or the type of an expression that already had an error: fits anywhere.
    Unknown,
}

impl Ty {
    /// The coarse type of an Arrow type.
    pub fn of(dt: &DataType) -> Ty {
        match dt {
            DataType::Boolean => Ty::Bool,
            d if d.is_numeric() => Ty::Num,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ty::Str,
            DataType::Dictionary(_, v) => Ty::of(v),
            DataType::Null => Ty::Unknown,
            _ => Ty::Other,
        }
    }

    /// How the type is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Ty::Bool => "a boolean",
            Ty::Num => "a number",
            Ty::Str => "a string",
            Ty::Other => "a value",
            Ty::Unknown => "unknown",
        }
    }
}

/// A column and its coarse type.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The column name, exactly as in the table.
    pub name: String,
    /// Its type.
    pub ty: Ty,
}

impl Column {
    /// A column.
    pub fn new(name: impl Into<String>, ty: Ty) -> Self {
        Self {
            name: name.into(),
            ty,
        }
    }
}

/// One attached dataset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// Tables by (lower-case) name, with their columns.
    pub tables: BTreeMap<String, Vec<Column>>,
    /// Gene names (`var_name`) of each gene table (`var`, `raw_var`), in `var_id` order.
    pub genes: BTreeMap<String, Vec<String>>,
}

/// The datasets a pipeline may read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Every attached dataset's name.
    pub attached: Vec<String>,
    /// Datasets loaded in detail (those the pipeline names).
    pub datasets: BTreeMap<String, Dataset>,
}

impl Catalog {
    /// Reads the schema of the datasets `pipeline` reads from `ctx` (and the gene names of their
    /// `var` and `raw_var`), so binding can check names without further I/O.
    pub async fn load(ctx: &SessionContext, pipeline: &Pipeline) -> Result<Catalog> {
        let catalog_name = ctx
            .state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone();
        let mut out = Catalog::default();
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            return Ok(out);
        };
        out.attached = catalog
            .schema_names()
            .into_iter()
            .filter(|s| s != "public" && s != "information_schema")
            .collect();
        for name in pipeline.datasets() {
            let Some(schema) = catalog.schema(name) else {
                continue;
            };
            let ds = load_dataset(ctx, name, schema.as_ref()).await?;
            out.datasets.insert(name.to_string(), ds);
        }
        Ok(out)
    }
}

/// The tables, columns and gene names of one attached dataset.
async fn load_dataset(
    ctx: &SessionContext,
    name: &str,
    schema: &dyn annql_engine::datafusion::catalog::SchemaProvider,
) -> Result<Dataset> {
    let mut ds = Dataset::default();
    for table in schema.table_names() {
        if let Some(provider) = schema.table(&table).await? {
            let cols = provider
                .schema()
                .fields()
                .iter()
                .map(|f| Column::new(f.name(), Ty::of(f.data_type())))
                .collect();
            ds.tables.insert(table, cols);
        }
    }
    for var in ["var", "raw_var"] {
        let has_name = ds
            .tables
            .get(var)
            .is_some_and(|c| c.iter().any(|c| c.name == "var_name"));
        if !has_name {
            continue;
        }
        let batches = ctx
            .table(TableReference::partial(name, var))
            .await?
            .select_columns(&["var_name"])?
            .collect()
            .await?;
        let mut names = Vec::new();
        for b in batches {
            let col = cast(b.column(0), &DataType::Utf8)
                .map_err(annql_engine::datafusion::error::DataFusionError::from)?;
            let col = col.as_string::<i32>();
            for i in 0..col.len() {
                names.push(if col.is_null(i) {
                    String::new()
                } else {
                    col.value(i).to_string()
                });
            }
        }
        ds.genes.insert(var.to_string(), names);
    }
    Ok(ds)
}
