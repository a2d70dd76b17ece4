//! The syntax tree of a pipeline, as written. Every node carries the byte span it was parsed from,
//! so later stages can point at it. `Display` prints an S-expression, used by snapshot tests.

use std::fmt;

/// A byte range `start..end` of the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A name as written (back-quotes removed), with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    /// The name.
    pub text: String,
    /// Where it was written.
    pub span: Span,
}

/// A whole program: `let` bindings, then one pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// `let name = expr` constants, in order.
    pub lets: Vec<Let>,
    /// `from dataset[.table]`.
    pub source: Source,
    /// The stages after `from`, in order.
    pub stages: Vec<Stage>,
    /// The whole program.
    pub span: Span,
}

impl Pipeline {
    /// The names of the datasets this pipeline reads, joined and unioned ones included.
    pub fn datasets(&self) -> Vec<&str> {
        let mut out = vec![self.source.dataset.text.as_str()];
        for s in &self.stages {
            if let StageKind::Join { right: p, .. } | StageKind::Union(p) = &s.kind {
                for d in p.datasets() {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
        }
        out
    }
}

/// `let name = expr`.
#[derive(Debug, Clone, PartialEq)]
pub struct Let {
    /// The bound name.
    pub name: Name,
    /// Its value.
    pub value: Expr,
    /// The whole binding.
    pub span: Span,
}

/// `from dataset` (cells) or `from dataset.table`.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The attached dataset.
    pub dataset: Name,
    /// A table of it; `None` reads cells.
    pub table: Option<Name>,
    /// The whole `from` clause.
    pub span: Span,
}

/// One stage of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// What the stage does.
    pub kind: StageKind,
    /// The stage, keyword included.
    pub span: Span,
}

/// The stages.
#[derive(Debug, Clone, PartialEq)]
pub enum StageKind {
    /// `where predicate`
    Where(Expr),
    /// `group key, name = key, …`
    Group(Vec<Item>),
    /// `agg name = reduction(…), …`
    Agg(Vec<Item>),
    /// `select name = expr, …`: exactly these columns.
    Select(Vec<Item>),
    /// `derive name = expr, …`: add columns.
    Derive(Vec<Item>),
    /// `sort -a, b`
    Sort(Vec<SortKey>),
    /// `take n`
    Take(u64),
    /// `[left] join (pipeline) on key, …`
    Join {
        /// `left join` keeps rows without a partner (their other columns null).
        left: bool,
        /// The other side.
        right: Box<Pipeline>,
        /// Columns both sides have, compared for equality.
        on: Vec<Name>,
    },
    /// `union (pipeline)`: both sides' rows, columns matched by name.
    Union(Box<Pipeline>),
    /// `write "out.h5ad" [genes …] [with …]`: the cells kept so far written as a new AnnData.
    Write(Box<Write>),
}

/// `write "out.h5ad" [genes pred-or-list] [with name = value, …]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The output path.
    pub path: String,
    /// Where the path was written.
    pub path_span: Span,
    /// The genes kept: a predicate over `var` (`var.highly_variable`) or a list of gene names;
    /// `None` keeps every gene.
    pub genes: Option<Expr>,
    /// `format = "zarr"`, `overwrite = true`, `chunk_len = 65536`, …
    pub options: Vec<Item>,
}

/// `name = expr` or a bare `expr`.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The output name, when given.
    pub name: Option<Name>,
    /// The value.
    pub expr: Expr,
    /// The whole item.
    pub span: Span,
}

/// `-expr` (descending) or `expr`.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// Sort descending.
    pub descending: bool,
    /// The sort key.
    pub expr: Expr,
}

/// An expression with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
}

/// Literal values.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// An integer.
    Int(i64),
    /// A number with a fraction or exponent, kept as written.
    Float(String),
    /// A string, escapes resolved.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `not` / `!`
    Not,
    /// `-`
    Neg,
}

/// Infix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `or` / `|`
    Or,
    /// `and` / `&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `not in`
    NotIn,
    /// `..`
    Range,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
}

/// `is null`, `is not null`, `is nan`, `is not nan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `is null`
    Null,
    /// `is not null`
    NotNull,
    /// `is nan`
    Nan,
    /// `is not nan`
    NotNan,
}

