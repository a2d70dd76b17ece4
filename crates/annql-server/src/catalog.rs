//! What PostgreSQL clients look up before they query: `pg_catalog` (from
//! `datafusion-pg-catalog`), an `information_schema` that speaks PostgreSQL type names, and the
//! functions drivers call on connect (`version()`, `current_user`, `pg_backend_pid()`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

use crate::settings::Settings;
use crate::{CATALOG, PG_VERSION};

/// Who is connected, for the functions that report it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The authenticated user.
    pub user: String,
    /// The backend process id the client was given (for `pg_backend_pid()` and cancel).
    pub pid: i32,
    /// Whether the connection is encrypted.
    pub tls: bool,
}

/// Installs `pg_catalog`, `information_schema` and the connection functions into a session.
pub fn install(ctx: &SessionContext, who: &Identity, server: &Settings) -> Result<()> {
    setup_pg_catalog(ctx, CATALOG, EmptyContextProvider).map_err(|e| *e)?;
    let catalog = ctx.catalog(CATALOG).ok_or_else(|| {
        datafusion::error::DataFusionError::Internal(format!("catalog {CATALOG} missing"))
    })?;
    if let Some(inner) = catalog.schema("pg_catalog") {
        catalog.register_schema(
            "pg_catalog",
            Arc::new(PgCatalog {
                inner,
                server: server.clone(),
            }),
        )?;
    }
    for name in NULL_FUNCTIONS {
        if ctx.udf(name).is_err() {
            ctx.register_udf(ScalarUDF::new_from_impl(NullFunction::new(name)));
        }
    }
    catalog.register_schema(
        "information_schema",
        Arc::new(InformationSchema {
            catalogs: ctx.state().catalog_list().clone(),
        }),
    )?;
    let version = format!(
        "PostgreSQL {PG_VERSION} (annql {}) on {}-linux, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    register_constant(ctx, "version", ScalarValue::Utf8(Some(version)));
    for name in ["current_user", "session_user", "user", "current_role"] {
        register_constant(ctx, name, ScalarValue::Utf8(Some(who.user.clone())));
    }
    register_constant(ctx, "pg_backend_pid", ScalarValue::Int32(Some(who.pid)));
    let ssl = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("pid", DataType::Int32, false),
            Field::new("ssl", DataType::Boolean, false),
            Field::new("version", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int32Array::from(vec![who.pid])),
            Arc::new(BooleanArray::from(vec![who.tls])),
            Arc::new(StringArray::from(vec![who.tls.then_some("TLSv1.3")])),
        ],
    )?;
    let table = MemTable::try_new(ssl.schema(), vec![vec![ssl]])?;
    ctx.register_table("pg_stat_ssl", Arc::new(table))?;
    Ok(())
}

fn register_constant(ctx: &SessionContext, name: &str, value: ScalarValue) {
    let data_type = value.data_type();
    let udf = create_udf(
        name,
        vec![],
        data_type,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
    );
    ctx.register_udf(udf);
}

/// Catalog functions drivers call that describe objects annql does not have (sequences,
/// function bodies, comments): they answer NULL, as PostgreSQL does for a missing object.
const NULL_FUNCTIONS: [&str; 14] = [
    "json_build_object",
    "pg_collation_is_visible",
    "pg_get_function_result",
    "pg_get_function_arguments",
    "pg_get_function_identity_arguments",
    "pg_get_serial_sequence",
    "pg_get_indexdef",
    "pg_get_viewdef",
    "pg_get_triggerdef",
    "pg_get_ruledef",
    "obj_description",
    "col_description",
    "shobj_description",
    "pg_get_functiondef",
];

/// A text function of any arguments that returns NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullFunction {
    name: String,
    signature: Signature,
    returns: DataType,
}

impl NullFunction {
    fn new(name: &str) -> Self {
        let returns = if name.ends_with("_is_visible") {
            DataType::Boolean
        } else {
            DataType::Utf8
        };
        NullFunction {
            name: name.to_string(),
            signature: Signature::variadic_any(Volatility::Stable),
            returns,
        }
    }
}

