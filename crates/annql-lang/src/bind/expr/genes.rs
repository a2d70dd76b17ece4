//! Matrices named in expressions (`X`, `layers.counts`, `raw.X`) and their gene selections: all
//! genes, a name, an id, a list, or a predicate over the gene table, each gene name checked
//! against the dataset.

use annql_engine::model::sql_name;

use crate::ast::{Expr, ExprKind, Literal, Name, Span};
use crate::bind::block::BlockState;
use crate::bind::{Binder, Ctx};
use crate::catalog::{Column, Ty};
use crate::error::{Diagnostic, did_you_mean};
use crate::ir::{BExpr, ColRef, Genes, MatrixRef};

impl Binder<'_> {
    /// `Some(Some(m))` if `e` names a matrix, `Some(None)` if it does but has errors, `None` if
    /// it is not a matrix.
    pub(super) fn matrix_arg(&mut self, e: &Expr, st: &BlockState) -> Option<Option<MatrixRef>> {
        let (path, sel) = match &e.kind {
            ExprKind::Path(p) => (p, None),
            ExprKind::Index(b, s) => match &b.kind {
                ExprKind::Path(p) => (p, Some(s.as_ref())),
                _ => return None,
            },
            _ => return None,
        };
        let (table, var_table) = self.matrix_table(path, st)?;
        Some(self.gene_selection(table, var_table, sel, e.span))
    }

    /// The entries table and gene table a path names, if it names a matrix.
    pub(super) fn matrix_table(&self, path: &[Name], st: &BlockState) -> Option<(String, String)> {
        if !st.cells {
            return None;
        }
        let parts: Vec<&str> = path.iter().map(|n| n.text.as_str()).collect();
        let found = match parts.as_slice() {
            ["X"] if !st.input.iter().any(|c| c.name == "X") => {
                ("x".to_string(), "var".to_string())
            }
            ["layers", l] => (format!("layers_{}", sql_name(l)), "var".to_string()),
            ["raw", "X"] | ["raw", "x"] => ("raw_x".to_string(), "raw_var".to_string()),
            _ => return None,
        };
        Some(found)
    }

    /// Resolves the selector of a matrix: none (all genes), a name, an id, a list, or a predicate
    /// over `var`.
    pub(super) fn gene_selection(
        &mut self,
        table: String,
        var_table: String,
        sel: Option<&Expr>,
        span: Span,
    ) -> Option<MatrixRef> {
        let mut ok = true;
        if !self.dataset.tables.contains_key(&table) {
            let avail: Vec<&str> = self.dataset.tables.keys().map(String::as_str).collect();
            let d = Diagnostic::new(format!("no matrix table `{table}` in this dataset"), span)
                .with_kind(annql_syntax::Kind::UnknownTable);
            let d = match did_you_mean(&table, avail) {
                Some(h) => d.with_hint(h),
                None => d,
            };
            self.errors.push(d);
            return None;
        }
        let genes = match sel {
            None => Genes::All,
            Some(s) => {
                let s = self.resolve_let(s).into_owned();
                match &s.kind {
                    ExprKind::Lit(Literal::Str(g)) => {
                        ok &= self.check_gene(&var_table, g, s.span);
                        Genes::Names(vec![g.clone()])
                    }
                    ExprKind::Lit(Literal::Int(i)) => Genes::Ids(vec![*i]),
                    ExprKind::List(items) => {
                        let mut names = Vec::new();
                        let mut ids = Vec::new();
                        for it in items {
                            let it = self.resolve_let(it).into_owned();
                            match &it.kind {
                                ExprKind::Lit(Literal::Str(g)) => {
                                    ok &= self.check_gene(&var_table, g, it.span);
                                    names.push(g.clone());
                                }
                                ExprKind::Lit(Literal::Int(i)) => ids.push(*i),
                                _ => {
                                    self.errors.push(Diagnostic::new("a gene list holds gene names (strings) or var_ids (integers)", it.span));
                                    ok = false;
                                }
                            }
                        }
                        if !names.is_empty() && !ids.is_empty() {
                            self.errors.push(Diagnostic::new(
                                "a gene list mixes names and var_ids",
                                s.span,
                            ));
                            ok = false;
                        }
                        if ids.is_empty() {
                            Genes::Names(names)
                        } else {
                            Genes::Ids(ids)
                        }
                    }
                    _ => {
                        let var_cols = self.gene_table(&var_table, s.span)?;
                        let mut vs = BlockState::new(var_cols, false);
                        vs.label = var_table.clone();
                        let (pred, ty) = self.bind_var_pred(&s, &vs);
                        self.check(ty, Ty::Bool, s.span, "a gene selection");
                        Genes::Where(Box::new(pred))
                    }
                }
            }
        };
        ok.then_some(MatrixRef {
            table,
            var_table,
            genes,
        })
    }

    /// A predicate over the gene table: its columns are `var.col` or bare `col`.
    fn bind_var_pred(&mut self, e: &Expr, vs: &BlockState) -> (BExpr, Ty) {
        let (x, t) = self.bind_expr(e, vs, Ctx::Row);
        fn to_var(e: BExpr) -> BExpr {
            match e {
                BExpr::Col(ColRef::Input(c)) => BExpr::Col(ColRef::Var(c)),
                BExpr::Unary(op, a) => BExpr::Unary(op, Box::new(to_var(*a))),
                BExpr::Test(t, a) => BExpr::Test(t, Box::new(to_var(*a))),
                BExpr::Binary(op, l, r) => {
                    BExpr::Binary(op, Box::new(to_var(*l)), Box::new(to_var(*r)))
                }
                BExpr::Func(n, a) => BExpr::Func(n, a.into_iter().map(to_var).collect()),
                BExpr::InList(e, l, n) => {
                    BExpr::InList(Box::new(to_var(*e)), l.into_iter().map(to_var).collect(), n)
                }
                BExpr::Between(e, l, h, n) => BExpr::Between(
                    Box::new(to_var(*e)),
                    Box::new(to_var(*l)),
                    Box::new(to_var(*h)),
                    n,
                ),
                other => other,
            }
        }
        (to_var(x), t)
    }

    /// The columns of the gene table `var_table`; an error at `span` when the dataset has none.
    pub(super) fn gene_table(&mut self, var_table: &str, span: Span) -> Option<Vec<Column>> {
        let cols = self.dataset.tables.get(var_table).cloned();
        if cols.is_none() {
            self.errors.push(
                Diagnostic::new(format!("no gene table `{var_table}` in this dataset"), span)
                    .with_kind(annql_syntax::Kind::UnknownTable),
            );
        }
        cols
    }

    /// Whether `gene` is a gene of `var_table` (true when the catalog does not know its genes);
    /// an error with a did-you-mean hint when not.
    fn check_gene(&mut self, var_table: &str, gene: &str, span: Span) -> bool {
        let Some(genes) = self.dataset.genes.get(var_table) else {
            return true;
        };
        if genes.iter().any(|g| g == gene) {
            return true;
        }
        let d = Diagnostic::new(format!("unknown gene `{gene}` in `{var_table}`"), span)
            .with_kind(annql_syntax::Kind::UnknownColumn);
        let d = match did_you_mean(gene, genes.iter().map(String::as_str)) {
            Some(h) => d.with_hint(h),
            None => d,
        };
        self.errors.push(d);
        false
    }
}
