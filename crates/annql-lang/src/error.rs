//! Errors: diagnostics that point into the source (rendered like annql's SQL errors, with
//! `Line: L, Column: C`, the line and a caret), and the failures of running a query.

use annql_engine::datafusion::error::DataFusionError;

pub use annql_syntax::diagnostic::{Diagnostic, Diagnostics, did_you_mean, line_column};

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
