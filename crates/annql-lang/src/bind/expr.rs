//! Expressions: literals, operators, `in` lists and ranges, `let` constants, the items of
//! `derive`/`select`/`group` and the reductions of `agg`, each with its coarse type checked. Calls
//! and names (which may reach matrices and genes) are its parts.

use std::borrow::Cow;

use annql_engine::model::sql_name;

use super::block::BlockState;
use super::{Binder, Ctx};
use crate::ast::{BinaryOp, Expr, ExprKind, Item, Literal, Span, Test, UnaryOp};
use crate::catalog::Ty;
use crate::error::Diagnostic;
use crate::ir::{BExpr, visit};

/// Names: paths resolved to columns, genes, matrices and embeddings.
mod names;

/// Function calls: scalar functions, group reductions, and per-cell reductions over genes.
mod call;

/// Matrices named in expressions and their gene selections.
mod genes;

impl Binder<'_> {
    /// An item of `derive`/`select`/`group`/`agg`: its output name and bound expression.
    pub(super) fn bind_item(
        &mut self,
        item: &Item,
        state: &BlockState,
        ctx: Ctx,
    ) -> (String, (BExpr, Ty)) {
        let e = self.bind_expr(&item.expr, state, ctx);
        (item_name(self.source, item), e)
    }

    /// The items of `agg`, each a reduction over the group; the group `keys` are in scope.
    pub(super) fn bind_aggs(
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

    /// An expression and its coarse type.
    pub(super) fn bind_expr(&mut self, e: &Expr, st: &BlockState, ctx: Ctx) -> (BExpr, Ty) {
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

    /// An infix operator; `in` takes a list or a range.
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

    /// The value of `e` if it names a `let` constant, else `e`.
    pub(super) fn resolve_let<'e>(&self, e: &'e Expr) -> Cow<'e, Expr> {
        if let ExprKind::Path(p) = &e.kind
            && p.len() == 1
            && let Some(v) = self.lets.get(&p[0].text)
        {
            return Cow::Owned(v.clone());
        }
        Cow::Borrowed(e)
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
