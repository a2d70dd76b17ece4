//! The extended protocol: Parse plans a statement once (its parameters still placeholders),
//! Describe names its parameters and columns, Bind and Execute run it with the values given;
//! and the portals (cursors among them) pgwire keeps for the connection.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{Cast, Placeholder, TryCast};
use datafusion::logical_expr::{Expr, LogicalPlan};
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{MemPortalStore, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::Connection;
use super::text::{SHOW_ALL_COLUMNS, show_column, text_fields};
use crate::sqlstate;
use crate::statement::{self, Classified, Command};

/// A statement as the extended protocol keeps it between Parse and Execute.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A query, planned at Parse time (parameters still as placeholders).
    Query(Box<LogicalPlan>),
    /// A session statement.
    Command(Command),
}

/// Parses and plans statements for the extended protocol.
#[derive(Debug)]
pub struct Parser {
    pub(super) conn: std::sync::Weak<Connection>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let conn = self
            .conn
            .upgrade()
            .ok_or_else(|| sqlstate::error("08006", "connection closed"))?;
        if let Some(export) = conn.export_command(client, sql).await? {
            return Ok(Some(Prepared::Command(export)));
        }
        let mut statements = conn.parse(sql)?;
        if statements.is_empty() {
            return Ok(None);
        }
        if statements.len() > 1 {
            return Err(sqlstate::error(
                sqlstate::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let session = conn.session(client).await?;
        match statement::classify(statements.remove(0))
            .map_err(|e| sqlstate::from_error(&e, None))?
        {
            Classified::Query(statement) => Ok(Some(Prepared::Query(Box::new(
                conn.plan(session, *statement, Some(sql)).await?,
            )))),
            Classified::Command(c) => Ok(Some(Prepared::Command(c))),
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        match stmt {
            Prepared::Query(plan) => Ok(parameter_types(plan)?
                .into_iter()
                .map(|t| {
                    // A type without a PostgreSQL counterpart is described as unknown; binding
                    // the parameter then fails with the conversion's own message.
                    t.and_then(|t| arrow_pg::datatypes::into_pg_type(&t).ok())
                        .unwrap_or(Type::UNKNOWN)
                })
                .collect()),
            Prepared::Command(_) => Ok(vec![]),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.unwrap_or(&Format::UnifiedText);
        match stmt {
            Prepared::Query(plan) => {
                if matches!(plan.as_ref(), LogicalPlan::Statement(_)) {
                    return Ok(vec![]);
                }
                arrow_pg::datatypes::arrow_schema_to_pg_fields(
                    plan.schema().as_arrow(),
                    format,
                    None,
                )
            }
            Prepared::Command(Command::Show(name)) => text_fields(&[&show_column(name)], format),
            Prepared::Command(Command::Fetch { name, .. }) => {
                let conn = self
                    .conn
                    .upgrade()
                    .ok_or_else(|| sqlstate::error("08006", "connection closed"))?;
                Ok(conn.cursor_fields(name)?.as_ref().clone())
            }
            Prepared::Command(Command::ShowAll) => text_fields(&SHOW_ALL_COLUMNS, format),
            Prepared::Command(Command::Export(_)) => {
                arrow_pg::datatypes::arrow_schema_to_pg_fields(
                    &annql_engine::export::summary_schema(),
                    format,
                    None,
                )
            }
            Prepared::Command(Command::Execute { name, .. }) => {
                let conn = self
                    .conn
                    .upgrade()
                    .ok_or_else(|| sqlstate::error("08006", "connection closed"))?;
                let prepared = conn.prepared.get(name)?;
                arrow_pg::datatypes::arrow_schema_to_pg_fields(
                    prepared.plan().schema().as_arrow(),
                    format,
                    None,
                )
            }
            Prepared::Command(_) => Ok(vec![]),
        }
    }
}

/// The plan's parameter types in `$1, $2, …` order: DataFusion's inference, else the type of a
/// cast the parameter sits in (`$1::int`, as PostgreSQL infers it), else None (`unknown`).
pub(super) fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let mut types = plan
        .get_parameter_types()
        .map_err(|e| sqlstate::from_datafusion(&e))?;
    for (id, ty) in cast_parameter_types(plan) {
        if let Some(slot @ None) = types.get_mut(&id) {
            *slot = Some(ty);
        }
    }
    let mut numbered: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        // Named placeholders (`$name`) are not positional: binding a list to them fails with
        // DataFusion's error.
        .filter_map(|(k, v)| {
            k.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|i| (i, v))
        })
        .collect();
    numbered.sort_by_key(|(i, _)| *i);
    let len = numbered.last().map_or(0, |(i, _)| *i);
    let mut out = vec![None; len];
    for (i, t) in numbered {
        if i >= 1 {
            out[i - 1] = t;
        }
    }
    Ok(out)
}

/// The target type of each placeholder that is directly cast (`CAST($1 AS t)`, `$1::t`).
fn cast_parameter_types(plan: &LogicalPlan) -> HashMap<String, DataType> {
    let mut found = HashMap::new();
    // The closures never fail, so neither does the walk.
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) = e
                    && let Expr::Placeholder(Placeholder { id, .. }) = expr.as_ref()
                {
                    found
                        .entry(id.clone())
                        .or_insert_with(|| field.data_type().clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client).await?;
        match &portal.statement.statement {
            Prepared::Query(plan) => {
                let types = parameter_types(plan)?;
                let refs: Vec<Option<&DataType>> = types.iter().map(|t| t.as_ref()).collect();
                let params = arrow_pg::datatypes::df::deserialize_parameters(portal, &refs)?;
                let plan = plan
                    .as_ref()
                    .clone()
                    .replace_params_with_values(&params)
                    .map_err(|e| sqlstate::from_datafusion(&e))?;
                self.run(session, plan, &portal.result_column_format).await
            }
            Prepared::Command(command) => {
                self.command(
                    client,
                    session,
                    command.clone(),
                    &portal.result_column_format,
                )
                .await
            }
        }
    }
}

/// The connection's portal store with annql's statement type.
pub(super) fn portals<C>(client: &C) -> PgWireResult<&MemPortalStore<Prepared>>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    client
        .portal_store()
        .as_any()
        .downcast_ref::<MemPortalStore<Prepared>>()
        .ok_or_else(|| {
            sqlstate::error(
                sqlstate::INTERNAL_ERROR,
                "internal: unexpected portal store",
            )
        })
}
