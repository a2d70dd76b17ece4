//! Diagnostics that point into the source: rendered like annql's SQL errors, with
//! `Line: L, Column: C`, the line and carets under the span, and a hint when there is one.

use std::fmt;

use crate::ast::Span;

/// What kind of problem a diagnostic reports, so front-ends choose an error code (a SQLSTATE)
/// by kind instead of by the words of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// The text does not parse, or a construct is used where it cannot be (the default).
    #[default]
    Syntax,
    /// A column, name or gene that the dataset does not have.
    UnknownColumn,
    /// A table (a matrix, gene table or embedding) that the dataset does not have.
    UnknownTable,
    /// A dataset that is not attached.
    UnknownDataset,
    /// A function the language does not have.
    UnknownFunction,
}

/// One problem at one place.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// What is wrong.
    pub message: String,
    /// What kind of problem it is.
    pub kind: Kind,
    /// Where.
    pub span: Span,
    /// A suggestion (`did you mean …`), when there is one.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without a hint.
    pub fn new(message: impl Into<String>, span: Span) -> Self {
        Self {
            message: message.into(),
            kind: Kind::Syntax,
            span,
            hint: None,
        }
    }

    /// Sets the kind of problem.
    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem found in one source text, rendered against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics {
    /// The source the spans point into.
    pub source: String,
    /// The problems, in source order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Problems found in `source`, sorted by position.
    pub fn new(source: &str, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by_key(|d| (d.span.start, d.span.end));
        items.dedup();
        Self {
            source: source.to_string(),
            items,
        }
    }

    /// Where the first problem is: 1-based line and column (in characters) in [`Self::source`].
    pub fn position(&self) -> Option<(usize, usize)> {
        let first = self.items.first()?;
        Some(line_column(&self.source, first.span.start))
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
pub fn line_column(source: &str, at: usize) -> (usize, usize) {
    let at = floor_char_boundary(source, at.min(source.len()));
    let before = &source[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, source[line_start..at].chars().count() + 1)
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    while at > 0 && !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let (line, column) = line_column(&self.source, d.span.start);
            writeln!(f, "error: {} at Line: {line}, Column: {column}", d.message)?;
            let text = self.source.lines().nth(line - 1).unwrap_or("");
            // Carets under the span, clipped to its first line.
            let width = {
                let end = floor_char_boundary(&self.source, d.span.end.min(self.source.len()));
                let start = floor_char_boundary(&self.source, d.span.start.min(end));
                let covered = &self.source[start..end];
                covered
                    .split('\n')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .count()
                    .max(1)
            };
            write!(
                f,
                "  {text}\n  {}{}",
                " ".repeat(column - 1),
                "^".repeat(width)
            )?;
            if let Some(h) = &d.hint {
                write!(f, "\n  hint: {h}")?;
            }
        }
        Ok(())
    }
}

/// `did you mean `x`?` for the candidate closest to `name`, if any is close.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let lower = name.to_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&lower, &c.to_lowercase());
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}
