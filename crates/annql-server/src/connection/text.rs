//! Text-only results: what `SHOW` and `SHOW ALL` answer, described (Describe) and encoded
//! (Execute) alike, so a driver that asks for the columns first sees the ones that come.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::stream;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use crate::sqlstate;

/// The columns of `SHOW ALL`.
pub(super) const SHOW_ALL_COLUMNS: [&str; 3] = ["name", "setting", "description"];

/// The column `SHOW name` answers in: the setting's last name part, as PostgreSQL names it.
pub(super) fn show_column(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase()
}

/// The schema of a text-only result (`SHOW`).
fn text_schema(columns: &[&str]) -> Arc<Schema> {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// How a text-only result is described to the client (Describe and the answer agree).
pub(super) fn text_fields(columns: &[&str], format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    arrow_pg::datatypes::arrow_schema_to_pg_fields(&text_schema(columns), format, None)
}

/// A one-table text result (`SHOW`).
pub(super) fn text_table(
    columns: &[&str],
    rows: Vec<Vec<String>>,
    format: &Format,
) -> PgWireResult<Response> {
    let schema = text_schema(columns);
    let arrays = (0..columns.len())
        .map(|i| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
            )) as _
        })
        .collect();
    let batch =
        RecordBatch::try_new(schema.clone(), arrays).map_err(|e| sqlstate::from_error(&e, None))?;
    let fields = Arc::new(text_fields(columns, format)?);
    let rows: Vec<PgWireResult<DataRow>> =
        arrow_pg::datatypes::encode_recordbatch(fields.clone(), batch).collect();
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(rows),
    )))
}
