//! `lower`: [`Bound`] → a SQL [`Statement`] (sqlparser's AST, as DataFusion parses SQL into), so a
//! pipeline is planned by DataFusion's own SQL planner exactly like its SQL equivalent.
//!
//! Aliases: `o` obs, `m` the block's matrix, `v` its genes, `g1…` per-cell gene values,
//! `r1…` per-cell reductions, `e1…` embeddings, `s1…` earlier blocks.

use annql_engine::datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use annql_engine::datafusion::sql::sqlparser::ast::{
    self as sql, BinaryOperator, CaseWhen, ExcludeSelectItem, Function, FunctionArg,
    FunctionArgExpr, FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, Join,
    JoinConstraint, JoinOperator, ObjectName, OrderByExpr, OrderByKind, OrderByOptions, Query,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, TableAlias, TableFactor,
    UnaryOperator, Value, WildcardAdditionalOptions,
};
use annql_engine::datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use annql_engine::datafusion::sql::unparser::ast::{
    DerivedRelationBuilder, QueryBuilder, RelationBuilder, SelectBuilder, TableRelationBuilder,
    TableWithJoinsBuilder,
};

use crate::ast::{BinaryOp, Literal, Test, UnaryOp};
use crate::error::{Error, Result};
use crate::ir::{
    AggFn, BExpr, Block, Bound, CellFn, ColRef, Columns, Combine, GeneJoin, Genes, Layout,
    MatrixRef,
};

/// Lowers a bound pipeline to one SQL query statement.
pub fn lower(bound: &Bound) -> Result<Statement> {
    let mut query: Option<Query> = None;
    for (i, block) in bound.blocks.iter().enumerate() {
        let input = match query.take() {
            None if bound.cells => Input::Cells,
            None => Input::Table(bound.table.clone()),
            Some(q) => Input::Derived(Box::new(q), format!("s{i}")),
        };
        let q = Lowerer::new(&bound.dataset, input, block).lower(block)?;
        query = Some(match &block.combine {
            None => q,
            Some(c) => combine(q, c, i)?,
        });
    }
    let query = query.ok_or_else(|| Error::Internal("a pipeline without blocks".into()))?;
    Ok(Statement::Query(Box::new(query)))
}

/// `SELECT * FROM (q) l [LEFT] JOIN (other) r USING (keys)`, or `q UNION ALL BY NAME other`.
fn combine(q: Query, with: &Combine, i: usize) -> Result<Query> {
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

/// What a block reads.
enum Input {
    /// `dataset.obs o`, with matrices reachable.
    Cells,
    /// `dataset.table`.
    Table(String),
    /// The previous block, `(…) AS sN`.
    Derived(Box<Query>, String),
}

struct Lowerer<'a> {
    dataset: &'a str,
    input: Input,
    layout: &'a Layout,
    /// Per-cell single-gene values joined in: (matrix, alias).
    genes: Vec<(MatrixRef, String)>,
    /// Per-cell reductions joined in: (matrix, functions, alias).
    reductions: Vec<(MatrixRef, Vec<CellFn>, String)>,
    /// Embedding tables joined in: (table, alias).
    embeddings: Vec<(String, String)>,
    /// The gene table is referenced (joined as `v`).
    uses_var: bool,
}

impl<'a> Lowerer<'a> {
    fn new(dataset: &'a str, input: Input, block: &'a Block) -> Self {
        Self {
            dataset,
            input,
            layout: &block.layout,
            genes: Vec::new(),
            reductions: Vec::new(),
            embeddings: Vec::new(),
            uses_var: false,
        }
    }

