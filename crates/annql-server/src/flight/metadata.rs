//! The catalog calls ADBC and JDBC make: catalogs, schemas (one per dataset), tables with their
//! Arrow schemas, table types, and the server's `SqlInfo`.
//!
//! Answered from the session's own catalog, so a client lists exactly what its queries can
//! name. PostgreSQL's `pg_catalog` and `information_schema` (there for BI tools on the
//! PostgreSQL wire) are left out of the listings; queries can still read them.

use std::sync::LazyLock;

use annql_engine::AnnSession;
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
};
use arrow_flight::sql::{SqlInfo, SqlNullOrdering, SqlSupportedTransaction, SupportedSqlGrammar};
use datafusion::arrow::array::RecordBatch;
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
