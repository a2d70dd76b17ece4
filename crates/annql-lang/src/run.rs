//! Running a pipeline: parse, load the catalog it needs, bind, lower, and plan with DataFusion.

use annql_engine::AnnSession;
use annql_engine::datafusion::dataframe::DataFrame;
use annql_engine::datafusion::prelude::SessionContext;
use annql_engine::datafusion::sql::parser::Statement as DFStatement;
use annql_engine::datafusion::sql::sqlparser::ast::Statement;

use crate::ast::StageKind;
use crate::catalog::Catalog;
use crate::error::Result;
use crate::{bind, lower, parse};

/// Parses, binds and lowers `source` against the datasets attached to `ctx`.
pub async fn plan(ctx: &SessionContext, source: &str) -> Result<Statement> {
    let pipeline = parse(source)?;
    let catalog = Catalog::load(ctx, &pipeline).await?;
    let bound = bind(source, &pipeline, &catalog)?;
    lower(&bound)
}

/// The SQL a pipeline lowers to, rendered (for `EXPLAIN` and debugging; it reads back the same).
pub async fn to_sql(session: &AnnSession, source: &str) -> Result<String> {
    Ok(plan(session.context(), source).await?.to_string())
}

/// Runs a pipeline: the same [`DataFrame`] its SQL equivalent gives.
///
/// A pipeline ending in `write` writes its cells as a new AnnData store ([`crate::write`]) and
/// gives the one-row summary.
pub async fn query(session: &AnnSession, source: &str) -> Result<DataFrame> {
    let pipeline = parse(source)?;
    if pipeline
        .stages
        .last()
        .is_some_and(|s| matches!(s.kind, StageKind::Write(_)))
    {
        return crate::write::run(session, source, &pipeline).await;
    }
    let ctx = session.context();
    let statement = plan(ctx, source).await?;
    let state = ctx.state();
    let logical = state
        .statement_to_plan(DFStatement::Statement(Box::new(statement)))
        .await?;
    Ok(ctx.execute_logical_plan(logical).await?)
}
