//! Language `where` expressions as SQL predicates, so the selections of exports and of the
//! matrices handed to Rust ([`annql_engine::Dataset::obs`]) can be written in the pipeline
//! language too.

use annql_engine::AnnSession;
use annql_engine::model::{OBS_ID, VAR_ID};
use annql_engine::select::{SelectAxis, quote_ident};

use crate::error::Result;
use crate::run::to_sql;

/// The SQL predicate over `dataset`'s `obs` (or `var`) table keeping the rows where the language
/// expression `expr` is true: `obs_id IN (<the lowered pipeline>)`. The expression may use
/// everything a `where` stage of `from <dataset>` (or `from <dataset>.var`) may, genes included
/// (`X["CD3E"] > 1`); errors point into the pipeline `from … | where <expr> | select …`.
pub async fn where_to_sql(
    session: &AnnSession,
    dataset: &str,
    axis: SelectAxis,
    expr: &str,
) -> Result<String> {
    let (id, from) = match axis {
        SelectAxis::Obs => (OBS_ID, dataset.to_string()),
        SelectAxis::Var => (VAR_ID, format!("{dataset}.var")),
    };
    let sql = to_sql(
        session,
        &format!("from {from} | where {expr} | select {id}"),
    )
    .await?;
    Ok(format!("{} IN ({sql})", quote_ident(id)))
}
