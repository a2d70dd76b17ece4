//! Statements over Flight SQL: SQL text to a plan (one read-only statement, `?` or `$n`
//! parameters), the tickets that carry a statement from `GetFlightInfo` to `DoGet`, and prepared
//! statements with their bound parameters.
//!
//! A query's ticket carries its SQL (planned again at `DoGet`, which costs milliseconds) and a
//! run id: the server keeps nothing between the two calls, so an abandoned `FlightInfo` holds no
//! memory, and `CancelFlightInfo` finds the run by its id.

use std::sync::Mutex;

use annql_engine::AnnSession;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::metadata::ScalarAndMetadata;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DFStatement;
use prost::Message;
use tonic::Status;

use super::status;
use crate::compat;
use crate::shared::Shared;
use crate::statement::{self, Classified, Command};

/// Plans one statement of `sql` for `session`: a query (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`,
/// `SHOW`); statements that would write are refused as on the PostgreSQL side, and session
/// statements (`SET`, transactions, cursors, SQL `PREPARE`) have no session to act on here.
pub async fn plan(shared: &Shared, session: &AnnSession, sql: &str) -> Result<LogicalPlan, Status> {
    if let Some(statement) = statement::gene_index_statement(sql) {
        return Err(status::read_only(statement));
    }
    let copy = sql
        .trim_start()
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("copy"));
    if copy {
        return Err(Status::unimplemented(
            "COPY … TO is not run over Flight SQL (a query must not write): use the \
             PostgreSQL wire or `annql export`",
        ));
    }
    let text = dollar_parameters(sql);
    let mut statements = shared
        .parser
        .parse(&compat::preprocess(&text))
        .map_err(|e| status::from_error(&e))?;
    let statement = match statements.len() {
        1 => statements.remove(0),
        0 => return Err(Status::invalid_argument("empty statement")),
        n => {
            return Err(Status::invalid_argument(format!(
                "{n} statements in one call: Flight SQL runs one statement at a time"
            )));
        }
    };
    let mut statement = match statement::classify(statement).map_err(|e| status::from_error(&e))? {
        Classified::Query(s) => *s,
        Classified::Command(Command::ReadOnly(kind)) => return Err(status::read_only(&kind)),
        Classified::Command(c) => {
            return Err(Status::unimplemented(format!(
                "{} is a session statement, which Flight SQL sessions do not take: send queries \
                 (the PostgreSQL wire has SET, cursors and transactions)",
                statement::tag(&c)
            )));
        }
    };
    compat::rewrite(&mut statement);
    let plan = session
        .plan_statement(DFStatement::Statement(Box::new(statement)))
        .await
        .map_err(|e| status::from_error(&e))?;
    match plan {
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => {
            Err(status::read_only("this statement"))
        }
        LogicalPlan::Statement(_) => Err(Status::unimplemented(
            "session statements are not taken over Flight SQL",
        )),
        plan => Ok(plan),
    }
}

/// `sql` with each `?` parameter (JDBC's and ADBC's) written as DataFusion's `$1`, `$2`, … in
/// order; `?` inside string literals, quoted identifiers and comments stays.
pub fn dollar_parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut n = 0;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                // To the closing quote; a doubled quote is an escaped one and reopens.
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut last = ' ';
                for d in chars.by_ref() {
                    out.push(d);
                    if last == '*' && d == '/' {
                        break;
                    }
                    last = d;
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            c => out.push(c),
        }
    }
    out
}

/// A run id: 8 random bytes as hex.
fn run_id() -> Result<String, Status> {
    crate::auth::secret_hex(8)
        .map_err(|e| Status::internal(format!("no random source for a run id: {e}")))
}

/// What a statement ticket asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ticket {
    /// A query, by its SQL.
    Query {
        /// The run id `CancelFlightInfo` names it by.
        run: String,
        /// Its text.
        sql: String,
    },
    /// A prepared statement with the parameters bound to it.
    Prepared {
        /// The run id.
        run: String,
        /// The statement's handle.
        handle: String,
    },
}

impl Ticket {
    /// A new run of the query `sql`.
    pub fn query(sql: &str) -> Result<Ticket, Status> {
        Ok(Ticket::Query {
            run: run_id()?,
            sql: sql.to_string(),
        })
    }

    /// A new run of the prepared statement `handle`.
    pub fn prepared(handle: &str) -> Result<Ticket, Status> {
        Ok(Ticket::Prepared {
            run: run_id()?,
            handle: handle.to_string(),
        })
    }

    /// The run id.
    pub fn run(&self) -> &str {
        match self {
            Ticket::Query { run, .. } | Ticket::Prepared { run, .. } => run,
        }
    }

    /// As the bytes of a Flight ticket (a `TicketStatementQuery`, whose handle is
    /// `q|p`, the 16-character run id, then the SQL or the prepared handle).
    pub fn encode(&self) -> Vec<u8> {
        let handle = match self {
            Ticket::Query { run, sql } => format!("q{run}{sql}"),
            Ticket::Prepared { run, handle } => format!("p{run}{handle}"),
        };
        TicketStatementQuery {
            statement_handle: handle.into_bytes().into(),
        }
        .as_any()
        .encode_to_vec()
    }

