//! One block → one `SELECT`: its projection (all input columns and the derived ones, or exactly
//! the selected ones, or group keys and aggregates), `WHERE`, `GROUP BY`, `ORDER BY`, `LIMIT`,
//! and the FROM clause: the input (obs, a table, or the previous block) with the matrix, gene,
//! per-cell value, reduction and embedding joins the block's expressions asked for.

use annql_engine::datafusion::sql::sqlparser::ast::{
    GroupByExpr, Ident, Join, JoinConstraint, JoinOperator, ObjectName, OrderByExpr, OrderByKind,
    OrderByOptions, Query, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    WildcardAdditionalOptions,
};
use annql_engine::datafusion::sql::unparser::ast::{
    DerivedRelationBuilder, QueryBuilder, RelationBuilder, SelectBuilder, TableWithJoinsBuilder,
};
use annql_engine::model::{OBS_ID, VALUE, VAR_ID};

use super::sql_ast::{
    and, conjunction, derived, eq, ident, item, join_using, left_join, number, on_obs, qcol,
    table_alias, table_builder,
};
use super::{Input, Lowerer, internal};
use crate::error::Result;
use crate::ir::{Block, Columns, GeneJoin, Genes, Layout};

impl Lowerer<'_> {
    pub(super) fn lower(mut self, block: &Block) -> Result<Query> {
        // Expressions first: they decide which joins the FROM clause needs.
        let mut filters = Vec::new();
        if let Layout::Genes { matrix, join } = self.layout
            && let Some(f) = self.gene_filter(matrix, join)?
        {
            filters.push(f);
        }
        for f in &block.filters {
            filters.push(self.expr(f)?);
        }
        let mut projection = Vec::new();
        let mut group_by = Vec::new();
        match &block.columns {
            Columns::All(extra) => {
                match &self.input {
                    Input::Cells => {
                        projection.push(SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(ObjectName::from(vec![
                                Ident::new("o"),
                            ])),
                            WildcardAdditionalOptions::default(),
                        ));
                        if let Layout::Genes { matrix, .. } = self.layout
                            && !matrix.is_single()
                        {
                            self.uses_var = true;
                            projection.push(SelectItem::ExprWithAlias {
                                expr: qcol("v", "var_name"),
                                alias: ident("gene"),
                            });
                            projection.push(SelectItem::ExprWithAlias {
                                expr: self.value(matrix)?,
                                alias: ident(VALUE),
                            });
                        }
                    }
                    _ => {
                        projection.push(SelectItem::Wildcard(WildcardAdditionalOptions::default()))
                    }
                }
                for n in extra {
                    let e = self.expr(&n.expr)?;
                    projection.push(item(e, &n.name));
                }
            }
            Columns::Exactly(cols) => {
                let keys = block.group.as_ref().map_or(0, Vec::len);
                for (i, n) in cols.iter().enumerate() {
                    let e = self.expr(&n.expr)?;
                    if i < keys {
                        group_by.push(e.clone());
                    }
                    projection.push(item(e, &n.name));
                }
            }
        }
        let mut order = Vec::new();
        for (e, desc) in &block.order {
            order.push(OrderByExpr {
                expr: self.expr(e)?,
                options: OrderByOptions {
                    asc: desc.then_some(false),
                    nulls_first: None,
                },
                with_fill: None,
            });
        }

        let from = self.from()?;
        let mut select = SelectBuilder::default();
        select
            .projection(projection)
            .from(vec![from])
            .selection(conjunction(filters))
            .group_by(GroupByExpr::Expressions(group_by, Vec::new()));
        let select = select.build().map_err(internal)?;
        let mut query = QueryBuilder::default();
        query.body(Box::new(SetExpr::Select(Box::new(select))));
        if !order.is_empty() {
            query.order_by(OrderByKind::Expressions(order));
        }
        if let Some(n) = block.limit {
            query.limit(Some(number(n.to_string())));
        }
        query.build().map_err(internal)
    }

    fn from(&mut self) -> Result<TableWithJoinsBuilder> {
        let mut from = TableWithJoinsBuilder::default();
        let mut rel = RelationBuilder::default();
        let mut joins = Vec::new();
        match &self.input {
            Input::Table(t) => {
                rel.table(table_builder(self.dataset, t, None));
            }
            Input::Derived(q, alias) => {
                let mut d = DerivedRelationBuilder::default();
                d.lateral(false)
                    .subquery(q.clone())
                    .alias(Some(table_alias(alias)));
                rel.derived(d);
            }
            Input::Cells => match self.layout {
                Layout::Rows => {
                    rel.table(table_builder(self.dataset, "obs", Some("o")));
                }
                Layout::Genes { matrix, join } => {
                    let needs_var =
                        self.uses_var || matches!(matrix.genes, Genes::Names(_) | Genes::Where(_));
                    match join {
                        GeneJoin::Stored | GeneJoin::DenseView(_) => {
                            let t = match join {
                                GeneJoin::DenseView(t) => t.as_str(),
                                _ => matrix.table.as_str(),
                            };
                            rel.table(table_builder(self.dataset, t, Some("m")));
                            joins.push(join_using(self.table("obs", Some("o")), OBS_ID));
                            if needs_var {
                                joins.push(join_using(
                                    self.table(&matrix.var_table, Some("v")),
                                    VAR_ID,
                                ));
                            }
                        }
                        GeneJoin::Filled => {
                            rel.table(table_builder(self.dataset, "obs", Some("o")));
                            joins.push(Join {
                                relation: self.table(&matrix.var_table, Some("v")),
                                global: false,
                                join_operator: JoinOperator::CrossJoin(JoinConstraint::None),
                            });
                            let on = and(
                                eq(qcol("m", OBS_ID), qcol("o", OBS_ID)),
                                eq(qcol("m", VAR_ID), qcol("v", VAR_ID)),
                            );
                            joins.push(left_join(self.table(&matrix.table, Some("m")), on));
                        }
                    }
                }
            },
        }
        for (m, alias) in self.genes.clone() {
            let sub = self.gene_subquery(&m)?;
            joins.push(left_join(derived(sub, &alias), on_obs(&alias)));
        }
        for (m, fns, alias) in self.reductions.clone() {
            let sub = self.reduction_subquery(&m, &fns)?;
            joins.push(left_join(derived(sub, &alias), on_obs(&alias)));
        }
        for (t, alias) in self.embeddings.clone() {
            joins.push(left_join(self.table(&t, Some(&alias)), on_obs(&alias)));
        }
        from.relation(rel).joins(joins);
        Ok(from)
    }
}