    fn lower(mut self, block: &Block) -> Result<Query> {
        // Expressions first: they decide which joins the FROM clause needs.
        let mut filters = Vec::new();
        if let Layout::Genes { matrix, join } = self.layout
            && let Some(f) = self.gene_filter(matrix, join)?
        {
            filters.push(f);
        }
        for f in &block.filters {
            filters.push(self.expr(f)?);
        }
        let mut projection = Vec::new();
        let mut group_by = Vec::new();
        match &block.columns {
            Columns::All(extra) => {
                match &self.input {
                    Input::Cells => {
                        projection.push(SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(ObjectName::from(vec![
                                Ident::new("o"),
                            ])),
                            WildcardAdditionalOptions::default(),
                        ));
                        if let Layout::Genes { matrix, .. } = self.layout
                            && !matrix.is_single()
                        {
                            self.uses_var = true;
                            projection.push(SelectItem::ExprWithAlias {
                                expr: qcol("v", "var_name"),
                                alias: ident("gene"),
                            });
                            projection.push(SelectItem::ExprWithAlias {
                                expr: self.value(matrix)?,
                                alias: ident("value"),
                            });
                        }
                    }
                    _ => {
                        projection.push(SelectItem::Wildcard(WildcardAdditionalOptions::default()))
                    }
                }
                for n in extra {
                    let e = self.expr(&n.expr)?;
                    projection.push(item(e, &n.name));
                }
            }
            Columns::Exactly(cols) => {
                let keys = block.group.as_ref().map_or(0, Vec::len);
                for (i, n) in cols.iter().enumerate() {
                    let e = self.expr(&n.expr)?;
                    if i < keys {
                        group_by.push(e.clone());
                    }
                    projection.push(item(e, &n.name));
                }
            }
        }
        let mut order = Vec::new();
        for (e, desc) in &block.order {
            order.push(OrderByExpr {
                expr: self.expr(e)?,
                options: OrderByOptions {
                    asc: desc.then_some(false),
                    nulls_first: None,
                },
                with_fill: None,
            });
        }

