//! What drivers send that DataFusion does not plan as PostgreSQL would, on top of the rewrites
//! `datafusion-pg-catalog` already applies.
//!
//! Before parsing ([`preprocess`]):
//! - pgJDBC's type lookup compares `typinput` with `'pg_catalog.array_in'::regproc`. The catalog
//!   keeps `typinput` as a procedure name, while the parser's own rules turn a `::regproc` cast
//!   into an oid lookup; so the cast is replaced by the name before those rules run.
//!
//! After parsing ([`rewrite`]):
//! - `LIKE … ESCAPE '/'` (SQLAlchemy): the pattern is re-escaped with backslashes, DataFusion's
//!   only escape character.
//! - A correlated scalar subquery that selects one column without aggregating (pgJDBC's
//!   `getTypeInfo`: `(SELECT c.relkind = 'c' FROM pg_class c WHERE c.oid = t.typrelid)`):
//!   DataFusion wants it aggregated; it looks up one catalog row by its key, so `max(…)` of it is
//!   the same value. Only done in queries that read `pg_catalog`.
//! - Catalog queries about keys, indexes and inheritance (pgJDBC `getPrimaryKeys`/`getIndexInfo`,
//!   psqlODBC `SQLPrimaryKeys`, SQLAlchemy's inspector) join tables that are always empty here
//!   (AnnData tables have no keys or indexes); when such a table is inner-joined in the outermost
//!   FROM, the answer
//!   is the empty result with the query's columns.
//! - `CASE` branches guarded by catalog facts that are constant in annql (no column defaults,
//!   identities or collations: `atthasdef`, `attidentity != ''`, `attcollation != 0`) are
//!   dropped. SQLAlchemy's `get_columns` guards correlated subqueries with them, and DataFusion
//!   cannot plan a subquery inside `CASE`; the guard is false on every row, so the branch never
//!   applies.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, JoinOperator, Query, SelectItem, SetExpr, Statement, TableFactor, Value, ValueWithSpan,
    visit_expressions_mut, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Catalog tables that hold no rows in annql.
const EMPTY_CATALOG_TABLES: [&str; 7] = [
    "pg_index",
    "pg_constraint",
    "pg_inherits",
    "pg_trigger",
    "pg_depend",
    "pg_rewrite",
    "pg_sequence",
];

/// Applies the text replacements above to a query string before it is parsed.
pub fn preprocess(sql: &str) -> std::borrow::Cow<'_, str> {
    const ARRAY_IN: &str = "'pg_catalog.array_in'::regproc";
    if sql.contains(ARRAY_IN) {
        sql.replace(ARRAY_IN, "'array_in'").into()
    } else {
        sql.into()
    }
}

