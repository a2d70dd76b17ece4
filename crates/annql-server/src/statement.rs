//! What a client statement is: a query DataFusion plans, or a session statement the server
//! answers itself (`SET`, `SHOW`, transactions, cursors, `DISCARD`, `PREPARE`/`EXECUTE`/
//! `DEALLOCATE`).
//!
//! Statements arrive parsed by sqlparser's PostgreSQL dialect (through
//! `datafusion-pg-catalog`'s compatibility rewrites); this module only sorts the AST.

use annql_engine::export_sql::CopyStatement;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, DataType as SqlDataType, Declare, DiscardObject, Expr, FetchDirection, Ident,
    ObjectName, Query, Reset, Set, Statement, Value,
};
use datafusion::sql::sqlparser::parser::ParserError;

/// How many rows a `FETCH` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchCount {
    /// `FETCH n`, `FETCH NEXT` (1), `FETCH FORWARD n`.
    Rows(usize),
    /// `FETCH ALL`, `FETCH FORWARD ALL`.
    All,
}

/// A statement the server answers without DataFusion's planner.
#[derive(Debug, Clone)]
pub enum Command {
    /// `SET name = value` / `SET name TO value`; `value` None means `DEFAULT`.
    Set {
        /// The setting.
        name: String,
        /// Its value, as text.
        value: Option<String>,
    },
    /// A `SET` DataFusion owns (`SET datafusion.execution.batch_size = 1024`).
    SetDataFusion(Box<Statement>),
    /// `SET` forms accepted and ignored: `SET SESSION CHARACTERISTICS`, `SET TRANSACTION`,
    /// `SET NAMES`, `SET ROLE` (annql is read-only with one user).
    SetAccepted,
    /// `SAVEPOINT`, `RELEASE SAVEPOINT`, `ROLLBACK TO SAVEPOINT` (psqlODBC wraps statements in
    /// them); nothing to undo on a read-only server. The tag it answers with.
    Savepoint(&'static str),
    /// `SHOW name`.
    Show(String),
    /// `SHOW ALL`.
    ShowAll,
    /// `RESET name`, or `RESET ALL` (None).
    Reset(Option<String>),
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    /// `DISCARD ALL` and friends: settings back to defaults, cursors and statements closed.
    Discard,
    /// `DEALLOCATE name` / `DEALLOCATE ALL` (None).
    Deallocate(Option<String>),
    /// `PREPARE name [(types)] AS statement`: a statement kept under a name, with `$n`
    /// parameters.
    Prepare {
        /// The statement's name (folded to lower case unless quoted, as PostgreSQL does).
        name: String,
        /// Declared parameter types, `$1` first (may be fewer than the parameters used).
        types: Vec<SqlDataType>,
        /// The statement prepared.
        statement: Box<Statement>,
    },
    /// `EXECUTE name [(arguments)]`: runs a statement kept by `PREPARE`.
    Execute {
        /// The statement's name.
        name: String,
        /// The arguments, `$1` first.
        arguments: Vec<Expr>,
    },
    /// `DECLARE name CURSOR [WITH HOLD] FOR query`.
    Declare {
        /// The cursor (and portal) name.
        name: String,
        /// Whether the cursor outlives the transaction.
        hold: bool,
        /// The cursor's query.
        query: Box<Query>,
    },
    /// `FETCH [FORWARD] n FROM name`.
    Fetch {
        /// The cursor.
        name: String,
        /// Rows asked for.
        count: FetchCount,
    },
    /// `CLOSE name` / `CLOSE ALL` (None).
    Close(Option<String>),
    /// A statement that would change data or the catalog: refused, the server is read-only.
    ReadOnly(String),
    /// annql's `COPY dataset … TO 'out.h5ad'`: a new AnnData store written inside the server's
    /// writable directory (refused without one), answered with one row.
    Export(Box<CopyStatement>),
}

/// A statement sorted for execution.
#[derive(Debug, Clone)]
pub enum Classified {
    /// Planned by DataFusion (queries, `EXPLAIN`, `SHOW TABLES` rewritten as a query, …).
    Query(Box<Statement>),
    /// Answered by the server.
    Command(Command),
}

/// An identifier as PostgreSQL resolves it: unquoted names fold to lower case.
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) => i.value.clone(),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The text of a `SET` value: `'ISO'`, `ISO`, `5`, `on`; None for `DEFAULT`.
fn value_text(values: &[Expr]) -> Option<String> {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect();
    let text = parts.join(", ");
    (!text.eq_ignore_ascii_case("default")).then_some(text)
}

