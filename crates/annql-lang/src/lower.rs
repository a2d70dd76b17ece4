//! `lower`: [`Bound`] → a SQL [`Statement`] (sqlparser's AST, as DataFusion parses SQL into), so a
//! pipeline is planned by DataFusion's own SQL planner exactly like its SQL equivalent.
//!
//! Aliases: `o` obs, `m` the block's matrix, `v` its genes, `g1…` per-cell gene values,
//! `r1…` per-cell reductions, `e1…` embeddings, `s1…` earlier blocks.
//!
//! This module holds the entry point and the state of lowering one block (`Lowerer`); its parts
//! follow in the order a block is lowered.

use annql_engine::datafusion::sql::sqlparser::ast::{ObjectName, Query, Statement, TableFactor};
use annql_engine::datafusion::sql::unparser::ast::TableRelationBuilder;

use crate::error::{Error, Result};
use crate::ir::{Block, Bound, CellFn, Layout, MatrixRef};
use sql_ast::table_alias;

/// One block → one `SELECT`: projection, filters, grouping, order and the FROM clause with the
/// joins its expressions asked for.
mod select;

/// Expressions, columns and reductions over a group.
mod expr;

/// Matrix tables: the gene selection, per-cell gene values and reductions.
mod matrix;

/// Pipelines joined or unioned with the rows so far.
mod combine;

/// Constructors of sqlparser's AST nodes.
mod sql_ast;

pub use sql_ast::ident;

/// Lowers a bound pipeline to one SQL query statement.
pub fn lower(bound: &Bound) -> Result<Statement> {
    let mut query: Option<Query> = None;
    for (i, block) in bound.blocks.iter().enumerate() {
        let input = match query.take() {
            None if bound.cells => Input::Cells,
            None => Input::Table(bound.table.clone()),
            Some(q) => Input::Derived(Box::new(q), format!("s{i}")),
        };
        let q = Lowerer::new(&bound.dataset, input, block).lower(block)?;
        query = Some(match &block.combine {
            None => q,
            Some(c) => combine::combine(q, c, i)?,
        });
    }
    let query = query.ok_or_else(|| Error::Internal("a pipeline without blocks".into()))?;
    Ok(Statement::Query(Box::new(query)))
}

/// What a block reads.
enum Input {
    /// `dataset.obs o`, with matrices reachable.
    Cells,
    /// `dataset.table`.
    Table(String),
    /// The previous block, `(…) AS sN`.
    Derived(Box<Query>, String),
}

/// Lowers one block. Lowering its expressions collects the joins its FROM clause needs.
struct Lowerer<'a> {
    dataset: &'a str,
    input: Input,
    layout: &'a Layout,
    /// Per-cell single-gene values joined in: (matrix, alias).
    genes: Vec<(MatrixRef, String)>,
    /// Per-cell reductions joined in: (matrix, functions, alias).
    reductions: Vec<(MatrixRef, Vec<CellFn>, String)>,
    /// Embedding tables joined in: (table, alias).
    embeddings: Vec<(String, String)>,
    /// The gene table is referenced (joined as `v`).
    uses_var: bool,
}

impl<'a> Lowerer<'a> {
    fn new(dataset: &'a str, input: Input, block: &'a Block) -> Self {
        Self {
            dataset,
            input,
            layout: &block.layout,
            genes: Vec::new(),
            reductions: Vec::new(),
            embeddings: Vec::new(),
            uses_var: false,
        }
    }

    /// `dataset.table`.
    fn table(&self, table: &str, alias: Option<&str>) -> TableFactor {
        let mut t = TableRelationBuilder::default();
        t.name(ObjectName::from(vec![ident(self.dataset), ident(table)]))
            .alias(alias.map(table_alias));
        // A table relation with a name always builds.
        t.build().unwrap_or(TableFactor::Table {
            name: ObjectName::from(vec![ident(self.dataset), ident(table)]),
            alias: alias.map(table_alias),
            args: None,
            with_hints: Vec::new(),
            version: None,
            with_ordinality: false,
            partitions: Vec::new(),
            json_path: None,
            sample: None,
            index_hints: Vec::new(),
        })
    }
}

/// A sqlparser builder that failed: a bug in lowering, not in the pipeline.
fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("building SQL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{BinaryOp, Literal};
    use crate::ir::{AggFn, BExpr, ColRef, Columns, GeneJoin, Genes, Named};

    /// A gene predicate (`X[pred]`) lowering cannot express: `in` as a plain operator.
    fn unlowerable_selection() -> MatrixRef {
        let pred = BExpr::Binary(
            BinaryOp::In,
            Box::new(BExpr::Col(ColRef::Var("var_name".into()))),
            Box::new(BExpr::Lit(Literal::Str("CD3E".into()))),
        );
        MatrixRef {
            table: "x".into(),
            var_table: "var".into(),
            genes: Genes::Where(Box::new(pred)),
        }
    }

    fn one_block(layout: Layout, column: BExpr) -> Bound {
        let agg = Named {
            name: "s".into(),
            expr: column,
        };
        Bound {
            dataset: "t".into(),
            table: "obs".into(),
            cells: true,
            blocks: vec![Block {
                layout,
                filters: Vec::new(),
                group: Some(Vec::new()),
                aggs: vec![agg.clone()],
                columns: Columns::Exactly(vec![agg]),
                order: Vec::new(),
                limit: None,
                combine: None,
            }],
        }
    }

    /// A gene predicate that fails to lower is an error naming the matrix, never a query over
    /// every gene: as the block's gene axis, and inside a per-cell reduction.
    #[test]
    fn gene_predicate_that_cannot_lower_is_an_error() {
        let m = unlowerable_selection();
        let axis = one_block(
            Layout::Genes {
                matrix: m.clone(),
                join: GeneJoin::Stored,
            },
            BExpr::Agg(AggFn::Sum, Some(Box::new(BExpr::Value(m.clone())))),
        );
        let per_cell = one_block(
            Layout::Rows,
            BExpr::Agg(AggFn::Mean, Some(Box::new(BExpr::Reduce(CellFn::Sum, m)))),
        );
        for bound in [axis, per_cell] {
            match lower(&bound) {
                Ok(sql) => panic!("lowered without its gene predicate: {sql}"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("gene predicate of `x`") && e.contains("`in`"),
                        "{e}"
                    );
                }
            }
        }
    }
}