/// Applies the rewrites above to a parsed statement.
pub fn rewrite(statement: &mut Statement) {
    let reads_catalog = reads_pg_catalog(statement);
    // The visitor never breaks, so there is no result to look at.
    let _ = visit_expressions_mut(statement, |e: &mut Expr| {
        match e {
            Expr::Like {
                pattern,
                escape_char,
                ..
            }
            | Expr::ILike {
                pattern,
                escape_char,
                ..
            } => {
                if let Some(esc) = escape_char.as_ref().and_then(single_char)
                    && esc != '\\'
                    && reescape_literals(pattern, esc)
                {
                    *escape_char = None;
                }
            }
            Expr::Subquery(q) if reads_catalog => aggregate_single_column(q),
            Expr::Case { .. } if reads_catalog => fold_constant_guards(e),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Re-escapes the string literals of a pattern (`'pg/_' || '%'`); false if it has other parts.
fn reescape_literals(pattern: &mut Expr, esc: char) -> bool {
    match pattern {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(p),
            ..
        }) => {
            *p = reescape(p, esc);
            true
        }
        Expr::BinaryOp {
            left,
            op: datafusion::sql::sqlparser::ast::BinaryOperator::StringConcat,
            right,
        } => reescape_literals(left, esc) && reescape_literals(right, esc),
        Expr::Nested(e) => reescape_literals(e, esc),
        _ => false,
    }
}

fn single_char(v: &ValueWithSpan) -> Option<char> {
    match &v.value {
        Value::SingleQuotedString(s) if s.chars().count() == 1 => s.chars().next(),
        _ => None,
    }
}

/// `pg/_%` with escape `/` → `pg\_%`.
fn reescape(pattern: &str, esc: char) -> String {
    let mut out = String::with_capacity(pattern.len() + 2);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == esc {
            if let Some(n) = chars.next() {
                out.push('\\');
                out.push(n);
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

fn reads_pg_catalog(statement: &Statement) -> bool {
    let found = visit_relations(statement, |name| {
        let text = name.to_string().to_ascii_lowercase();
        if text.starts_with("pg_catalog.") || text.starts_with("pg_") {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found.is_break()
}

/// `(SELECT x FROM … WHERE …)` → `(SELECT max(x) FROM … WHERE …)` when it has one plain column.
fn aggregate_single_column(q: &mut Query) {
    let SetExpr::Select(select) = q.body.as_mut() else {
        return;
    };
    if select.projection.len() != 1 || select.having.is_some() {
        return;
    }
    if !matches!(
        select.group_by,
        datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(ref e, _) if e.is_empty()
    ) {
        return;
    }
    let (expr, alias) = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) => (e, None),
        SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.clone())),
        _ => return,
    };
    let text = expr.to_string();
    let lower = text.to_ascii_lowercase();
    if [
        "max(",
        "min(",
        "count(",
        "sum(",
        "avg(",
        "bool_or(",
        "bool_and(",
        "array_agg(",
    ]
    .iter()
    .any(|f| lower.contains(f))
    {
        return;
    }
    let wrapped = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("max({text})"))
        .and_then(|mut p| p.parse_expr());
    if let Ok(w) = wrapped {
        select.projection[0] = match alias {
            Some(alias) => SelectItem::ExprWithAlias { expr: w, alias },
            None => SelectItem::UnnamedExpr(w),
        };
    }
}

/// The value a `pg_attribute` column has on every row of annql's catalog, by its name (catalog
/// column names carry their table's prefix, so the name alone identifies it).
fn constant_catalog_column(name: &str) -> Option<Value> {
    match name {
        "atthasdef" => Some(Value::Boolean(false)),
        "attidentity" | "attgenerated" => Some(Value::SingleQuotedString(String::new())),
        "attcollation" => Some(Value::Number("0".into(), false)),
        _ => None,
    }
}

/// Drops the `WHEN` branches of a searched `CASE` whose condition is false given
/// [`constant_catalog_column`]; the `CASE` becomes its `ELSE` (or NULL) when none is left.
fn fold_constant_guards(case: &mut Expr) {
    let Expr::Case {
        operand: None,
        conditions,
        else_result,
        ..
    } = case
    else {
        return;
    };
    conditions.retain(|w| guard_value(&w.condition) != Some(false));
    if conditions.is_empty() {
        *case = else_result
            .take()
            .map(|e| *e)
            .unwrap_or_else(|| Expr::value(Value::Null));
    }
}

/// The truth of a guard when it follows from constant catalog columns; None when unknown.
/// NULL counts as false, as it does for `WHEN`.
fn guard_value(e: &Expr) -> Option<bool> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator as Op, UnaryOperator};
    match e {
        Expr::Nested(e) => guard_value(e),
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => Some(*b),
            Value::Null => Some(false),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => guard_value(expr).map(|b| !b),
        Expr::BinaryOp {
            left,
            op: Op::And,
            right,
        } => match (guard_value(left), guard_value(right)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::BinaryOp {
            left,
            op: Op::Or,
            right,
        } => match (guard_value(left), guard_value(right)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::BinaryOp { left, op, right } if matches!(op, Op::Eq | Op::NotEq) => {
            let (a, b) = (constant_operand(left)?, constant_operand(right)?);
            Some((a == b) == matches!(op, Op::Eq))
        }
        column => match constant_operand(column)? {
            Value::Boolean(b) => Some(b),
            _ => None,
        },
    }
}

/// A literal, or a constant catalog column, as a value.
fn constant_operand(e: &Expr) -> Option<Value> {
    match e {
        Expr::Nested(e) => constant_operand(e),
        Expr::Value(v) if !matches!(v.value, Value::Null | Value::Placeholder(_)) => {
            Some(v.value.clone())
        }
        Expr::Identifier(i) => constant_catalog_column(&i.value.to_ascii_lowercase()),
        Expr::CompoundIdentifier(parts) => {
            constant_catalog_column(&parts.last()?.value.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Whether the query's rows come through a catalog table annql keeps empty: one of them is in the
/// outermost FROM (or a derived table there) joined as an inner join, so the answer has no rows.
pub fn reads_empty_catalog(statement: &Statement) -> bool {
    match statement {
        Statement::Query(q) => query_rows_need_empty(q),
        _ => false,
    }
}

fn query_rows_need_empty(q: &Query) -> bool {
    let SetExpr::Select(select) = q.body.as_ref() else {
        return false;
    };
    select.from.iter().any(|twj| {
        factor_is_empty(&twj.relation)
            || twj.joins.iter().any(|j| {
                matches!(
                    j.join_operator,
                    JoinOperator::Inner(_) | JoinOperator::Join(_) | JoinOperator::CrossJoin(_)
                ) && factor_is_empty(&j.relation)
            })
    })
}

fn factor_is_empty(f: &TableFactor) -> bool {
    match f {
        TableFactor::Table { name, .. } => {
            let last = name
                .0
                .last()
                .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
                // A name always has a part; "" would match no catalog table anyway.
                .unwrap_or_default();
            EMPTY_CATALOG_TABLES.contains(&last.as_str())
        }
        TableFactor::Derived { subquery, .. } => query_rows_need_empty(subquery),
        _ => false,
    }
}

/// The column names of a query's outermost SELECT, as PostgreSQL would name them.
pub fn output_columns(statement: &Statement) -> Option<Vec<String>> {
    let Statement::Query(q) = statement else {
        return None;
    };
    let mut body = q.body.as_ref();
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_ref();
    }
    let SetExpr::Select(select) = body else {
        return None;
    };
    let mut names = Vec::new();
    for item in &select.projection {
        let name = match item {
            SelectItem::ExprWithAlias { alias, .. } => ident(alias),
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => ident(i),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => parts.last().map(ident)?,
            SelectItem::UnnamedExpr(Expr::Function(f)) => f
                .name
                .0
                .last()
                .map(|p| p.to_string().to_ascii_lowercase())
                .unwrap_or_else(|| "?column?".into()),
            SelectItem::UnnamedExpr(_) => "?column?".into(),
            // `SELECT *` over tables we do not plan: the columns are unknown.
            _ => return None,
        };
        names.push(name);
    }
    Some(names)
}

fn ident(i: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    fn parse(sql: &str) -> Statement {
        PostgresCompatibilityParser::new()
            .parse(sql)
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_else(|| {
                Statement::Query(
                    Parser::new(&PostgreSqlDialect {})
                        .try_with_sql("SELECT 1")
                        .and_then(|mut p| p.parse_query())
                        .unwrap_or_else(|e| panic!("{e}")),
                )
            })
    }

    #[test]
    fn like_escape() {
        assert_eq!(reescape("pg/_%", '/'), "pg\\_%");
        let mut s =
            parse("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg/_%' ESCAPE '/'");
        rewrite(&mut s);
        let text = s.to_string();
        assert!(
            text.contains("NOT LIKE 'pg\\_%'") && !text.contains("ESCAPE"),
            "{text}"
        );
        let mut s = parse(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg/_' || '%' ESCAPE '/'",
        );
        rewrite(&mut s);
        assert!(!s.to_string().contains("ESCAPE"), "{s}");
    }

    #[test]
    fn catalog_subquery_aggregated() {
        let mut s = parse(
            "SELECT t.typname FROM pg_catalog.pg_type t WHERE t.typrelid = 0 OR (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid)",
        );
        rewrite(&mut s);
        assert!(s.to_string().contains("max(c.relkind = 'c')"), "{s}");
    }

    #[test]
    fn constant_guards_drop_case_branches() {
        let mut s = parse(
            "SELECT CASE WHEN a.atthasdef THEN (SELECT d.adbin FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid) ELSE NULL END AS dflt, \
             CASE WHEN (a.attcollation != 0 AND (SELECT t.typcollation FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid) != a.attcollation) THEN 'x' END AS coll, \
             CASE WHEN a.attidentity != '' THEN 1 ELSE 2 END AS ident, \
             CASE WHEN a.attnum > 0 THEN 'kept' END AS kept \
             FROM pg_catalog.pg_attribute a",
        );
        rewrite(&mut s);
        let text = s.to_string();
        assert!(
            !text.contains("SELECT d.adbin") && !text.contains("typcollation"),
            "{text}"
        );
        assert!(
            text.contains("NULL AS dflt") && text.contains("NULL AS coll"),
            "{text}"
        );
        assert!(
            text.contains("2 AS ident") && text.contains("THEN 'kept'"),
            "{text}"
        );
        // A guard that depends on a parameter is left alone.
        let mut s =
            parse("SELECT CASE WHEN a.attidentity != $1 THEN 1 END FROM pg_catalog.pg_attribute a");
        rewrite(&mut s);
        assert!(s.to_string().contains("CASE WHEN"), "{s}");
    }

    #[test]
    fn empty_catalog_queries() {
        let s = parse(
            "SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM, ct.relname AS \"TABLE_NAME\" FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_index i ON ct.oid = i.indrelid",
        );
        assert!(reads_empty_catalog(&s));
        assert_eq!(
            output_columns(&s),
            Some(vec![
                "table_cat".into(),
                "table_schem".into(),
                "TABLE_NAME".into()
            ])
        );
        assert!(!reads_empty_catalog(&parse(
            "SELECT relname FROM pg_catalog.pg_class"
        )));
        assert!(!reads_empty_catalog(&parse(
            "SELECT c.relname, (SELECT max(s.seqstart) FROM pg_catalog.pg_sequence s) FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid"
        )));
    }
}