/// Expression forms.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal.
    Lit(Literal),
    /// A dotted path, `cell_type`, `obs.cell_type`, `layers.counts`, `obsm.X_umap`.
    Path(Vec<Name>),
    /// `base[selector]`: genes of a matrix, a component of an embedding.
    Index(Box<Expr>, Box<Expr>),
    /// `f(args)`.
    Call(Name, Vec<Expr>),
    /// `[a, b, …]`.
    List(Vec<Expr>),
    /// `op e`.
    Unary(UnaryOp, Box<Expr>),
    /// `l op r`.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `e is [not] null|nan`.
    Test(Test, Box<Expr>),
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lets {
            writeln!(f, "(let {} {})", l.name.text, l.value)?;
        }
        write!(f, "(from {}", self.source.dataset.text)?;
        if let Some(t) = &self.source.table {
            write!(f, ".{}", t.text)?;
        }
        write!(f, ")")?;
        for s in &self.stages {
            write!(f, "\n| {}", s.kind)?;
        }
        Ok(())
    }
}

/// A nested pipeline on one line.
fn nested(p: &Pipeline) -> String {
    p.to_string().replace('\n', " ")
}

fn items(f: &mut fmt::Formatter<'_>, kw: &str, items: &[Item]) -> fmt::Result {
    write!(f, "({kw}")?;
    for i in items {
        match &i.name {
            Some(n) => write!(f, " ({} = {})", n.text, i.expr)?,
            None => write!(f, " {}", i.expr)?,
        }
    }
    write!(f, ")")
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageKind::Where(e) => write!(f, "(where {e})"),
            StageKind::Group(i) => items(f, "group", i),
            StageKind::Agg(i) => items(f, "agg", i),
            StageKind::Select(i) => items(f, "select", i),
            StageKind::Derive(i) => items(f, "derive", i),
            StageKind::Sort(keys) => {
                write!(f, "(sort")?;
                for k in keys {
                    write!(f, " {}{}", if k.descending { "-" } else { "+" }, k.expr)?;
                }
                write!(f, ")")
            }
            StageKind::Take(n) => write!(f, "(take {n})"),
            StageKind::Join { left, right, on } => {
                let keys: Vec<&str> = on.iter().map(|n| n.text.as_str()).collect();
                let kind = if *left { "left join" } else { "join" };
                write!(f, "({kind} ({}) on {})", nested(right), keys.join(", "))
            }
            StageKind::Union(right) => write!(f, "(union ({}))", nested(right)),
            StageKind::Write(w) => {
                write!(f, "(write {:?}", w.path)?;
                if let Some(g) = &w.genes {
                    write!(f, " (genes {g})")?;
                }
                if !w.options.is_empty() {
                    write!(f, " ")?;
                    items(f, "with", &w.options)?;
                }
                write!(f, ")")
            }
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(s) => write!(f, "{s}"),
            Literal::Str(s) => write!(f, "{s:?}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => write!(f, "null"),
        }
    }
}

impl BinaryOp {
    /// The operator as written in the language.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::In => "in",
            BinaryOp::NotIn => "not in",
            BinaryOp::Range => "..",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Lit(l) => write!(f, "{l}"),
            ExprKind::Path(p) => {
                let parts: Vec<_> = p.iter().map(|n| n.text.as_str()).collect();
                write!(f, "{}", parts.join("."))
            }
            ExprKind::Index(b, i) => write!(f, "{b}[{i}]"),
            ExprKind::Call(n, args) => {
                write!(f, "({}", n.text)?;
                for a in args {
                    write!(f, " {a}")?;
                }
                write!(f, ")")
            }
            ExprKind::List(xs) => {
                write!(f, "[")?;
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        write!(f, " ")?;
                    }
                    write!(f, "{x}")?;
                }
                write!(f, "]")
            }
            ExprKind::Unary(UnaryOp::Not, e) => write!(f, "(not {e})"),
            ExprKind::Unary(UnaryOp::Neg, e) => write!(f, "(neg {e})"),
            ExprKind::Binary(op, l, r) => write!(f, "({} {l} {r})", op.symbol()),
            ExprKind::Test(t, e) => {
                let t = match t {
                    Test::Null => "is-null",
                    Test::NotNull => "is-not-null",
                    Test::Nan => "is-nan",
                    Test::NotNan => "is-not-nan",
                };
                write!(f, "({t} {e})")
            }
        }
    }
}
