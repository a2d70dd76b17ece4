//! Constructors of sqlparser's AST nodes (identifiers, table relations, joins, operators,
//! literals, function calls), so the lowering reads as the SQL it builds.

use annql_engine::datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use annql_engine::datafusion::sql::sqlparser::ast::{
    self as sql, BinaryOperator, CaseWhen, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, Ident, Join, JoinConstraint, JoinOperator, ObjectName,
    Query, SelectItem, TableAlias, TableFactor, UnaryOperator, Value,
};
use annql_engine::datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use annql_engine::datafusion::sql::unparser::ast::TableRelationBuilder;
use annql_engine::model::OBS_ID;

/// An identifier, quoted unless it is a plain lower-case name that is not a keyword (so SQL's
/// case folding leaves it alone and the rendered SQL reads back the same).
pub fn ident(name: &str) -> Ident {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !ALL_KEYWORDS.contains(&name.to_ascii_uppercase().as_str());
    if plain {
        Ident::new(name)
    } else {
        Ident::with_quote('"', name)
    }
}

pub(super) fn qcol(alias: &str, name: &str) -> sql::Expr {
    sql::Expr::CompoundIdentifier(vec![Ident::new(alias), ident(name)])
}

pub(super) fn table_alias(name: &str) -> TableAlias {
    TableAlias {
        explicit: false,
        name: Ident::new(name),
        columns: Vec::new(),
        at: None,
    }
}

pub(super) fn table_builder(
    dataset: &str,
    table: &str,
    alias: Option<&str>,
) -> TableRelationBuilder {
    let mut t = TableRelationBuilder::default();
    t.name(ObjectName::from(vec![ident(dataset), ident(table)]))
        .alias(alias.map(table_alias));
    t
}

pub(super) fn derived(q: Query, alias: &str) -> TableFactor {
    TableFactor::Derived {
        lateral: false,
        subquery: Box::new(q),
        alias: Some(table_alias(alias)),
        sample: None,
    }
}

pub(super) fn join_using(relation: TableFactor, column: &str) -> Join {
    Join {
        relation,
        global: false,
        join_operator: JoinOperator::Join(JoinConstraint::Using(vec![ObjectName::from(vec![
            Ident::new(column),
        ])])),
    }
}

pub(super) fn left_join(relation: TableFactor, on: sql::Expr) -> Join {
    Join {
        relation,
        global: false,
        join_operator: JoinOperator::LeftOuter(JoinConstraint::On(on)),
    }
}

pub(super) fn on_obs(alias: &str) -> sql::Expr {
    eq(qcol(alias, OBS_ID), qcol("o", OBS_ID))
}

pub(super) fn eq(l: sql::Expr, r: sql::Expr) -> sql::Expr {
    sql::Expr::BinaryOp {
        left: Box::new(l),
        op: BinaryOperator::Eq,
        right: Box::new(r),
    }
}

pub(super) fn and(l: sql::Expr, r: sql::Expr) -> sql::Expr {
    sql::Expr::BinaryOp {
        left: Box::new(nested(l)),
        op: BinaryOperator::And,
        right: Box::new(nested(r)),
    }
}

pub(super) fn conjunction(mut filters: Vec<sql::Expr>) -> Option<sql::Expr> {
    if filters.is_empty() {
        return None;
    }
    let first = filters.remove(0);
    Some(filters.into_iter().fold(first, and))
}

/// Parenthesises compound expressions, so the rendered SQL keeps the tree's precedence.
pub(super) fn nested(e: sql::Expr) -> sql::Expr {
    match e {
        sql::Expr::BinaryOp { .. }
        | sql::Expr::UnaryOp { .. }
        | sql::Expr::InList { .. }
        | sql::Expr::Between { .. } => sql::Expr::Nested(Box::new(e)),
        other => other,
    }
}

pub(super) fn in_or_eq(e: sql::Expr, mut list: Vec<sql::Expr>) -> sql::Expr {
    if list.len() == 1 {
        eq(e, list.remove(0))
    } else {
        sql::Expr::InList {
            expr: Box::new(e),
            list,
            negated: false,
        }
    }
}

pub(super) fn number(s: String) -> sql::Expr {
    sql::Expr::Value(Value::Number(s, false).with_empty_span())
}

pub(super) fn int(i: i64) -> sql::Expr {
    if i < 0 {
        sql::Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: Box::new(number(i.unsigned_abs().to_string())),
        }
    } else {
        number(i.to_string())
    }
}

pub(super) fn string(s: &str) -> sql::Expr {
    sql::Expr::Value(Value::SingleQuotedString(s.to_string()).with_empty_span())
}

pub(super) fn coalesce_zero(e: sql::Expr) -> sql::Expr {
    call("coalesce", vec![e, number("0".into())])
}

pub(super) fn call(name: &str, args: Vec<sql::Expr>) -> sql::Expr {
    function(
        name,
        args.into_iter()
            .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
            .collect(),
    )
}

pub(super) fn function(name: &str, args: Vec<FunctionArg>) -> sql::Expr {
    sql::Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args,
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

/// `count(CASE WHEN e <> 0 THEN 1 END)`: non-zero values.
pub(super) fn nnz(e: sql::Expr) -> sql::Expr {
    let nonzero = sql::Expr::BinaryOp {
        left: Box::new(nested(e)),
        op: BinaryOperator::NotEq,
        right: Box::new(number("0".into())),
    };
    call("count", vec![case_when(nonzero, number("1".into()), None)])
}

pub(super) fn case_when(
    cond: sql::Expr,
    then: sql::Expr,
    otherwise: Option<sql::Expr>,
) -> sql::Expr {
    sql::Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions: vec![CaseWhen {
            condition: cond,
            result: then,
        }],
        else_result: otherwise.map(Box::new),
    }
}

/// `expr AS name`, or just `expr` when it is a column already called `name`.
pub(super) fn item(e: sql::Expr, name: &str) -> SelectItem {
    let same = match &e {
        sql::Expr::Identifier(i) => i.value == name,
        sql::Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| i.value == name),
        _ => false,
    };
    if same {
        SelectItem::UnnamedExpr(e)
    } else {
        SelectItem::ExprWithAlias {
            expr: e,
            alias: ident(name),
        }
    }
}
