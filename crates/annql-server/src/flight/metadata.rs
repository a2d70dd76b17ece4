//! The catalog calls ADBC and JDBC make: catalogs, schemas (one per dataset), tables with their
//! Arrow schemas, table types, the server's `SqlInfo`, its SQL types, and (empty) key listings.
//!
//! Answered from the session's own catalog, so a client lists exactly what its queries can
//! name. PostgreSQL's `pg_catalog` and `information_schema` (there for BI tools on the
//! PostgreSQL wire) are left out of the listings; queries can still read them.

use std::sync::LazyLock;

use annql_engine::AnnSession;
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
    XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedTransaction, SupportedSqlGrammar,
    XdbcDataType,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::TableType;
use tonic::Status;

use super::status;
use crate::CATALOG;

/// Schemas listings leave out.
const HIDDEN_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];

/// How a table's kind is named in `GetTables` (`table_type`).
fn type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// The table types `GetTableTypes` lists.
pub const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];

/// The schemas (datasets) of the session's catalog, sorted.
fn schemas(session: &AnnSession) -> Vec<String> {
    let Some(catalog) = session.context().catalog(CATALOG) else {
        return Vec::new();
    };
    let mut names: Vec<String> = catalog
        .schema_names()
        .into_iter()
        .filter(|s| !HIDDEN_SCHEMAS.contains(&s.as_str()))
        .collect();
    names.sort();
    names
}

/// `GetCatalogs`: the one catalog.
pub fn catalogs() -> Result<RecordBatch, Status> {
    let mut b = GetCatalogsBuilder::new();
    b.append(CATALOG);
    b.build().map_err(|e| status::from_error(&e))
}

/// `GetDbSchemas`, filtered as asked.
pub fn db_schemas(
    session: &AnnSession,
    mut builder: GetDbSchemasBuilder,
) -> Result<RecordBatch, Status> {
    for s in schemas(session) {
        builder.append(CATALOG, s);
    }
    builder.build().map_err(|e| status::from_error(&e))
}

/// `GetTables`, filtered as asked, with each table's Arrow schema when asked.
pub async fn tables(
    session: &AnnSession,
    mut builder: GetTablesBuilder,
) -> Result<RecordBatch, Status> {
    let Some(catalog) = session.context().catalog(CATALOG) else {
        return builder.build().map_err(|e| status::from_error(&e));
    };
    for schema_name in schemas(session) {
        let Some(schema) = catalog.schema(&schema_name) else {
            continue;
        };
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            let table = schema
                .table(&name)
                .await
                .map_err(|e| status::from_error(&e))?;
            // Listed a moment ago: a table gone since is not listed.
            let Some(table) = table else { continue };
            builder
                .append(
                    CATALOG,
                    &schema_name,
                    &name,
                    type_name(table.table_type()),
                    &table.schema(),
                )
                .map_err(|e| status::from_error(&e))?;
        }
    }
    builder.build().map_err(|e| status::from_error(&e))
}

/// What the server tells `GetSqlInfo`.
pub static SQL_INFO: LazyLock<Result<SqlInfoData, String>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "annql");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(
        SqlInfo::SqlSupportedGrammar,
        SupportedSqlGrammar::SqlCoreGrammar as i32,
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().map_err(|e| e.to_string())
});

/// `SQL_INFO`, or why it could not be built.
pub fn sql_info() -> Result<&'static SqlInfoData, Status> {
    SQL_INFO
        .as_ref()
        .map_err(|e| Status::internal(format!("the server's SqlInfo: {e}")))
}

/// The SQL types annql's tables and answers use, for `GetXdbcTypeInfo` (JDBC's
/// `DatabaseMetaData.getTypeInfo`).
pub static TYPE_INFO: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("BOOLEAN", XdbcDataType::XdbcBit, None),
        ("TINYINT", XdbcDataType::XdbcTinyint, Some(3)),
        ("SMALLINT", XdbcDataType::XdbcSmallint, Some(5)),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(10)),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(19)),
        ("REAL", XdbcDataType::XdbcReal, Some(24)),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53)),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None),
        ("DATE", XdbcDataType::XdbcDate, None),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None),
    ];
    for (name, data_type, precision) in types {
        let text = data_type == XdbcDataType::XdbcVarchar;
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size: precision,
            literal_prefix: text.then(|| "'".into()),
            literal_suffix: text.then(|| "'".into()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: text,
            searchable: Searchable::Full,
            unsigned_attribute: precision.map(|_| false),
            fixed_prec_scale: false,
            auto_increment: precision.map(|_| false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: precision.map(|_| {
                if name == "REAL" || name == "DOUBLE" {
                    2
                } else {
                    10
                }
            }),
            interval_precision: None,
        });
    }
    b.build().map_err(|e| e.to_string())
});

/// `TYPE_INFO`, or why it could not be built.
pub fn type_info() -> Result<&'static XdbcTypeInfoData, Status> {
    TYPE_INFO
        .as_ref()
        .map_err(|e| Status::internal(format!("the server's type info: {e}")))
}

/// The columns of `GetPrimaryKeys` (Flight SQL's `CommandGetPrimaryKeys`).
fn primary_key_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

/// The columns of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference`.
fn foreign_key_schema() -> Schema {
    let text = |n: &str, null| Field::new(n, DataType::Utf8, null);
    Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// Which key listing.
#[derive(Debug, Clone, Copy)]
pub enum Keys {
    /// `GetPrimaryKeys`.
    Primary,
    /// `GetExportedKeys`, `GetImportedKeys`, `GetCrossReference`.
    Foreign,
}

/// A key listing: empty, with its columns (annql's tables declare no keys; `obs_id` and
/// `var_id` are unique, but joins need no declaration, and a BI tool browsing tables asks).
pub fn keys(which: Keys) -> RecordBatch {
    let schema = match which {
        Keys::Primary => primary_key_schema(),
        Keys::Foreign => foreign_key_schema(),
    };
    RecordBatch::new_empty(std::sync::Arc::new(schema))
}
