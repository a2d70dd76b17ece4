//! Pipelines inside SQL: `SELECT … FROM aql('from atlas | group cell_type | agg n = count()')`.
//!
//! [`AqlTableFunction`] is a [`StatementRewriter`]: before DataFusion plans a statement, every
//! `aql('…')` in a `FROM` clause is replaced by the subquery its pipeline lowers to. The pipeline
//! is then planned and optimised with the rest of the statement (pushdown and the fused
//! aggregation serve it as they serve SQL), and every SQL client — the REPL, batch files, the
//! server — can run pipelines.

use std::ops::ControlFlow;
use std::sync::Arc;

use annql_engine::datafusion::error::DataFusionError;
use annql_engine::datafusion::prelude::SessionContext;
use annql_engine::datafusion::sql::parser::{
    CopyToSource, ExplainStatement, Statement as DFStatement,
};
use annql_engine::datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, Ident, ObjectName, Statement, TableAlias,
    TableFactor, TableFunctionArgs, Value as SqlValue, VisitMut, VisitorMut,
};
use annql_engine::{AnnSession, StatementRewriter};

use crate::error::{Error, Result};

/// The name of the table function.
pub const FUNCTION: &str = "aql";

/// Lets SQL call pipelines as `aql('pipeline')`.
#[derive(Debug, Default, Clone, Copy)]
pub struct AqlTableFunction;

/// Adds the `aql('…')` table function to `session`.
pub fn install(session: &AnnSession) -> annql_engine::Result<()> {
    session.register_rewriter(Arc::new(AqlTableFunction))
}

#[async_trait::async_trait]
impl StatementRewriter for AqlTableFunction {
    async fn rewrite(
        &self,
        ctx: &SessionContext,
        statement: DFStatement,
    ) -> annql_engine::Result<DFStatement> {
        match statement {
            DFStatement::Statement(statement) => {
                let statement = rewrite_sql(ctx, *statement).await?;
                Ok(DFStatement::Statement(Box::new(statement)))
            }
            // `EXPLAIN [ANALYZE] …` wraps the statement it plans: rewrite that one.
            DFStatement::Explain(ExplainStatement { options, statement }) => {
                let statement = Box::new(self.rewrite(ctx, *statement).await?);
                Ok(DFStatement::Explain(ExplainStatement {
                    options,
                    statement,
                }))
            }
            // `COPY (query) TO …`
            DFStatement::CopyTo(mut copy) => {
                if let CopyToSource::Query(query) = copy.source {
                    let rewritten = rewrite_sql(ctx, Statement::Query(query)).await?;
                    let Statement::Query(query) = rewritten else {
                        return Err(engine_error(Error::Internal(
                            "aql(): COPY's query stopped being a query".into(),
                        )));
                    };
                    copy.source = CopyToSource::Query(query);
                }
                Ok(DFStatement::CopyTo(copy))
            }
            other => Ok(other),
        }
    }
}

/// Replaces every `aql('…')` of a SQL statement by the subquery its pipeline lowers to.
async fn rewrite_sql(
    ctx: &SessionContext,
    mut statement: Statement,
) -> annql_engine::Result<Statement> {
    // Collect the pipelines first (visitors are synchronous, planning is not), lower each,
    // then put the subqueries in their places.
    let mut calls = Vec::new();
    let found = statement.visit(&mut Calls {
        mode: Mode::Collect(&mut calls),
    });
    if let ControlFlow::Break(e) = found {
        return Err(engine_error(e));
    }
    if calls.is_empty() {
        return Ok(statement);
    }
    let mut lowered = Vec::with_capacity(calls.len());
    for source in &calls {
        lowered.push(crate::run::plan(ctx, source).await.map_err(engine_error)?);
    }
    let replaced = statement.visit(&mut Calls {
        mode: Mode::Replace(lowered.into_iter()),
    });
    if let ControlFlow::Break(e) = replaced {
        return Err(engine_error(e));
    }
    Ok(statement)
}

fn engine_error(e: Error) -> annql_engine::Error {
    match e {
        Error::Engine(e) => e,
        Error::DataFusion(e) => annql_engine::Error::DataFusion(e),
        other => annql_engine::Error::DataFusion(DataFusionError::External(Box::new(other))),
    }
}

enum Mode<'a> {
    Collect(&'a mut Vec<String>),
    Replace(std::vec::IntoIter<Statement>),
}

struct Calls<'a> {
    mode: Mode<'a>,
}

impl VisitorMut for Calls<'_> {
    type Break = Error;

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<Error> {
        let TableFactor::Table {
            name, args, alias, ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(args) = args.as_ref().filter(|_| is_aql(name)) else {
            return ControlFlow::Continue(());
        };
        match &mut self.mode {
            Mode::Collect(calls) => match pipeline_text(args) {
                Ok(text) => calls.push(text),
                Err(e) => return ControlFlow::Break(e),
            },
            Mode::Replace(lowered) => {
                let Some(Statement::Query(subquery)) = lowered.next() else {
                    return ControlFlow::Break(Error::Internal(
                        "aql(): a pipeline did not lower to a query".into(),
                    ));
                };
                // Unaliased, the subquery is named after the function, as a table function is.
                let alias = alias.take().or_else(|| {
                    Some(TableAlias {
                        explicit: false,
                        name: Ident::new(FUNCTION),
                        columns: vec![],
                        at: None,
                    })
                });
                *factor = TableFactor::Derived {
                    lateral: false,
                    subquery,
                    alias,
                    sample: None,
                };
            }
        }
        ControlFlow::Continue(())
    }
}

fn is_aql(name: &ObjectName) -> bool {
    name.0.len() == 1
        && name.0[0]
            .as_ident()
            .is_some_and(|i| i.value.eq_ignore_ascii_case(FUNCTION))
}

/// The one string argument of `aql(…)`.
fn pipeline_text(args: &TableFunctionArgs) -> Result<String> {
    let usage = || {
        Error::DataFusion(DataFusionError::Plan(
            "aql() takes one string: the pipeline, e.g. aql('from atlas | group cell_type | agg n = count()')"
                .into(),
        ))
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))] = args.args.as_slice()
    else {
        return Err(usage());
    };
    match &v.value {
        SqlValue::SingleQuotedString(s)
        | SqlValue::DoubleQuotedString(s)
        | SqlValue::EscapedStringLiteral(s)
        | SqlValue::UnicodeStringLiteral(s) => Ok(s.clone()),
        SqlValue::DollarQuotedString(d) => Ok(d.value.clone()),
        _ => Err(usage()),
    }
}
