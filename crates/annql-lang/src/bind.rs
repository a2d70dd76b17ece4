//! `bind`: [`Pipeline`] → [`Bound`]. Resolves the dataset, columns, genes, layers and embeddings
//! against the [`Catalog`], checks types, and cuts the pipeline into SQL-shaped blocks (one
//! `SELECT` each), deciding how each block reads matrices. Every problem found is reported, not
//! just the first.

use std::collections::BTreeMap;

use annql_engine::model::sql_name;

use crate::ast::{
    BinaryOp, Expr, ExprKind, Item, Literal, Name, Pipeline, Span, StageKind, Test, UnaryOp,
};
use crate::catalog::{Catalog, Column, Dataset, Ty};
use crate::error::{Diagnostic, Diagnostics, did_you_mean};

/// A sort in effect carried from one block to the next.
mod order;

/// A pipeline resolved against a dataset: SQL-shaped blocks, each reading the one before.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// The dataset (SQL schema) read.
    pub dataset: String,
    /// The table the first block reads (`obs` for cells).
    pub table: String,
    /// Whether the first block reads cells (so matrices, embeddings and genes are reachable).
    pub cells: bool,
    /// The blocks, in order; block `i > 0` reads the output of block `i - 1`.
    pub blocks: Vec<Block>,
}

/// One `SELECT`.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// How rows are formed (cells, or cells × genes of one matrix).
    pub layout: Layout,
    /// `WHERE` conjuncts.
    pub filters: Vec<BExpr>,
    /// `GROUP BY` keys (`Some(vec![])`: one group of everything).
    pub group: Option<Vec<Named>>,
    /// Aggregates (with `group`).
    pub aggs: Vec<Named>,
    /// The columns out.
    pub columns: Columns,
    /// `ORDER BY` keys, `true` = descending.
    pub order: Vec<(BExpr, bool)>,
    /// `LIMIT`.
    pub limit: Option<u64>,
    /// A join or union with another pipeline, applied to this block's output.
    pub combine: Option<Combine>,
}

/// A join or union of a block's output with another pipeline's.
#[derive(Debug, Clone, PartialEq)]
pub enum Combine {
    /// `[left] join (…) on keys`: `USING (keys)`.
    Join {
        /// A left outer join.
        left: bool,
        /// The other pipeline, bound against its own dataset.
        right: Box<Bound>,
        /// The key columns.
        on: Vec<String>,
    },
    /// `union (…)`: `UNION ALL BY NAME`.
    Union(Box<Bound>),
}

/// What a block outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Columns {
    /// Every input column, then these (`derive`).
    All(Vec<Named>),
    /// Exactly these (`select`, or the keys and aggregates of `group`/`agg`).
    Exactly(Vec<Named>),
}

/// An output column.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// Its name.
    pub name: String,
    /// Its value.
    pub expr: BExpr,
}

/// How a block's rows are formed.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// One row per input row (a cell, for the first block of `from dataset`).
    Rows,
    /// One row per cell × selected gene of `matrix`; `Value(matrix)` is that entry.
    Genes {
        /// The matrix and gene selection.
        matrix: MatrixRef,
        /// How the entries are joined to cells.
        join: GeneJoin,
    },
}

/// How the entries of a cell × gene block are read.
#[derive(Debug, Clone, PartialEq)]
pub enum GeneJoin {
    /// Stored entries only (`matrix JOIN obs`): exact when every use ignores zeros (`sum`, `nnz`).
    Stored,
    /// The engine's dense view of the matrix (`x_dense`): one row per cell × gene, zeros included.
    DenseView(String),
    /// Cells × genes, left-joined to the stored entries, missing entries read as 0.
    Filled,
}

/// A matrix (X, a layer, raw X) and a selection of its genes.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixRef {
    /// The entries table (`x`, `layers_counts`, `raw_x`).
    pub table: String,
    /// The gene table its `var_id` refers to (`var`, `raw_var`).
    pub var_table: String,
    /// Which genes.
    pub genes: Genes,
}

impl MatrixRef {
    /// One gene: a per-cell value rather than a gene axis.
    pub fn is_single(&self) -> bool {
        match &self.genes {
            Genes::Names(n) => n.len() == 1,
            Genes::Ids(i) => i.len() == 1,
            _ => false,
        }
    }
}

/// A gene selection.
#[derive(Debug, Clone, PartialEq)]
pub enum Genes {
    /// Every gene.
    All,
    /// By `var_name`.
    Names(Vec<String>),
    /// By `var_id`.
    Ids(Vec<i64>),
    /// Genes whose `var` row satisfies a predicate (over [`ColRef::Var`] columns).
    Where(Box<BExpr>),
}

/// Reductions over the genes of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CellFn {
    /// Sum over genes (total counts).
    Sum,
    /// Number of non-zero genes.
    Nnz,
}

/// Reductions over the rows of a group, zero-aware (matrix values are dense).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    /// `count()` rows, `count(x)` non-null values.
    Count,
    /// `sum`
    Sum,
    /// `mean`
    Mean,
    /// `var` (sample variance)
    Var,
    /// `std` (sample standard deviation)
    Std,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `median`
    Median,
    /// `frac(pred)`: fraction of rows where pred holds.
    Frac,
    /// `nnz(x)`: rows where x is non-zero.
    Nnz,
}

/// A column reference.
#[derive(Debug, Clone, PartialEq)]
pub enum ColRef {
    /// A column of the block's input (obs, the source table, or the previous block).
    Input(String),
    /// An output column of this block (after `select`/`agg`, for `sort`).
    Output(String),
    /// A column of the gene table, in a cell × gene block.
    Var(String),
    /// A column of an `obsm` table.
    Embedding {
        /// The table (`obsm_x_umap`).
        table: String,
        /// The column (`x_umap_0`).
        column: String,
    },
}