/// Why a statement is not run.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A form of a statement the server does not support (SQLSTATE 0A000), in words for the
    /// client.
    #[error("{0}")]
    Unsupported(String),
    /// The query `SHOW TABLES` is answered with did not parse: a bug.
    #[error("internal error (this is a bug in annql): {0}")]
    ShowTables(#[source] ParserError),
}

fn unsupported(message: impl Into<String>) -> Refused {
    Refused::Unsupported(message.into())
}

fn fetch_count(direction: &FetchDirection) -> Result<FetchCount, Refused> {
    let number = |v: &datafusion::sql::sqlparser::ast::ValueWithSpan| {
        v.value.to_string().parse::<usize>().map_err(|_| {
            unsupported(format!(
                "FETCH count must be a non-negative integer, got {}",
                v.value
            ))
        })
    };
    Ok(match direction {
        FetchDirection::Count { limit } => FetchCount::Rows(number(limit)?),
        FetchDirection::Next => FetchCount::Rows(1),
        FetchDirection::Forward { limit: Some(l) } => FetchCount::Rows(number(l)?),
        FetchDirection::Forward { limit: None } => FetchCount::Rows(1),
        FetchDirection::All | FetchDirection::ForwardAll => FetchCount::All,
        other => {
            return Err(unsupported(format!(
                "cursors are forward-only: FETCH {other} is not supported"
            )));
        }
    })
}

/// The statement `CREATE GENE INDEX` or `DROP GENE INDEX` when `sql` starts with one (annql's
/// own statements, which PostgreSQL's grammar does not parse): a server refuses both, since a
/// gene index is written beside its store.
pub fn gene_index_statement(sql: &str) -> Option<&'static str> {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(str::to_ascii_uppercase)
        .collect();
    match words[..] {
        [ref a, ref b, ref c] if b == "GENE" && c == "INDEX" => match a.as_str() {
            "CREATE" => Some("CREATE GENE INDEX"),
            "DROP" => Some("DROP GENE INDEX"),
            _ => None,
        },
        _ => None,
    }
}

