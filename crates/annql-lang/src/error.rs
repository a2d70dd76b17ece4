//! Errors: diagnostics that point into the source (rendered like annql's SQL errors, with
//! `Line: L, Column: C`, the line and a caret), and the failures of running a query.

use annql_engine::datafusion::error::DataFusionError;
use annql_engine::datafusion::sql::sqlparser::parser::ParserError;

pub use annql_syntax::diagnostic::{
    Diagnostic, Diagnostics, Kind as DiagnosticKind, did_you_mean, line_column,
};

/// Result alias for the language.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of parsing, binding, lowering or running a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline is wrong: one or more diagnostics pointing into it.
    #[error("{0}")]
    Diagnostics(Diagnostics),
    /// The engine failed (attaching, reading a store).
    #[error(transparent)]
    Engine(#[from] annql_engine::Error),
    /// DataFusion rejected or failed the lowered query.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// A gene selection's predicate (`X[var.highly_variable]`) could not be lowered; the query
    /// is refused rather than run over every gene.
    #[error("the gene predicate of `{matrix}` (over `{var_table}`) cannot be lowered: {source}")]
    GenePredicate {
        /// The entries table (`x`, `layers_counts`).
        matrix: String,
        /// The gene table the predicate reads.
        var_table: String,
        /// Why it could not be lowered.
        #[source]
        source: Box<Error>,
    },
    /// A bug in annql.
    #[error("internal error (this is a bug in annql): {0}")]
    Internal(String),
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Diagnostics(d)
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Where a SQL parser error points: 1-based line and column. sqlparser keeps the position only in
/// its message ("… at Line: 2, Column: 8"); the front-ends read it back here, once, where the
/// error reaches them, and carry it on as data.
pub fn sql_position(e: &ParserError) -> Option<(usize, usize)> {
    let (ParserError::ParserError(message) | ParserError::TokenizerError(message)) = e else {
        return None;
    };
    let at = message.rfind(" at Line: ")?;
    let (line, column) = message[at + 10..].split_once(", Column: ")?;
    let digits = |s: &str| -> Option<usize> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    Some((digits(line)?, digits(column)?))
}