impl ScalarUDFImpl for NullFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from(&self.returns)?))
    }
}

/// `pg_catalog` from `datafusion-pg-catalog`, with a `pg_settings` that lists the settings
/// drivers read (pgJDBC's `getImportedKeys` needs `max_index_keys`).
#[derive(Debug)]
struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    /// The server's settings as a new session starts with them (`max_connections` as
    /// configured).
    server: Settings,
}

fn pg_settings(server: &Settings) -> Result<RecordBatch> {
    let mut rows = server.all();
    for (n, v, d) in [
        (
            "max_index_keys",
            "32",
            "Shows the maximum number of index keys.",
        ),
        ("block_size", "8192", "Shows the size of a disk block."),
        (
            "server_encoding",
            "UTF8",
            "Shows the server character set encoding.",
        ),
    ] {
        if !rows.iter().any(|r| r.0 == n) {
            rows.push((n.into(), v.into(), d.into()));
        }
    }
    let rows: Vec<Vec<Option<String>>> = rows
        .into_iter()
        .map(|(name, setting, desc)| {
            vec![
                Some(name),
                Some(setting.clone()),
                None,
                Some("Client Connection Defaults".into()),
                Some(desc),
                Some("user".into()),
                Some("string".into()),
                Some("default".into()),
                Some(setting),
            ]
        })
        .collect();
    text_batch(
        &[
            "name",
            "setting",
            "unit",
            "category",
            "short_desc",
            "context",
            "vartype",
            "source",
            "reset_val",
        ],
        &rows,
        vec![],
    )
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name == "pg_settings" {
            let batch = pg_settings(&self.server)?;
            return Ok(Some(Arc::new(MemTable::try_new(
                batch.schema(),
                vec![vec![batch]],
            )?)));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// The PostgreSQL name of the type a column of `t` is sent as, and its `udt_name`.
pub fn pg_type_name(t: &DataType) -> (String, String) {
    let (name, udt) = match t {
        DataType::Boolean => ("boolean", "bool"),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("smallint", "int2"),
        DataType::Int32 | DataType::UInt16 => ("integer", "int4"),
        DataType::Int64 | DataType::UInt32 => ("bigint", "int8"),
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            ("numeric", "numeric")
        }
        DataType::Float16 | DataType::Float32 => ("real", "float4"),
        DataType::Float64 => ("double precision", "float8"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ("text", "text"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ("bytea", "bytea"),
        DataType::FixedSizeBinary(_) => ("bytea", "bytea"),
        DataType::Date32 | DataType::Date64 => ("date", "date"),
        DataType::Timestamp(_, None) => ("timestamp without time zone", "timestamp"),
        DataType::Timestamp(_, Some(_)) => ("timestamp with time zone", "timestamptz"),
        DataType::Time32(_) | DataType::Time64(_) => ("time without time zone", "time"),
        DataType::Interval(_) | DataType::Duration(TimeUnit::Second) | DataType::Duration(_) => {
            ("interval", "interval")
        }
        DataType::Dictionary(_, value) => return pg_type_name(value),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            let (_, inner) = pg_type_name(f.data_type());
            return ("ARRAY".into(), format!("_{inner}"));
        }
        DataType::Null => ("text", "text"),
        _ => ("USER-DEFINED", "record"),
    };
    (name.into(), udt.into())
}

/// `information_schema` with PostgreSQL's column layout and type names. Its tables are built
/// when a query names them, from the catalog as it is at that moment.
#[derive(Debug)]
struct InformationSchema {
    catalogs: Arc<dyn CatalogProviderList>,
}

const INFO_TABLES: [&str; 4] = ["tables", "columns", "schemata", "views"];

/// The user schemas and their tables: every schema but the system ones.
async fn user_tables(
    catalogs: &Arc<dyn CatalogProviderList>,
) -> Result<Vec<(String, String, String, Arc<dyn TableProvider>)>> {
    let mut out = Vec::new();
    for catalog_name in catalogs.catalog_names() {
        let Some(catalog) = catalogs.catalog(&catalog_name) else {
            continue;
        };
        let mut schemas = catalog.schema_names();
        schemas.sort();
        for schema_name in schemas {
            if schema_name == "pg_catalog" || schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if schema_name == "public" && name == "pg_stat_ssl" {
                    continue; // the connection's own view, not a dataset table
                }
                if let Some(table) = schema.table(&name).await? {
                    out.push((catalog_name.clone(), schema_name.clone(), name, table));
                }
            }
        }
    }
    Ok(out)
}

/// A batch of text columns named `names`, one row per entry of `rows`, followed by `more`.
fn text_batch(
    names: &[&str],
    rows: &[Vec<Option<String>>],
    more: Vec<(Field, ArrayRef)>,
) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = names
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, true))
        .collect();
    let mut columns: Vec<ArrayRef> = (0..names.len())
        .map(|i| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    for (field, column) in more {
        fields.push(field);
        columns.push(column);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

impl InformationSchema {
    async fn build(&self, name: &str) -> Result<Option<RecordBatch>> {
        let text = |v: &str| Some(v.to_string());
        Ok(Some(match name {
            "schemata" => {
                let mut rows = Vec::new();
                for c in self.catalogs.catalog_names() {
                    if let Some(cat) = self.catalogs.catalog(&c) {
                        let mut names = cat.schema_names();
                        names.sort();
                        for schema in names {
                            rows.push(vec![text(&c), Some(schema), text("annql")]);
                        }
                    }
                }
                text_batch(
                    &["catalog_name", "schema_name", "schema_owner"],
                    &rows,
                    vec![],
                )?
            }
            "tables" => {
                let rows: Vec<_> = user_tables(&self.catalogs)
                    .await?
                    .into_iter()
                    .map(|(catalog, schema, table, _)| {
                        vec![
                            Some(catalog),
                            Some(schema),
                            Some(table),
                            text("BASE TABLE"),
                            text("NO"),
                        ]
                    })
                    .collect();
                text_batch(
                    &[
                        "table_catalog",
                        "table_schema",
                        "table_name",
                        "table_type",
                        "is_insertable_into",
                    ],
                    &rows,
                    vec![],
                )?
            }
            "views" => text_batch(
                &[
                    "table_catalog",
                    "table_schema",
                    "table_name",
                    "view_definition",
                ],
                &[],
                vec![],
            )?,
            "columns" => {
                let mut rows = Vec::new();
                let mut ordinal = Vec::new();
                for (catalog, schema, table, provider) in user_tables(&self.catalogs).await? {
                    for (idx, field) in provider.schema().fields().iter().enumerate() {
                        let (type_name, udt) = pg_type_name(field.data_type());
                        rows.push(vec![
                            text(&catalog),
                            text(&schema),
                            text(&table),
                            Some(field.name().clone()),
                            None,
                            text(if field.is_nullable() { "YES" } else { "NO" }),
                            Some(type_name),
                            Some(udt),
                        ]);
                        ordinal.push(idx as i32 + 1);
                    }
                }
                text_batch(
                    &[
                        "table_catalog",
                        "table_schema",
                        "table_name",
                        "column_name",
                        "column_default",
                        "is_nullable",
                        "data_type",
                        "udt_name",
                    ],
                    &rows,
                    vec![(
                        Field::new("ordinal_position", DataType::Int32, true),
                        Arc::new(Int32Array::from(ordinal)),
                    )],
                )?
            }
            _ => return Ok(None),
        }))
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        INFO_TABLES.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(batch) = self.build(name).await? else {
            return Ok(None);
        };
        let schema: SchemaRef = batch.schema();
        Ok(Some(Arc::new(MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        INFO_TABLES.contains(&name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_type_names() {
        assert_eq!(pg_type_name(&DataType::Int64).0, "bigint");
        assert_eq!(pg_type_name(&DataType::Int32).0, "integer");
        assert_eq!(
            pg_type_name(&DataType::Dictionary(
                Box::new(DataType::Int16),
                Box::new(DataType::Utf8)
            ))
            .0,
            "text"
        );
        assert_eq!(pg_type_name(&DataType::Float32).1, "float4");
    }
}
