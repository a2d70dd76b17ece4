//! `parse`: source text → [`Pipeline`]. The grammar is `grammar/annql.pest`; this module turns
//! pest's pairs into the syntax tree and its errors into [`Diagnostics`].

use std::sync::LazyLock;

use pest::Parser;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};

use crate::ast::{
    BinaryOp, Expr, ExprKind, Item, Let, Literal, Name, Pipeline, SortKey, Source, Span, Stage,
    StageKind, Test, UnaryOp, Write,
};
use crate::diagnostic::{Diagnostic, Diagnostics};

/// The parser pest derives from the grammar (its `Rule` enum names the grammar's rules).
mod grammar {
    #![allow(missing_docs)]
    #[derive(pest_derive::Parser)]
    #[grammar = "../../grammar/annql.pest"]
    pub struct AnnqlParser;
}
pub use grammar::{AnnqlParser, Rule};

/// Operator precedence, loosest first (mirrored in the grammar's closing comment).
static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_or, Assoc::Left))
        .op(Op::infix(Rule::op_and, Assoc::Left))
        .op(Op::prefix(Rule::op_not))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left)
            | Op::infix(Rule::op_in, Assoc::Left)
            | Op::infix(Rule::op_not_in, Assoc::Left)
            | Op::postfix(Rule::op_is_null)
            | Op::postfix(Rule::op_is_not_null)
            | Op::postfix(Rule::op_is_nan)
            | Op::postfix(Rule::op_is_not_nan))
        .op(Op::infix(Rule::op_range, Assoc::Left))
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::infix(Rule::op_mul, Assoc::Left)
            | Op::infix(Rule::op_div, Assoc::Left)
            | Op::infix(Rule::op_mod, Assoc::Left))
        .op(Op::prefix(Rule::op_neg))
});

/// Parses a program (`let …` bindings, then `from … | …`).
pub fn parse(source: &str) -> Result<Pipeline, Diagnostics> {
    // Unbalanced brackets first: they get a precise message at the opening bracket, all at once.
    let unbalanced = check_brackets(source);
    if !unbalanced.is_empty() {
        return Err(Diagnostics::new(source, unbalanced));
    }
    let mut pairs = AnnqlParser::parse(Rule::program, source)
        .map_err(|e| Diagnostics::new(source, vec![syntax_error(source, e)]))?;
    let program = pairs.next().ok_or_else(|| {
        Diagnostics::new(
            source,
            vec![Diagnostic::new("empty program", Span::default())],
        )
    })?;
    let mut errors = Vec::new();
    let pipeline = build_program(program, &mut errors);
    if errors.is_empty() {
        Ok(pipeline)
    } else {
        Err(Diagnostics::new(source, errors))
    }
}

/// Splits a file of programs (`.aql`) at the `;` that ends each: (byte offset, text) of each
/// program, to be [`parse`]d one by one. A file the script rule does not accept is one program,
/// so that `parse` reports its errors precisely.
pub fn split_programs(source: &str) -> Vec<(usize, &str)> {
    let Ok(mut pairs) = AnnqlParser::parse(Rule::script, source) else {
        return if source.trim().is_empty() {
            Vec::new()
        } else {
            vec![(0, source)]
        };
    };
    let Some(script) = pairs.next() else {
        return Vec::new();
    };
    script
        .into_inner()
        .filter(|p| p.as_rule() == Rule::script_item)
        .map(|p| {
            let span = p.as_span();
            (span.start(), span.as_str())
        })
        .collect()
}

/// `(`, `[` without their partner, outside strings, back-quoted names and comments.
fn check_brackets(source: &str) -> Vec<Diagnostic> {
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut errors = Vec::new();
    let mut chars = source.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // Skip to the closing quote; an unterminated one is the grammar's to report.
                while let Some((_, d)) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '#' => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' => open.push((c, i)),
            ')' | ']' => {
                let want = if c == ')' { '(' } else { '[' };
                match open.last() {
                    Some(&(o, _)) if o == want => {
                        open.pop();
                    }
                    Some(&(o, at)) => {
                        errors.push(
                            Diagnostic::new(
                                format!("`{c}` does not close `{o}`"),
                                Span::new(i, i + 1),
                            )
                            .with_hint(format!(
                                "the `{o}` at byte {at} is still open; close it with `{}`",
                                partner(o)
                            )),
                        );
                        open.pop();
                    }
                    None => errors.push(Diagnostic::new(
                        format!("unmatched `{c}`"),
                        Span::new(i, i + 1),
                    )),
                }
            }
            _ => {}
        }
    }
    for (o, at) in open {
        errors.push(
            Diagnostic::new(format!("unclosed `{o}`"), Span::new(at, at + 1))
                .with_hint(format!("add `{}`", partner(o))),
        );
    }
    errors
}

