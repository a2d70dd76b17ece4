//! The bound IR: what [`bind`](crate::bind()) produces and [`lower`](crate::lower()) consumes. A
//! [`Bound`] pipeline is a list of SQL-shaped [`Block`]s (one `SELECT` each) over [`BExpr`]
//! expressions whose names are resolved (columns, matrices and their gene selections,
//! embeddings) and whose reductions are known. It is a room of its own so that the binder and the
//! lowering both depend on it and not on each other, as `annql-syntax` keeps its AST apart
//! from its parser.

use crate::ast::{BinaryOp, Literal, Test, UnaryOp};

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
