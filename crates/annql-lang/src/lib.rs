//! annql's pipeline language: cells, genes, layers and annotations as first-class names,
//! expression values dense (a gene not stored for a cell is 0), pipelines read top to bottom.
//!
//! ```text
//! from atlas | where tissue == "lung" | group cell_type | agg n = count(), cd3e = mean(X["CD3E"])
//! ```
//!
//! [`query`] runs one on an [`AnnSession`](annql_engine::AnnSession). The stages are functions:
//! [`parse`] (text → [`Pipeline`], grammar in `grammar/annql.pest`) → [`bind`] (names resolved
//! against a [`Catalog`] → [`Bound`], the [`ir`]) → [`lower`] (→ a SQL [`Statement`] that
//! DataFusion's SQL planner plans exactly as it plans the same question written in SQL).
//! Reference: `docs/language.md`. [`install`] adds the `aql('…')` table function, so SQL (and
//! every client of SQL) can run pipelines.
//!
//! [`Statement`]: annql_engine::datafusion::sql::sqlparser::ast::Statement

/// What binding knows of the attached datasets.
pub mod catalog;

/// `bind`: names, genes and types resolved; SQL-shaped blocks.
pub mod bind;

/// The bound IR: what `bind` produces and `lower` consumes.
pub mod ir;

/// `lower`: blocks → SQL AST.
pub mod lower;

/// Running a pipeline on a session.
pub mod run;

/// Pipelines inside SQL: the `aql('…')` table function.
pub mod embed;

/// Language `where` expressions as SQL predicates over obs/var.
pub mod predicate;

/// `… | write "out.h5ad"`: a pipeline's cells written as a new AnnData store.
pub mod write;

/// Diagnostics and the error type.
pub mod error;

/// The syntax tree with spans, and `parse` (text → tree), from `annql-syntax`.
pub use annql_syntax::{ast, parse, split_programs};

pub use ast::{Pipeline, Span};
pub use bind::bind;
pub use catalog::Catalog;
pub use embed::{AqlTableFunction, install};
pub use error::{Diagnostic, DiagnosticKind, Diagnostics, Error, Result};
pub use ir::Bound;
pub use lower::lower;
pub use predicate::where_to_sql;
pub use run::{plan, query, to_sql};

/// A session built from `builder` with the language installed (the `aql('…')` table function):
/// how the facade, the CLI and the server open their sessions.
pub fn session(
    builder: annql_engine::SessionBuilder,
) -> annql_engine::Result<annql_engine::AnnSession> {
    let session = builder.build()?;
    install(&session)?;
    Ok(session)
}
