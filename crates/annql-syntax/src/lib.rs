//! annql's pipeline language as text: [`parse`] turns a program into a [`Pipeline`] whose nodes
//! carry [`Span`]s, with the parser derived from `grammar/annql.pest` (the single source of
//! truth), and [`Diagnostics`] render problems against the source.
//!
//! This crate knows nothing of datasets or SQL (binding and lowering are `annql-lang`'s), so the
//! parser can be fuzzed and reused without the query engine.

/// The syntax tree, with spans.
pub mod ast;
/// Diagnostics pointing into the source.
pub mod diagnostic;
/// `parse`: text → syntax tree.
pub mod parse;

pub use ast::{Pipeline, Span};
pub use diagnostic::{Diagnostic, Diagnostics, Kind};
pub use parse::{parse, split_programs};
