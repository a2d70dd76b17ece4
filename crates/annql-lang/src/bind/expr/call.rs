//! Function calls: scalar functions (checked against [`FUNCTIONS`]), reductions over a group
//! (in `agg`), and per-cell reductions over the genes of a matrix (`sum(layers.counts)`). Apart
//! from the other expressions because it owns the table of functions and their types.

use crate::ast::{BinaryOp, Expr, Literal, Name, Span};
use crate::bind::block::BlockState;
use crate::bind::{Binder, Ctx};
use crate::catalog::Ty;
use crate::error::{Diagnostic, did_you_mean};
use crate::ir::{AggFn, BExpr, CellFn, Genes, MatrixRef};

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

impl Binder<'_> {
    /// A call: a reduction over the group (in `agg`), over a cell's genes, or a scalar function.
    pub(super) fn bind_call(
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
                return self.cell_reduction(f, m, span);
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
            let d = Diagnostic::new(format!("unknown function `{fname}`"), name.span)
                .with_kind(annql_syntax::Kind::UnknownFunction);
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

    /// `sum`, `nnz` or `mean` of matrix `m` per cell: a reduction over its genes (`mean` is the
    /// sum over the number of genes selected, which a predicate leaves unknown: an error at
    /// `span`).
    fn cell_reduction(&mut self, f: AggFn, m: MatrixRef, span: Span) -> (BExpr, Ty) {
        match f {
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
        }
    }
}
