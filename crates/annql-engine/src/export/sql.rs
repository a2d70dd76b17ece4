//! The SQL statement of exports, handled by [`AnnSession::sql`](crate::AnnSession::sql) before DataFusion sees the text
//! (as `ATTACH` is):
//!
//! ```sql
//! COPY atlas [WHERE OBS (tissue = 'lung') [AND VAR (highly_variable)]] TO 'lung.h5ad'
//!     [[WITH] (FORMAT 'zarr', ZARR_VERSION 3, OVERWRITE true, CHUNK_LEN 65536, SHARD_CHUNKS 64)]
//! COPY atlas AGGREGATE sum, mean [OF counts] BY donor, cell_type [WHERE …] TO 'pb.h5ad'
//! ```
//!
//! `WHERE` may come before or after `TO`. A statement is annql's when the name after `COPY` is
//! one unqualified name that is an attached dataset, or when it has `AGGREGATE` or
//! `WHERE OBS`/`WHERE VAR`; anything else (`COPY (SELECT …) TO 'x.parquet'`,
//! `COPY atlas.obs TO 'obs.csv'`) is left to DataFusion's own `COPY`.

use std::path::PathBuf;

use datafusion::arrow::array::RecordBatch;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::aggregate::{AggFunc, AggregateRequest, export_aggregate};
use super::{ExportChoices, ExportRequest, export_subset, summary_batch};
use crate::context::QueryContext;
use crate::error::{Error, Result};

/// A parsed `COPY dataset … TO 'out'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStatement {
    /// The attached dataset.
    pub dataset: String,
    /// `WHERE OBS (…)`: the predicate's SQL text.
    pub obs: Option<String>,
    /// `VAR (…)`: the predicate's SQL text.
    pub var: Option<String>,
    /// `TO 'path'`.
    pub out: PathBuf,
    /// `WITH (…)`.
    pub choices: ExportChoices,
    /// `AGGREGATE … BY …`: a group-by aggregate instead of a subset.
    pub aggregate: Option<AggregateClause>,
}

/// `AGGREGATE sum, mean [OF layer] BY col, …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateClause {
    /// The aggregate functions, lower case.
    pub funcs: Vec<String>,
    /// The layer aggregated (`None`: X).
    pub layer: Option<String>,
    /// The obs columns grouped by.
    pub by: Vec<String>,
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::Statement(format!("COPY: {why}"))
}

/// Recognises annql's `COPY dataset …` (see the module docs); `is_dataset` says whether a name is
/// an attached dataset. `Ok(None)`: not ours, DataFusion plans it.
pub fn parse_copy(sql: &str, is_dataset: impl Fn(&str) -> bool) -> Result<Option<CopyStatement>> {
    let starts_with_copy = sql
        .split_whitespace()
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("copy"));
    if !starts_with_copy {
        return Ok(None);
    }
    // Text DataFusion's own parser would reject as well: let it say why.
    let Ok(all) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(None);
    };
    let mut tokens = Tokens::new(all);
    tokens.next(); // COPY
    let Some(Token::Word(word)) = tokens.peek().cloned() else {
        return Ok(None);
    };
    tokens.next();
    if tokens.peek() == Some(&Token::Period) {
        return Ok(None);
    }
    let dataset = if word.quote_style.is_some() || is_dataset(&word.value) {
        word.value.clone()
    } else {
        word.value.to_ascii_lowercase()
    };
    if !is_dataset(&dataset) && !tokens.has_export_clause() {
        return Ok(None);
    }
    let mut statement = CopyStatement {
        dataset,
        obs: None,
        var: None,
        out: PathBuf::new(),
        choices: ExportChoices::default(),
        aggregate: None,
    };
    let (mut to, mut selected, mut with) = (false, false, false);
    while let Some(token) = tokens.next() {
        match token {
            Token::SemiColon if tokens.peek().is_none() => break,
            Token::Word(w) if w.value.eq_ignore_ascii_case("to") && !to => {
                statement.out = match tokens.next() {
                    Some(Token::SingleQuotedString(s) | Token::DoubleQuotedString(s)) => {
                        PathBuf::from(s)
                    }
                    other => {
                        return Err(bad(format!(
                            "TO expects a quoted path, got {}",
                            show(other)
                        )));
                    }
                };
                to = true;
            }
            Token::Word(w) if w.value.eq_ignore_ascii_case("where") && !selected => {
                parse_selections(&mut tokens, &mut statement)?;
                selected = true;
            }
            Token::Word(w)
                if w.value.eq_ignore_ascii_case("aggregate") && statement.aggregate.is_none() =>
            {
                statement.aggregate = Some(parse_aggregate(&mut tokens)?);
            }
            Token::Word(w) if w.value.eq_ignore_ascii_case("with") && !with => {
                if tokens.next() != Some(Token::LParen) {
                    return Err(bad("WITH expects a parenthesised list of options"));
                }
                statement.choices = parse_options(&mut tokens)?;
                with = true;
            }
            Token::LParen if to && !with => {
                statement.choices = parse_options(&mut tokens)?;
                with = true;
            }
            other => {
                return Err(bad(format!(
                    "unexpected {}: expected WHERE OBS (…), TO 'path' or WITH (…)",
                    show(Some(other))
                )));
            }
        }
    }
    if !to {
        return Err(bad(format!(
            "COPY {} needs TO 'path' (the output: name.h5ad or name.zarr)",
            statement.dataset
        )));
    }
    Ok(Some(statement))
}

