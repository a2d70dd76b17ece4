//! Session statements the server answers itself: `SET`/`SHOW`/`RESET`, transactions,
//! `DISCARD`, SQL `PREPARE`/`EXECUTE`/`DEALLOCATE`, annql's `COPY dataset TO`, and cursors
//! (`DECLARE`/`FETCH`/`CLOSE`, kept as portals beside the extended protocol's).

use std::fmt::Debug;
use std::sync::Arc;

use annql_engine::AnnSession;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{LogicalPlan, Statement as PlanStatement};
use datafusion::sql::sqlparser::ast::{
    DataType as SqlDataType, Expr as SqlExpr, Ident, Query, Statement,
};
use futures::{Sink, SinkExt, TryStreamExt, stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::startup::ParameterStatus;

use super::Connection;
use super::extended::{Prepared, parameter_types, portals};
use super::text::{SHOW_ALL_COLUMNS, show_column, text_table};
use crate::prepared::{self, SqlPrepared};
use crate::sqlstate;
use crate::statement::{self, Classified, Command, FetchCount};

impl Connection {
    /// Answers a session statement.
    pub(super) async fn command<C>(
        &self,
        client: &mut C,
        session: &AnnSession,
        command: Command,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let tag = Tag::new(statement::tag(&command));
        match command {
            Command::Set { name, value } => self.set(client, &name, value).await?,
            Command::SetDataFusion(statement) => {
                let plan = self.plan(session, *statement, None).await?;
                session
                    .context()
                    .execute_logical_plan(plan)
                    .await
                    .map_err(|e| sqlstate::from_datafusion(&e))?;
            }
            Command::SetAccepted | Command::Savepoint(_) => {}
            Command::Show(name) => return self.show(session, &name, format),
            Command::ShowAll => {
                let rows = self
                    .settings()
                    .all()
                    .into_iter()
                    .map(|(n, v, d)| vec![n, v, d])
                    .collect();
                return text_table(&SHOW_ALL_COLUMNS, rows, format);
            }
            Command::Reset(Some(n)) => self.settings().reset(&n),
            Command::Reset(None) => self.settings().reset_all(),
            Command::Begin => return Ok(Response::TransactionStart(tag)),
            Command::Commit | Command::Rollback => {
                self.close_cursors(client, false)?;
                return Ok(Response::TransactionEnd(tag));
            }
            Command::Discard => {
                self.settings().reset_all();
                self.close_cursors(client, true)?;
                self.prepared.clear();
            }
            Command::Deallocate(name) => self.deallocate(client, name)?,
            Command::Prepare {
                name,
                types,
                statement,
            } => {
                let prepared = self.prepare(session, name, types, *statement).await?;
                self.prepared.insert(prepared)?;
            }
            Command::Execute { name, arguments } => {
                let prepared = self.prepared.get(&name)?;
                let arguments = self.evaluate(session, arguments).await?;
                let plan = prepared.bind(arguments)?;
                return self.run(session, plan, format).await;
            }
            Command::Declare { name, hold, query } => {
                self.declare(client, session, name, hold, query).await?;
            }
            Command::Fetch { name, count } => return self.fetch(client, &name, count).await,
            Command::Close(name) => self.close(client, name)?,
            Command::ReadOnly(kind) => {
                return Err(sqlstate::error(
                    sqlstate::READ_ONLY,
                    format!("cannot execute {kind}: annql serves datasets read-only"),
                ));
            }
            Command::Export(copy) => return self.export(session, *copy, format).await,
        }
        Ok(Response::Execution(tag))
    }

    /// `SET name = value` (`None`: `SET name TO DEFAULT`); a setting PostgreSQL reports is
    /// reported with `ParameterStatus`.
    async fn set<C>(&self, client: &mut C, name: &str, value: Option<String>) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let changed = {
            let mut settings = self.settings();
            match value {
                Some(v) => Some(
                    settings
                        .set(name, &v)
                        .map_err(|e| sqlstate::error("22023", e))?,
                ),
                None => {
                    settings.reset(name);
                    None
                }
            }
        };
        if let Some(c) = changed
            && c.reported
        {
            client
                .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    c.name, c.value,
                )))
                .await?;
        }
        Ok(())
    }

    /// `SHOW name`: one of the session's settings, or one of DataFusion's options.
    fn show(&self, session: &AnnSession, name: &str, format: &Format) -> PgWireResult<Response> {
        let value = if name.to_ascii_lowercase().starts_with("datafusion.") {
            session
                .context()
                .state()
                .config()
                .options()
                .entries()
                .into_iter()
                .find(|e| e.key.eq_ignore_ascii_case(name))
                // An option without a value shows as empty, as PostgreSQL shows one.
                .map(|e| e.value.unwrap_or_default())
        } else {
            self.settings().get(name)
        };
        let value = value.ok_or_else(|| {
            sqlstate::error(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            )
        })?;
        text_table(&[&show_column(name)], vec![vec![value]], format)
    }

    /// `DEALLOCATE name` (a statement of SQL `PREPARE`, or one a driver named in a Parse
    /// message: psycopg deallocates those with SQL too), or `DEALLOCATE ALL` (None).
    fn deallocate<C>(&self, client: &C, name: Option<String>) -> PgWireResult<()>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        match name {
            Some(n) => {
                let store = portals(client)?;
                let protocol = store.get_statement(&n).is_some();
                if !self.prepared.remove(&n) && !protocol {
                    return Err(prepared::not_found(&n));
                }
                store.rm_statement(&n);
            }
            // Statements of Parse messages are not listed by pgwire's store, so they stay
            // until the client closes them (drivers do, with Close messages).
            None => self.prepared.clear(),
        }
        Ok(())
    }

    /// `DECLARE name CURSOR [WITH HOLD] FOR query`: the query starts, its rows wait in a portal
    /// for `FETCH`.
    async fn declare<C>(
        &self,
        client: &C,
        session: &AnnSession,
        name: String,
        hold: bool,
        query: Box<Query>,
    ) -> PgWireResult<()>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let plan = self.plan(session, Statement::Query(query), None).await?;
        let response = match self
            .run(session, plan.clone(), &Format::UnifiedText)
            .await?
        {
            Response::Query(q) => q,
            _ => {
                return Err(sqlstate::error(
                    "42P11",
                    "DECLARE CURSOR needs a query that returns rows",
                ));
            }
        };
        let stored = Arc::new(StoredStatement::new(
            name.clone(),
            Prepared::Query(Box::new(plan)),
            vec![],
        ));
        let fields = response.row_schema();
        let portal = Portal::new_cursor(name.clone(), stored);
        portal.start(response).await;
        let store = portals(client)?;
        if matches!(store.get_portal(&name), Some(Entry::Value(_))) {
            return Err(sqlstate::error(
                "42P03",
                format!("cursor \"{name}\" already exists"),
            ));
        }
        store.put_portal(Arc::new(portal));
        if let Ok(mut c) = self.cursors.lock() {
            c.insert(name, (hold, fields));
        }
        Ok(())
    }

    /// `FETCH [FORWARD] n FROM name`: the cursor's next rows (its columns and none when it is
    /// exhausted).
    async fn fetch<C>(&self, client: &C, name: &str, count: FetchCount) -> PgWireResult<Response>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let portal = match portals(client)?.get_portal(name) {
            Some(Entry::Value(p)) => p,
            _ => {
                return Err(sqlstate::error(
                    "34000",
                    format!("cursor \"{name}\" does not exist"),
                ));
            }
        };
        let n = match count {
            FetchCount::Rows(0) | FetchCount::All => 0,
            FetchCount::Rows(n) => n,
        };
        let fetched = portal.fetch(n).await?;
        let mut response = fetched.response;
        if response.row_schema().is_empty() {
            // The cursor is exhausted: answer with its columns and no rows.
            let fields = self.cursor_fields(name)?;
            response = QueryResponse::new(fields, stream::empty());
        }
        response.set_command_tag("FETCH");
        Ok(Response::Query(response))
    }

    /// `CLOSE name`, or `CLOSE ALL` (None).
    fn close<C>(&self, client: &C, name: Option<String>) -> PgWireResult<()>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let Some(n) = name else {
            return self.close_cursors(client, true);
        };
        let store = portals(client)?;
        if !matches!(store.get_portal(&n), Some(Entry::Value(_))) {
            return Err(sqlstate::error(
                "34000",
                format!("cursor \"{n}\" does not exist"),
            ));
        }
        store.rm_portal(&n);
        if let Ok(mut c) = self.cursors.lock() {
            c.remove(&n);
        }
        Ok(())
    }

    /// Plans the statement of `PREPARE name (types) AS statement`, parameters left unbound.
    async fn prepare(
        &self,
        session: &AnnSession,
        name: String,
        types: Vec<SqlDataType>,
        statement: Statement,
    ) -> PgWireResult<SqlPrepared> {
        let query =
            match statement::classify(statement).map_err(|e| sqlstate::from_error(&e, None))? {
                Classified::Query(query) => query,
                Classified::Command(Command::ReadOnly(kind)) => {
                    return Err(sqlstate::error(
                        sqlstate::READ_ONLY,
                        format!("cannot prepare {kind}: annql serves datasets read-only"),
                    ));
                }
                Classified::Command(_) => {
                    return Err(sqlstate::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "PREPARE takes a query (SELECT, VALUES, WITH, …), not a session statement",
                    ));
                }
            };
        let declared = !types.is_empty();
        let wrapped = Statement::Prepare {
            name: Ident::new(name.clone()),
            data_types: types,
            statement: query,
        };
        let (fields, input) = match self.plan(session, wrapped, None).await? {
            LogicalPlan::Statement(PlanStatement::Prepare(p)) => (p.fields, p.input),
            other => {
                return Err(sqlstate::error(
                    sqlstate::INTERNAL_ERROR,
                    format!("internal: PREPARE planned as {}", other.display()),
                ));
            }
        };
        let input = Arc::unwrap_or_clone(input);
        if matches!(
            input,
            LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
        ) {
            return Err(sqlstate::error(
                sqlstate::READ_ONLY,
                "cannot prepare this statement: annql serves datasets read-only",
            ));
        }
        // Without a declaration DataFusion fills `fields` with the types it could infer, skipping
        // the others, so they are not positional: infer again, position by position.
        let declared = if declared {
            fields.iter().map(|f| f.data_type().clone()).collect()
        } else {
            Vec::new()
        };
        let inferred = parameter_types(&input)?;
        SqlPrepared::try_new(name, input, declared, inferred)
    }

    /// The values of `EXECUTE`'s arguments, `$1` first.
    async fn evaluate(
        &self,
        session: &AnnSession,
        arguments: Vec<SqlExpr>,
    ) -> PgWireResult<Vec<ScalarValue>> {
        if arguments.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {}",
            arguments
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut parsed = self.parse(&sql)?;
        if parsed.len() != 1 {
            return Err(sqlstate::error(
                sqlstate::SYNTAX_ERROR,
                format!("EXECUTE arguments do not read as values: {sql}"),
            ));
        }
        let plan = self.plan(session, parsed.remove(0), None).await?;
        let batches: Vec<RecordBatch> = self
            .shared
            .queries
            .execute(session.execution_context(&plan), plan)
            .await
            .map_err(|e| sqlstate::from_datafusion(&e))?
            .try_collect()
            .await
            .map_err(|e| sqlstate::from_datafusion(&e))?;
        let row: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        let [batch] = row.as_slice() else {
            return Err(sqlstate::error(
                sqlstate::INTERNAL_ERROR,
                "internal: EXECUTE arguments gave no row",
            ));
        };
        batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0).map_err(|e| sqlstate::from_datafusion(&e)))
            .collect()
    }

    /// Closes the cursors a transaction end closes (all of them with `all`).
    pub(super) fn close_cursors<C>(&self, client: &C, all: bool) -> PgWireResult<()>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let store = portals(client)?;
        if let Ok(mut cursors) = self.cursors.lock() {
            cursors.retain(|name, (hold, _)| {
                let close = all || !*hold;
                if close {
                    store.rm_portal(name);
                }
                !close
            });
        }
        Ok(())
    }

    /// The columns of an open cursor, as DECLARE described them.
    pub(super) fn cursor_fields(&self, name: &str) -> PgWireResult<Arc<Vec<FieldInfo>>> {
        let cursors = self.cursors.lock().map_err(|_| {
            sqlstate::error(sqlstate::INTERNAL_ERROR, "cursor registry lock poisoned")
        })?;
        // A portal made by Bind rather than DECLARE has no columns recorded here: described as
        // none, while its rows still arrive with their own description.
        Ok(cursors
            .get(name)
            .map(|(_, f)| f.clone())
            .unwrap_or_default())
    }
}
