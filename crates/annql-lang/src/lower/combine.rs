//! `join` and `union`: a block's query combined with another pipeline's, which is lowered on its
//! own. Apart from the block's `SELECT` because it wraps the finished query rather than adding
//! to it.

use annql_engine::datafusion::sql::sqlparser::ast::{
    self as sql, ExcludeSelectItem, Ident, Join, JoinConstraint, JoinOperator, ObjectName, Query,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, WildcardAdditionalOptions,
};
use annql_engine::datafusion::sql::unparser::ast::{
    DerivedRelationBuilder, QueryBuilder, RelationBuilder, SelectBuilder, TableWithJoinsBuilder,
};

use super::sql_ast::{derived, ident, table_alias};
use super::{internal, lower};
use crate::error::{Error, Result};
use crate::ir::{Bound, Combine};

/// `SELECT li.*, ji.* EXCLUDE (keys) FROM (q) li [LEFT] JOIN (other) ji USING (keys)`, or
/// `q UNION ALL BY NAME other`.
pub(super) fn combine(q: Query, with: &Combine, i: usize) -> Result<Query> {
    let other = |b: &Bound| -> Result<Query> {
        match lower(b)? {
            Statement::Query(q) => Ok(*q),
            _ => Err(Error::Internal(
                "a pipeline did not lower to a query".into(),
            )),
        }
    };
    let body = match with {
        Combine::Join { left, right, on } => {
            let using = JoinConstraint::Using(
                on.iter()
                    .map(|k| ObjectName::from(vec![ident(k)]))
                    .collect(),
            );
            let join = Join {
                relation: derived(other(right)?, &format!("j{i}")),
                global: false,
                join_operator: if *left {
                    JoinOperator::LeftOuter(using)
                } else {
                    JoinOperator::Join(using)
                },
            };
            let mut from = TableWithJoinsBuilder::default();
            let mut rel = RelationBuilder::default();
            let mut d = DerivedRelationBuilder::default();
            d.lateral(false)
                .subquery(Box::new(q))
                .alias(Some(table_alias(&format!("l{i}"))));
            rel.derived(d);
            from.relation(rel).joins(vec![join]);
            // `l.*, j.* EXCLUDE (keys)`: the keys come from the left side, as `USING` means, so
            // a left join's unmatched rows keep theirs (a bare `*` took them from the right).
            let qualified = |alias: String, exclude: Option<ExcludeSelectItem>| {
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(ObjectName::from(vec![
                        Ident::new(alias),
                    ])),
                    WildcardAdditionalOptions {
                        opt_exclude: exclude,
                        ..Default::default()
                    },
                )
            };
            let keys = on
                .iter()
                .map(|k| ObjectName::from(vec![ident(k)]))
                .collect();
            let mut select = SelectBuilder::default();
            select
                .projection(vec![
                    qualified(format!("l{i}"), None),
                    qualified(format!("j{i}"), Some(ExcludeSelectItem::Multiple(keys))),
                ])
                .from(vec![from]);
            SetExpr::Select(Box::new(select.build().map_err(internal)?))
        }
        Combine::Union(right) => SetExpr::SetOperation {
            op: sql::SetOperator::Union,
            set_quantifier: sql::SetQuantifier::AllByName,
            left: Box::new(SetExpr::Query(Box::new(q))),
            right: Box::new(SetExpr::Query(Box::new(other(right)?))),
        },
    };
    let mut query = QueryBuilder::default();
    query.body(Box::new(body));
    query.build().map_err(internal)
}