fn partner(c: char) -> char {
    match c {
        '(' => ')',
        '[' => ']',
        _ => c,
    }
}

/// A readable name for what the parser expected.
fn rule_name(rule: &Rule) -> String {
    match rule {
        Rule::EOI => "end of input".into(),
        Rule::program | Rule::pipeline | Rule::source | Rule::kw_from => "`from`".into(),
        Rule::kw_let | Rule::let_def => "`let`".into(),
        Rule::expr => "an expression".into(),
        Rule::items | Rule::item => "`name = expression`".into(),
        Rule::sort_key => "a sort key".into(),
        Rule::integer => "a whole number".into(),
        Rule::number => "a number".into(),
        Rule::string => "a string".into(),
        Rule::ident | Rule::quoted_ident => "a name".into(),
        Rule::op_or
        | Rule::op_and
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt
        | Rule::op_in
        | Rule::op_not_in
        | Rule::op_range
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_mul
        | Rule::op_div
        | Rule::op_mod => "an operator".into(),
        Rule::op_is_null
        | Rule::op_is_not_null
        | Rule::op_is_nan
        | Rule::op_is_not_nan
        | Rule::kw_is => "`is`".into(),
        Rule::kw_and | Rule::kw_or | Rule::kw_in | Rule::kw_not => "an operator".into(),
        Rule::index => "`[`".into(),
        Rule::where_stage
        | Rule::group_stage
        | Rule::agg_stage
        | Rule::select_stage
        | Rule::derive_stage
        | Rule::sort_stage
        | Rule::take_stage
        | Rule::join_stage
        | Rule::union_stage
        | Rule::write_stage => {
            "a stage (where, group, agg, select, derive, sort, take, join, union, write)".into()
        }
        Rule::sub_pipeline => "`(from …)`".into(),
        other => format!("{other:?}").trim_start_matches("kw_").to_string(),
    }
}

fn syntax_error(source: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let at = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let found = source[at.min(source.len())..]
        .split_whitespace()
        .next()
        .map(|w| {
            let w: String = w.chars().take(20).collect();
            format!("`{w}`")
        })
        .unwrap_or_else(|| "end of input".to_string());
    let end = at
        + source[at.min(source.len())..]
            .chars()
            .next()
            .map_or(0, char::len_utf8);
    let message = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let mut names: Vec<String> = positives.iter().map(rule_name).collect();
            names.sort();
            names.dedup();
            let expected = match names.len() {
                1 => names[0].clone(),
                n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
            };
            format!("expected {expected}, found {found}")
        }
        ErrorVariant::ParsingError { .. } => format!("unexpected {found}"),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let mut d = Diagnostic::new(message, Span::new(at, end));
    if source[at.min(source.len())..].starts_with('=') && !source[at..].starts_with("==") {
        d = d.with_hint("compare with `==`; a single `=` names a column in group/agg/select");
    }
    d
}