/// A bound expression.
#[derive(Debug, Clone, PartialEq)]
pub enum BExpr {
    /// A literal.
    Lit(Literal),
    /// A column.
    Col(ColRef),
    /// A matrix entry, 0 where not stored.
    Value(MatrixRef),
    /// A reduction over a cell's genes.
    Reduce(CellFn, MatrixRef),
    /// A reduction over a group's rows.
    Agg(AggFn, Option<Box<BExpr>>),
    /// A scalar SQL function.
    Func(String, Vec<BExpr>),
    /// `not`, `-`.
    Unary(UnaryOp, Box<BExpr>),
    /// Infix operators other than `in` and ranges.
    Binary(BinaryOp, Box<BExpr>, Box<BExpr>),
    /// `e [not] in [list]`.
    InList(Box<BExpr>, Vec<BExpr>, bool),
    /// `e [not] in lo..hi`.
    Between(Box<BExpr>, Box<BExpr>, Box<BExpr>, bool),
    /// `is [not] null|nan`.
    Test(Test, Box<BExpr>),
}

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
        let mut d = Diagnostic::new(format!("unknown dataset `{}`", ds_name.text), ds_name.span);
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
    let bound = bind_stages(b, pipeline, catalog, ds);
    b.dataset = outer;
    b.matrix_spans = spans;
    bound
}