/// Sorts one parsed statement.
pub fn classify(statement: Statement) -> Result<Classified, Refused> {
    use Classified::Command as C;
    Ok(match statement {
        Statement::Set(set) => C(set_command(set)?),
        Statement::ShowVariable { variable } => C(show_command(&variable)),
        Statement::Reset(r) => C(Command::Reset(match r.reset {
            Reset::ALL => None,
            Reset::ConfigurationParameter(name) => Some(object_name(&name)),
        })),
        Statement::StartTransaction { .. } => C(Command::Begin),
        Statement::Commit { .. } => C(Command::Commit),
        Statement::Rollback {
            savepoint: None, ..
        } => C(Command::Rollback),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => C(Command::Savepoint("ROLLBACK")),
        Statement::Savepoint { .. } => C(Command::Savepoint("SAVEPOINT")),
        Statement::ReleaseSavepoint { .. } => C(Command::Savepoint("RELEASE")),
        Statement::Discard {
            object_type: DiscardObject::ALL | DiscardObject::PLANS | DiscardObject::TEMP,
        }
        | Statement::Discard {
            object_type: DiscardObject::SEQUENCES,
        } => C(Command::Discard),
        Statement::Deallocate { name, .. } => C(Command::Deallocate(
            (name.quote_style.is_some() || !name.value.eq_ignore_ascii_case("all"))
                .then(|| folded(&name)),
        )),
        Statement::Prepare {
            name,
            data_types,
            statement,
        } => C(Command::Prepare {
            name: folded(&name),
            types: data_types,
            statement,
        }),
        s @ Statement::Execute { .. } => C(execute_command(s)?),
        Statement::Declare { stmts } => C(declare_command(stmts)?),
        Statement::Fetch {
            name, direction, ..
        } => C(Command::Fetch {
            name: name.value,
            count: fetch_count(&direction)?,
        }),
        Statement::Close { cursor } => C(Command::Close(match cursor {
            CloseCursor::All => None,
            CloseCursor::Specific { name } => Some(name.value),
        })),
        s @ (Statement::Insert(_)
        | Statement::Update { .. }
        | Statement::Delete(_)
        | Statement::Merge { .. }
        | Statement::Truncate { .. }
        | Statement::CreateTable(_)
        | Statement::CreateView { .. }
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateFunction(_)
        | Statement::AlterTable { .. }
        | Statement::Drop { .. }
        | Statement::Copy { .. }
        | Statement::AttachDatabase { .. }
        | Statement::AttachDuckDBDatabase { .. }
        | Statement::DetachDuckDBDatabase { .. }
        | Statement::Grant { .. }
        | Statement::Revoke { .. }) => {
            let kind = s.to_string();
            let kind = kind.split_whitespace().next().unwrap_or("").to_uppercase();
            C(Command::ReadOnly(kind))
        }
        Statement::ShowTables { .. } => Classified::Query(Box::new(show_tables()?)),
        other => Classified::Query(Box::new(other)),
    })
}

/// `SET …`: a setting of the session, one of DataFusion's, or a form accepted and ignored.
fn set_command(set: Set) -> Result<Command, Refused> {
    Ok(match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = object_name(&variable);
            if name.to_ascii_lowercase().starts_with("datafusion.") {
                Command::SetDataFusion(Box::new(Statement::Set(Set::SingleAssignment {
                    scope: None,
                    hivevar: false,
                    variable,
                    values,
                })))
            } else {
                Command::Set {
                    name,
                    value: value_text(&values),
                }
            }
        }
        Set::SetTimeZone { value, .. } => Command::Set {
            name: "TimeZone".into(),
            value: value_text(&[value]),
        },
        Set::SetSessionParam(_)
        | Set::SetTransaction { .. }
        | Set::SetNames { .. }
        | Set::SetNamesDefault {}
        | Set::SetRole { .. }
        | Set::SetSessionAuthorization(_) => Command::SetAccepted,
        other => return Err(unsupported(format!("unsupported form of SET: {other}"))),
    })
}

/// `SHOW name`, `SHOW ALL`.
fn show_command(variable: &[Ident]) -> Command {
    let parts: Vec<String> = variable.iter().map(|i| i.value.clone()).collect();
    // `SHOW datafusion.execution.batch_size` arrives as dotted parts, `SHOW TRANSACTION
    // ISOLATION LEVEL` as words.
    let dotted = parts
        .first()
        .is_some_and(|p| p.eq_ignore_ascii_case("datafusion"));
    let name = parts.join(if dotted { "." } else { " " });
    if name.eq_ignore_ascii_case("all") {
        Command::ShowAll
    } else if name.eq_ignore_ascii_case("transaction isolation level") {
        Command::Show("transaction_isolation".into())
    } else {
        Command::Show(name)
    }
}

