//! `… | write "out.h5ad" [genes …] [with …]`: the cells a pipeline's `where` stages keep, and the
//! genes `genes` names, written as a new AnnData store through the engine's
//! [`export_subset`](annql_engine::export::export_subset) — the call SQL's `COPY dataset TO …`
//! makes. The cells' predicate is the pipeline before `write`, bound and lowered as any pipeline
//! (so `where X["CD3E"] > 1` works); the genes' is `from dataset.var | where …`.

use annql_engine::AnnSession;
use annql_engine::datafusion::dataframe::DataFrame;
use annql_engine::export::{ExportChoices, ExportRequest, export_subset, summary_batch};
use annql_engine::model::{OBS_ID, VAR_ID};

use crate::ast::{
    BinaryOp, Expr, ExprKind, Item, Literal, Name, Pipeline, Source, Span, Stage, StageKind, Write,
};
use crate::catalog::Catalog;
use crate::error::{Diagnostic, Diagnostics, Error, Result};
use crate::{bind, lower};

/// Runs a pipeline ending in `write`: its one-row summary (`path, format, n_obs, n_vars`).
pub async fn run(session: &AnnSession, source: &str, pipeline: &Pipeline) -> Result<DataFrame> {
    let request = request(session, source, pipeline).await?;
    let summary = export_subset(session, request).await?;
    Ok(session.context().read_batch(summary_batch(&summary)?)?)
}

fn error(source: &str, message: impl Into<String>, span: Span) -> Error {
    Error::Diagnostics(Diagnostics::new(
        source,
        vec![Diagnostic::new(message, span)],
    ))
}

/// The export a pipeline ending in `write` asks for.
pub async fn request(
    session: &AnnSession,
    source: &str,
    pipeline: &Pipeline,
) -> Result<ExportRequest> {
    let (last, before) = pipeline
        .stages
        .split_last()
        .ok_or_else(|| Error::Internal("a write pipeline without stages".into()))?;
    let StageKind::Write(write) = &last.kind else {
        return Err(Error::Internal("the pipeline does not end in write".into()));
    };
    if let Some(table) = &pipeline.source.table {
        return Err(error(
            source,
            format!(
                "`write` writes cells and their genes: start with `from {}`, not a table",
                pipeline.source.dataset.text
            ),
            table.span,
        ));
    }
    if let Some(stage) = before
        .iter()
        .find(|s| !matches!(s.kind, StageKind::Where(_)))
    {
        return Err(error(
            source,
            "only `where` stages may come before `write`: it writes whole cells, with every \
             annotation, matrix and embedding",
            stage.span,
        ));
    }
    let ctx = session.context();
    let obs = if before.is_empty() {
        None
    } else {
        let cells = Pipeline {
            stages: before.to_vec(),
            ..pipeline.clone()
        };
        Some(format!(
            "{OBS_ID} IN (SELECT {OBS_ID} FROM ({}) AS kept)",
            lowered(ctx, source, &cells).await?
        ))
    };
    let var = match &write.genes {
        None => None,
        Some(genes) => {
            let genes_pipeline = Pipeline {
                lets: pipeline.lets.clone(),
                source: Source {
                    dataset: pipeline.source.dataset.clone(),
                    table: Some(Name {
                        text: "var".into(),
                        span: genes.span,
                    }),
                    span: pipeline.source.span,
                },
                stages: vec![Stage {
                    kind: StageKind::Where(gene_predicate(pipeline, genes)),
                    span: genes.span,
                }],
                span: pipeline.span,
            };
            Some(format!(
                "{VAR_ID} IN (SELECT {VAR_ID} FROM ({}) AS kept)",
                lowered(ctx, source, &genes_pipeline).await?
            ))
        }
    };
    let out = std::path::PathBuf::from(&write.path);
    let options = choices(source, write)?.to_options(&out)?;
    Ok(ExportRequest {
        dataset: pipeline.source.dataset.text.clone(),
        obs,
        var,
        out,
        options,
    })
}

/// The SQL a (cells or genes) pipeline lowers to.
async fn lowered(
    ctx: &annql_engine::datafusion::prelude::SessionContext,
    source: &str,
    pipeline: &Pipeline,
) -> Result<String> {
    let catalog = Catalog::load(ctx, pipeline).await?;
    let bound = bind(source, pipeline, &catalog)?;
    Ok(lower(&bound)?.to_string())
}

