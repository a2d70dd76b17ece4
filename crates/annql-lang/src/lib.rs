//! annql's pipeline language: cells, genes, layers and annotations as first-class names,
//! expression values dense (a gene not stored for a cell is 0), pipelines read top to bottom.
//!
//! ```text
//! from atlas | where tissue == "lung" | group cell_type | agg n = count(), cd3e = mean(X["CD3E"])
//! ```
//!
//! [`query`] runs one on an [`AnnSession`](annql_engine::AnnSession). The stages are functions:
//! [`parse`] (text → [`Pipeline`], grammar in `grammar/annql.pest`) → [`bind`] (names resolved
//! against a [`Catalog`] → [`Bound`]) → [`lower`] (→ a SQL [`Statement`] that DataFusion's SQL
//! planner plans exactly as it plans the same question written in SQL). Reference:
//! `docs/language.md`.
//!
//! [`Statement`]: annql_engine::datafusion::sql::sqlparser::ast::Statement

/// The syntax tree, with spans.
pub mod ast;
/// `bind`: names, genes and types resolved; SQL-shaped blocks.
pub mod bind;
/// What binding knows of the attached datasets.
pub mod catalog;
/// Diagnostics and the error type.
pub mod error;
/// `lower`: blocks → SQL AST.
pub mod lower;
/// `parse`: text → syntax tree.
pub mod parse;
/// Running a pipeline on a session.
pub mod run;

pub use ast::{Pipeline, Span};
pub use bind::{Bound, bind};
pub use catalog::Catalog;
pub use error::{Diagnostic, Diagnostics, Error, Result};
pub use lower::lower;
pub use parse::parse;
pub use run::{plan, query, to_sql};