        let from = self.from()?;
        let mut select = SelectBuilder::default();
        select
            .projection(projection)
            .from(vec![from])
            .selection(conjunction(filters))
            .group_by(GroupByExpr::Expressions(group_by, Vec::new()));
        let select = select.build().map_err(internal)?;
        let mut query = QueryBuilder::default();
        query.body(Box::new(SetExpr::Select(Box::new(select))));
        if !order.is_empty() {
            query.order_by(OrderByKind::Expressions(order));
        }
        if let Some(n) = block.limit {
            query.limit(Some(number(n.to_string())));
        }
        query.build().map_err(internal)
    }

    /// `dataset.table`.
    fn table(&self, table: &str, alias: Option<&str>) -> TableFactor {
        let mut t = TableRelationBuilder::default();
        t.name(ObjectName::from(vec![ident(self.dataset), ident(table)]))
            .alias(alias.map(table_alias));
        // A table relation with a name always builds.
        t.build().unwrap_or(TableFactor::Table {
            name: ObjectName::from(vec![ident(self.dataset), ident(table)]),
            alias: alias.map(table_alias),
            args: None,
            with_hints: Vec::new(),
            version: None,
            with_ordinality: false,
            partitions: Vec::new(),
            json_path: None,
            sample: None,
            index_hints: Vec::new(),
        })
    }

    fn from(&mut self) -> Result<TableWithJoinsBuilder> {
        let mut from = TableWithJoinsBuilder::default();
        let mut rel = RelationBuilder::default();
        let mut joins = Vec::new();
        match &self.input {
            Input::Table(t) => {
                rel.table(table_builder(self.dataset, t, None));
            }
            Input::Derived(q, alias) => {
                let mut d = DerivedRelationBuilder::default();
                d.lateral(false)
                    .subquery(q.clone())
                    .alias(Some(table_alias(alias)));
                rel.derived(d);
            }
            Input::Cells => match self.layout {
                Layout::Rows => {
                    rel.table(table_builder(self.dataset, "obs", Some("o")));
                }
                Layout::Genes { matrix, join } => {
                    let needs_var =
                        self.uses_var || matches!(matrix.genes, Genes::Names(_) | Genes::Where(_));
                    match join {
                        GeneJoin::Stored | GeneJoin::DenseView(_) => {
                            let t = match join {
                                GeneJoin::DenseView(t) => t.as_str(),
                                _ => matrix.table.as_str(),
                            };
                            rel.table(table_builder(self.dataset, t, Some("m")));
                            joins.push(join_using(self.table("obs", Some("o")), "obs_id"));
                            if needs_var {
                                joins.push(join_using(
                                    self.table(&matrix.var_table, Some("v")),
                                    "var_id",
                                ));
                            }
                        }
                        GeneJoin::Filled => {
                            rel.table(table_builder(self.dataset, "obs", Some("o")));
                            joins.push(Join {
                                relation: self.table(&matrix.var_table, Some("v")),
                                global: false,
                                join_operator: JoinOperator::CrossJoin(JoinConstraint::None),
                            });
                            let on = and(
                                eq(qcol("m", "obs_id"), qcol("o", "obs_id")),
                                eq(qcol("m", "var_id"), qcol("v", "var_id")),
                            );
                            joins.push(left_join(self.table(&matrix.table, Some("m")), on));
                        }
                    }
                }
            },
        }
        for (m, alias) in self.genes.clone() {
            let sub = self.gene_subquery(&m)?;
            joins.push(left_join(derived(sub, &alias), on_obs(&alias)));
        }
        for (m, fns, alias) in self.reductions.clone() {
            let sub = self.reduction_subquery(&m, &fns)?;
            joins.push(left_join(derived(sub, &alias), on_obs(&alias)));
        }
        for (t, alias) in self.embeddings.clone() {
            joins.push(left_join(self.table(&t, Some(&alias)), on_obs(&alias)));
        }
        from.relation(rel).joins(joins);
        Ok(from)
    }

    /// The layout's gene selection as a WHERE conjunct. A predicate that cannot be lowered is
    /// an error: without it the query would cover every gene.
    fn gene_filter(&mut self, m: &MatrixRef, join: &GeneJoin) -> Result<Option<sql::Expr>> {
        let by_id_on = if matches!(join, GeneJoin::Filled) {
            "v"
        } else {
            "m"
        };
        Ok(match &m.genes {
            Genes::All => None,
            Genes::Names(names) => Some(in_or_eq(
                qcol("v", "var_name"),
                names.iter().map(|n| string(n)).collect(),
            )),
            Genes::Ids(ids) => Some(in_or_eq(
                qcol(by_id_on, "var_id"),
                ids.iter().map(|i| int(*i)).collect(),
            )),
            Genes::Where(p) => Some(self.expr(p).map_err(|e| Error::GenePredicate {
                matrix: m.table.clone(),
                var_table: m.var_table.clone(),
                source: Box::new(e),
            })?),
        })
    }

    /// `SELECT m.obs_id, m.value FROM matrix m [JOIN var v USING (var_id)] WHERE <gene>`.
    fn gene_subquery(&mut self, m: &MatrixRef) -> Result<Query> {
        let filter = self.gene_filter(m, &GeneJoin::Stored)?;
        let proj = vec![
            SelectItem::UnnamedExpr(qcol("m", "obs_id")),
            SelectItem::UnnamedExpr(qcol("m", "value")),
        ];
        self.matrix_subquery(m, proj, filter, Vec::new())
    }

    /// Per-cell reductions over the selected genes, grouped by cell.
    fn reduction_subquery(&mut self, m: &MatrixRef, fns: &[CellFn]) -> Result<Query> {
        let filter = self.gene_filter(m, &GeneJoin::Stored)?;
        let mut proj = vec![SelectItem::UnnamedExpr(qcol("m", "obs_id"))];
        for f in fns {
            let e = match f {
                CellFn::Sum => call("sum", vec![qcol("m", "value")]),
                CellFn::Nnz => nnz(qcol("m", "value")),
            };
            proj.push(SelectItem::ExprWithAlias {
                expr: e,
                alias: ident(cell_fn_name(*f)),
            });
        }
        self.matrix_subquery(m, proj, filter, vec![qcol("m", "obs_id")])
    }

    fn matrix_subquery(
        &mut self,
        m: &MatrixRef,
        projection: Vec<SelectItem>,
        filter: Option<sql::Expr>,
        group_by: Vec<sql::Expr>,
    ) -> Result<Query> {
        let mut from = TableWithJoinsBuilder::default();
        let mut rel = RelationBuilder::default();
        rel.table(table_builder(self.dataset, &m.table, Some("m")));
        let mut joins = Vec::new();
        if matches!(m.genes, Genes::Names(_) | Genes::Where(_)) {
            joins.push(join_using(self.table(&m.var_table, Some("v")), "var_id"));
        }
        from.relation(rel).joins(joins);
        let mut select = SelectBuilder::default();
        select
            .projection(projection)
            .from(vec![from])
            .selection(filter)
            .group_by(GroupByExpr::Expressions(group_by, Vec::new()));
        let select = select.build().map_err(internal)?;
        let mut q = QueryBuilder::default();
        q.body(Box::new(SetExpr::Select(Box::new(select))));
        q.build().map_err(internal)
    }

    /// A matrix value, 0 where not stored.
    fn value(&mut self, m: &MatrixRef) -> Result<sql::Expr> {
        if let Layout::Genes { matrix, join } = self.layout
            && matrix == m
            && matches!(self.input, Input::Cells)
        {
            return Ok(match join {
                GeneJoin::Filled => coalesce_zero(qcol("m", "value")),
                _ => qcol("m", "value"),
            });
        }
        if !m.is_single() {
            return Err(Error::Internal(
                "a second gene set reached lowering (bind should have refused it)".into(),
            ));
        }
        let alias = match self.genes.iter().find(|(g, _)| g == m) {
            Some((_, a)) => a.clone(),
            None => {
                let a = format!("g{}", self.genes.len() + 1);
                self.genes.push((m.clone(), a.clone()));
                a
            }
        };
        Ok(coalesce_zero(qcol(&alias, "value")))
    }

    fn reduce(&mut self, f: CellFn, m: &MatrixRef) -> sql::Expr {
        let alias = match self.reductions.iter_mut().find(|(g, _, _)| g == m) {
            Some((_, fns, a)) => {
                if !fns.contains(&f) {
                    fns.push(f);
                }
                a.clone()
            }
            None => {
                let a = format!("r{}", self.reductions.len() + 1);
                self.reductions.push((m.clone(), vec![f], a.clone()));
                a
            }
        };
        coalesce_zero(qcol(&alias, cell_fn_name(f)))
    }

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

    fn expr(&mut self, e: &BExpr) -> Result<sql::Expr> {
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

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("building SQL: {e}"))
}

