//! Matrix tables: a block's gene selection as a `WHERE` conjunct, and the subqueries over a
//! matrix's entries that per-cell single-gene values (`g1…`) and per-cell reductions over genes
//! (`r1…`) are joined from.

use annql_engine::datafusion::sql::sqlparser::ast::{
    self as sql, GroupByExpr, Query, SelectItem, SetExpr,
};
use annql_engine::datafusion::sql::unparser::ast::{
    QueryBuilder, RelationBuilder, SelectBuilder, TableWithJoinsBuilder,
};
use annql_engine::model::{OBS_ID, VALUE, VAR_ID};

use super::sql_ast::{
    call, coalesce_zero, ident, in_or_eq, int, join_using, nnz, qcol, string, table_builder,
};
use super::{Input, Lowerer, internal};
use crate::error::{Error, Result};
use crate::ir::{CellFn, GeneJoin, Genes, Layout, MatrixRef};

impl Lowerer<'_> {
    /// The layout's gene selection as a WHERE conjunct. A predicate that cannot be lowered is
    /// an error: without it the query would cover every gene.
    pub(super) fn gene_filter(
        &mut self,
        m: &MatrixRef,
        join: &GeneJoin,
    ) -> Result<Option<sql::Expr>> {
        let by_id_on = if matches!(join, GeneJoin::Filled) {
            "v"
        } else {
            "m"
        };
        Ok(match &m.genes {
            Genes::All => None,
            Genes::Names(names) => Some(in_or_eq(
                qcol("v", "var_name"),
                names.iter().map(|n| string(n)).collect(),
            )),
            Genes::Ids(ids) => Some(in_or_eq(
                qcol(by_id_on, VAR_ID),
                ids.iter().map(|i| int(*i)).collect(),
            )),
            Genes::Where(p) => Some(self.expr(p).map_err(|e| Error::GenePredicate {
                matrix: m.table.clone(),
                var_table: m.var_table.clone(),
                source: Box::new(e),
            })?),
        })
    }

    /// `SELECT m.obs_id, m.value FROM matrix m [JOIN var v USING (var_id)] WHERE <gene>`.
    pub(super) fn gene_subquery(&mut self, m: &MatrixRef) -> Result<Query> {
        let filter = self.gene_filter(m, &GeneJoin::Stored)?;
        let proj = vec![
            SelectItem::UnnamedExpr(qcol("m", OBS_ID)),
            SelectItem::UnnamedExpr(qcol("m", VALUE)),
        ];
        self.matrix_subquery(m, proj, filter, Vec::new())
    }

    /// Per-cell reductions over the selected genes, grouped by cell.
    pub(super) fn reduction_subquery(&mut self, m: &MatrixRef, fns: &[CellFn]) -> Result<Query> {
        let filter = self.gene_filter(m, &GeneJoin::Stored)?;
        let mut proj = vec![SelectItem::UnnamedExpr(qcol("m", OBS_ID))];
        for f in fns {
            let e = match f {
                CellFn::Sum => call("sum", vec![qcol("m", VALUE)]),
                CellFn::Nnz => nnz(qcol("m", VALUE)),
            };
            proj.push(SelectItem::ExprWithAlias {
                expr: e,
                alias: ident(cell_fn_name(*f)),
            });
        }
        self.matrix_subquery(m, proj, filter, vec![qcol("m", OBS_ID)])
    }

    fn matrix_subquery(
        &mut self,
        m: &MatrixRef,
        projection: Vec<SelectItem>,
        filter: Option<sql::Expr>,
        group_by: Vec<sql::Expr>,
    ) -> Result<Query> {
        let mut from = TableWithJoinsBuilder::default();
        let mut rel = RelationBuilder::default();
        rel.table(table_builder(self.dataset, &m.table, Some("m")));
        let mut joins = Vec::new();
        if matches!(m.genes, Genes::Names(_) | Genes::Where(_)) {
            joins.push(join_using(self.table(&m.var_table, Some("v")), VAR_ID));
        }
        from.relation(rel).joins(joins);
        let mut select = SelectBuilder::default();
        select
            .projection(projection)
            .from(vec![from])
            .selection(filter)
            .group_by(GroupByExpr::Expressions(group_by, Vec::new()));
        let select = select.build().map_err(internal)?;
        let mut q = QueryBuilder::default();
        q.body(Box::new(SetExpr::Select(Box::new(select))));
        q.build().map_err(internal)
    }

    /// A matrix value, 0 where not stored.
    pub(super) fn value(&mut self, m: &MatrixRef) -> Result<sql::Expr> {
        if let Layout::Genes { matrix, join } = self.layout
            && matrix == m
            && matches!(self.input, Input::Cells)
        {
            return Ok(match join {
                GeneJoin::Filled => coalesce_zero(qcol("m", VALUE)),
                _ => qcol("m", VALUE),
            });
        }
        if !m.is_single() {
            return Err(Error::Internal(
                "a second gene set reached lowering (bind should have refused it)".into(),
            ));
        }
        let alias = match self.genes.iter().find(|(g, _)| g == m) {
            Some((_, a)) => a.clone(),
            None => {
                let a = format!("g{}", self.genes.len() + 1);
                self.genes.push((m.clone(), a.clone()));
                a
            }
        };
        Ok(coalesce_zero(qcol(&alias, VALUE)))
    }

    pub(super) fn reduce(&mut self, f: CellFn, m: &MatrixRef) -> sql::Expr {
        let alias = match self.reductions.iter_mut().find(|(g, _, _)| g == m) {
            Some((_, fns, a)) => {
                if !fns.contains(&f) {
                    fns.push(f);
                }
                a.clone()
            }
            None => {
                let a = format!("r{}", self.reductions.len() + 1);
                self.reductions.push((m.clone(), vec![f], a.clone()));
                a
            }
        };
        coalesce_zero(qcol(&alias, cell_fn_name(f)))
    }
}

fn cell_fn_name(f: CellFn) -> &'static str {
    match f {
        CellFn::Sum => "sum",
        CellFn::Nnz => "nnz",
    }
}
