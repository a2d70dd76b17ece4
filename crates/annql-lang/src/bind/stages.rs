//! The stages of one pipeline, top to bottom: `where`, `derive`, `select` and `sort` add to the
//! block being built; `group`/`agg` after a `select` or `take`, `join` and `union` close it and
//! start the next, which reads its output. A room of its own because it is the one place that
//! decides where SQL blocks begin and end.

use annql_engine::model::sql_name;

use super::block::BlockState;
use super::{Binder, Ctx, bind_pipeline};
use crate::ast::{Pipeline, StageKind};
use crate::catalog::{Catalog, Column, Dataset, Ty};
use crate::error::{Diagnostic, did_you_mean};
use crate::ir::{Bound, Combine};

/// Binds the stages of `pipeline`, which reads `ds`: its blocks and its output columns.
pub(super) fn bind_stages<'c>(
    b: &mut Binder<'c>,
    pipeline: &Pipeline,
    catalog: &'c Catalog,
    ds: &'c Dataset,
) -> Option<(Bound, Vec<Column>)> {
    let ds_name = &pipeline.source.dataset;
    let (table, cells, input) = source_table(b, pipeline, ds)?;
    let mut state = BlockState::new(input, cells);
    state.label = table.clone();
    let mut blocks = Vec::new();
    let mut stages = pipeline.stages.iter().peekable();
    while let Some(stage) = stages.next() {
        match &stage.kind {
            StageKind::Where(e) => {
                if state.limit.is_some() || state.group.is_some() || state.projected {
                    state = state.wrap_sorted(&mut blocks, b);
                }
                let (x, ty) = b.bind_expr(e, &state, Ctx::Row);
                b.check(ty, Ty::Bool, e.span, "`where` needs a condition");
                state.filters.push(x);
            }
            StageKind::Derive(items) => {
                if state.limit.is_some() || state.group.is_some() || state.projected {
                    state = state.wrap_sorted(&mut blocks, b);
                }
                for item in items {
                    let (name, e) = b.bind_item(item, &state, Ctx::Row);
                    state.derived.push((name, e));
                }
            }
            StageKind::Select(items) => {
                if state.limit.is_some() || state.group.is_some() || state.projected {
                    state = state.wrap_sorted(&mut blocks, b);
                }
                let mut out = Vec::new();
                for item in items {
                    out.push(b.bind_item(item, &state, Ctx::Row));
                }
                state.select(out);
            }
            StageKind::Group(items) => {
                if state.limit.is_some() || state.group.is_some() || state.projected {
                    state = state.wrap(&mut blocks, b);
                }
                // Grouping ends the sort in effect: groups come out in no order.
                state.order.clear();
                let keys: Vec<_> = items
                    .iter()
                    .map(|i| b.bind_item(i, &state, Ctx::Row))
                    .collect();
                let next = stages.peek().copied();
                let aggs = match next.map(|s| &s.kind) {
                    Some(StageKind::Agg(items)) => {
                        stages.next();
                        b.bind_aggs(items, &state, &keys)
                    }
                    _ => Vec::new(),
                };
                state.aggregate(keys, aggs);
            }
            StageKind::Agg(items) => {
                if state.limit.is_some() || state.group.is_some() || state.projected {
                    state = state.wrap(&mut blocks, b);
                }
                // Grouping ends the sort in effect: groups come out in no order.
                state.order.clear();
                let aggs = b.bind_aggs(items, &state, &[]);
                state.aggregate(Vec::new(), aggs);
            }
            StageKind::Sort(keys) => {
                if state.limit.is_some() {
                    state = state.wrap(&mut blocks, b);
                }
                // A sort replaces the one in effect.
                state.order.clear();
                for k in keys {
                    let e = b.bind_expr(&k.expr, &state, Ctx::Row);
                    state.order.push((e.0, k.descending, k.expr.span));
                }
            }
            StageKind::Take(n) => {
                state.limit = Some(state.limit.map_or(*n, |l| l.min(*n)));
            }
            StageKind::Join { left, right, on } => {
                let Some((right, right_cols)) = bind_pipeline(b, right, catalog) else {
                    continue;
                };
                let left_cols = state.visible_columns();
                let keys = b.join_keys(on, &left_cols, &right_cols, stage.span);
                let cols = b.joined_columns(left_cols, &right_cols, &keys, stage.span);
                let with = Combine::Join {
                    left: *left,
                    right: Box::new(right),
                    on: keys,
                };
                state = state.combine(with, cols, &mut blocks, b);
            }
            StageKind::Write(_) => b.errors.push(Diagnostic::new(
                "`write` ends a pipeline run on its own: not inside `aql(…)`, a join or a \
                 union, and nothing after it",
                stage.span,
            )),
            StageKind::Union(right) => {
                let Some((right, right_cols)) = bind_pipeline(b, right, catalog) else {
                    continue;
                };
                let cols = b.union_columns(state.visible_columns(), right_cols, stage.span);
                state = state.combine(Combine::Union(Box::new(right)), cols, &mut blocks, b);
            }
        }
    }
    let columns = state.visible_columns();
    blocks.push(state.finish(b, true));
    Some((
        Bound {
            dataset: ds_name.text.clone(),
            table,
            cells,
            blocks,
        },
        columns,
    ))
}

/// The table `pipeline` reads (`obs` for `from dataset`), whether it reads cells, and its
/// columns. None when the dataset has no such table (the error is recorded).
fn source_table(
    b: &mut Binder<'_>,
    pipeline: &Pipeline,
    ds: &Dataset,
) -> Option<(String, bool, Vec<Column>)> {
    let ds_name = &pipeline.source.dataset;
    let (table, cells) = match &pipeline.source.table {
        None => ("obs".to_string(), true),
        Some(t) => {
            let folded = sql_name(&t.text);
            if ds.tables.contains_key(&t.text) {
                (t.text.clone(), t.text == "obs")
            } else if ds.tables.contains_key(&folded) {
                (folded.clone(), folded == "obs")
            } else {
                let d = Diagnostic::new(
                    format!("`{}` has no table `{}`", ds_name.text, t.text),
                    t.span,
                );
                let d = match did_you_mean(&t.text, ds.tables.keys().map(String::as_str)) {
                    Some(h) => d.with_hint(h),
                    None => d,
                };
                b.errors.push(d);
                return None;
            }
        }
    };
    let Some(input) = ds.tables.get(&table).cloned() else {
        // `from dataset` of a store without `obs` (a named table was checked above).
        let d = Diagnostic::new(
            format!("`{}` has no table `{table}`", ds_name.text),
            pipeline.source.span,
        );
        b.errors.push(d);
        return None;
    };
    Some((table, cells, input))
}