fn cell_fn_name(f: CellFn) -> &'static str {
    match f {
        CellFn::Sum => "sum",
        CellFn::Nnz => "nnz",
    }
}

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

fn qcol(alias: &str, name: &str) -> sql::Expr {
    sql::Expr::CompoundIdentifier(vec![Ident::new(alias), ident(name)])
}

fn table_alias(name: &str) -> TableAlias {
    TableAlias {
        explicit: false,
        name: Ident::new(name),
        columns: Vec::new(),
        at: None,
    }
}

fn table_builder(dataset: &str, table: &str, alias: Option<&str>) -> TableRelationBuilder {
    let mut t = TableRelationBuilder::default();
    t.name(ObjectName::from(vec![ident(dataset), ident(table)]))
        .alias(alias.map(table_alias));
    t
}

fn derived(q: Query, alias: &str) -> TableFactor {
    TableFactor::Derived {
        lateral: false,
        subquery: Box::new(q),
        alias: Some(table_alias(alias)),
        sample: None,
    }
}

fn join_using(relation: TableFactor, column: &str) -> Join {
    Join {
        relation,
        global: false,
        join_operator: JoinOperator::Join(JoinConstraint::Using(vec![ObjectName::from(vec![
            Ident::new(column),
        ])])),
    }
}

fn left_join(relation: TableFactor, on: sql::Expr) -> Join {
    Join {
        relation,
        global: false,
        join_operator: JoinOperator::LeftOuter(JoinConstraint::On(on)),
    }
}

fn on_obs(alias: &str) -> sql::Expr {
    eq(qcol(alias, "obs_id"), qcol("o", "obs_id"))
}

fn eq(l: sql::Expr, r: sql::Expr) -> sql::Expr {
    sql::Expr::BinaryOp {
        left: Box::new(l),
        op: BinaryOperator::Eq,
        right: Box::new(r),
    }
}

fn and(l: sql::Expr, r: sql::Expr) -> sql::Expr {
    sql::Expr::BinaryOp {
        left: Box::new(nested(l)),
        op: BinaryOperator::And,
        right: Box::new(nested(r)),
    }
}