/// Runs a parsed `COPY`: its one-row result (`path, format, n_obs, n_vars`).
pub async fn execute_copy(
    session: &dyn QueryContext,
    statement: CopyStatement,
) -> Result<RecordBatch> {
    let options = statement.choices.to_options(&statement.out)?;
    if let Some(collection) = session.collection(&statement.dataset) {
        if statement.aggregate.is_some() {
            return Err(bad(format!(
                "{} is a collection: aggregate it with SQL (GROUP BY), or write it whole and \
                 aggregate the result",
                statement.dataset
            )));
        }
        let request = ExportRequest {
            dataset: statement.dataset,
            obs: statement.obs,
            var: statement.var,
            out: statement.out,
            options,
        };
        let summary = super::collection::export_collection(session, collection, request).await?;
        return summary_batch(&summary);
    }
    if let Some(aggregate) = statement.aggregate {
        let funcs = aggregate
            .funcs
            .iter()
            .map(|f| {
                AggFunc::from_name(f).ok_or_else(|| {
                    bad(format!(
                        "unknown aggregate function '{f}' (sum, mean, count_nonzero, var)"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let summary = export_aggregate(
            session,
            AggregateRequest {
                dataset: statement.dataset,
                by: aggregate.by,
                funcs,
                layer: aggregate.layer,
                obs: statement.obs,
                var: statement.var,
                x_from: None,
                out: statement.out,
                options,
            },
        )
        .await?;
        return summary_batch(&summary);
    }
    let summary = export_subset(
        session,
        ExportRequest {
            dataset: statement.dataset,
            obs: statement.obs,
            var: statement.var,
            out: statement.out,
            options,
        },
    )
    .await?;
    summary_batch(&summary)
}

fn show(token: Option<Token>) -> String {
    token.map_or_else(|| "end of statement".into(), |t| format!("'{t}'"))
}

/// `OBS (…) [AND VAR (…)]` after `WHERE`, either order.
fn parse_selections(tokens: &mut Tokens, statement: &mut CopyStatement) -> Result<()> {
    loop {
        let axis = match tokens.next() {
            Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("obs") => "obs",
            Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("var") => "var",
            other => {
                return Err(bad(format!(
                    "WHERE expects OBS (predicate) or VAR (predicate), got {}",
                    show(other)
                )));
            }
        };
        if tokens.next() != Some(Token::LParen) {
            return Err(bad(format!(
                "{} expects a parenthesised predicate",
                axis.to_uppercase()
            )));
        }
        let text = tokens.balanced_text()?;
        check_predicate(axis, &text)?;
        let slot = if axis == "obs" {
            &mut statement.obs
        } else {
            &mut statement.var
        };
        if slot.replace(text).is_some() {
            return Err(bad(format!("{} is given twice", axis.to_uppercase())));
        }
        match tokens.peek() {
            Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("and") => {
                tokens.next();
            }
            _ => return Ok(()),
        }
    }
}

/// A predicate must be one SQL expression (its columns are checked when it runs).
fn check_predicate(axis: &str, text: &str) -> Result<()> {
    let invalid = |e: String| bad(format!("the {axis} predicate ({text}): {e}"));
    if text.trim().is_empty() {
        return Err(invalid("it is empty".into()));
    }
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .map_err(|e| invalid(e.to_string()))?;
    parser.parse_expr().map_err(|e| invalid(e.to_string()))?;
    let rest = parser.peek_token().token;
    if rest != Token::EOF {
        return Err(invalid(format!("unexpected '{rest}' after the expression")));
    }
    Ok(())
}

/// `f, f [OF layer] BY col, col`.
fn parse_aggregate(tokens: &mut Tokens) -> Result<AggregateClause> {
    let funcs = tokens.word_list("AGGREGATE expects aggregate functions (sum, mean, …)")?;
    let mut layer = None;
    if let Some(Token::Word(w)) = tokens.peek()
        && w.value.eq_ignore_ascii_case("of")
    {
        tokens.next();
        match tokens.next() {
            Some(Token::Word(w)) => layer = Some(w.value),
            other => return Err(bad(format!("OF expects a layer name, got {}", show(other)))),
        }
    }
    match tokens.next() {
        Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("by") => {}
        other => {
            return Err(bad(format!(
                "AGGREGATE expects BY obs columns, got {}",
                show(other)
            )));
        }
    }
    let by = tokens.word_list("BY expects obs columns")?;
    Ok(AggregateClause {
        funcs: funcs.iter().map(|f| f.to_ascii_lowercase()).collect(),
        layer,
        by,
    })
}

/// `(key value, key = value, flag)` after the opening parenthesis.
fn parse_options(tokens: &mut Tokens) -> Result<ExportChoices> {
    let mut choices = ExportChoices::default();
    loop {
        let key = match tokens.next() {
            Some(Token::RParen) => return Ok(choices),
            Some(Token::Word(w)) => w.value.to_ascii_uppercase(),
            other => return Err(bad(format!("expected an option name, got {}", show(other)))),
        };
        if tokens.peek() == Some(&Token::Eq) {
            tokens.next();
        }
        let value = match tokens.peek() {
            Some(Token::Comma | Token::RParen) => None,
            _ => match tokens.next() {
                Some(
                    Token::SingleQuotedString(v)
                    | Token::DoubleQuotedString(v)
                    | Token::Number(v, _),
                ) => Some(v),
                Some(Token::Word(w)) => Some(w.value),
                other => return Err(bad(format!("bad value {} for {key}", show(other)))),
            },
        };
        apply_option(&mut choices, &key, value)?;
        match tokens.next() {
            Some(Token::Comma) => {}
            Some(Token::RParen) => return Ok(choices),
            other => {
                return Err(bad(format!(
                    "expected ',' or ')' in the options, got {}",
                    show(other)
                )));
            }
        }
    }
}

fn apply_option(choices: &mut ExportChoices, key: &str, value: Option<String>) -> Result<()> {
    let needs = |value: Option<String>| value.ok_or_else(|| bad(format!("{key} needs a value")));
    let number = |value: Option<String>| -> Result<u64> {
        let v = needs(value)?;
        v.parse()
            .map_err(|_| bad(format!("{key} expects a whole number, got '{v}'")))
    };
    match key {
        "FORMAT" => choices.format = Some(needs(value)?),
        "ZARR_VERSION" => {
            let v = number(value)?;
            choices.zarr_version =
                Some(u32::try_from(v).map_err(|_| bad(format!("ZARR_VERSION {v}")))?);
        }
        "OVERWRITE" => {
            choices.overwrite = match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("true" | "on" | "1") => true,
                Some("false" | "off" | "0") => false,
                Some(other) => {
                    return Err(bad(format!(
                        "OVERWRITE expects true or false, got '{other}'"
                    )));
                }
            }
        }
        "CHUNK_LEN" => choices.chunk_len = Some(number(value)?),
        "SHARD_CHUNKS" => choices.shard_chunks = Some(number(value)?),
        // `EXCLUDE 'obsm/awk, uns/rec'`, or the option repeated.
        "EXCLUDE" => choices.exclude.extend(
            needs(value)?
                .split(',')
                .map(|p| p.trim().trim_matches('/').to_string())
                .filter(|p| !p.is_empty()),
        ),
        other => {
            return Err(bad(format!(
                "unknown option {other} (expected FORMAT, ZARR_VERSION, OVERWRITE, CHUNK_LEN, \
                 SHARD_CHUNKS, EXCLUDE)"
            )));
        }
    }
    Ok(())
}

/// The statement's tokens: whitespace skipped by `next`/`peek`, kept for predicate text.
struct Tokens {
    all: Vec<Token>,
    pos: usize,
}

impl Tokens {
    fn new(all: Vec<Token>) -> Tokens {
        Tokens { all, pos: 0 }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.all.get(self.pos), Some(Token::Whitespace(_))) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<&Token> {
        self.skip_whitespace();
        self.all.get(self.pos).filter(|t| **t != Token::EOF)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.peek().cloned();
        self.pos += usize::from(token.is_some());
        token
    }

    /// Whether the rest has `AGGREGATE` or `WHERE OBS|VAR` outside parentheses.
    fn has_export_clause(&self) -> bool {
        let words: Vec<(usize, &Token)> = {
            let mut depth = 0usize;
            let mut out = Vec::new();
            for t in self.all[self.pos..].iter() {
                match t {
                    Token::LParen => depth += 1,
                    Token::RParen => depth = depth.saturating_sub(1),
                    Token::Whitespace(_) => continue,
                    _ => {}
                }
                out.push((depth, t));
            }
            out
        };
        words.windows(2).any(|w| match (w[0], w[1]) {
            ((0, Token::Word(a)), (0, Token::Word(b))) => {
                a.value.eq_ignore_ascii_case("aggregate")
                    || (a.value.eq_ignore_ascii_case("where")
                        && (b.value.eq_ignore_ascii_case("obs")
                            || b.value.eq_ignore_ascii_case("var")))
            }
            ((0, Token::Word(a)), _) => a.value.eq_ignore_ascii_case("aggregate"),
            _ => false,
        })
    }

    /// The text up to the parenthesis closing the one just read, which is consumed.
    fn balanced_text(&mut self) -> Result<String> {
        let mut depth = 1usize;
        let mut text = String::new();
        while let Some(token) = self.all.get(self.pos) {
            self.pos += 1;
            match token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(text.trim().to_string());
                    }
                }
                Token::EOF => break,
                _ => {}
            }
            text.push_str(&token.to_string());
        }
        Err(bad("unbalanced parentheses"))
    }

    /// `word [, word]*`, stopping before a clause keyword.
    fn word_list(&mut self, what: &str) -> Result<Vec<String>> {
        let mut words = Vec::new();
        loop {
            match self.next() {
                Some(Token::Word(w)) => words.push(w.value),
                other => return Err(bad(format!("{what}, got {}", show(other)))),
            }
            if self.peek() != Some(&Token::Comma) {
                return Ok(words);
            }
            self.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Result<Option<CopyStatement>> {
        parse_copy(sql, |n| n == "atlas")
    }

    fn error(sql: &str) -> String {
        match parse(sql) {
            Err(e) => e.to_string(),
            Ok(s) => panic!("{sql} parsed: {s:?}"),
        }
    }

    #[test]
    fn subset_statements() -> Result<()> {
        let s = parse(
            "copy atlas TO 'lung.h5ad' WHERE OBS (tissue = 'lung' AND n_genes > (SELECT 1)) \
             AND VAR (highly_variable) WITH (FORMAT 'zarr', ZARR_VERSION 3, OVERWRITE true, \
             CHUNK_LEN 65536, SHARD_CHUNKS = 64, EXCLUDE 'obsm/awk, uns/rec', EXCLUDE '/varm/PCs');",
        )?
        .ok_or_else(|| Error::Internal("not recognised".into()))?;
        assert_eq!(s.dataset, "atlas");
        assert_eq!(
            s.obs.as_deref(),
            Some("tissue = 'lung' AND n_genes > (SELECT 1)")
        );
        assert_eq!(s.var.as_deref(), Some("highly_variable"));
        assert_eq!(s.out, PathBuf::from("lung.h5ad"));
        assert_eq!(
            s.choices,
            ExportChoices {
                format: Some("zarr".into()),
                zarr_version: Some(3),
                overwrite: true,
                chunk_len: Some(65536),
                shard_chunks: Some(64),
                exclude: vec!["obsm/awk".into(), "uns/rec".into(), "varm/PCs".into()],
            }
        );
        // WHERE before TO, DuckDB-style options, a bare flag.
        let s = parse("COPY ATLAS WHERE VAR (x > 1) TO 'a.zarr' (OVERWRITE)")?
            .ok_or_else(|| Error::Internal("not recognised".into()))?;
        assert_eq!(
            (s.dataset.as_str(), s.obs, s.var.as_deref()),
            ("atlas", None, Some("x > 1"))
        );
        assert!(s.choices.overwrite);
        let s = parse("COPY atlas TO 'all.h5ad'")?
            .ok_or_else(|| Error::Internal("not recognised".into()))?;
        assert_eq!((s.obs, s.var), (None, None));
        Ok(())
    }

    #[test]
    fn datafusion_copy_is_left_alone() -> Result<()> {
        for sql in [
            "COPY (SELECT * FROM atlas.obs) TO 'obs.parquet'",
            "COPY atlas.obs TO 'obs.csv'",
            "COPY other_table TO 'x.parquet' STORED AS PARQUET",
            "SELECT 1",
            "copyx atlas",
        ] {
            assert_eq!(parse(sql)?, None, "{sql}");
        }
        // Not attached, but clearly an export: recognised (running it says it is not attached).
        assert!(parse("COPY other WHERE OBS (a) TO 'x.h5ad'")?.is_some());
        Ok(())
    }

    #[test]
    fn aggregate_statements() -> Result<()> {
        let s = parse(
            "COPY atlas AGGREGATE sum, MEAN, count_nonzero OF counts BY donor, cell_type \
             WHERE OBS (tissue = 'lung') TO 'pb.h5ad'",
        )?
        .ok_or_else(|| Error::Internal("not recognised".into()))?;
        assert_eq!(
            s.aggregate,
            Some(AggregateClause {
                funcs: vec!["sum".into(), "mean".into(), "count_nonzero".into()],
                layer: Some("counts".into()),
                by: vec!["donor".into(), "cell_type".into()],
            })
        );
        Ok(())
    }

    #[test]
    fn malformed_statements() {
        for (sql, needle) in [
            ("COPY atlas WHERE OBS (a = 1)", "needs TO 'path'"),
            ("COPY atlas TO lung.h5ad", "TO expects a quoted path"),
            (
                "COPY atlas TO 'a.h5ad' WHERE CELLS (a)",
                "WHERE expects OBS",
            ),
            (
                "COPY atlas TO 'a.h5ad' WHERE OBS a = 1",
                "parenthesised predicate",
            ),
            ("COPY atlas TO 'a.h5ad' WHERE OBS (a = 1", "unbalanced"),
            ("COPY atlas TO 'a.h5ad' WHERE OBS ()", "empty"),
            (
                "COPY atlas TO 'a.h5ad' WHERE OBS (a = = 1)",
                "obs predicate",
            ),
            (
                "COPY atlas TO 'a.h5ad' WHERE OBS (a) AND OBS (b)",
                "given twice",
            ),
            (
                "COPY atlas TO 'a.h5ad' WITH (COLOR 'red')",
                "unknown option COLOR",
            ),
            (
                "COPY atlas TO 'a.h5ad' WITH (CHUNK_LEN big)",
                "whole number",
            ),
            (
                "COPY atlas TO 'a.h5ad' WITH (OVERWRITE maybe)",
                "true or false",
            ),
            ("COPY atlas TO 'a.h5ad' LIMIT 3", "unexpected 'LIMIT'"),
            ("COPY atlas AGGREGATE sum TO 'a.h5ad'", "BY obs columns"),
        ] {
            let e = error(sql);
            assert!(e.contains(needle), "{sql}: {e}");
        }
    }
}