/// `genes` as a predicate over `var`: a list of names (written, or a `let` bound to one) keeps
/// those genes by `var_name`; anything else is a predicate whose `var.col` names are the var
/// table's columns.
fn gene_predicate(pipeline: &Pipeline, genes: &Expr) -> Expr {
    let is_list = match &genes.kind {
        ExprKind::List(_) => true,
        ExprKind::Path(names) if names.len() == 1 => pipeline
            .lets
            .iter()
            .any(|l| l.name.text == names[0].text && matches!(l.value.kind, ExprKind::List(_))),
        _ => false,
    };
    if is_list {
        let var_name = Expr {
            kind: ExprKind::Path(vec![Name {
                text: "var_name".into(),
                span: genes.span,
            }]),
            span: genes.span,
        };
        return Expr {
            kind: ExprKind::Binary(BinaryOp::In, Box::new(var_name), Box::new(genes.clone())),
            span: genes.span,
        };
    }
    strip_var(genes.clone())
}

/// `var.highly_variable` → `highly_variable` (in `from dataset.var` the columns are bare).
fn strip_var(mut e: Expr) -> Expr {
    e.kind = match e.kind {
        ExprKind::Path(mut names) if names.len() > 1 && names[0].text == "var" => {
            names.remove(0);
            ExprKind::Path(names)
        }
        ExprKind::Index(a, b) => ExprKind::Index(Box::new(strip_var(*a)), Box::new(strip_var(*b))),
        ExprKind::Call(n, args) => ExprKind::Call(n, args.into_iter().map(strip_var).collect()),
        ExprKind::List(xs) => ExprKind::List(xs.into_iter().map(strip_var).collect()),
        ExprKind::Unary(op, a) => ExprKind::Unary(op, Box::new(strip_var(*a))),
        ExprKind::Binary(op, a, b) => {
            ExprKind::Binary(op, Box::new(strip_var(*a)), Box::new(strip_var(*b)))
        }
        ExprKind::Test(t, a) => ExprKind::Test(t, Box::new(strip_var(*a))),
        other => other,
    };
    e
}

/// `with format = "zarr", overwrite = true, chunk_len = 65536, shard_chunks = 64,
/// zarr_version = 2`: literal values only.
fn choices(source: &str, write: &Write) -> Result<ExportChoices> {
    let mut choices = ExportChoices::default();
    for Item { name, expr, .. } in &write.options {
        let Some(name) = name else {
            return Err(error(
                source,
                "`with` takes `name = value` options (format, overwrite, chunk_len, \
                 shard_chunks, zarr_version)",
                expr.span,
            ));
        };
        let whole = |what: &str| match &expr.kind {
            ExprKind::Lit(Literal::Int(n)) if *n >= 0 => Ok(*n as u64),
            _ => Err(error(
                source,
                format!("`{}` needs {what}", name.text),
                expr.span,
            )),
        };
        match name.text.as_str() {
            "format" => match &expr.kind {
                ExprKind::Lit(Literal::Str(s)) => choices.format = Some(s.clone()),
                _ => {
                    return Err(error(
                        source,
                        "`format` needs a string: \"h5ad\", \"zarr\", \"zarr2\" or \"zarr3\"",
                        expr.span,
                    ));
                }
            },
            "overwrite" => match &expr.kind {
                ExprKind::Lit(Literal::Bool(b)) => choices.overwrite = *b,
                _ => return Err(error(source, "`overwrite` needs true or false", expr.span)),
            },
            "exclude" => {
                let paths = match &expr.kind {
                    ExprKind::Lit(Literal::Str(s)) => vec![s.clone()],
                    ExprKind::List(xs) => xs
                        .iter()
                        .map(|x| match &x.kind {
                            ExprKind::Lit(Literal::Str(s)) => Ok(s.clone()),
                            _ => Err(error(source, "`exclude` lists element paths", x.span)),
                        })
                        .collect::<Result<_>>()?,
                    _ => {
                        return Err(error(
                            source,
                            "`exclude` needs an element path or a list of them: \
                             [\"obsm/awk\", \"uns/rec\"]",
                            expr.span,
                        ));
                    }
                };
                choices.exclude.extend(paths);
            }
            "chunk_len" => choices.chunk_len = Some(whole("a whole number")?),
            "shard_chunks" => choices.shard_chunks = Some(whole("a whole number")?),
            "zarr_version" => {
                // A number past u32 is no zarr version: u32::MAX is refused as one by name.
                choices.zarr_version = Some(whole("2 or 3")?.try_into().unwrap_or(u32::MAX))
            }
            other => {
                return Err(error(
                    source,
                    format!(
                        "unknown option `{other}` (format, overwrite, chunk_len, shard_chunks, \
                         zarr_version, exclude)"
                    ),
                    name.span,
                ));
            }
        }
    }
    Ok(choices)
}