/// `EXECUTE name [(arguments)]` (`statement` is an `EXECUTE`).
fn execute_command(statement: Statement) -> Result<Command, Refused> {
    let Statement::Execute {
        name,
        parameters,
        using,
        immediate,
        into,
        output,
        default,
        has_parentheses: _,
    } = statement
    else {
        return Err(unsupported("only EXECUTE name [(arguments)] is supported"));
    };
    if immediate || output || default || !using.is_empty() || !into.is_empty() {
        return Err(unsupported("only EXECUTE name [(arguments)] is supported"));
    }
    let name = name
        .as_ref()
        .and_then(|n| n.0.last())
        .and_then(|p| p.as_ident())
        .map(folded)
        .ok_or_else(|| unsupported("EXECUTE needs the name of a prepared statement"))?;
    Ok(Command::Execute {
        name,
        arguments: parameters,
    })
}

/// `DECLARE name CURSOR [WITH HOLD] FOR query`.
fn declare_command(stmts: Vec<Declare>) -> Result<Command, Refused> {
    let [decl] =
        <[_; 1]>::try_from(stmts).map_err(|_| unsupported("DECLARE one cursor at a time"))?;
    let name = decl
        .names
        .first()
        .map(|n| n.value.clone())
        .ok_or_else(|| unsupported("DECLARE needs a cursor name"))?;
    let query = decl
        .for_query
        .ok_or_else(|| unsupported("DECLARE … CURSOR needs FOR <query>"))?;
    Ok(Command::Declare {
        name,
        hold: decl.hold.unwrap_or(false),
        query,
    })
}

/// The query `SHOW TABLES` is answered with: DataFusion's SHOW TABLES reads its own
/// information_schema, which the server replaces; ask ours.
fn show_tables() -> Result<Statement, Refused> {
    let sql = "SELECT table_catalog, table_schema, table_name, table_type \
               FROM information_schema.tables ORDER BY table_schema, table_name";
    let mut parsed = datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
        sql,
    )
    .map_err(Refused::ShowTables)?;
    Ok(parsed.remove(0))
}

