//! The CLI's error type: every cause stays typed up to the terminal, and an error from a script
//! says where (file, line, column), taken from the error's own position, never from its text.

use std::path::PathBuf;

use crate::args::Language;

/// Result alias for the CLI.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// What can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The engine rejected a statement or failed to run it.
    #[error("{0}")]
    Engine(#[from] annql_engine::Error),
    /// The SQL parser or tokenizer rejected a statement: its error, and where in the text it
    /// points.
    #[error("{source}")]
    Syntax {
        /// 1-based line inside the text parsed (a statement, or a script being split).
        line: usize,
        /// 1-based column.
        column: usize,
        /// The engine's error (DataFusion's, holding sqlparser's), or the tokenizer's.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pipeline was wrong (rendered diagnostics) or failed.
    #[error("{0}")]
    Lang(#[from] annql_lang::Error),
    /// Starting a cluster process or connecting to a cluster failed.
    #[error("{0}")]
    Cluster(#[from] annql_cluster::Error),
    /// DataFusion failed while streaming or writing.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow failed while formatting or writing.
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Reading a file or writing output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A named file (a script, a catalog, a result file) could not be read or written.
    #[error("{what}{}: {source}", path.display())]
    File {
        /// What the file is to the command, as a prefix of its path (`catalog `, or empty).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A storage option of a catalog file is wrong: the file, its line, and the store's error.
    #[error("{}:{line}: {source}", path.display())]
    Catalog {
        /// The catalog file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The store's error about the option (boxed: it is large, and every Result carries
        /// it).
        #[source]
        source: Box<annql_store::Error>,
    },
    /// A statement in a script failed: where, and why.
    #[error("{file}:{line}:{column}: {source}")]
    Script {
        /// The script (`-` for stdin, `-c` for a command-line statement).
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The error.
        #[source]
        source: Box<CliError>,
    },
    /// The line editor of the REPL failed.
    #[error("{what}: {source}")]
    Editor {
        /// What it was doing.
        what: &'static str,
        /// rustyline's error.
        #[source]
        source: rustyline::error::ReadlineError,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The server could not start.
    #[error("{0}")]
    Server(#[from] annql_server::ServerError),
    /// The query was cancelled (Ctrl-C).
    #[error("query cancelled")]
    Cancelled,
}

impl CliError {
    /// The error of a SQL statement the engine failed: a parser error keeps where it points
    /// ([`CliError::Syntax`]), read once here from sqlparser's message.
    pub fn of_sql(e: annql_engine::Error) -> CliError {
        let parser = match &e {
            annql_engine::Error::DataFusion(d) => match d.find_root() {
                datafusion::error::DataFusionError::SQL(p, _) => Some(p.as_ref()),
                _ => None,
            },
            _ => None,
        };
        match parser.and_then(annql_lang::error::sql_position) {
            Some((line, column)) => CliError::Syntax {
                line,
                column,
                source: Box::new(e),
            },
            None => CliError::Engine(e),
        }
    }

    /// Where inside its statement (1-based line, column) an error in `lang` points, if it says:
    /// a parser error's position, the span of DataFusion's diagnostic (the table or column it
    /// could not resolve), or a pipeline's first diagnostic.
    pub fn position(&self, lang: Language) -> Option<(usize, usize)> {
        let planner = match self {
            CliError::Syntax { line, column, .. } => return Some((*line, *column)),
            CliError::Lang(annql_lang::Error::Diagnostics(d)) => return d.position(),
            CliError::DataFusion(d)
            | CliError::Engine(annql_engine::Error::DataFusion(d))
            | CliError::Lang(annql_lang::Error::DataFusion(d))
            | CliError::Lang(annql_lang::Error::Engine(annql_engine::Error::DataFusion(d))) => d,
            _ => return None,
        };
        // A pipeline's lowered SQL is not in the file: its spans point nowhere there. The
        // diagnostics of a pipeline inside `aql('…')` count from the pipeline's string, not from
        // the statement, and are not DataFusion's: no position rather than a wrong one.
        let span = planner.diagnostic().and_then(|d| d.span)?;
        (lang == Language::Sql).then_some((span.start.line as usize, span.start.column as usize))
    }

    /// Whether this says a dataset's PATH is not a store annql opens (missing, or neither a
    /// directory, a zip archive nor an HDF5 file): then the forms a DATASET may take are worth
    /// showing ([`crate::args::DATASET_FORMS`]).
    pub fn is_not_a_store(&self) -> bool {
        let store = match self {
            CliError::Engine(annql_engine::Error::Store(e)) => e,
            CliError::Server(annql_server::ServerError::Dataset { source, .. }) => source.as_ref(),
            _ => return false,
        };
        matches!(
            store,
            annql_store::Error::Open { .. } | annql_store::Error::UnsupportedSource { .. }
        )
    }
}