    /// The ticket of a `TicketStatementQuery`'s handle.
    pub fn decode(handle: &[u8]) -> Result<Ticket, Status> {
        let bad = || Status::invalid_argument("not a ticket this server issued");
        let text = std::str::from_utf8(handle).map_err(|_| bad())?;
        let kind = text.get(..1).ok_or_else(bad)?;
        let run = text.get(1..17).ok_or_else(bad)?.to_string();
        let rest = text.get(17..).ok_or_else(bad)?.to_string();
        match kind {
            "q" => Ok(Ticket::Query { run, sql: rest }),
            "p" => Ok(Ticket::Prepared { run, handle: rest }),
            _ => Err(bad()),
        }
    }
}

/// A prepared statement: its plan with parameters as placeholders, their types, and the values
/// last bound.
#[derive(Debug)]
pub struct Prepared {
    /// The plan (its schema is the answer's).
    pub plan: LogicalPlan,
    /// `$1`, `$2`, …: the type each one's use implies, None where nothing does.
    types: Vec<Option<DataType>>,
    /// The values bound by the last `DoPut`, `$1` first.
    bound: Mutex<Option<Vec<ScalarValue>>>,
}

impl Prepared {
    /// Prepares a planned statement.
    pub fn new(plan: LogicalPlan) -> Result<Prepared, Status> {
        let types = plan
            .get_parameter_types()
            .map_err(|e| status::from_error(&e))?;
        let mut numbered = types
            .into_iter()
            .map(|(name, ty)| {
                // A name that is not `$` and a number is refused just below, by name.
                let n = name
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "parameter {name}: expected $1, $2, … or ?"
                        ))
                    })?;
                Ok((n, ty))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        numbered.sort_by_key(|(n, _)| *n);
        if let Some((i, (n, _))) = numbered.iter().enumerate().find(|(i, (n, _))| *n != i + 1) {
            return Err(Status::invalid_argument(format!(
                "parameter ${} is used but ${} is not",
                n,
                i + 1
            )));
        }
        Ok(Prepared {
            plan,
            types: numbered.into_iter().map(|(_, t)| t).collect(),
            bound: Mutex::new(None),
        })
    }

    /// The parameters' schema, as `ActionCreatePreparedStatementResult` reports it.
    pub fn parameter_schema(&self) -> Schema {
        Schema::new(
            self.types
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Field::new(
                        format!("${}", i + 1),
                        t.clone().unwrap_or(DataType::Null),
                        true,
                    )
                })
                .collect::<Vec<_>>(),
        )
    }

    /// Binds the parameters of a `DoPut`: one row, one column per parameter.
    pub fn bind(&self, batches: &[RecordBatch]) -> Result<(), Status> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return self.set(Vec::new());
        };
        if rows > 1 {
            return Err(Status::invalid_argument(format!(
                "{rows} rows of parameters: a query is run with one row of parameters at a time"
            )));
        }
        let values = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| status::from_error(&e))?;
        self.set(values)
    }

    fn set(&self, values: Vec<ScalarValue>) -> Result<(), Status> {
        if values.len() != self.types.len() {
            return Err(Status::invalid_argument(format!(
                "wrong number of parameters: the statement has {}, {} were bound",
                self.types.len(),
                values.len()
            )));
        }
        *self.bound.lock().unwrap_or_else(|p| p.into_inner()) = Some(values);
        Ok(())
    }

    /// The plan with the bound values in place of its parameters (cast to the types the
    /// statement's use gives them: a Python int bound to a `float` comparison, say).
    pub fn bound_plan(&self) -> Result<LogicalPlan, Status> {
        if self.types.is_empty() {
            return Ok(self.plan.clone());
        }
        let bound = self.bound.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let values = bound.ok_or_else(|| {
            Status::invalid_argument(format!(
                "the statement has {} parameters and none were bound",
                self.types.len()
            ))
        })?;
        let values = values
            .into_iter()
            .zip(&self.types)
            .enumerate()
            .map(|(i, (v, ty))| {
                let v = match ty {
                    Some(ty) if &v.data_type() != ty => v.cast_to(ty).map_err(|e| {
                        Status::invalid_argument(format!(
                            "parameter ${} is {ty}: {v} cannot be converted: {e}",
                            i + 1
                        ))
                    })?,
                    _ => v,
                };
                Ok(ScalarAndMetadata::new(v, None))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        self.plan
            .clone()
            .replace_params_with_values(&ParamValues::List(values))
            .map_err(|e| status::from_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use arrow_flight::sql::Any;

    use super::*;

    #[test]
    fn question_marks_become_numbered_parameters() {
        assert_eq!(
            dollar_parameters("SELECT a FROM t WHERE a > ? AND b = ?"),
            "SELECT a FROM t WHERE a > $1 AND b = $2"
        );
        assert_eq!(
            dollar_parameters("SELECT '?', \"a?\" -- ?\n, ? /* ? */"),
            "SELECT '?', \"a?\" -- ?\n, $1 /* ? */"
        );
        assert_eq!(
            dollar_parameters("SELECT 'it''s ?', ?"),
            "SELECT 'it''s ?', $1"
        );
    }

    #[test]
    fn tickets_round_trip() {
        for t in [Ticket::query("SELECT 1"), Ticket::prepared("00ff")] {
            let t = t.expect("a random source");
            let any = Any::decode(t.encode().as_slice()).expect("an Any");
            let inner = any
                .unpack::<TicketStatementQuery>()
                .expect("unpacks")
                .expect("a TicketStatementQuery");
            let back = Ticket::decode(&inner.statement_handle).map_err(|e| e.to_string());
            assert_eq!(back, Ok(t));
        }
        assert!(Ticket::decode(b"x").is_err());
    }
}
