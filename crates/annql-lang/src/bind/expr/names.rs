//! Names: a path (`cell_type`, `obs.col`, `var.col`, `gene`, `X["CD3E"]`, `obsm.X_umap[0]`)
//! resolved to a column of the input, a `let` constant, a matrix value or an embedding
//! component, with did-you-mean hints when it is none of them.

use annql_engine::model::{VAR_ID, sql_name};

use crate::ast::{Expr, ExprKind, Literal, Name, Span};
use crate::bind::block::BlockState;
use crate::bind::{Binder, Ctx};
use crate::catalog::{Column, Ty};
use crate::error::{Diagnostic, did_you_mean};
use crate::ir::{BExpr, ColRef};

const MATRIX_ROOTS: &[&str] = &["X", "layers", "raw", "obsm", "obs", "var", "gene"];

impl Binder<'_> {
    /// A path, with its `[…]` selector if any: a derived or output column, a `let` constant, a
    /// matrix value, a gene column, an embedding component, or a column of the input.
    pub(super) fn bind_path(
        &mut self,
        path: &[Name],
        sel: Option<&Expr>,
        span: Span,
        st: &BlockState,
        ctx: Ctx,
    ) -> (BExpr, Ty) {
        let parts: Vec<&str> = path.iter().map(|n| n.text.as_str()).collect();
        // Constants, derived columns and group keys shadow everything.
        if let [one] = parts.as_slice()
            && sel.is_none()
        {
            if let Some((_, e)) = st.derived.iter().rev().find(|(n, _)| n == one) {
                return e.clone();
            }
            if st.projected
                && let Some((n, (_, t))) = st.outputs.iter().find(|(n, _)| n == one)
            {
                return (BExpr::Col(ColRef::Output(n.clone())), *t);
            }
            if let Some(v) = self.lets.get(*one).cloned() {
                return self.bind_expr(&v, st, ctx);
            }
        }
        if st.projected {
            let names: Vec<&str> = st.outputs.iter().map(|(n, _)| n.as_str()).collect();
            let d = Diagnostic::new(format!("unknown column `{}`", parts.join(".")), span)
                .with_kind(annql_syntax::Kind::UnknownColumn);
            let d = match did_you_mean(&parts.join("."), names.iter().copied()) {
                Some(h) => d.with_hint(h),
                None => d.with_hint(format!("the columns here are: {}", names.join(", "))),
            };
            return self.err(d);
        }
        // Matrices: a value per cell (and gene).
        if let Some((table, var_table)) = self.matrix_table(path, st) {
            return match self.gene_selection(table, var_table, sel, span) {
                Some(m) => {
                    self.matrix_spans.push((m.clone(), span));
                    (BExpr::Value(m), Ty::Num)
                }
                None => (BExpr::Lit(Literal::Null), Ty::Unknown),
            };
        }
        if st.cells {
            match parts.as_slice() {
                ["obs", col] if sel.is_none() => return self.column(col, path[1].span, st),
                ["gene"] if sel.is_none() && !st.input.iter().any(|c| c.name == "gene") => {
                    return (BExpr::Col(ColRef::Var("var_name".into())), Ty::Str);
                }
                ["var", col] if sel.is_none() => {
                    let Some(cols) = self.gene_table("var", span) else {
                        return (BExpr::Lit(Literal::Null), Ty::Unknown);
                    };
                    return match cols.iter().find(|c| c.name == *col) {
                        Some(c) => (BExpr::Col(ColRef::Var(c.name.clone())), c.ty),
                        None => self.unknown(col, path[1].span, &cols, "var"),
                    };
                }
                ["obsm", key, rest @ ..] => return self.embedding(key, rest, sel, span),
                _ => {}
            }
        }
        let names_matrix = matches!(parts.as_slice(), ["X"] | ["layers", _] | ["raw", "X"]);
        if names_matrix && !st.cells && !st.input.iter().any(|c| c.name == parts[0]) {
            return self.err(
                Diagnostic::new(
                    format!("`{}` is not reachable here", parts.join(".")),
                    span,
                )
                .with_hint("matrices are read before the first `select`, `group`/`agg` or `take` of `from dataset`; move this stage up"),
            );
        }
        if let Some(s) = sel {
            return self.err(Diagnostic::new(
                format!(
                    "`{}` is not a matrix or an embedding, so it takes no `[…]`",
                    parts.join(".")
                ),
                s.span,
            ));
        }
        match parts.as_slice() {
            [col] => self.column(col, path[0].span, st),
            // In a gene predicate (`X[var.highly_variable]`) or `from dataset.var`.
            ["var", col] if st.input.iter().any(|c| c.name == VAR_ID) => {
                self.column(col, path[1].span, st)
            }
            _ => {
                let d = Diagnostic::new(format!("unknown name `{}`", parts.join(".")), span)
                    .with_kind(annql_syntax::Kind::UnknownColumn);
                self.err(d.with_hint("paths start with obs, var, X, layers, raw or obsm"))
            }
        }
    }

    /// A component of embedding `obsm.key`: `obsm.key[i]` or a dataframe column `obsm.key.col`.
    fn embedding(
        &mut self,
        key: &str,
        rest: &[&str],
        sel: Option<&Expr>,
        span: Span,
    ) -> (BExpr, Ty) {
        let table = format!("obsm_{}", sql_name(key));
        let Some(cols) = self.dataset.tables.get(&table).cloned() else {
            let avail: Vec<String> = self
                .dataset
                .tables
                .keys()
                .filter_map(|t| t.strip_prefix("obsm_").map(str::to_string))
                .collect();
            let d = Diagnostic::new(format!("no embedding `obsm.{key}`"), span)
                .with_kind(annql_syntax::Kind::UnknownTable);
            let d = match did_you_mean(&sql_name(key), avail.iter().map(String::as_str)) {
                Some(h) => d.with_hint(h),
                None => d.with_hint(format!("embeddings: {}", avail.join(", "))),
            };
            return self.err(d);
        };
        let column = match (rest, sel) {
            ([col], None) => col.to_string(),
            ([], Some(s)) => match &s.kind {
                ExprKind::Lit(Literal::Int(i)) => format!("{}_{i}", sql_name(key)),
                _ => {
                    return self.err(Diagnostic::new(
                        "an embedding component is a whole number: `obsm.X_umap[0]`",
                        s.span,
                    ));
                }
            },
            _ => {
                return self.err(Diagnostic::new("pick one component: `obsm.X_umap[0]` (or a column of a dataframe embedding: `obsm.meta.col`)", span));
            }
        };
        match cols.iter().find(|c| c.name == column) {
            Some(c) => (BExpr::Col(ColRef::Embedding { table, column }), c.ty),
            None => {
                let t = table.clone();
                self.unknown(&column, span, &cols, &t)
            }
        }
    }

    /// A visible column of the block's input.
    fn column(&mut self, col: &str, span: Span, st: &BlockState) -> (BExpr, Ty) {
        match st
            .input
            .iter()
            .find(|c| c.name == col && !st.hidden.contains(&c.name))
        {
            Some(c) => (BExpr::Col(ColRef::Input(c.name.clone())), c.ty),
            None => {
                let mut cols = st.input.clone();
                cols.extend(st.derived.iter().map(|(n, (_, t))| Column::new(n, *t)));
                let label = st.label.clone();
                self.unknown(col, span, &cols, &label)
            }
        }
    }

    /// The error for a column not among `cols` of `table`, with a did-you-mean hint.
    fn unknown(&mut self, col: &str, span: Span, cols: &[Column], table: &str) -> (BExpr, Ty) {
        let mut candidates: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        candidates.extend(self.lets.keys().map(String::as_str));
        let d = Diagnostic::new(format!("unknown column `{col}` in {table}"), span)
            .with_kind(annql_syntax::Kind::UnknownColumn);
        let d = match did_you_mean(col, candidates.iter().copied()) {
            Some(h) => d.with_hint(h),
            None if MATRIX_ROOTS.contains(&col) => d,
            None => d,
        };
        self.err(d)
    }
}