fn span(p: &Pair<'_, Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

fn build_program(program: Pair<'_, Rule>, errors: &mut Vec<Diagnostic>) -> Pipeline {
    let whole = span(&program);
    let mut lets = Vec::new();
    let mut pipeline = None;
    for p in program.into_inner() {
        match p.as_rule() {
            Rule::let_def => {
                let sp = span(&p);
                let mut inner = p.into_inner().filter(|p| p.as_rule() != Rule::kw_let);
                if let (Some(n), Some(e)) = (inner.next(), inner.next()) {
                    lets.push(Let {
                        name: build_name(&n),
                        value: build_expr(e, errors),
                        span: sp,
                    });
                }
            }
            Rule::pipeline => pipeline = Some(build_pipeline(p, errors)),
            _ => {}
        }
    }
    let (source, stages) = pipeline.unwrap_or_else(|| {
        (
            Source {
                dataset: Name {
                    text: String::new(),
                    span: whole,
                },
                table: None,
                span: whole,
            },
            Vec::new(),
        )
    });
    Pipeline {
        lets,
        source,
        stages,
        span: whole,
    }
}

fn build_name(p: &Pair<'_, Rule>) -> Name {
    let text = p.as_str();
    let text = if p.as_rule() == Rule::quoted_ident {
        text.trim_start_matches('`').trim_end_matches('`')
    } else {
        text
    };
    Name {
        text: text.to_string(),
        span: span(p),
    }
}

fn build_pipeline(p: Pair<'_, Rule>, errors: &mut Vec<Diagnostic>) -> (Source, Vec<Stage>) {
    let mut inner = p.into_inner();
    let source = inner
        .next()
        .map(|s| {
            let sp = span(&s);
            let names: Vec<Name> = s
                .into_inner()
                .filter(|n| matches!(n.as_rule(), Rule::ident | Rule::quoted_ident))
                .map(|n| build_name(&n))
                .collect();
            let mut names = names.into_iter();
            // The grammar requires the dataset name; an empty one would fail binding as an
            // unknown dataset.
            Source {
                dataset: names.next().unwrap_or(Name {
                    text: String::new(),
                    span: sp,
                }),
                table: names.next(),
                span: sp,
            }
        })
        .unwrap_or(Source {
            dataset: Name {
                text: String::new(),
                span: Span::default(),
            },
            table: None,
            span: Span::default(),
        });
    let stages = inner.map(|s| build_stage(s, errors)).collect();
    (source, stages)
}

/// The pairs of a stage after its keyword.
fn args<'a>(p: Pair<'a, Rule>) -> impl Iterator<Item = Pair<'a, Rule>> {
    p.into_inner().filter(|q| {
        !matches!(
            q.as_rule(),
            Rule::kw_where
                | Rule::kw_group
                | Rule::kw_agg
                | Rule::kw_select
                | Rule::kw_derive
                | Rule::kw_sort
                | Rule::kw_take
                | Rule::kw_join
                | Rule::kw_union
                | Rule::kw_on
                | Rule::kw_write
                | Rule::kw_genes
                | Rule::kw_with
        )
    })
}

fn build_stage(p: Pair<'_, Rule>, errors: &mut Vec<Diagnostic>) -> Stage {
    let sp = span(&p);
    let rule = p.as_rule();
    let mut a = args(p);
    let kind = match rule {
        Rule::where_stage => match a.next() {
            Some(e) => StageKind::Where(build_expr(e, errors)),
            None => StageKind::Where(placeholder(sp)),
        },
        Rule::group_stage => StageKind::Group(build_items(a.next(), errors)),
        Rule::agg_stage => StageKind::Agg(build_items(a.next(), errors)),
        Rule::select_stage => StageKind::Select(build_items(a.next(), errors)),
        Rule::derive_stage => StageKind::Derive(build_items(a.next(), errors)),
        Rule::sort_stage => StageKind::Sort(
            a.map(|k| {
                let mut descending = false;
                let mut expr = placeholder(span(&k));
                for q in k.into_inner() {
                    match q.as_rule() {
                        Rule::sort_dir => descending = q.as_str() == "-",
                        _ => expr = build_expr(q, errors),
                    }
                }
                SortKey { descending, expr }
            })
            .collect(),
        ),
        Rule::take_stage => {
            let n = a.next();
            // A number that does not parse is reported just below.
            let value = n.as_ref().and_then(|n| n.as_str().parse::<u64>().ok());
            if value.is_none() {
                errors.push(Diagnostic::new(
                    "`take` needs a whole number that fits in 64 bits",
                    n.as_ref().map_or(sp, span),
                ));
            }
            StageKind::Take(value.unwrap_or(0))
        }
        Rule::join_stage => {
            let mut left = false;
            let mut right = None;
            let mut on = Vec::new();
            for q in a {
                match q.as_rule() {
                    Rule::join_kind => left = true,
                    Rule::sub_pipeline => right = Some(build_sub_pipeline(q, errors)),
                    Rule::ident | Rule::quoted_ident => on.push(build_name(&q)),
                    _ => {}
                }
            }
            StageKind::Join {
                left,
                right: Box::new(right.unwrap_or_else(|| empty_pipeline(sp))),
                on,
            }
        }
        Rule::write_stage => {
            let mut write = Write {
                path: String::new(),
                path_span: sp,
                genes: None,
                options: Vec::new(),
            };
            for q in a {
                match q.as_rule() {
                    Rule::string => {
                        write.path = unescape(q.as_str());
                        write.path_span = span(&q);
                    }
                    Rule::expr => write.genes = Some(build_expr(q, errors)),
                    Rule::items => write.options = build_items(Some(q), errors),
                    _ => {}
                }
            }
            StageKind::Write(Box::new(write))
        }
        Rule::union_stage => StageKind::Union(Box::new(
            a.next()
                .map_or_else(|| empty_pipeline(sp), |q| build_sub_pipeline(q, errors)),
        )),
        _ => {
            errors.push(Diagnostic::new("unknown stage", sp));
            StageKind::Take(0)
        }
    };
    Stage { kind, span: sp }
}

