//! `join` and `union`: the keys of a join, and the columns of the rows that come out, checked
//! against both sides. Apart from the stages because it is the one place where two pipelines'
//! columns meet.

use super::Binder;
use crate::ast::{Name, Span};
use crate::catalog::{Column, Ty};
use crate::error::{Diagnostic, did_you_mean};

impl Binder<'_> {
    /// The keys of a join, each a column of both sides (errors name the side that lacks it).
    pub(super) fn join_keys(
        &mut self,
        on: &[Name],
        left: &[Column],
        right: &[Column],
        stage: Span,
    ) -> Vec<String> {
        if on.is_empty() {
            self.errors
                .push(Diagnostic::new("`join` needs `on key, …`", stage));
        }
        let mut keys = Vec::new();
        for k in on {
            for (cols, side) in [(left, "the rows so far"), (right, "the joined pipeline")] {
                if !cols.iter().any(|c| c.name == k.text) {
                    let d = Diagnostic::new(
                        format!("join key `{}` is not a column of {side}", k.text),
                        k.span,
                    );
                    let d = match did_you_mean(&k.text, cols.iter().map(|c| c.name.as_str())) {
                        Some(h) => d.with_hint(h),
                        None => d,
                    };
                    self.errors.push(d);
                }
            }
            keys.push(k.text.clone());
        }
        keys
    }

    /// The columns after a join: the left side's, then the right side's other than the keys (a
    /// name on both sides is an error at `stage`).
    pub(super) fn joined_columns(
        &mut self,
        left_cols: Vec<Column>,
        right_cols: &[Column],
        keys: &[String],
        stage: Span,
    ) -> Vec<Column> {
        let mut cols = left_cols.clone();
        for c in right_cols.iter().filter(|c| !keys.contains(&c.name)) {
            if left_cols.iter().any(|l| l.name == c.name) {
                self.errors.push(
                    Diagnostic::new(
                        format!("column `{}` is on both sides of the join", c.name),
                        stage,
                    )
                    .with_hint("join on it, or select or rename it on one side".to_string()),
                );
            } else {
                cols.push(c.clone());
            }
        }
        cols
    }

    /// The columns after a union: the left side's, then those only the right side has (a column
    /// of both sides with incompatible types is an error at `stage`).
    pub(super) fn union_columns(
        &mut self,
        mut cols: Vec<Column>,
        right_cols: Vec<Column>,
        stage: Span,
    ) -> Vec<Column> {
        for c in right_cols {
            match cols.iter().find(|l| l.name == c.name) {
                Some(l) if !compatible(l.ty, c.ty) => self.errors.push(Diagnostic::new(
                    format!(
                        "column `{}` is {} on one side of the union and {} on the other",
                        c.name,
                        l.ty.describe(),
                        c.ty.describe()
                    ),
                    stage,
                )),
                Some(_) => {}
                None => cols.push(c),
            }
        }
        cols
    }
}

/// Whether two coarse types can share a column.
fn compatible(a: Ty, b: Ty) -> bool {
    a == b || matches!(a, Ty::Unknown | Ty::Other) || matches!(b, Ty::Unknown | Ty::Other)
}
