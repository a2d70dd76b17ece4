//! One client connection: its session, its settings and cursors, and the pgwire handlers that
//! run its statements over the simple and the extended protocol.
//!
//! Every connection gets an [`AnnSession`] of its own over the server's shared stores, so `SET`,
//! cursors and prepared statements never leak between clients. Results stream: rows are encoded
//! batch by batch as the scans produce them, and each batch boundary checks for a cancel request
//! and the statement timeout, so both stop a running scan, not only its planning.

mod commands;
mod extended;
mod rows;
mod text;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use annql_engine::AnnSession;
use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use futures::Sink;
use pgwire::api::auth::StartupHandler;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::Format;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ErrorHandler, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

pub use self::extended::{Parser, Prepared};
/// The activity record, where it was before it got a module of its own.
pub use crate::activity::Activity;
use crate::auth::Startup;
use crate::catalog::Identity;
use crate::compat;
use crate::prepared::PreparedStatements;
use crate::settings::Settings;
use crate::shared::{Shared, release_session};
use crate::sqlstate;
use crate::statement::{self, Classified, Command};
use rows::{RowStream, sleep_until};

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
            startup: Arc::new(Startup::new(&shared.admission, activity.clone())),
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
                    .cancels
                    .register(pid, secret.to_bytes().to_vec(), &self.activity);
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
                    .map_err(|e| sqlstate::from_engine(&e))
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
            .map_err(|e| sqlstate::from_error(&e, Some(sql)))
    }

    /// annql's `COPY dataset … TO 'out'` (which PostgreSQL's grammar does not have), recognised
    /// before the text is parsed, and its gene-index statements, refused; `Ok(None)` for
    /// everything else.
    async fn export_command<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        sql: &str,
    ) -> PgWireResult<Option<Command>> {
        if let Some(statement) = statement::gene_index_statement(sql) {
            return Err(sqlstate::error(
                sqlstate::READ_ONLY,
                format!(
                    "cannot execute {statement}: annql serves datasets read-only (build the index \
                     with `annql index PATH`; a server attaches it at start)"
                ),
            ));
        }
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
            _ = running.token.cancelled() => Err(sqlstate::cancelled()),
        };
        self.activity.finish(&running);
        let plan = session
            .context()
            .read_batch(written?)
            .map_err(|e| sqlstate::from_datafusion(&e))?
            .into_unoptimized_plan();
        self.run(session, plan, format).await
    }

    /// Plans a query statement for this session; `text` is the query string it was parsed from,
    /// when the client sent one (an error's position points into it).
    async fn plan(
        &self,
        session: &AnnSession,
        mut statement: Statement,
        text: Option<&str>,
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
                return Err(sqlstate::from_error(&e, text));
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
                .execute(session.execution_context(&plan), plan)
                .await
                .map_err(|e| sqlstate::from_datafusion(&e))
        };
        let batches = tokio::select! {
            r = started => r,
            _ = running.token.cancelled() => Err(sqlstate::cancelled()),
            _ = sleep_until(deadline) => Err(sqlstate::timed_out()),
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

    /// Runs one statement of the simple protocol, parsed from the query string `text`.
    async fn simple<C>(
        &self,
        client: &mut C,
        statement: Statement,
        text: &str,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client).await?;
        match statement::classify(statement).map_err(|e| sqlstate::from_error(&e, None))? {
            Classified::Query(statement) => {
                let plan = self.plan(session, *statement, Some(text)).await?;
                self.run(session, plan, &Format::UnifiedText).await
            }
            Classified::Command(command) => {
                self.command(client, session, command, &Format::UnifiedText)
                    .await
            }
        }
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

impl Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("tls", &self.tls)
            .finish()
    }
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
        self.0.shared.cancels.clone()
    }
}

impl ErrorHandler for Connection {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        // Errors pgwire raises itself get SQLSTATEs a client can act on.
        let mapped = match error {
            PgWireError::QueryCanceled => Some(sqlstate::cancelled()),
            PgWireError::StatementNotFound(name) => Some(sqlstate::error(
                "26000",
                format!("prepared statement \"{name}\" does not exist"),
            )),
            PgWireError::PortalNotFound(name) => Some(sqlstate::error(
                "34000",
                format!("portal \"{name}\" does not exist"),
            )),
            PgWireError::ApiError(e) => Some(sqlstate::from_error(e.as_ref(), None)),
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
            match self.simple(client, statement, query).await {
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