fn bind_stages<'c>(
    b: &mut Binder<'c>,
    pipeline: &Pipeline,
    catalog: &'c Catalog,
    ds: &'c Dataset,
) -> Option<(Bound, Vec<Column>)> {
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
                let mut cols = left_cols.clone();
                for c in right_cols.iter().filter(|c| !keys.contains(&c.name)) {
                    if left_cols.iter().any(|l| l.name == c.name) {
                        b.errors.push(
                            Diagnostic::new(
                                format!("column `{}` is on both sides of the join", c.name),
                                stage.span,
                            )
                            .with_hint(
                                "join on it, or select or rename it on one side".to_string(),
                            ),
                        );
                    } else {
                        cols.push(c.clone());
                    }
                }
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
                let mut cols = state.visible_columns();
                for c in right_cols {
                    match cols.iter().find(|l| l.name == c.name) {
                        Some(l) if !compatible(l.ty, c.ty) => b.errors.push(Diagnostic::new(
                            format!(
                                "column `{}` is {} on one side of the union and {} on the other",
                                c.name,
                                l.ty.describe(),
                                c.ty.describe()
                            ),
                            stage.span,
                        )),
                        Some(_) => {}
                        None => cols.push(c),
                    }
                }
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

/// Whether two coarse types can share a column.
fn compatible(a: Ty, b: Ty) -> bool {
    a == b || matches!(a, Ty::Unknown | Ty::Other) || matches!(b, Ty::Unknown | Ty::Other)
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

/// A block being built.
struct BlockState {
    /// Columns of the input relation.
    input: Vec<Column>,
    /// The input's name in messages.
    label: String,
    /// Whether the input is cells (matrices etc. reachable).
    cells: bool,
    filters: Vec<BExpr>,
    derived: Vec<(String, (BExpr, Ty))>,
    group: Option<Vec<(String, (BExpr, Ty))>>,
    aggs: Vec<(String, (BExpr, Ty))>,
    /// `select` ran: output is exactly `outputs`.
    projected: bool,
    outputs: Vec<(String, (BExpr, Ty))>,
    /// The sort in effect: keys, descending, where written.
    order: Vec<(BExpr, bool, Span)>,
    limit: Option<u64>,
    /// Columns of `input` that carry an earlier block's sort keys: not the user's to see.
    hidden: Vec<String>,
}

impl BlockState {
    fn new(input: Vec<Column>, cells: bool) -> Self {
        Self {
            input,
            label: if cells {
                "obs"
            } else {
                "the previous stage's output"
            }
            .into(),
            cells,
            filters: Vec::new(),
            derived: Vec::new(),
            group: None,
            aggs: Vec::new(),
            projected: false,
            outputs: Vec::new(),
            order: Vec::new(),
            limit: None,
            hidden: Vec::new(),
        }
    }

    fn select(&mut self, out: Vec<(String, (BExpr, Ty))>) {
        self.projected = true;
        self.outputs = out;
    }

    fn aggregate(&mut self, keys: Vec<(String, (BExpr, Ty))>, aggs: Vec<(String, (BExpr, Ty))>) {
        self.outputs = keys.iter().chain(&aggs).cloned().collect();
        self.group = Some(keys);
        self.aggs = aggs;
        self.projected = true;
    }

    /// The output columns users see (hidden sort keys left out).
    fn visible_columns(&self) -> Vec<Column> {
        let mut cols = self.output_columns();
        cols.retain(|c| !self.hidden.contains(&c.name));
        cols
    }

    /// The output columns, for the next block (hidden sort keys included).
    fn output_columns(&self) -> Vec<Column> {
        if self.projected {
            self.outputs
                .iter()
                .map(|(n, (_, t))| Column::new(n, *t))
                .collect()
        } else {
            let mut cols = self.input.clone();
            for (n, (_, t)) in &self.derived {
                cols.retain(|c| &c.name != n);
                cols.push(Column::new(n, *t));
            }
            cols
        }
    }

    /// Ends this block; the next reads its output, in no order.
    fn wrap(mut self, blocks: &mut Vec<Block>, b: &mut Binder<'_>) -> BlockState {
        // Without a limit, the order of a subquery means nothing to SQL.
        if self.limit.is_none() {
            self.order.clear();
        }
        let cols = self.output_columns();
        blocks.push(self.finish(b, false));
        BlockState::new(cols, false)
    }

    /// Ends this block; the next reads its output with the sort in effect carried over
    /// (`sort` holds until `group`, `agg`, `join` or `union`).
    fn wrap_sorted(mut self, blocks: &mut Vec<Block>, b: &mut Binder<'_>) -> BlockState {
        let order = self.carry_order(b);
        let hidden = self.hidden.clone();
        let mut next = self.wrap(blocks, b);
        next.hidden = hidden
            .into_iter()
            .filter(|h| next.input.iter().any(|c| &c.name == h))
            .collect();
        next.order = order;
        next
    }

    /// Like [`BlockState::wrap`], with the closed block's output joined or unioned `with` another
    /// pipeline; the next block reads `cols`, the combined columns.
    fn combine(
        self,
        with: Combine,
        cols: Vec<Column>,
        blocks: &mut Vec<Block>,
        b: &mut Binder<'_>,
    ) -> BlockState {
        let mut block = self.finish(b, true);
        block.combine = Some(with);
        blocks.push(block);
        BlockState::new(cols, false)
    }

    /// The block, with hidden sort keys projected away when `drop_hidden` (its output is the
    /// pipeline's, or joined or unioned).
    fn finish(mut self, b: &mut Binder<'_>, drop_hidden: bool) -> Block {
        if drop_hidden && !self.projected && !self.hidden.is_empty() {
            let outputs = self
                .visible_columns()
                .into_iter()
                .map(|c| {
                    let e = match self.derived.iter().rev().find(|(n, _)| *n == c.name) {
                        Some((_, e)) => e.clone(),
                        None => (BExpr::Col(ColRef::Input(c.name.clone())), c.ty),
                    };
                    (c.name, e)
                })
                .collect();
            self.select(outputs);
        }
        let named = |v: Vec<(String, (BExpr, Ty))>| -> Vec<Named> {
            v.into_iter()
                .map(|(name, (expr, _))| Named { name, expr })
                .collect()
        };
        let columns = if self.projected {
            Columns::Exactly(named(self.outputs))
        } else {
            Columns::All(named(self.derived))
        };
        let group = self.group.map(named);
        let aggs = named(self.aggs);
        let mut block = Block {
            layout: Layout::Rows,
            filters: self.filters,
            group,
            aggs,
            columns,
            order: self
                .order
                .into_iter()
                .map(|(e, desc, _)| (e, desc))
                .collect(),
            limit: self.limit,
            combine: None,
        };
        let spans = std::mem::take(&mut b.matrix_spans);
        block.layout = choose_layout(&block, &spans, b);
        block
    }
}

/// Cells × genes when the block reads one gene set (or exactly one single gene); single genes
/// besides it are joined per cell.
fn choose_layout(block: &Block, spans: &[(MatrixRef, Span)], b: &mut Binder<'_>) -> Layout {
    let mut values = Vec::new();
    visit_block(block, &mut |e| {
        if let BExpr::Value(m) = e
            && !values.contains(m)
        {
            values.push(m.clone());
        }
    });
    let uses_var = {
        let mut any = false;
        visit_block(block, &mut |e| {
            if matches!(e, BExpr::Col(ColRef::Var(_))) {
                any = true;
            }
        });
        any
    };
    let sets: Vec<&MatrixRef> = values.iter().filter(|m| !m.is_single()).collect();
    let matrix = match (sets.as_slice(), values.as_slice()) {
        ([], []) => {
            if uses_var {
                b.errors.push(Diagnostic::new(
                    "gene columns (`gene`, `var.…`) need a gene set in the same stage, such as `X[[\"CD3E\", \"CD4\"]]` or `layers.counts`",
                    spans.first().map_or(Span::default(), |s| s.1),
                ));
            }
            return Layout::Rows;
        }
        ([], [single]) => single.clone(),
        ([], _) if !uses_var => return Layout::Rows,
        ([], _) => {
            b.errors.push(Diagnostic::new(
                "gene columns (`gene`, `var.…`) need one gene set in the stage",
                spans.first().map_or(Span::default(), |s| s.1),
            ));
            return Layout::Rows;
        }
        ([one], _) => (*one).clone(),
        ([first, ..], _) => {
            for (m, sp) in spans {
                if !m.is_single() && m != *first {
                    b.errors.push(
                        Diagnostic::new(
                            "a second gene set in one block is not supported yet",
                            *sp,
                        )
                        .with_hint("use one gene set per pipeline block (end the block with `select` or `agg`)"),
                    );
                }
            }
            (*first).clone()
        }
    };
    // Stored entries suffice when every use of the value is `sum(value)` or `nnz(value)` in an agg.
    let mut uses = 0;
    visit_block(block, &mut |e| {
        if *e == BExpr::Value(matrix.clone()) {
            uses += 1;
        }
    });
    let zero_blind = block.group.is_some()
        && block.aggs.iter().all(|a| match &a.expr {
            BExpr::Agg(AggFn::Sum | AggFn::Nnz, Some(arg)) => **arg == BExpr::Value(matrix.clone()),
            _ => false,
        })
        && uses == block.aggs.len()
        && !block.aggs.is_empty();
    let join = if zero_blind {
        GeneJoin::Stored
    } else {
        let dense = format!("{}_dense", matrix.table);
        if b.dataset.tables.contains_key(&dense) {
            GeneJoin::DenseView(dense)
        } else {
            GeneJoin::Filled
        }
    };
    Layout::Genes { matrix, join }
}

/// Calls `f` on every expression node of a block.
pub fn visit_block(block: &Block, f: &mut dyn FnMut(&BExpr)) {
    let cols = match &block.columns {
        Columns::All(v) | Columns::Exactly(v) => v,
    };
    // Keys and aggregates are among the columns.
    for e in block
        .filters
        .iter()
        .chain(cols.iter().map(|n| &n.expr))
        .chain(block.order.iter().map(|(e, _)| e))
    {
        visit(e, f);
    }
}

/// Calls `f` on `e` and every node below it.
pub fn visit(e: &BExpr, f: &mut dyn FnMut(&BExpr)) {
    f(e);
    match e {
        BExpr::Agg(_, Some(a)) | BExpr::Unary(_, a) | BExpr::Test(_, a) => visit(a, f),
        BExpr::Func(_, args) => args.iter().for_each(|a| visit(a, f)),
        BExpr::Binary(_, l, r) => {
            visit(l, f);
            visit(r, f);
        }
        BExpr::InList(e, list, _) => {
            visit(e, f);
            list.iter().for_each(|a| visit(a, f));
        }
        BExpr::Between(e, l, h, _) => {
            visit(e, f);
            visit(l, f);
            visit(h, f);
        }
        _ => {}
    }
}

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

/// Scalar functions: name in the language, SQL name, argument types, result type.
const FUNCTIONS: &[(&str, &str, &[Ty], Ty)] = &[
    ("lower", "lower", &[Ty::Str], Ty::Str),
    ("upper", "upper", &[Ty::Str], Ty::Str),
    ("length", "character_length", &[Ty::Str], Ty::Num),
    ("trim", "btrim", &[Ty::Str], Ty::Str),
    ("contains", "strpos", &[Ty::Str, Ty::Str], Ty::Bool),
    ("starts_with", "starts_with", &[Ty::Str, Ty::Str], Ty::Bool),
    ("ends_with", "ends_with", &[Ty::Str, Ty::Str], Ty::Bool),
    ("substr", "substr", &[Ty::Str, Ty::Num, Ty::Num], Ty::Str),
    ("replace", "replace", &[Ty::Str, Ty::Str, Ty::Str], Ty::Str),
    ("concat", "concat", &[Ty::Other, Ty::Other], Ty::Str),
    ("matches", "regexp_like", &[Ty::Str, Ty::Str], Ty::Bool),
    ("abs", "abs", &[Ty::Num], Ty::Num),
    ("sqrt", "sqrt", &[Ty::Num], Ty::Num),
    ("exp", "exp", &[Ty::Num], Ty::Num),
    ("ln", "ln", &[Ty::Num], Ty::Num),
    ("log2", "log2", &[Ty::Num], Ty::Num),
    ("log10", "log10", &[Ty::Num], Ty::Num),
    ("log1p", "log1p", &[Ty::Num], Ty::Num),
    ("round", "round", &[Ty::Num, Ty::Num], Ty::Num),
    ("floor", "floor", &[Ty::Num], Ty::Num),
    ("ceil", "ceil", &[Ty::Num], Ty::Num),
    ("coalesce", "coalesce", &[Ty::Other, Ty::Other], Ty::Unknown),
];

/// Group reductions by name.
fn agg_fn(name: &str) -> Option<AggFn> {
    Some(match name {
        "count" => AggFn::Count,
        "sum" => AggFn::Sum,
        "mean" | "avg" => AggFn::Mean,
        "var" => AggFn::Var,
        "std" => AggFn::Std,
        "min" => AggFn::Min,
        "max" => AggFn::Max,
        "median" => AggFn::Median,
        "frac" => AggFn::Frac,
        "nnz" => AggFn::Nnz,
        _ => return None,
    })
}

const MATRIX_ROOTS: &[&str] = &["X", "layers", "raw", "obsm", "obs", "var", "gene"];

impl Binder<'_> {
    fn err(&mut self, d: Diagnostic) -> (BExpr, Ty) {
        self.errors.push(d);
        (BExpr::Lit(Literal::Null), Ty::Unknown)
    }

    /// The keys of a join, each a column of both sides (errors name the side that lacks it).
    fn join_keys(
        &mut self,
        on: &[Name],
        left: &[Column],
        right: &[Column],
        stage: Span,
    ) -> Vec<String> {
        if on.is_empty() {
            self.errors
                .push(Diagnostic::new("`join` needs `on key, …`", stage));
        }
        let mut keys = Vec::new();
        for k in on {
            for (cols, side) in [(left, "the rows so far"), (right, "the joined pipeline")] {
                if !cols.iter().any(|c| c.name == k.text) {
                    let d = Diagnostic::new(
                        format!("join key `{}` is not a column of {side}", k.text),
                        k.span,
                    );
                    let d = match did_you_mean(&k.text, cols.iter().map(|c| c.name.as_str())) {
                        Some(h) => d.with_hint(h),
                        None => d,
                    };
                    self.errors.push(d);
                }
            }
            keys.push(k.text.clone());
        }
        keys
    }

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

    fn bind_item(&mut self, item: &Item, state: &BlockState, ctx: Ctx) -> (String, (BExpr, Ty)) {
        let e = self.bind_expr(&item.expr, state, ctx);
        (item_name(self.source, item), e)
    }

    fn bind_aggs(
        &mut self,
        items: &[Item],
        state: &BlockState,
        keys: &[(String, (BExpr, Ty))],
    ) -> Vec<(String, (BExpr, Ty))> {
        let mut with_keys = BlockState::new(state.input.clone(), state.cells);
        with_keys.label = state.label.clone();
        with_keys.derived = state.derived.clone();
        with_keys.derived.extend(keys.iter().cloned());
        items
            .iter()
            .map(|item| {
                let before = self.errors.len();
                let (name, e) = self.bind_item(item, &with_keys, Ctx::AggTop);
                let mut has_agg = false;
                visit(&e.0, &mut |x| has_agg |= matches!(x, BExpr::Agg(..)));
                if !has_agg && self.errors.len() == before {
                    self.errors.push(
                        Diagnostic::new(
                            format!("`{name}` is not a reduction over the group"),
                            item.expr.span,
                        )
                        .with_hint("use a reduction (count, sum, mean, var, std, min, max, median, frac, nnz), or put the column in `group`"),
                    );
                }
                (name, e)
            })
            .collect()
    }

    fn bind_expr(&mut self, e: &Expr, st: &BlockState, ctx: Ctx) -> (BExpr, Ty) {
        match &e.kind {
            ExprKind::Lit(l) => {
                let ty = match l {
                    Literal::Int(_) | Literal::Float(_) => Ty::Num,
                    Literal::Str(_) => Ty::Str,
                    Literal::Bool(_) => Ty::Bool,
                    Literal::Null => Ty::Unknown,
                };
                (BExpr::Lit(l.clone()), ty)
            }
            ExprKind::Path(p) => self.bind_path(p, None, e.span, st, ctx),
            ExprKind::Index(base, sel) => match &base.kind {
                ExprKind::Path(p) => self.bind_path(p, Some(sel), e.span, st, ctx),
                _ => self.err(Diagnostic::new(
                    "only matrices (`X[…]`, `layers.counts[…]`) and embeddings (`obsm.X_umap[0]`) take `[…]`",
                    e.span,
                )),
            },
            ExprKind::List(_) => self.err(
                Diagnostic::new("a list is only valid after `in` or inside `X[…]`", e.span)
                    .with_hint("compare with `in`: `cell_type in [\"B cell\", \"T cell\"]`"),
            ),
            ExprKind::Unary(op, inner) => {
                let (x, t) = self.bind_expr(inner, st, ctx);
                let want = if *op == UnaryOp::Not { Ty::Bool } else { Ty::Num };
                self.check(t, want, inner.span, &format!("operand of `{}`", if *op == UnaryOp::Not { "not" } else { "-" }));
                (BExpr::Unary(*op, Box::new(x)), want)
            }
            ExprKind::Test(t, inner) => {
                let (x, ty) = self.bind_expr(inner, st, ctx);
                if matches!(t, Test::Nan | Test::NotNan) {
                    self.check(ty, Ty::Num, inner.span, "`is nan`");
                }
                (BExpr::Test(*t, Box::new(x)), Ty::Bool)
            }
            ExprKind::Binary(op, l, r) => self.bind_binary(*op, l, r, e.span, st, ctx),
            ExprKind::Call(name, args) => self.bind_call(name, args, e.span, st, ctx),
        }
    }

    fn bind_binary(
        &mut self,
        op: BinaryOp,
        l: &Expr,
        r: &Expr,
        span: Span,
        st: &BlockState,
        ctx: Ctx,
    ) -> (BExpr, Ty) {
        use BinaryOp::*;
        if op == Range {
            return self.err(
                Diagnostic::new("a range `lo..hi` is only valid after `in`", span)
                    .with_hint("`age in 20..40`"),
            );
        }
        let (lx, lt) = self.bind_expr(l, st, ctx);
        if matches!(op, In | NotIn) {
            let negated = op == NotIn;
            let r = self.resolve_let(r);
            return match &r.kind {
                ExprKind::List(items) => {
                    let mut list = Vec::new();
                    for item in items {
                        let (x, t) = self.bind_expr(item, st, ctx);
                        self.check(t, lt, item.span, "list element");
                        list.push(x);
                    }
                    (BExpr::InList(Box::new(lx), list, negated), Ty::Bool)
                }
                ExprKind::Binary(Range, lo, hi) => {
                    let (lo_x, lo_t) = self.bind_expr(lo, st, ctx);
                    let (hi_x, hi_t) = self.bind_expr(hi, st, ctx);
                    self.check(lo_t, lt, lo.span, "range start");
                    self.check(hi_t, lt, hi.span, "range end");
                    (
                        BExpr::Between(Box::new(lx), Box::new(lo_x), Box::new(hi_x), negated),
                        Ty::Bool,
                    )
                }
                _ => self.err(
                    Diagnostic::new("`in` takes a list `[…]` or a range `lo..hi`", r.span)
                        .with_hint("`cell_type in [\"B cell\", \"T cell\"]`, `age in 20..40`"),
                ),
            };
        }
        let (rx, rt) = self.bind_expr(r, st, ctx);
        let ty = match op {
            Or | And => {
                self.check(lt, Ty::Bool, l.span, &format!("left of `{}`", op.symbol()));
                self.check(rt, Ty::Bool, r.span, &format!("right of `{}`", op.symbol()));
                Ty::Bool
            }
            Eq | Ne | Lt | Le | Gt | Ge => {
                if lt != Ty::Unknown {
                    self.check(
                        rt,
                        lt,
                        r.span,
                        &format!("`{}` compares like with like", op.symbol()),
                    );
                }
                Ty::Bool
            }
            _ => {
                self.check(lt, Ty::Num, l.span, &format!("left of `{}`", op.symbol()));
                self.check(rt, Ty::Num, r.span, &format!("right of `{}`", op.symbol()));
                Ty::Num
            }
        };
        (BExpr::Binary(op, Box::new(lx), Box::new(rx)), ty)
    }

    fn resolve_let<'e>(&self, e: &'e Expr) -> std::borrow::Cow<'e, Expr> {
        if let ExprKind::Path(p) = &e.kind
            && p.len() == 1
            && let Some(v) = self.lets.get(&p[0].text)
        {
            return std::borrow::Cow::Owned(v.clone());
        }
        std::borrow::Cow::Borrowed(e)
    }

    fn bind_call(
        &mut self,
        name: &Name,
        args: &[Expr],
        span: Span,
        st: &BlockState,
        ctx: Ctx,
    ) -> (BExpr, Ty) {
        let fname = name.text.as_str();
        if let Some(f) = agg_fn(fname) {
            // A reduction over genes of one cell: sum/nnz/mean of a gene set, outside `agg`'s top.
            if ctx != Ctx::AggTop
                && matches!(f, AggFn::Sum | AggFn::Nnz | AggFn::Mean)
                && args.len() == 1
                && let Some(m) = self.matrix_arg(&args[0], st)
            {
                let Some(m) = m else {
                    return (BExpr::Lit(Literal::Null), Ty::Unknown);
                };
                if !st.cells {
                    return self.err(Diagnostic::new(
                        "matrices are only reachable before the first `select`/`agg`/`take` of `from dataset`",
                        args[0].span,
                    ));
                }
                return match f {
                    AggFn::Sum => (BExpr::Reduce(CellFn::Sum, m), Ty::Num),
                    AggFn::Nnz => (BExpr::Reduce(CellFn::Nnz, m), Ty::Num),
                    _ => {
                        let n = match &m.genes {
                            Genes::All => self.dataset.genes.get(&m.var_table).map(Vec::len),
                            Genes::Names(n) => Some(n.len()),
                            Genes::Ids(i) => Some(i.len()),
                            Genes::Where(_) => None,
                        };
                        match n {
                            Some(n) => (
                                BExpr::Binary(
                                    BinaryOp::Div,
                                    Box::new(BExpr::Reduce(CellFn::Sum, m)),
                                    Box::new(BExpr::Lit(Literal::Float(format!("{n}.0")))),
                                ),
                                Ty::Num,
                            ),
                            None => self.err(Diagnostic::new(
                                "the per-cell mean over genes chosen by a predicate is not supported yet",
                                span,
                            ).with_hint("use sum(…) / n, or name the genes")),
                        }
                    }
                };
            }
            if ctx != Ctx::AggTop {
                let msg = if ctx == Ctx::InAgg {
                    format!("`{fname}` inside another reduction")
                } else {
                    format!("`{fname}` reduces a group: use it in `agg`")
                };
                return self.err(Diagnostic::new(msg, span).with_hint(
                    "per cell, `sum`, `nnz` and `mean` take a matrix: `sum(layers.counts)`",
                ));
            }
            let arg = match (f, args) {
                (AggFn::Count, []) => None,
                (_, [a]) => {
                    let (x, t) = self.bind_expr(a, st, Ctx::InAgg);
                    match f {
                        AggFn::Frac => {
                            self.check(t, Ty::Bool, a.span, "`frac` counts where a condition holds")
                        }
                        AggFn::Count | AggFn::Min | AggFn::Max => {}
                        _ => self.check(t, Ty::Num, a.span, &format!("`{fname}`")),
                    }
                    Some(Box::new(x))
                }
                _ => {
                    return self.err(Diagnostic::new(
                        format!(
                            "`{fname}` takes {}",
                            if f == AggFn::Count {
                                "no argument or one"
                            } else {
                                "one argument"
                            }
                        ),
                        span,
                    ));
                }
            };
            return (BExpr::Agg(f, arg), Ty::Num);
        }
        let Some((_, sql, params, ret)) = FUNCTIONS.iter().find(|f| f.0 == fname) else {
            let all: Vec<&str> = FUNCTIONS
                .iter()
                .map(|f| f.0)
                .chain([
                    "count", "sum", "mean", "var", "std", "min", "max", "median", "frac", "nnz",
                ])
                .collect();
            let d = Diagnostic::new(format!("unknown function `{fname}`"), name.span);
            let d = match did_you_mean(fname, all) {
                Some(h) => d.with_hint(h),
                None => d,
            };
            return self.err(d);
        };
        let optional_last = matches!(fname, "round" | "substr");
        if args.len() != params.len() && !(optional_last && args.len() + 1 == params.len()) {
            self.errors.push(Diagnostic::new(
                format!(
                    "`{fname}` takes {} argument{}",
                    params.len(),
                    if params.len() == 1 { "" } else { "s" }
                ),
                span,
            ));
        }
        let inner = if ctx == Ctx::AggTop { Ctx::AggTop } else { ctx };
        let mut bound = Vec::new();
        for (a, want) in args
            .iter()
            .zip(params.iter().chain(std::iter::repeat(&Ty::Other)))
        {
            let (x, t) = self.bind_expr(a, st, inner);
            self.check(t, *want, a.span, &format!("argument of `{fname}`"));
            bound.push(x);
        }
        if fname == "log1p" {
            // A missing argument was reported above; null stands in for it.
            let x = bound.pop().unwrap_or(BExpr::Lit(Literal::Null));
            let one_plus = BExpr::Binary(
                BinaryOp::Add,
                Box::new(BExpr::Lit(Literal::Int(1))),
                Box::new(x),
            );
            return (BExpr::Func("ln".into(), vec![one_plus]), Ty::Num);
        }
        if fname == "contains" {
            // strpos(s, sub) > 0
            return (
                BExpr::Binary(
                    BinaryOp::Gt,
                    Box::new(BExpr::Func((*sql).into(), bound)),
                    Box::new(BExpr::Lit(Literal::Int(0))),
                ),
                Ty::Bool,
            );
        }
        (BExpr::Func((*sql).into(), bound), *ret)
    }

    /// `Some(Some(m))` if `e` names a matrix, `Some(None)` if it does but has errors, `None` if
    /// it is not a matrix.
    fn matrix_arg(&mut self, e: &Expr, st: &BlockState) -> Option<Option<MatrixRef>> {
        let (path, sel) = match &e.kind {
            ExprKind::Path(p) => (p, None),
            ExprKind::Index(b, s) => match &b.kind {
                ExprKind::Path(p) => (p, Some(s.as_ref())),
                _ => return None,
            },
            _ => return None,
        };
        let (table, var_table) = self.matrix_table(path, st)?;
        Some(self.gene_selection(table, var_table, sel, e.span))
    }

    /// The entries table and gene table a path names, if it names a matrix.
    fn matrix_table(&self, path: &[Name], st: &BlockState) -> Option<(String, String)> {
        if !st.cells {
            return None;
        }
        let parts: Vec<&str> = path.iter().map(|n| n.text.as_str()).collect();
        let found = match parts.as_slice() {
            ["X"] if !st.input.iter().any(|c| c.name == "X") => {
                ("x".to_string(), "var".to_string())
            }
            ["layers", l] => (format!("layers_{}", sql_name(l)), "var".to_string()),
            ["raw", "X"] | ["raw", "x"] => ("raw_x".to_string(), "raw_var".to_string()),
            _ => return None,
        };
        Some(found)
    }

    /// Resolves the selector of a matrix: none (all genes), a name, an id, a list, or a predicate
    /// over `var`.
    fn gene_selection(
        &mut self,
        table: String,
        var_table: String,
        sel: Option<&Expr>,
        span: Span,
    ) -> Option<MatrixRef> {
        let mut ok = true;
        if !self.dataset.tables.contains_key(&table) {
            let avail: Vec<&str> = self.dataset.tables.keys().map(String::as_str).collect();
            let d = Diagnostic::new(format!("no matrix table `{table}` in this dataset"), span);
            let d = match did_you_mean(&table, avail) {
                Some(h) => d.with_hint(h),
                None => d,
            };
            self.errors.push(d);
            return None;
        }
        let genes = match sel {
            None => Genes::All,
            Some(s) => {
                let s = self.resolve_let(s).into_owned();
                match &s.kind {
                    ExprKind::Lit(Literal::Str(g)) => {
                        ok &= self.check_gene(&var_table, g, s.span);
                        Genes::Names(vec![g.clone()])
                    }
                    ExprKind::Lit(Literal::Int(i)) => Genes::Ids(vec![*i]),
                    ExprKind::List(items) => {
                        let mut names = Vec::new();
                        let mut ids = Vec::new();
                        for it in items {
                            let it = self.resolve_let(it).into_owned();
                            match &it.kind {
                                ExprKind::Lit(Literal::Str(g)) => {
                                    ok &= self.check_gene(&var_table, g, it.span);
                                    names.push(g.clone());
                                }
                                ExprKind::Lit(Literal::Int(i)) => ids.push(*i),
                                _ => {
                                    self.errors.push(Diagnostic::new("a gene list holds gene names (strings) or var_ids (integers)", it.span));
                                    ok = false;
                                }
                            }
                        }
                        if !names.is_empty() && !ids.is_empty() {
                            self.errors.push(Diagnostic::new(
                                "a gene list mixes names and var_ids",
                                s.span,
                            ));
                            ok = false;
                        }
                        if ids.is_empty() {
                            Genes::Names(names)
                        } else {
                            Genes::Ids(ids)
                        }
                    }
                    _ => {
                        let var_cols = self.gene_table(&var_table, s.span)?;
                        let mut vs = BlockState::new(var_cols, false);
                        vs.label = var_table.clone();
                        let (pred, ty) = self.bind_var_pred(&s, &vs);
                        self.check(ty, Ty::Bool, s.span, "a gene selection");
                        Genes::Where(Box::new(pred))
                    }
                }
            }
        };
        ok.then_some(MatrixRef {
            table,
            var_table,
            genes,
        })
    }

    /// A predicate over the gene table: its columns are `var.col` or bare `col`.
    fn bind_var_pred(&mut self, e: &Expr, vs: &BlockState) -> (BExpr, Ty) {
        let (x, t) = self.bind_expr(e, vs, Ctx::Row);
        fn to_var(e: BExpr) -> BExpr {
            match e {
                BExpr::Col(ColRef::Input(c)) => BExpr::Col(ColRef::Var(c)),
                BExpr::Unary(op, a) => BExpr::Unary(op, Box::new(to_var(*a))),
                BExpr::Test(t, a) => BExpr::Test(t, Box::new(to_var(*a))),
                BExpr::Binary(op, l, r) => {
                    BExpr::Binary(op, Box::new(to_var(*l)), Box::new(to_var(*r)))
                }
                BExpr::Func(n, a) => BExpr::Func(n, a.into_iter().map(to_var).collect()),
                BExpr::InList(e, l, n) => {
                    BExpr::InList(Box::new(to_var(*e)), l.into_iter().map(to_var).collect(), n)
                }
                BExpr::Between(e, l, h, n) => BExpr::Between(
                    Box::new(to_var(*e)),
                    Box::new(to_var(*l)),
                    Box::new(to_var(*h)),
                    n,
                ),
                other => other,
            }
        }
        (to_var(x), t)
    }

    /// The columns of the gene table `var_table`; an error at `span` when the dataset has none.
    fn gene_table(&mut self, var_table: &str, span: Span) -> Option<Vec<Column>> {
        let cols = self.dataset.tables.get(var_table).cloned();
        if cols.is_none() {
            self.errors.push(Diagnostic::new(
                format!("no gene table `{var_table}` in this dataset"),
                span,
            ));
        }
        cols
    }

    fn check_gene(&mut self, var_table: &str, gene: &str, span: Span) -> bool {
        let Some(genes) = self.dataset.genes.get(var_table) else {
            return true;
        };
        if genes.iter().any(|g| g == gene) {
            return true;
        }
        let d = Diagnostic::new(format!("unknown gene `{gene}` in `{var_table}`"), span);
        let d = match did_you_mean(gene, genes.iter().map(String::as_str)) {
            Some(h) => d.with_hint(h),
            None => d,
        };
        self.errors.push(d);
        false
    }

    fn bind_path(
        &mut self,
        path: &[Name],
        sel: Option<&Expr>,
        span: Span,
        st: &BlockState,
        ctx: Ctx,
    ) -> (BExpr, Ty) {
        let parts: Vec<&str> = path.iter().map(|n| n.text.as_str()).collect();
        // Constants, derived columns and group keys shadow everything.
        if let [one] = parts.as_slice()
            && sel.is_none()
        {
            if let Some((_, e)) = st.derived.iter().rev().find(|(n, _)| n == one) {
                return e.clone();
            }
            if st.projected
                && let Some((n, (_, t))) = st.outputs.iter().find(|(n, _)| n == one)
            {
                return (BExpr::Col(ColRef::Output(n.clone())), *t);
            }
            if let Some(v) = self.lets.get(*one).cloned() {
                return self.bind_expr(&v, st, ctx);
            }
        }
        if st.projected {
            let names: Vec<&str> = st.outputs.iter().map(|(n, _)| n.as_str()).collect();
            let d = Diagnostic::new(format!("unknown column `{}`", parts.join(".")), span);
            let d = match did_you_mean(&parts.join("."), names.iter().copied()) {
                Some(h) => d.with_hint(h),
                None => d.with_hint(format!("the columns here are: {}", names.join(", "))),
            };
            return self.err(d);
        }
        // Matrices: a value per cell (and gene).
        if let Some((table, var_table)) = self.matrix_table(path, st) {
            return match self.gene_selection(table, var_table, sel, span) {
                Some(m) => {
                    self.matrix_spans.push((m.clone(), span));
                    (BExpr::Value(m), Ty::Num)
                }
                None => (BExpr::Lit(Literal::Null), Ty::Unknown),
            };
        }
        if st.cells {
            match parts.as_slice() {
                ["obs", col] if sel.is_none() => return self.column(col, path[1].span, st),
                ["gene"] if sel.is_none() && !st.input.iter().any(|c| c.name == "gene") => {
                    return (BExpr::Col(ColRef::Var("var_name".into())), Ty::Str);
                }
                ["var", col] if sel.is_none() => {
                    let Some(cols) = self.gene_table("var", span) else {
                        return (BExpr::Lit(Literal::Null), Ty::Unknown);
                    };
                    return match cols.iter().find(|c| c.name == *col) {
                        Some(c) => (BExpr::Col(ColRef::Var(c.name.clone())), c.ty),
                        None => self.unknown(col, path[1].span, &cols, "var"),
                    };
                }
                ["obsm", key, rest @ ..] => return self.embedding(key, rest, sel, span),
                _ => {}
            }
        }
        let names_matrix = matches!(parts.as_slice(), ["X"] | ["layers", _] | ["raw", "X"]);
        if names_matrix && !st.cells && !st.input.iter().any(|c| c.name == parts[0]) {
            return self.err(
                Diagnostic::new(
                    format!("`{}` is not reachable here", parts.join(".")),
                    span,
                )
                .with_hint("matrices are read before the first `select`, `group`/`agg` or `take` of `from dataset`; move this stage up"),
            );
        }
        if let Some(s) = sel {
            return self.err(Diagnostic::new(
                format!(
                    "`{}` is not a matrix or an embedding, so it takes no `[…]`",
                    parts.join(".")
                ),
                s.span,
            ));
        }
        match parts.as_slice() {
            [col] => self.column(col, path[0].span, st),
            // In a gene predicate (`X[var.highly_variable]`) or `from dataset.var`.
            ["var", col] if st.input.iter().any(|c| c.name == "var_id") => {
                self.column(col, path[1].span, st)
            }
            _ => {
                let d = Diagnostic::new(format!("unknown name `{}`", parts.join(".")), span);
                self.err(d.with_hint("paths start with obs, var, X, layers, raw or obsm"))
            }
        }
    }

    fn embedding(
        &mut self,
        key: &str,
        rest: &[&str],
        sel: Option<&Expr>,
        span: Span,
    ) -> (BExpr, Ty) {
        let table = format!("obsm_{}", sql_name(key));
        let Some(cols) = self.dataset.tables.get(&table).cloned() else {
            let avail: Vec<String> = self
                .dataset
                .tables
                .keys()
                .filter_map(|t| t.strip_prefix("obsm_").map(str::to_string))
                .collect();
            let d = Diagnostic::new(format!("no embedding `obsm.{key}`"), span);
            let d = match did_you_mean(&sql_name(key), avail.iter().map(String::as_str)) {
                Some(h) => d.with_hint(h),
                None => d.with_hint(format!("embeddings: {}", avail.join(", "))),
            };
            return self.err(d);
        };
        let column = match (rest, sel) {
            ([col], None) => col.to_string(),
            ([], Some(s)) => match &s.kind {
                ExprKind::Lit(Literal::Int(i)) => format!("{}_{i}", sql_name(key)),
                _ => {
                    return self.err(Diagnostic::new(
                        "an embedding component is a whole number: `obsm.X_umap[0]`",
                        s.span,
                    ));
                }
            },
            _ => {
                return self.err(Diagnostic::new("pick one component: `obsm.X_umap[0]` (or a column of a dataframe embedding: `obsm.meta.col`)", span));
            }
        };
        match cols.iter().find(|c| c.name == column) {
            Some(c) => (BExpr::Col(ColRef::Embedding { table, column }), c.ty),
            None => {
                let t = table.clone();
                self.unknown(&column, span, &cols, &t)
            }
        }
    }

    fn column(&mut self, col: &str, span: Span, st: &BlockState) -> (BExpr, Ty) {
        match st
            .input
            .iter()
            .find(|c| c.name == col && !st.hidden.contains(&c.name))
        {
            Some(c) => (BExpr::Col(ColRef::Input(c.name.clone())), c.ty),
            None => {
                let mut cols = st.input.clone();
                cols.extend(st.derived.iter().map(|(n, (_, t))| Column::new(n, *t)));
                let label = st.label.clone();
                self.unknown(col, span, &cols, &label)
            }
        }
    }

    fn unknown(&mut self, col: &str, span: Span, cols: &[Column], table: &str) -> (BExpr, Ty) {
        let mut candidates: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        candidates.extend(self.lets.keys().map(String::as_str));
        let d = Diagnostic::new(format!("unknown column `{col}` in {table}"), span);
        let d = match did_you_mean(col, candidates.iter().copied()) {
            Some(h) => d.with_hint(h),
            None if MATRIX_ROOTS.contains(&col) => d,
            None => d,
        };
        self.err(d)
    }
}

/// The output name of an item: given, a column's own name, or the item's source text.
fn item_name(source: &str, item: &Item) -> String {
    let text = || {
        // Spans come from parsing this source, so they are in it.
        source
            .get(item.expr.span.start..item.expr.span.end)
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    if let Some(n) = &item.name {
        return n.text.clone();
    }
    // The grammar gives a path at least one name.
    match &item.expr.kind {
        ExprKind::Path(p) => p.last().map(|n| n.text.clone()).unwrap_or_default(),
        ExprKind::Index(b, s) => match (&b.kind, &s.kind) {
            (_, ExprKind::Lit(Literal::Str(g))) => g.clone(),
            (ExprKind::Path(p), ExprKind::Lit(Literal::Int(i))) => {
                format!(
                    "{}_{i}",
                    p.last().map(|n| sql_name(&n.text)).unwrap_or_default()
                )
            }
            _ => text(),
        },
        _ => text(),
    }
}
