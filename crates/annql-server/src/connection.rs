//! One client connection: its session, its settings and cursors, and the pgwire handlers that
//! run its statements over the simple and the extended protocol.
//!
//! Every connection gets an [`AnnSession`] of its own over the server's shared stores, so `SET`,
//! cursors and prepared statements never leak between clients. Results stream: rows are encoded
//! batch by batch as the scans produce them, and each batch boundary checks for a cancel request
//! and the statement timeout, so both stop a running scan, not only its planning.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use annql_engine::AnnSession;
use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{Cast, Placeholder, TryCast};
use datafusion::logical_expr::{Expr, LogicalPlan, Statement as PlanStatement};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{DataType as SqlDataType, Expr as SqlExpr, Ident, Statement};
use futures::{Sink, StreamExt, TryStreamExt, stream};
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, ErrorHandler, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use pgwire::messages::startup::ParameterStatus;
use tokio_util::sync::CancellationToken;

use crate::auth::Startup;
use crate::catalog::Identity;
use crate::compat;
use crate::prepared::{self, PreparedStatements, SqlPrepared};
use crate::server::Shared;
use crate::settings::Settings;
use crate::sqlstate::{self, QUERY_CANCELED};
use crate::statement::{self, Classified, Command, FetchCount};

/// A statement as the extended protocol keeps it between Parse and Execute.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A query, planned at Parse time (parameters still as placeholders).
    Query(Box<LogicalPlan>),
    /// A session statement.
    Command(Command),
}

/// What the watchdog and the cancel handler need to know about a connection.
#[derive(Debug, Default)]
pub struct Activity {
    /// The running statement, if one runs.
    current: Mutex<Option<Running>>,
    next: std::sync::atomic::AtomicU64,
    /// When the connection last finished a statement (or connected).
    last: Mutex<Option<Instant>>,
    /// Whether authentication finished.
    pub authenticated: AtomicBool,
}

impl Activity {
    /// A fresh token for a statement that starts now.
    fn start(&self) -> Running {
        let running = Running {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            token: CancellationToken::new(),
        };
        if let Ok(mut c) = self.current.lock() {
            *c = Some(running.clone());
        }
        running
    }

    /// Cancels the running statement, if any (CancelRequest, client gone).
    pub fn cancel(&self) {
        if let Ok(c) = self.current.lock()
            && let Some(r) = c.as_ref()
        {
            r.token.cancel();
        }
    }

    /// Whether a statement is running.
    pub fn busy(&self) -> bool {
        self.current
            .lock()
            .map(|c| c.as_ref().is_some_and(|r| !r.token.is_cancelled()))
            .unwrap_or(false)
    }

    /// Time since the last statement finished or the connection opened.
    pub fn idle_for(&self, opened: Instant) -> std::time::Duration {
        // A poisoned lock still holds the last time written (every write is one assignment).
        let last = self
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(opened);
        last.elapsed()
    }

    /// Marks `running` as done (its rows are all sent, or it failed, or it was dropped).
    fn finish(&self, running: &Running) {
        if let Ok(mut c) = self.current.lock()
            && c.as_ref().is_some_and(|r| r.id == running.id)
        {
            *c = None;
        }
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Instant::now());
        }
    }
}

/// A statement that runs: its id and cancel token.
#[derive(Debug, Clone)]
struct Running {
    id: u64,
    token: CancellationToken,
}

/// A cursor: whether it survives COMMIT (`WITH HOLD`), and its columns.
type Cursor = (bool, Arc<Vec<FieldInfo>>);

/// The per-connection state behind the handlers.
pub struct Connection {
    shared: Arc<Shared>,
    /// The activity record the watchdog and the cancel handler use.
    pub activity: Arc<Activity>,
    session: tokio::sync::OnceCell<AnnSession>,
    settings: Mutex<Settings>,
    /// Cursors (portals made by DECLARE) by name.
    cursors: Mutex<HashMap<String, Cursor>>,
    /// Statements kept by SQL `PREPARE`.
    prepared: PreparedStatements,
    tls: bool,
    startup: Arc<Startup>,
    parser: Arc<Parser>,
}