fn conjunction(mut filters: Vec<sql::Expr>) -> Option<sql::Expr> {
    if filters.is_empty() {
        return None;
    }
    let first = filters.remove(0);
    Some(filters.into_iter().fold(first, and))
}

/// Parenthesises compound expressions, so the rendered SQL keeps the tree's precedence.
fn nested(e: sql::Expr) -> sql::Expr {
    match e {
        sql::Expr::BinaryOp { .. }
        | sql::Expr::UnaryOp { .. }
        | sql::Expr::InList { .. }
        | sql::Expr::Between { .. } => sql::Expr::Nested(Box::new(e)),
        other => other,
    }
}

fn in_or_eq(e: sql::Expr, mut list: Vec<sql::Expr>) -> sql::Expr {
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

fn number(s: String) -> sql::Expr {
    sql::Expr::Value(Value::Number(s, false).with_empty_span())
}

fn int(i: i64) -> sql::Expr {
    if i < 0 {
        sql::Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: Box::new(number(i.unsigned_abs().to_string())),
        }
    } else {
        number(i.to_string())
    }
}

fn string(s: &str) -> sql::Expr {
    sql::Expr::Value(Value::SingleQuotedString(s.to_string()).with_empty_span())
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

fn coalesce_zero(e: sql::Expr) -> sql::Expr {
    call("coalesce", vec![e, number("0".into())])
}

fn call(name: &str, args: Vec<sql::Expr>) -> sql::Expr {
    function(
        name,
        args.into_iter()
            .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
            .collect(),
    )
}

fn function(name: &str, args: Vec<FunctionArg>) -> sql::Expr {
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
fn nnz(e: sql::Expr) -> sql::Expr {
    let nonzero = sql::Expr::BinaryOp {
        left: Box::new(nested(e)),
        op: BinaryOperator::NotEq,
        right: Box::new(number("0".into())),
    };
    call("count", vec![case_when(nonzero, number("1".into()), None)])
}

fn case_when(cond: sql::Expr, then: sql::Expr, otherwise: Option<sql::Expr>) -> sql::Expr {
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

/// `expr AS name`, or just `expr` when it is a column already called `name`.
fn item(e: sql::Expr, name: &str) -> SelectItem {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Block, Named};

    /// A gene predicate (`X[pred]`) lowering cannot express: `in` as a plain operator.
    fn unlowerable_selection() -> MatrixRef {
        let pred = BExpr::Binary(
            BinaryOp::In,
            Box::new(BExpr::Col(ColRef::Var("var_name".into()))),
            Box::new(BExpr::Lit(Literal::Str("CD3E".into()))),
        );
        MatrixRef {
            table: "x".into(),
            var_table: "var".into(),
            genes: Genes::Where(Box::new(pred)),
        }
    }

    fn one_block(layout: Layout, column: BExpr) -> Bound {
        let agg = Named {
            name: "s".into(),
            expr: column,
        };
        Bound {
            dataset: "t".into(),
            table: "obs".into(),
            cells: true,
            blocks: vec![Block {
                layout,
                filters: Vec::new(),
                group: Some(Vec::new()),
                aggs: vec![agg.clone()],
                columns: Columns::Exactly(vec![agg]),
                order: Vec::new(),
                limit: None,
                combine: None,
            }],
        }
    }

    /// A gene predicate that fails to lower is an error naming the matrix, never a query over
    /// every gene: as the block's gene axis, and inside a per-cell reduction.
    #[test]
    fn gene_predicate_that_cannot_lower_is_an_error() {
        let m = unlowerable_selection();
        let axis = one_block(
            Layout::Genes {
                matrix: m.clone(),
                join: GeneJoin::Stored,
            },
            BExpr::Agg(AggFn::Sum, Some(Box::new(BExpr::Value(m.clone())))),
        );
        let per_cell = one_block(
            Layout::Rows,
            BExpr::Agg(AggFn::Mean, Some(Box::new(BExpr::Reduce(CellFn::Sum, m)))),
        );
        for bound in [axis, per_cell] {
            match lower(&bound) {
                Ok(sql) => panic!("lowered without its gene predicate: {sql}"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("gene predicate of `x`") && e.contains("`in`"),
                        "{e}"
                    );
                }
            }
        }
    }
}