/// `( pipeline )` of a join or union: a pipeline of its own (it sees no `let` of the outer one).
fn build_sub_pipeline(p: Pair<'_, Rule>, errors: &mut Vec<Diagnostic>) -> Pipeline {
    let sp = span(&p);
    match p.into_inner().find(|q| q.as_rule() == Rule::pipeline) {
        Some(q) => {
            let whole = span(&q);
            let (source, stages) = build_pipeline(q, errors);
            Pipeline {
                lets: Vec::new(),
                source,
                stages,
                span: whole,
            }
        }
        None => empty_pipeline(sp),
    }
}

fn empty_pipeline(sp: Span) -> Pipeline {
    Pipeline {
        lets: Vec::new(),
        source: Source {
            dataset: Name {
                text: String::new(),
                span: sp,
            },
            table: None,
            span: sp,
        },
        stages: Vec::new(),
        span: sp,
    }
}

fn build_items(p: Option<Pair<'_, Rule>>, errors: &mut Vec<Diagnostic>) -> Vec<Item> {
    let Some(p) = p else { return Vec::new() };
    p.into_inner()
        .map(|item| {
            let sp = span(&item);
            let mut name = None;
            let mut expr = placeholder(sp);
            for q in item.into_inner() {
                match q.as_rule() {
                    Rule::ident | Rule::quoted_ident => name = Some(build_name(&q)),
                    _ => expr = build_expr(q, errors),
                }
            }
            Item {
                name,
                expr,
                span: sp,
            }
        })
        .collect()
}

fn placeholder(span: Span) -> Expr {
    Expr {
        kind: ExprKind::Lit(Literal::Null),
        span,
    }
}

/// An `expr` pair: operands and operators, folded by precedence.
fn build_expr(p: Pair<'_, Rule>, errors: &mut Vec<Diagnostic>) -> Expr {
    match p.as_rule() {
        Rule::expr => pratt(p.into_inner(), errors),
        _ => build_primary(p, errors),
    }
}

fn pratt(pairs: Pairs<'_, Rule>, errors: &mut Vec<Diagnostic>) -> Expr {
    // The closures of the Pratt parser each need the error list; share it through a RefCell.
    let errs = std::cell::RefCell::new(std::mem::take(errors));
    let e = PRATT
        .map_primary(|p| build_primary(p, &mut errs.borrow_mut()))
        .map_prefix(|op, e| {
            let sp = span(&op).to(e.span);
            let op = if op.as_rule() == Rule::op_not {
                UnaryOp::Not
            } else {
                UnaryOp::Neg
            };
            // Fold `-<number>` into a literal, so `-1` is a number, as written.
            if op == UnaryOp::Neg
                && let ExprKind::Lit(Literal::Int(i)) = &e.kind
            {
                return Expr {
                    kind: ExprKind::Lit(Literal::Int(-i)),
                    span: sp,
                };
            }
            Expr {
                kind: ExprKind::Unary(op, Box::new(e)),
                span: sp,
            }
        })
        .map_postfix(|e, op| {
            let sp = e.span.to(span(&op));
            let t = match op.as_rule() {
                Rule::op_is_null => Test::Null,
                Rule::op_is_not_null => Test::NotNull,
                Rule::op_is_nan => Test::Nan,
                _ => Test::NotNan,
            };
            Expr {
                kind: ExprKind::Test(t, Box::new(e)),
                span: sp,
            }
        })
        .map_infix(|l, op, r| {
            let sp = l.span.to(r.span);
            let op = match op.as_rule() {
                Rule::op_or => BinaryOp::Or,
                Rule::op_and => BinaryOp::And,
                Rule::op_eq => BinaryOp::Eq,
                Rule::op_ne => BinaryOp::Ne,
                Rule::op_lt => BinaryOp::Lt,
                Rule::op_le => BinaryOp::Le,
                Rule::op_gt => BinaryOp::Gt,
                Rule::op_ge => BinaryOp::Ge,
                Rule::op_in => BinaryOp::In,
                Rule::op_not_in => BinaryOp::NotIn,
                Rule::op_range => BinaryOp::Range,
                Rule::op_add => BinaryOp::Add,
                Rule::op_sub => BinaryOp::Sub,
                Rule::op_mul => BinaryOp::Mul,
                Rule::op_div => BinaryOp::Div,
                _ => BinaryOp::Mod,
            };
            Expr {
                kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
                span: sp,
            }
        })
        .parse(pairs);
    *errors = errs.into_inner();
    e
}

