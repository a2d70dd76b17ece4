//! A sort stays in effect after the block it was written in ends (PRQL's rule): through later
//! `where`, `derive`, `select` and `take` until a `group`, `agg`, `join` or `union`. SQL forgets
//! the order of a subquery, so each block that reads a sorted one sorts again, by the same keys
//! rewritten over its input. A key that is not an output column of the sorted block (dropped by
//! a `select`, or an expression) travels as a hidden output column, left out of what users see.

use super::BlockState;
use crate::ast::Span;
use crate::bind::Binder;
use crate::catalog::Ty;
use crate::error::Diagnostic;
use crate::ir::{BExpr, ColRef};

/// The name of the hidden columns that carry sort keys from one block to the next.
const HIDDEN_PREFIX: &str = "__sort_key_";

impl BlockState {
    /// This block's sort keys over its output columns, for the block that reads it. Keys that
    /// are no output column are added to the output as hidden ones (a grouped block's output can
    /// only be keys and aggregates: there such a key is an error).
    pub(super) fn carry_order(&mut self, b: &mut Binder<'_>) -> Vec<(BExpr, bool, Span)> {
        let defs = self.output_definitions();
        let mut carried = Vec::new();
        for (key, desc, span) in std::mem::take(&mut self.order) {
            if let Some(e) = lift(&key, &defs) {
                carried.push((e, desc, span));
                self.order.push((key, desc, span));
                continue;
            }
            if self.group.is_some() {
                b.errors.push(
                    Diagnostic::new(
                        "this sort key is not a column of the grouped rows, so the order cannot be kept past the next stage",
                        span,
                    )
                    .with_hint("sort by a key or an aggregate of the `agg`"),
                );
                continue;
            }
            b.hidden_keys += 1;
            let name = format!("{HIDDEN_PREFIX}{}", b.hidden_keys);
            let column = (name.clone(), (key.clone(), Ty::Unknown));
            if self.projected {
                self.outputs.push(column);
            } else {
                self.derived.push(column);
            }
            self.hidden.push(name.clone());
            self.order.push((key, desc, span));
            carried.push((BExpr::Col(ColRef::Input(name)), desc, span));
        }
        carried
    }

    /// Each output column's name with the expressions that hold it, in this block's terms.
    fn output_definitions(&self) -> Vec<(String, BExpr)> {
        if self.projected {
            return self
                .outputs
                .iter()
                .flat_map(|(n, (e, _))| {
                    [
                        (n.clone(), e.clone()),
                        (n.clone(), BExpr::Col(ColRef::Output(n.clone()))),
                    ]
                })
                .collect();
        }
        let mut defs: Vec<(String, BExpr)> = self
            .input
            .iter()
            .filter(|c| !self.derived.iter().any(|(n, _)| *n == c.name))
            .map(|c| (c.name.clone(), BExpr::Col(ColRef::Input(c.name.clone()))))
            .collect();
        defs.extend(
            self.derived
                .iter()
                .map(|(n, (e, _))| (n.clone(), e.clone())),
        );
        defs
    }
}

/// `e` rewritten over the output columns `defs` (which the next block reads as its input), if
/// every column it needs is one of them.
fn lift(e: &BExpr, defs: &[(String, BExpr)]) -> Option<BExpr> {
    if let Some((n, _)) = defs.iter().find(|(_, d)| d == e) {
        return Some(BExpr::Col(ColRef::Input(n.clone())));
    }
    let boxed = |x: &BExpr| lift(x, defs).map(Box::new);
    let all = |xs: &[BExpr]| xs.iter().map(|x| lift(x, defs)).collect::<Option<Vec<_>>>();
    Some(match e {
        BExpr::Lit(l) => BExpr::Lit(l.clone()),
        BExpr::Func(name, args) => BExpr::Func(name.clone(), all(args)?),
        BExpr::Unary(op, a) => BExpr::Unary(*op, boxed(a)?),
        BExpr::Binary(op, l, r) => BExpr::Binary(*op, boxed(l)?, boxed(r)?),
        BExpr::InList(x, list, negated) => BExpr::InList(boxed(x)?, all(list)?, *negated),
        BExpr::Between(x, lo, hi, negated) => {
            BExpr::Between(boxed(x)?, boxed(lo)?, boxed(hi)?, *negated)
        }
        BExpr::Test(t, a) => BExpr::Test(*t, boxed(a)?),
        BExpr::Col(_) | BExpr::Value(_) | BExpr::Reduce(..) | BExpr::Agg(..) => return None,
    })
}