/// The command tag PostgreSQL answers a session statement with.
pub fn tag(command: &Command) -> &'static str {
    match command {
        Command::Set { .. } | Command::SetDataFusion(_) | Command::SetAccepted => "SET",
        Command::Savepoint(tag) => tag,
        Command::Show(_) | Command::ShowAll => "SHOW",
        Command::Reset(_) => "RESET",
        Command::Begin => "BEGIN",
        Command::Commit => "COMMIT",
        Command::Rollback => "ROLLBACK",
        Command::Discard => "DISCARD ALL",
        Command::Deallocate(None) => "DEALLOCATE ALL",
        Command::Deallocate(Some(_)) => "DEALLOCATE",
        Command::Prepare { .. } => "PREPARE",
        // The answer is the prepared query's (`SELECT n`).
        Command::Execute { .. } => "EXECUTE",
        Command::Declare { .. } => "DECLARE CURSOR",
        Command::Fetch { .. } => "FETCH",
        Command::Close(None) => "CLOSE ALL",
        Command::Close(Some(_)) => "CLOSE CURSOR",
        Command::ReadOnly(_) => "",
        // The answer is a row (`SELECT 1`).
        Command::Export(_) => "COPY",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn one(sql: &str) -> Classified {
        let parser = PostgresCompatibilityParser::new();
        let mut statements = parser
            .parse(sql)
            .map_err(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(statements.len(), 1, "{sql}");
        classify(statements.remove(0))
            .unwrap_or_else(|e| Classified::Command(Command::ReadOnly(e.to_string())))
    }

    #[test]
    fn gene_index_statements_are_recognised_before_parsing() {
        assert_eq!(
            gene_index_statement("  create gene\nindex ON atlas"),
            Some("CREATE GENE INDEX")
        );
        assert_eq!(
            gene_index_statement("DROP GENE INDEX ON atlas"),
            Some("DROP GENE INDEX")
        );
        assert_eq!(gene_index_statement("CREATE INDEX g ON t"), None);
        assert_eq!(gene_index_statement("SELECT 'CREATE GENE INDEX'"), None);
        assert_eq!(gene_index_statement("CREATE"), None);
    }

    fn command(sql: &str) -> Option<Command> {
        match one(sql) {
            Classified::Command(c) => Some(c),
            Classified::Query(_) => None,
        }
    }

    #[test]
    fn session_statements() {
        assert!(matches!(
            command("SET extra_float_digits = 3"),
            Some(Command::Set { name, value: Some(v) }) if name == "extra_float_digits" && v == "3"
        ));
        assert!(matches!(
            command("SET DateStyle = 'ISO'"),
            Some(Command::Set { value: Some(v), .. }) if v == "ISO"
        ));
        assert!(matches!(
            command("SET statement_timeout TO DEFAULT"),
            Some(Command::Set { value: None, .. })
        ));
        assert!(matches!(
            command("SET datafusion.execution.batch_size = 1024"),
            Some(Command::SetDataFusion(_))
        ));
        assert!(matches!(
            command("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            Some(Command::SetAccepted)
        ));
        assert!(
            matches!(command("SHOW search_path"), Some(Command::Show(n)) if n == "search_path")
        );
        assert!(matches!(command("SHOW ALL"), Some(Command::ShowAll)));
        assert!(matches!(
            command("SHOW datafusion.execution.batch_size"),
            Some(Command::Show(n)) if n == "datafusion.execution.batch_size"
        ));
        assert!(matches!(command("DISCARD ALL"), Some(Command::Discard)));
        assert!(matches!(
            command("DEALLOCATE ALL"),
            Some(Command::Deallocate(None))
        ));
        assert!(matches!(command("BEGIN"), Some(Command::Begin)));
        assert!(matches!(
            command("SAVEPOINT _EXEC_SVP_1"),
            Some(Command::Savepoint("SAVEPOINT"))
        ));
        assert!(matches!(
            command("RELEASE _EXEC_SVP_1"),
            Some(Command::Savepoint("RELEASE"))
        ));
        assert!(matches!(
            command("ROLLBACK TO _EXEC_SVP_1"),
            Some(Command::Savepoint("ROLLBACK"))
        ));
        assert!(matches!(command("COMMIT"), Some(Command::Commit)));
        assert!(matches!(command("ROLLBACK"), Some(Command::Rollback)));
        assert!(
            matches!(command("INSERT INTO t VALUES (1)"), Some(Command::ReadOnly(k)) if k == "INSERT")
        );
        assert!(command("SELECT 1").is_none());
    }

    #[test]
    fn prepared_statements() {
        assert!(matches!(
            command("PREPARE Q(int, text) AS SELECT $1, $2"),
            Some(Command::Prepare { name, types, .. }) if name == "q" && types.len() == 2
        ));
        assert!(matches!(
            command("EXECUTE q(1, 'a')"),
            Some(Command::Execute { name, arguments }) if name == "q" && arguments.len() == 2
        ));
        assert!(matches!(
            command("EXECUTE \"Q\""),
            Some(Command::Execute { name, arguments }) if name == "Q" && arguments.is_empty()
        ));
        assert!(matches!(
            command("DEALLOCATE PREPARE Q"),
            Some(Command::Deallocate(Some(n))) if n == "q"
        ));
    }

    #[test]
    fn cursors() {
        assert!(matches!(
            command("DECLARE \"c1\" CURSOR WITH HOLD FOR SELECT 1"),
            Some(Command::Declare { name, hold: true, .. }) if name == "c1"
        ));
        assert!(matches!(
            command("FETCH FORWARD 1000 FROM \"c1\""),
            Some(Command::Fetch {
                count: FetchCount::Rows(1000),
                ..
            })
        ));
        assert!(matches!(
            command("fetch 100 in SQL_CUR1"),
            Some(Command::Fetch {
                count: FetchCount::Rows(100),
                ..
            })
        ));
        assert!(matches!(
            command("FETCH ALL FROM c1"),
            Some(Command::Fetch {
                count: FetchCount::All,
                ..
            })
        ));
        assert!(matches!(command("CLOSE c1"), Some(Command::Close(Some(_)))));
    }
}