/// Unhooks the schemas that point back at the session's own catalog list, so the session can
/// be freed. `pg_catalog` (datafusion-pg-catalog's provider) and `information_schema` each hold
/// the catalog list they are registered in: an `Arc` cycle that kept every session of every
/// client that ever connected (~5 MB each, its pg_catalog tables included) until the server
/// stopped.
pub(crate) fn release_session(session: &AnnSession) {
    let Some(catalog) = session.context().catalog(crate::CATALOG) else {
        return;
    };
    for schema in ["pg_catalog", "information_schema"] {
        // The memory catalog's deregister fails only for a non-empty schema without `cascade`;
        // with it, nothing is left to report: the session is being dropped either way.
        if let Err(e) = catalog.deregister_schema(schema, true) {
            log::warn!("releasing a session's {schema}: {e}");
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(session) = self.session.get() {
            release_session(session);
        }
    }
}

impl Connection {
    /// A connection of `shared`'s server; `tls` says whether it is encrypted.
    pub fn new(shared: Arc<Shared>, tls: bool) -> Arc<Connection> {
        let activity: Arc<Activity> = Arc::default();
        Arc::new_cyclic(|me: &std::sync::Weak<Connection>| Connection {
            startup: Arc::new(Startup::new(&shared, activity.clone())),
            parser: Arc::new(Parser { conn: me.clone() }),
            settings: Mutex::new(Settings::for_server(&shared.config)),
            shared,
            activity,
            session: tokio::sync::OnceCell::new(),
            cursors: Mutex::default(),
            prepared: PreparedStatements::default(),
            tls,
        })
    }

    /// The session, opened on first use (after authentication, so it knows the user).
    async fn session<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<&AnnSession> {
        self.session
            .get_or_try_init(|| async {
                let (pid, secret) = client.pid_and_secret_key();
                self.shared
                    .register_cancel(pid, secret.to_bytes().to_vec(), self.activity.clone());
                let who = Identity {
                    // Startup refuses a packet without a user, so there is one.
                    user: client
                        .metadata()
                        .get(pgwire::api::METADATA_USER)
                        .cloned()
                        .unwrap_or_default(),
                    pid,
                    tls: self.tls || client.is_secure(),
                };
                self.shared
                    .open_session(&who)
                    .map_err(|e| sqlstate::error("XX000", e))
            })
            .await
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parses a query string into statements.
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        if sql.contains('\u{FFFD}') {
            // pgwire decodes message strings lossily; a replacement character means the client
            // sent bytes that are not UTF-8.
            return Err(sqlstate::error(
                "22021",
                "invalid byte sequence for encoding \"UTF8\" in the query text",
            ));
        }
        log::debug!("statement: {sql}");
        self.shared
            .parser
            .parse(&compat::preprocess(sql))
            .map_err(|e| sqlstate::error(sqlstate::SYNTAX_ERROR, e.to_string()))
    }

    /// annql's `COPY dataset … TO 'out'` (which PostgreSQL's grammar does not have), recognised
    /// before the text is parsed; `Ok(None)` for everything else.
    async fn export_command<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        sql: &str,
    ) -> PgWireResult<Option<Command>> {
        let copy = sql
            .trim_start()
            .get(..4)
            .is_some_and(|w| w.eq_ignore_ascii_case("copy"));
        if !copy {
            return Ok(None);
        }
        let session = self.session(client).await?;
        annql_engine::export_sql::parse_copy(sql, |name| session.store(name).is_some())
            .map(|c| c.map(|c| Command::Export(Box::new(c))))
            .map_err(|e| sqlstate::from_engine(&e))
    }

    /// Writes an export (the session's write policy decides where it may) and answers its row;
    /// a cancel request stops the write and leaves nothing at the output.
    async fn export(
        &self,
        session: &AnnSession,
        copy: annql_engine::export_sql::CopyStatement,
        format: &Format,
    ) -> PgWireResult<Response> {
        let running = self.activity.start();
        let written = tokio::select! {
            r = annql_engine::export_sql::execute_copy(session, copy) => {
                r.map_err(|e| sqlstate::from_engine(&e))
            }
            _ = running.token.cancelled() => Err(cancelled()),
        };
        self.activity.finish(&running);
        let plan = session
            .context()
            .read_batch(written?)
            .map_err(|e| sqlstate::from_datafusion(&e))?
            .into_unoptimized_plan();
        self.run(session, plan, format).await
    }

    /// Plans a query statement for this session.
    async fn plan(
        &self,
        session: &AnnSession,
        mut statement: Statement,
    ) -> PgWireResult<LogicalPlan> {
        compat::rewrite(&mut statement);
        let empty_answer = compat::reads_empty_catalog(&statement)
            .then(|| compat::output_columns(&statement))
            .flatten();
        if let Some(columns) = empty_answer {
            // Its rows come through a table that has none: the answer is empty whatever the rest
            // of the query says (and the rest often uses what DataFusion lacks, e.g. int2vector).
            return empty_plan(&columns);
        }
        let plan = match session
            .plan_statement(DFStatement::Statement(Box::new(statement)))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                log::debug!("planning failed: {e}");
                return Err(sqlstate::from_engine(&e));
            }
        };
        if matches!(
            plan,
            LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
        ) {
            return Err(sqlstate::error(
                sqlstate::READ_ONLY,
                "cannot execute this statement: annql serves datasets read-only",
            ));
        }
        Ok(plan)
    }

    /// Runs a plan and streams its rows in the given format, stopping at a cancel request or the
    /// statement timeout.
    async fn run(
        &self,
        session: &AnnSession,
        plan: LogicalPlan,
        format: &Format,
    ) -> PgWireResult<Response> {
        if let LogicalPlan::Statement(_) = plan {
            // SET of a DataFusion option and the like: DataFusion applies it to this session.
            session
                .context()
                .execute_logical_plan(plan)
                .await
                .map_err(|e| sqlstate::from_datafusion(&e))?;
            return Ok(Response::Execution(Tag::new("SET")));
        }
        let running = self.activity.start();
        let deadline = self
            .settings()
            .statement_timeout()
            .map(|d| tokio::time::Instant::now() + d);
        let fields = Arc::new(
            arrow_pg::datatypes::arrow_schema_to_pg_fields(plan.schema().as_arrow(), format, None)
                .inspect_err(|_| self.activity.finish(&running))?,
        );
        // Executed on the query runtime, so this connection's runtime stays free to notice a
        // cancel, the deadline or the client leaving while the query works.
        let started = async {
            self.shared
                .queries
                .execute(session.context().clone(), plan)
                .await
                .map_err(|e| sqlstate::from_datafusion(&e))
        };
        let batches = tokio::select! {
            r = started => r,
            _ = running.token.cancelled() => Err(cancelled()),
            _ = sleep_until(deadline) => Err(timed_out()),
        };
        let batches = match batches {
            Ok(b) => b,
            Err(e) => {
                self.activity.finish(&running);
                return Err(e);
            }
        };
        let rows = RowStream {
            batches,
            fields: fields.clone(),
            running,
            deadline,
            activity: self.activity.clone(),
        }
        .into_stream();
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    /// Runs one parsed statement of the simple protocol.
    async fn simple<C>(&self, client: &mut C, statement: Statement) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client).await?;
        match statement::classify(statement)
            .map_err(|e| sqlstate::error(sqlstate::FEATURE_NOT_SUPPORTED, e))?
        {
            Classified::Query(statement) => {
                let plan = self.plan(session, *statement).await?;
                self.run(session, plan, &Format::UnifiedText).await
            }
            Classified::Command(command) => {
                self.command(client, session, command, &Format::UnifiedText)
                    .await
            }
        }
    }

    /// Answers a session statement.
    async fn command<C>(
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
        use futures::SinkExt;
        let tag = statement::tag(&command);
        match command {
            Command::Set { name, value } => {
                let changed = {
                    let mut settings = self.settings();
                    match value {
                        Some(v) => Some(
                            settings
                                .set(&name, &v)
                                .map_err(|e| sqlstate::error("22023", e))?,
                        ),
                        None => {
                            settings.reset(&name);
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
                Ok(Response::Execution(Tag::new(tag)))
            }
            Command::SetDataFusion(statement) => {
                let plan = self.plan(session, *statement).await?;
                session
                    .context()
                    .execute_logical_plan(plan)
                    .await
                    .map_err(|e| sqlstate::from_datafusion(&e))?;
                Ok(Response::Execution(Tag::new(tag)))
            }
            Command::SetAccepted | Command::Savepoint(_) => Ok(Response::Execution(Tag::new(tag))),
            Command::Show(name) => {
                let value = if name.to_ascii_lowercase().starts_with("datafusion.") {
                    session
                        .context()
                        .state()
                        .config()
                        .options()
                        .entries()
                        .into_iter()
                        .find(|e| e.key.eq_ignore_ascii_case(&name))
                        // An option without a value shows as empty, as PostgreSQL shows one.
                        .map(|e| e.value.unwrap_or_default())
                } else {
                    self.settings().get(&name)
                };
                let value = value.ok_or_else(|| {
                    sqlstate::error(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                text_table(&[&show_column(&name)], vec![vec![value]], format)
            }
            Command::ShowAll => {
                let rows = self
                    .settings()
                    .all()
                    .into_iter()
                    .map(|(n, v, d)| vec![n, v, d])
                    .collect();
                text_table(&SHOW_ALL_COLUMNS, rows, format)
            }
            Command::Reset(name) => {
                match name {
                    Some(n) => self.settings().reset(&n),
                    None => self.settings().reset_all(),
                }
                Ok(Response::Execution(Tag::new(tag)))
            }
            Command::Begin => Ok(Response::TransactionStart(Tag::new(tag))),
            Command::Commit | Command::Rollback => {
                self.close_cursors(client, false)?;
                Ok(Response::TransactionEnd(Tag::new(tag)))
            }
            Command::Discard => {
                self.settings().reset_all();
                self.close_cursors(client, true)?;
                self.prepared.clear();
                Ok(Response::Execution(Tag::new(tag)))
            }
            Command::Deallocate(name) => {
                match name {
                    Some(n) => {
                        // A statement of SQL `PREPARE`, or one a driver named in a Parse message
                        // (psycopg deallocates those with SQL too).
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
                Ok(Response::Execution(Tag::new(tag)))
            }
            Command::Prepare {
                name,
                types,
                statement,
            } => {
                let prepared = self.prepare(session, name, types, *statement).await?;
                self.prepared.insert(prepared)?;
                Ok(Response::Execution(Tag::new(tag)))
            }
            Command::Execute { name, arguments } => {
                let prepared = self.prepared.get(&name)?;
                let arguments = self.evaluate(session, arguments).await?;
                let plan = prepared.bind(arguments)?;
                self.run(session, plan, format).await
            }
            Command::Declare { name, hold, query } => {
                let plan = self.plan(session, Statement::Query(query)).await?;
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
                Ok(Response::Execution(Tag::new(tag)))
            }
            Command::Fetch { name, count } => {
                let portal = match portals(client)?.get_portal(&name) {
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
                    let fields = self.cursor_fields(&name)?;
                    response = QueryResponse::new(fields, stream::empty());
                }
                response.set_command_tag("FETCH");
                Ok(Response::Query(response))
            }
            Command::Close(name) => {
                match name {
                    Some(n) => {
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
                    }
                    None => self.close_cursors(client, true)?,
                }
                Ok(Response::Execution(Tag::new(tag)))
            }
            Command::ReadOnly(kind) => Err(sqlstate::error(
                sqlstate::READ_ONLY,
                format!("cannot execute {kind}: annql serves datasets read-only"),
            )),
            Command::Export(copy) => self.export(session, *copy, format).await,
        }
    }

    /// Plans the statement of `PREPARE name (types) AS statement`, parameters left unbound.
    async fn prepare(
        &self,
        session: &AnnSession,
        name: String,
        types: Vec<SqlDataType>,
        statement: Statement,
    ) -> PgWireResult<SqlPrepared> {
        let query = match statement::classify(statement)
            .map_err(|e| sqlstate::error(sqlstate::FEATURE_NOT_SUPPORTED, e))?
        {
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
        let (fields, input) = match self.plan(session, wrapped).await? {
            LogicalPlan::Statement(PlanStatement::Prepare(p)) => (p.fields, p.input),
            other => {
                return Err(sqlstate::error(
                    "XX000",
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
        let plan = self.plan(session, parsed.remove(0)).await?;
        let batches: Vec<RecordBatch> = self
            .shared
            .queries
            .execute(session.context().clone(), plan)
            .await
            .map_err(|e| sqlstate::from_datafusion(&e))?
            .try_collect()
            .await
            .map_err(|e| sqlstate::from_datafusion(&e))?;
        let row: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        let [batch] = row.as_slice() else {
            return Err(sqlstate::error(
                "XX000",
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
    fn close_cursors<C>(&self, client: &C, all: bool) -> PgWireResult<()>
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
    fn cursor_fields(&self, name: &str) -> PgWireResult<Arc<Vec<FieldInfo>>> {
        let cursors = self
            .cursors
            .lock()
            .map_err(|_| sqlstate::error("XX000", "cursor registry lock poisoned"))?;
        // A portal made by Bind rather than DECLARE has no columns recorded here: described as
        // none, while its rows still arrive with their own description.
        Ok(cursors
            .get(name)
            .map(|(_, f)| f.clone())
            .unwrap_or_default())
    }
}

/// No rows, with `columns` as text columns: the answer to a catalog query about keys or indexes.
fn empty_plan(columns: &[String]) -> PgWireResult<LogicalPlan> {
    let mut seen = std::collections::HashSet::new();
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let mut name = c.clone();
            let mut n = 1;
            while !seen.insert(name.clone()) {
                name = format!("{c}_{n}");
                n += 1;
            }
            Field::new(name, DataType::Utf8, true)
        })
        .collect();
    let schema = datafusion::common::DFSchema::try_from(Schema::new(fields))
        .map_err(|e| sqlstate::from_datafusion(&e))?;
    Ok(LogicalPlan::EmptyRelation(
        datafusion::logical_expr::EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(schema),
        },
    ))
}

/// The connection's portal store with annql's statement type.
fn portals<C>(client: &C) -> PgWireResult<&MemPortalStore<Prepared>>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    client
        .portal_store()
        .as_any()
        .downcast_ref::<MemPortalStore<Prepared>>()
        .ok_or_else(|| sqlstate::error("XX000", "internal: unexpected portal store"))
}

fn cancelled() -> PgWireError {
    sqlstate::error(QUERY_CANCELED, "canceling statement due to user request")
}

fn timed_out() -> PgWireError {
    sqlstate::error(
        QUERY_CANCELED,
        "canceling statement due to statement timeout",
    )
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The columns of `SHOW ALL`.
const SHOW_ALL_COLUMNS: [&str; 3] = ["name", "setting", "description"];

/// The column `SHOW name` answers in: the setting's last name part, as PostgreSQL names it.
fn show_column(name: &str) -> String {
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
fn text_fields(columns: &[&str], format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    arrow_pg::datatypes::arrow_schema_to_pg_fields(&text_schema(columns), format, None)
}

/// A one-table text result (`SHOW`).
fn text_table(columns: &[&str], rows: Vec<Vec<String>>, format: &Format) -> PgWireResult<Response> {
    let schema = text_schema(columns);
    let arrays = (0..columns.len())
        .map(|i| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>(),
            )) as _
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| sqlstate::error("XX000", e.to_string()))?;
    let fields = Arc::new(text_fields(columns, format)?);
    let rows: Vec<PgWireResult<DataRow>> =
        arrow_pg::datatypes::encode_recordbatch(fields.clone(), batch).collect();
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(rows),
    )))
}

/// The rows of a running query, batch by batch, watching the cancel token and the deadline.
struct RowStream {
    batches: SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    running: Running,
    deadline: Option<tokio::time::Instant>,
    activity: Arc<Activity>,
}

type RowIter = Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync>;

impl RowStream {
    fn into_stream(self) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
        struct State {
            s: RowStream,
            rows: Option<RowIter>,
            done: bool,
        }
        impl Drop for State {
            fn drop(&mut self) {
                // The client went away or the stream ended: stop any work still running.
                self.s.running.token.cancel();
                self.s.activity.finish(&self.s.running);
            }
        }
        stream::unfold(
            State {
                s: self,
                rows: None,
                done: false,
            },
            |mut st| async move {
                loop {
                    if st.done {
                        return None;
                    }
                    if let Some(rows) = st.rows.as_mut() {
                        if let Some(row) = rows.next() {
                            return Some((row, st));
                        }
                        st.rows = None;
                    }
                    let next = tokio::select! {
                        b = st.s.batches.next() => b,
                        _ = st.s.running.token.cancelled() => Some(Err(datafusion::error::DataFusionError::External("cancel".into()))),
                        _ = sleep_until(st.s.deadline) => Some(Err(datafusion::error::DataFusionError::External("timeout".into()))),
                    };
                    match next {
                        None => {
                            st.done = true;
                            st.s.activity.finish(&st.s.running);
                            return None;
                        }
                        Some(Ok(batch)) => {
                            st.rows = Some(arrow_pg::datatypes::encode_recordbatch(
                                st.s.fields.clone(),
                                batch,
                            ));
                        }
                        Some(Err(e)) => {
                            st.done = true;
                            let err = match &e {
                                datafusion::error::DataFusionError::External(m)
                                    if m.to_string() == "cancel" =>
                                {
                                    cancelled()
                                }
                                datafusion::error::DataFusionError::External(m)
                                    if m.to_string() == "timeout" =>
                                {
                                    timed_out()
                                }
                                other => sqlstate::from_datafusion(other),
                            };
                            return Some((Err(err), st));
                        }
                    }
                }
            },
        )
    }
}

/// Parses and plans statements for the extended protocol.
#[derive(Debug)]
pub struct Parser {
    conn: std::sync::Weak<Connection>,
}

impl Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("tls", &self.tls)
            .finish()
    }
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
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let session = conn.session(client).await?;
        match statement::classify(statements.remove(0))
            .map_err(|e| sqlstate::error(sqlstate::FEATURE_NOT_SUPPORTED, e))?
        {
            Classified::Query(statement) => Ok(Some(Prepared::Query(Box::new(
                conn.plan(session, *statement).await?,
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
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
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

/// The handlers pgwire calls for this connection.
#[derive(Debug)]
pub struct Handlers(pub Arc<Connection>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        self.0.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.0.shared.clone()
    }
}

impl ErrorHandler for Connection {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        // Errors pgwire raises itself get SQLSTATEs a client can act on.
        let mapped = match error {
            PgWireError::QueryCanceled => Some(cancelled()),
            PgWireError::StatementNotFound(name) => Some(sqlstate::error(
                "26000",
                format!("prepared statement \"{name}\" does not exist"),
            )),
            PgWireError::PortalNotFound(name) => Some(sqlstate::error(
                "34000",
                format!("portal \"{name}\" does not exist"),
            )),
            PgWireError::ApiError(e) => Some(sqlstate::error("XX000", e.to_string())),
            _ => None,
        };
        if let Some(m) = mapped {
            *error = m;
        }
        log::debug!("{}: {error}", client.socket_addr());
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let export = match self.export_command(client, query).await {
            Ok(e) => e,
            Err(e) => return Ok(vec![Response::Error(Box::new(ErrorInfo::from(e)))]),
        };
        if let Some(command) = export {
            let session = self.session(client).await?;
            let answer = self
                .command(client, session, command, &Format::UnifiedText)
                .await
                .unwrap_or_else(|e| Response::Error(Box::new(ErrorInfo::from(e))));
            return Ok(vec![answer]);
        }
        let statements = match self.parse(query) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(ErrorInfo::from(e)))]),
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::with_capacity(statements.len());
        for statement in statements {
            match self.simple(client, statement).await {
                Ok(r) => out.push(r),
                Err(e) => {
                    // Like PostgreSQL: the rest of the query string is not run.
                    out.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        Ok(out)
    }
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

#[async_trait]
impl CancelHandler for Shared {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.cancel(request.pid, &request.secret_key.to_bytes());
    }
}
