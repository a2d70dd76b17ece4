//! Expressions: literals, columns (of the input, the output, the gene table or an embedding),
//! operators, scalar functions, null and NaN tests, and reductions over a group (zero-aware:
//! `frac` and `nnz` spelled in SQL).

use annql_engine::datafusion::sql::sqlparser::ast::{
    self as sql, BinaryOperator, FunctionArg, FunctionArgExpr, UnaryOperator, Value,
};

use super::sql_ast::{call, function, ident, int, nested, nnz, number, qcol, string};
use super::{Input, Lowerer};
use crate::ast::{BinaryOp, Literal, Test, UnaryOp};
use crate::error::{Error, Result};
use crate::ir::{AggFn, BExpr, ColRef};

impl Lowerer<'_> {
    fn column(&mut self, c: &ColRef) -> sql::Expr {
        match c {
            ColRef::Input(name) => match &self.input {
                Input::Cells => qcol("o", name),
                _ => sql::Expr::Identifier(ident(name)),
            },
            ColRef::Output(name) => sql::Expr::Identifier(ident(name)),
            ColRef::Var(name) => {
                self.uses_var = true;
                qcol("v", name)
            }
            ColRef::Embedding { table, column } => {
                let alias = match self.embeddings.iter().find(|(t, _)| t == table) {
                    Some((_, a)) => a.clone(),
                    None => {
                        let a = format!("e{}", self.embeddings.len() + 1);
                        self.embeddings.push((table.clone(), a.clone()));
                        a
                    }
                };
                qcol(&alias, column)
            }
        }
    }

    pub(super) fn expr(&mut self, e: &BExpr) -> Result<sql::Expr> {
        Ok(match e {
            BExpr::Lit(l) => literal(l),
            BExpr::Col(c) => self.column(c),
            BExpr::Value(m) => self.value(m)?,
            BExpr::Reduce(f, m) => self.reduce(*f, m),
            BExpr::Agg(f, arg) => {
                let arg = match arg {
                    Some(a) => Some(self.expr(a)?),
                    None => None,
                };
                aggregate(*f, arg)
            }
            BExpr::Func(name, args) => {
                let args = args.iter().map(|a| self.expr(a)).collect::<Result<_>>()?;
                call(name, args)
            }
            BExpr::Unary(op, a) => sql::Expr::UnaryOp {
                op: match op {
                    UnaryOp::Not => UnaryOperator::Not,
                    UnaryOp::Neg => UnaryOperator::Minus,
                },
                expr: Box::new(nested(self.expr(a)?)),
            },
            BExpr::Binary(op, l, r) => sql::Expr::BinaryOp {
                left: Box::new(nested(self.expr(l)?)),
                op: binary_op(*op)?,
                right: Box::new(nested(self.expr(r)?)),
            },
            BExpr::InList(e, list, negated) => sql::Expr::InList {
                expr: Box::new(nested(self.expr(e)?)),
                list: list.iter().map(|x| self.expr(x)).collect::<Result<_>>()?,
                negated: *negated,
            },
            BExpr::Between(e, lo, hi, negated) => sql::Expr::Between {
                expr: Box::new(nested(self.expr(e)?)),
                negated: *negated,
                low: Box::new(nested(self.expr(lo)?)),
                high: Box::new(nested(self.expr(hi)?)),
            },
            BExpr::Test(t, a) => {
                let a = self.expr(a)?;
                match t {
                    Test::Null => sql::Expr::IsNull(Box::new(nested(a))),
                    Test::NotNull => sql::Expr::IsNotNull(Box::new(nested(a))),
                    Test::Nan => call("isnan", vec![a]),
                    Test::NotNan => sql::Expr::UnaryOp {
                        op: UnaryOperator::Not,
                        expr: Box::new(call("isnan", vec![a])),
                    },
                }
            }
        })
    }
}

fn literal(l: &Literal) -> sql::Expr {
    match l {
        Literal::Int(i) => int(*i),
        Literal::Float(s) => number(s.clone()),
        Literal::Str(s) => string(s),
        Literal::Bool(b) => sql::Expr::Value(Value::Boolean(*b).with_empty_span()),
        Literal::Null => sql::Expr::Value(Value::Null.with_empty_span()),
    }
}

fn aggregate(f: AggFn, arg: Option<sql::Expr>) -> sql::Expr {
    let Some(arg) = arg else {
        return function(
            "count",
            vec![FunctionArg::Unnamed(FunctionArgExpr::Wildcard)],
        );
    };
    match f {
        AggFn::Count => call("count", vec![arg]),
        AggFn::Sum => call("sum", vec![arg]),
        AggFn::Mean => call("avg", vec![arg]),
        AggFn::Var => call("var_samp", vec![arg]),
        AggFn::Std => call("stddev", vec![arg]),
        AggFn::Min => call("min", vec![arg]),
        AggFn::Max => call("max", vec![arg]),
        AggFn::Median => call("median", vec![arg]),
        // `CAST(count(*) FILTER (WHERE pred) AS DOUBLE) / nullif(count(*), 0)`: the form the
        // fused aggregation runs when `pred` compares a matrix value with a constant.
        AggFn::Frac => {
            let mut passing = function(
                "count",
                vec![FunctionArg::Unnamed(FunctionArgExpr::Wildcard)],
            );
            if let sql::Expr::Function(f) = &mut passing {
                f.filter = Some(Box::new(arg));
            }
            let passing = sql::Expr::Cast {
                kind: sql::CastKind::Cast,
                expr: Box::new(passing),
                data_type: sql::DataType::Double(sql::ExactNumberInfo::None),
                array: false,
                format: None,
            };
            let all = function(
                "count",
                vec![FunctionArg::Unnamed(FunctionArgExpr::Wildcard)],
            );
            sql::Expr::BinaryOp {
                left: Box::new(passing),
                op: BinaryOperator::Divide,
                right: Box::new(call("nullif", vec![all, number("0".into())])),
            }
        }
        AggFn::Nnz => nnz(arg),
    }
}

fn binary_op(op: BinaryOp) -> Result<BinaryOperator> {
    Ok(match op {
        BinaryOp::Or => BinaryOperator::Or,
        BinaryOp::And => BinaryOperator::And,
        BinaryOp::Eq => BinaryOperator::Eq,
        BinaryOp::Ne => BinaryOperator::NotEq,
        BinaryOp::Lt => BinaryOperator::Lt,
        BinaryOp::Le => BinaryOperator::LtEq,
        BinaryOp::Gt => BinaryOperator::Gt,
        BinaryOp::Ge => BinaryOperator::GtEq,
        BinaryOp::Add => BinaryOperator::Plus,
        BinaryOp::Sub => BinaryOperator::Minus,
        BinaryOp::Mul => BinaryOperator::Multiply,
        BinaryOp::Div => BinaryOperator::Divide,
        BinaryOp::Mod => BinaryOperator::Modulo,
        BinaryOp::In | BinaryOp::NotIn | BinaryOp::Range => {
            return Err(Error::Internal(format!(
                "`{}` reached lowering as a plain operator",
                op.symbol()
            )));
        }
    })
}