fn build_primary(p: Pair<'_, Rule>, errors: &mut Vec<Diagnostic>) -> Expr {
    let sp = span(&p);
    let kind = match p.as_rule() {
        Rule::expr => return pratt(p.into_inner(), errors),
        Rule::paren => {
            return match p.into_inner().next() {
                Some(e) => {
                    let mut e = build_expr(e, errors);
                    e.span = sp;
                    e
                }
                None => placeholder(sp),
            };
        }
        Rule::number => {
            let s = p.as_str();
            match s.parse::<i64>() {
                Ok(i) => ExprKind::Lit(Literal::Int(i)),
                Err(_) if s.chars().all(|c| c.is_ascii_digit()) => {
                    errors.push(Diagnostic::new("integer too large for 64 bits", sp));
                    ExprKind::Lit(Literal::Null)
                }
                Err(_) => ExprKind::Lit(Literal::Float(s.to_string())),
            }
        }
        Rule::string => ExprKind::Lit(Literal::Str(unescape(p.as_str()))),
        Rule::kw_true => ExprKind::Lit(Literal::Bool(true)),
        Rule::kw_false => ExprKind::Lit(Literal::Bool(false)),
        Rule::kw_null => ExprKind::Lit(Literal::Null),
        Rule::list => ExprKind::List(p.into_inner().map(|e| build_expr(e, errors)).collect()),
        Rule::call => {
            let mut inner = p.into_inner();
            let name = inner.next().map(|n| build_name(&n)).unwrap_or(Name {
                text: String::new(),
                span: sp,
            });
            ExprKind::Call(name, inner.map(|e| build_expr(e, errors)).collect())
        }
        Rule::access => {
            let mut path = Vec::new();
            let mut indexes = Vec::new();
            for q in p.into_inner() {
                match q.as_rule() {
                    Rule::index => indexes.push((
                        span(&q),
                        q.into_inner()
                            .next()
                            .map(|e| build_expr(e, errors))
                            .unwrap_or_else(|| placeholder(sp)),
                    )),
                    _ => path.push(build_name(&q)),
                }
            }
            let first = path.first().map_or(sp, |n| n.span);
            let last = path.last().map_or(sp, |n| n.span);
            let mut e = Expr {
                kind: ExprKind::Path(path),
                span: first.to(last),
            };
            for (isp, i) in indexes {
                e = Expr {
                    span: e.span.to(isp),
                    kind: ExprKind::Index(Box::new(e), Box::new(i)),
                };
            }
            return e;
        }
        other => {
            errors.push(Diagnostic::new(format!("unexpected {other:?}"), sp));
            ExprKind::Lit(Literal::Null)
        }
    };
    Expr { kind, span: sp }
}

/// A string literal's value: quotes removed, `\n`, `\t`, `\\`, `\"`, `\'` resolved.
fn unescape(quoted: &str) -> String {
    let body = &quoted[1..quoted.len().saturating_sub(1).max(1)];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_at_the_semicolon_after_each_pipeline() {
        let src =
            "# counts\nlet g = [\"CD3E\"];\nfrom a | where x == \"a;b\";\n\nfrom a.var | take 2\n";
        let parts = split_programs(src);
        let texts: Vec<&str> = parts.iter().map(|(_, t)| *t).collect();
        assert_eq!(
            texts,
            [
                "let g = [\"CD3E\"];\nfrom a | where x == \"a;b\"",
                "from a.var | take 2"
            ]
        );
        assert_eq!(&src[parts[1].0..parts[1].0 + 4], "from");
        for (_, t) in parts {
            assert!(parse(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn a_script_that_does_not_parse_is_one_program() {
        assert_eq!(split_programs("from a | wher x"), [(0, "from a | wher x")]);
        assert!(split_programs("  \n").is_empty());
    }
}
