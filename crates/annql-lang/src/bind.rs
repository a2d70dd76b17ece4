//! `bind`: [`Pipeline`] → [`Bound`]. Resolves the dataset, columns, genes, layers and embeddings
//! against the [`Catalog`], checks types, and cuts the pipeline into SQL-shaped blocks (one
//! `SELECT` each), deciding how each block reads matrices. Every problem found is reported, not
//! just the first.
//!
//! This module holds the entry point and the state binding carries (`Binder`); its parts follow
//! in the order a pipeline goes through them.

use std::collections::BTreeMap;

use crate::ast::{Expr, Literal, Pipeline, Span};
use crate::catalog::{Catalog, Column, Dataset, Ty};
use crate::error::{Diagnostic, Diagnostics, did_you_mean};
use crate::ir::{BExpr, Bound, MatrixRef};

/// The stages of one pipeline, read top to bottom into blocks.
mod stages;

/// Expressions: operators, calls, names (columns, matrices, genes, embeddings).
mod expr;

/// The block being built, and how it is closed into an IR block.
mod block;

/// How a closed block reads its matrices (cells, or cells × genes, and how entries are joined).
mod layout;

/// `join` and `union`: their keys and the combined columns.
mod combine;

/// Resolves `pipeline` against `catalog`.
pub fn bind(source: &str, pipeline: &Pipeline, catalog: &Catalog) -> Result<Bound, Diagnostics> {
    let mut b = Binder {
        source,
        matrix_spans: Vec::new(),
        errors: Vec::new(),
        lets: BTreeMap::new(),
        dataset: &EMPTY,
        hidden_keys: 0,
    };
    for l in &pipeline.lets {
        b.lets.insert(l.name.text.clone(), l.value.clone());
    }
    let bound = bind_pipeline(&mut b, pipeline, catalog);
    match bound {
        Some((bound, _)) if b.errors.is_empty() => Ok(bound),
        _ => Err(Diagnostics::new(source, b.errors)),
    }
}

/// Binds one pipeline (the whole program, or the other side of a join or union): its blocks and
/// its output columns. None when its source cannot be resolved (the error is recorded).
fn bind_pipeline<'c>(
    b: &mut Binder<'c>,
    pipeline: &Pipeline,
    catalog: &'c Catalog,
) -> Option<(Bound, Vec<Column>)> {
    let ds_name = &pipeline.source.dataset;
    let Some(ds) = catalog.datasets.get(&ds_name.text) else {
        let mut d = Diagnostic::new(format!("unknown dataset `{}`", ds_name.text), ds_name.span)
            .with_kind(annql_syntax::Kind::UnknownDataset);
        if let Some(h) = did_you_mean(&ds_name.text, catalog.attached.iter().map(String::as_str)) {
            d = d.with_hint(h);
        } else if catalog.attached.is_empty() {
            d = d.with_hint("no dataset is attached (ATTACH 'path' AS name)");
        } else {
            d = d.with_hint(format!("attached: {}", catalog.attached.join(", ")));
        }
        b.errors.push(d);
        return None;
    };
    // The outer block's matrix references stay its own.
    let outer = std::mem::replace(&mut b.dataset, ds);
    let spans = std::mem::take(&mut b.matrix_spans);
    let bound = stages::bind_stages(b, pipeline, catalog, ds);
    b.dataset = outer;
    b.matrix_spans = spans;
    bound
}

static EMPTY: std::sync::LazyLock<Dataset> = std::sync::LazyLock::new(Dataset::default);

/// Where an expression is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// Per row (where, select, derive, group keys, sort).
    Row,
    /// The top of an `agg` item: reductions over the group.
    AggTop,
    /// Inside a group reduction's argument.
    InAgg,
}

/// What binding carries through a program: the source (for item names), the errors found so
/// far, the `let` constants, and the dataset being read.
struct Binder<'a> {
    source: &'a str,
    /// Matrix references of the block being built, for layout errors.
    matrix_spans: Vec<(MatrixRef, Span)>,
    errors: Vec<Diagnostic>,
    lets: BTreeMap<String, Expr>,
    dataset: &'a Dataset,
    /// Hidden sort-key columns made so far (for unique names).
    hidden_keys: usize,
}

impl Binder<'_> {
    /// Records `d`; a null of unknown type stands in for the expression.
    fn err(&mut self, d: Diagnostic) -> (BExpr, Ty) {
        self.errors.push(d);
        (BExpr::Lit(Literal::Null), Ty::Unknown)
    }

    /// Records an error at `span` when type `got` is not `want` (unknown and other types pass).
    fn check(&mut self, got: Ty, want: Ty, span: Span, what: &str) {
        if got != want
            && got != Ty::Unknown
            && want != Ty::Unknown
            && got != Ty::Other
            && want != Ty::Other
        {
            self.errors.push(Diagnostic::new(
                format!(
                    "{what}: expected {}, found {}",
                    want.describe(),
                    got.describe()
                ),
                span,
            ));
        }
    }
}
