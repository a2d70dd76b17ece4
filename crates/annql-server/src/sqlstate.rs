//! SQLSTATE codes for the errors annql raises, chosen by the error's type, so clients can tell a
//! missing table (42P01) from a syntax error (42601), a damaged store (XX001) or a cancelled
//! statement (57014); only a bug is XX000. Errors stay typed up to here: [`from_error`] turns
//! one into the ErrorResponse a client sees, with the position it points at (the `P` field for
//! the client's query, `p`/`q` for a pipeline inside `aql('…')`), which psql draws as a caret.

use std::error::Error;

use annql_lang::Diagnostics;
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use pgwire::error::{ErrorInfo, PgWireError};

use crate::statement::Refused;

/// `ERROR` with `code` and `message`, as a pgwire error.
pub fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// `FATAL` with `code` and `message`: the server closes the connection after sending it.
pub fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message.into(),
    )))
}

/// The statement was cancelled (by a CancelRequest or the statement timeout).
pub const QUERY_CANCELED: &str = "57014";
/// A parse error.
pub const SYNTAX_ERROR: &str = "42601";
/// A column (or a gene, a pipeline's name) that does not exist.
pub const UNDEFINED_COLUMN: &str = "42703";
/// A table that does not exist.
pub const UNDEFINED_TABLE: &str = "42P01";
/// A function that does not exist.
pub const UNDEFINED_FUNCTION: &str = "42883";
/// A dataset (schema) that is not attached.
pub const INVALID_SCHEMA_NAME: &str = "3F000";
/// Writes on a read-only server.
pub const READ_ONLY: &str = "25006";
/// `insufficient_privilege`: a write outside the writable directory.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `duplicate_file`: the output of an export exists.
pub const DUPLICATE_FILE: &str = "58P02";
/// Not supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `out_of_memory`: the query's memory pool is exhausted.
pub const OUT_OF_MEMORY: &str = "53200";
/// `program_limit_exceeded`: a read or a result above a configured limit.
pub const LIMIT_EXCEEDED: &str = "54000";
/// `data_corrupted`: a store whose bytes or metadata are not what its format says.
pub const DATA_CORRUPTED: &str = "XX001";
/// `io_error`: a store that could not be opened or read.
pub const IO_ERROR: &str = "58030";
/// A bug, or an error nothing more is known of.
pub const INTERNAL_ERROR: &str = "XX000";

/// The error a client sees for `e`: its SQLSTATE by type ([`code`]), its message, and where it
/// points. `query` is the text the client sent (positions in it become the `P` field).
pub fn from_error(e: &(dyn Error + 'static), query: Option<&str>) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), code(e).into(), message(e));
    match position(e) {
        Some(Position::Query(line, column)) => {
            info.position = query
                .and_then(|q| char_index(q, line, column))
                .map(|p| p.to_string());
        }
        Some(Position::Pipeline(d)) => {
            let at = d.position().and_then(|(l, c)| char_index(&d.source, l, c));
            info.internal_position = at.map(|p| p.to_string());
            info.internal_query = Some(d.source.clone());
        }
        None => {}
    }
    PgWireError::UserError(Box::new(info))
}

/// The error a client sees for a DataFusion error.
pub fn from_datafusion(e: &DataFusionError) -> PgWireError {
    from_error(e, None)
}

/// The error a client sees for an engine error.
pub fn from_engine(e: &annql_engine::Error) -> PgWireError {
    from_error(e, None)
}

/// The statement was cancelled by a CancelRequest.
pub fn cancelled() -> PgWireError {
    error(QUERY_CANCELED, "canceling statement due to user request")
}

/// The statement ran past `statement_timeout`.
pub fn timed_out() -> PgWireError {
    error(
        QUERY_CANCELED,
        "canceling statement due to statement timeout",
    )
}

/// The message of `e`: DataFusion's innermost error (without the contexts DataFusion wraps it
/// in), else the error's own.
pub(crate) fn message(e: &(dyn Error + 'static)) -> String {
    let datafusion = match e.downcast_ref::<annql_engine::Error>() {
        Some(annql_engine::Error::DataFusion(d)) => Some(d),
        _ => e.downcast_ref::<DataFusionError>(),
    };
    match datafusion {
        Some(d) => d.find_root().to_string(),
        None => e.to_string(),
    }
}

/// The SQLSTATE of an error annql raised, by its type: through the wrappers DataFusion puts
/// around errors (External, Context, Diagnostic, Shared) down to annql's own.
pub fn code(e: &(dyn Error + 'static)) -> &'static str {
    if let Some(d) = e.downcast_ref::<DataFusionError>() {
        datafusion_code(d)
    } else if let Some(e) = e.downcast_ref::<annql_engine::Error>() {
        engine_code(e)
    } else if let Some(e) = e.downcast_ref::<annql_lang::Error>() {
        lang_code(e)
    } else if let Some(e) = e.downcast_ref::<annql_store::Error>() {
        store_code(e)
    } else if let Some(e) = e.downcast_ref::<annql_write::Error>() {
        write_code(e)
    } else if let Some(e) = e.downcast_ref::<ArrowError>() {
        arrow_code(e)
    } else if let Some(e) = e.downcast_ref::<Refused>() {
        match e {
            Refused::Unsupported(_) => FEATURE_NOT_SUPPORTED,
            Refused::ShowTables(_) => INTERNAL_ERROR,
        }
    } else if e.is::<ParserError>() {
        SYNTAX_ERROR
    } else if e.is::<std::io::Error>() {
        IO_ERROR
    } else {
        INTERNAL_ERROR
    }
}

fn datafusion_code(e: &DataFusionError) -> &'static str {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_code(inner)
        }
        DataFusionError::Shared(inner) => datafusion_code(inner),
        DataFusionError::Collection(all) => all.first().map_or(INTERNAL_ERROR, datafusion_code),
        DataFusionError::External(inner) => code(inner.as_ref()),
        DataFusionError::SQL(..) => SYNTAX_ERROR,
        DataFusionError::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound { .. } => UNDEFINED_COLUMN,
            SchemaError::AmbiguousReference { .. } => "42702",
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => "42701",
            #[allow(unreachable_patterns)]
            _ => "42000",
        },
        DataFusionError::ArrowError(arrow, _) => arrow_code(arrow),
        DataFusionError::NotImplemented(_) => FEATURE_NOT_SUPPORTED,
        DataFusionError::ResourcesExhausted(_) => OUT_OF_MEMORY,
        DataFusionError::IoError(_) => IO_ERROR,
        // DataFusion says these only in words.
        DataFusionError::Plan(msg) => plan_code(msg),
        DataFusionError::Execution(msg) => {
            if msg.contains("Divide by zero") {
                "22012"
            } else if msg.contains("cancel") {
                QUERY_CANCELED
            } else {
                INTERNAL_ERROR
            }
        }
        DataFusionError::Configuration(_) => "42704",
        _ => INTERNAL_ERROR,
    }
}

/// DataFusion reports most semantic errors as `Plan`; tell them apart by their message.
fn plan_code(msg: &str) -> &'static str {
    let m = msg.to_ascii_lowercase();
    if m.contains("table '") && m.contains("not found") || m.contains("table not found") {
        UNDEFINED_TABLE
    } else if m.contains("invalid function") || m.contains("no function matches") {
        UNDEFINED_FUNCTION
    } else if m.contains("schema") && m.contains("not found") {
        INVALID_SCHEMA_NAME
    } else if m.contains("no field named") || m.contains("column") && m.contains("not found") {
        UNDEFINED_COLUMN
    } else if m.contains("cannot be cast") || m.contains("coerc") || m.contains("type") {
        "42804"
    } else {
        "42000"
    }
}

fn arrow_code(e: &ArrowError) -> &'static str {
    match e {
        ArrowError::ExternalError(inner) => code(inner.as_ref()),
        ArrowError::DivideByZero => "22012",
        ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
        ArrowError::ArithmeticOverflow(_) => "22003",
        ArrowError::MemoryError(_) => OUT_OF_MEMORY,
        ArrowError::IoError(..) => IO_ERROR,
        _ => INTERNAL_ERROR,
    }
}

fn engine_code(e: &annql_engine::Error) -> &'static str {
    use annql_engine::Error as E;
    match e {
        E::Store(e) => store_code(e),
        E::Unmapped { source, .. } => store_code(source),
        E::DataFusion(e) => datafusion_code(e),
        E::Write(e) => write_code(e),
        E::Index(e) => index_code(e),
        // The predicate's own code (42703 for a missing column).
        E::Predicate { source, .. } => engine_code(source),
        E::AlreadyAttached(_) => "42P06",
        E::NotAttached(_) => INVALID_SCHEMA_NAME,
        E::Statement(_) => SYNTAX_ERROR,
        E::ReadOnly(_) => READ_ONLY,
        E::WriteRefused { .. } => INSUFFICIENT_PRIVILEGE,
        E::ElementType { .. } => "42804",
        E::DenseLimit { .. } => LIMIT_EXCEEDED,
        E::Matrix { .. } => FEATURE_NOT_SUPPORTED,
        // Columns of a collection's datasets that cannot be brought together: a type mismatch.
        E::Harmonise { .. } => "42804",
        // A dataset of a collection: its own error's code.
        E::Dataset { source, .. } => engine_code(source),
        // A shipped plan naming a table the store no longer has: undefined_table.
        E::NoTable { .. } => "42P01",
        E::Io { .. } => IO_ERROR,
        E::Internal(_) => INTERNAL_ERROR,
    }
}

fn lang_code(e: &annql_lang::Error) -> &'static str {
    use annql_lang::Error as E;
    match e {
        E::Diagnostics(d) => diagnostics_code(d),
        E::Engine(e) => engine_code(e),
        E::DataFusion(e) => datafusion_code(e),
        E::GenePredicate { source, .. } => lang_code(source),
        E::Internal(_) => INTERNAL_ERROR,
    }
}

/// A pipeline's first diagnostic, by its kind: a name binding could not resolve, else a
/// syntax or type problem.
fn diagnostics_code(d: &Diagnostics) -> &'static str {
    use annql_lang::DiagnosticKind as Kind;
    match d.items.first().map(|first| first.kind) {
        Some(Kind::UnknownColumn) => UNDEFINED_COLUMN,
        Some(Kind::UnknownDataset) => INVALID_SCHEMA_NAME,
        Some(Kind::UnknownTable) => UNDEFINED_TABLE,
        Some(Kind::UnknownFunction) => UNDEFINED_FUNCTION,
        Some(Kind::Syntax) | None => SYNTAX_ERROR,
    }
}

fn store_code(e: &annql_store::Error) -> &'static str {
    use annql_store::Error as E;
    match e {
        E::Open { .. } | E::Storage { .. } | E::Remote { .. } | E::NotAFile { .. } => IO_ERROR,
        E::Zip { .. }
        | E::Hdf5 { .. }
        | E::Metadata { .. }
        | E::NotAnnData { .. }
        | E::Malformed { .. }
        | E::NotFound { .. }
        | E::OutOfBounds { .. }
        | E::Decode { .. }
        | E::Arrow { .. } => DATA_CORRUPTED,
        E::UnsupportedSource { .. } | E::Unsupported { .. } => FEATURE_NOT_SUPPORTED,
        E::TooLarge { .. } => LIMIT_EXCEEDED,
        E::Option { .. } => "22023",
    }
}

fn write_code(e: &annql_write::Error) -> &'static str {
    use annql_write::Error as E;
    match e {
        E::Source(e) => store_code(e),
        E::Exists(_) => DUPLICATE_FILE,
        E::Io { .. } | E::Zarr { .. } | E::Hdf5 { .. } => IO_ERROR,
        E::Refused { .. } => FEATURE_NOT_SUPPORTED,
        E::Selection { .. } => "22023",
        E::Cancelled(_) => QUERY_CANCELED,
        E::Internal(_) => INTERNAL_ERROR,
    }
}

fn index_code(e: &annql_index::Error) -> &'static str {
    use annql_index::Error as E;
    match e {
        E::Source(e) => store_code(e),
        E::Write(e) => write_code(e),
        E::Io { .. } => IO_ERROR,
        E::NotIndexable { .. } => FEATURE_NOT_SUPPORTED,
        // lock_not_available
        E::Locked { .. } => "55P03",
        E::TooLittleMemory { .. } => OUT_OF_MEMORY,
        E::BadSidecar { .. } => DATA_CORRUPTED,
        // undefined_file
        E::Missing(_) => "58P01",
        E::Cancelled(_) => QUERY_CANCELED,
        E::Internal(_) => INTERNAL_ERROR,
    }
}

/// Where an error points.
enum Position<'a> {
    /// 1-based line and column in the client's query text.
    Query(usize, usize),
    /// Into a pipeline (inside `aql('…')`): its diagnostics hold its text.
    Pipeline(&'a Diagnostics),
}

fn position<'a>(e: &'a (dyn Error + 'static)) -> Option<Position<'a>> {
    if let Some(d) = e.downcast_ref::<DataFusionError>() {
        datafusion_position(d)
    } else if let Some(e) = e.downcast_ref::<annql_engine::Error>() {
        match e {
            annql_engine::Error::DataFusion(d) => datafusion_position(d),
            annql_engine::Error::Predicate { source, .. } => position(source.as_ref()),
            _ => None,
        }
    } else if let Some(e) = e.downcast_ref::<annql_lang::Error>() {
        match e {
            annql_lang::Error::Diagnostics(d) => Some(Position::Pipeline(d)),
            annql_lang::Error::Engine(e) => position(e),
            annql_lang::Error::DataFusion(d) => datafusion_position(d),
            annql_lang::Error::GenePredicate { source, .. } => position(source.as_ref()),
            annql_lang::Error::Internal(_) => None,
        }
    } else if let Some(p) = e.downcast_ref::<ParserError>() {
        parser_position(p)
    } else {
        None
    }
}

fn datafusion_position(e: &DataFusionError) -> Option<Position<'_>> {
    // A span of line 0 is empty: a name lowered from a pipeline, not written by the client.
    if let Some(span) = e.diagnostic().and_then(|d| d.span)
        && span.start.line > 0
    {
        return Some(Position::Query(
            span.start.line as usize,
            span.start.column as usize,
        ));
    }
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_position(inner)
        }
        DataFusionError::Shared(inner) => datafusion_position(inner),
        DataFusionError::External(inner) => position(inner.as_ref()),
        DataFusionError::SQL(p, _) => parser_position(p),
        _ => None,
    }
}

fn parser_position(e: &ParserError) -> Option<Position<'static>> {
    annql_lang::error::sql_position(e).map(|(line, column)| Position::Query(line, column))
}

/// The 1-based character index of `line`, `column` (1-based, in characters) in `text`, as the
/// `P` field counts.
fn char_index(text: &str, line: usize, column: usize) -> Option<usize> {
    let before: usize = text
        .split('\n')
        .take(line.checked_sub(1)?)
        .map(|l| l.chars().count() + 1)
        .sum();
    Some(before + column.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(e: PgWireError) -> Box<ErrorInfo> {
        match e {
            PgWireError::UserError(info) => info,
            other => Box::new(ErrorInfo::new(
                "ERROR".into(),
                "?".into(),
                other.to_string(),
            )),
        }
    }

    #[test]
    fn codes_follow_the_error_type() {
        let c = |e: DataFusionError| info(from_datafusion(&e)).code;
        assert_eq!(
            c(DataFusionError::Plan(
                "table 'annql.public.nope' not found".into()
            )),
            "42P01"
        );
        assert_eq!(
            c(DataFusionError::Plan("Invalid function 'nosuch'.".into())),
            "42883"
        );
        assert_eq!(c(DataFusionError::NotImplemented("x".into())), "0A000");
        assert_eq!(
            c(DataFusionError::ArrowError(
                Box::new(ArrowError::DivideByZero),
                None
            )),
            "22012"
        );
        // A store error keeps its type through DataFusion's wrappers.
        let damaged = annql_store::Error::Malformed {
            store: "s".into(),
            path: "X".into(),
            reason: "r".into(),
        };
        let wrapped = DataFusionError::Context(
            "scanning".into(),
            Box::new(DataFusionError::External(Box::new(damaged))),
        );
        assert_eq!(c(wrapped), DATA_CORRUPTED);
        let too_large = annql_store::Error::TooLarge {
            store: "s".into(),
            path: "X".into(),
            what: "a chunk".into(),
            bytes: 2,
            limit: 1,
        };
        assert_eq!(
            info(from_engine(&annql_engine::Error::Store(too_large))).code,
            LIMIT_EXCEEDED
        );
        let missing = annql_engine::Error::NotAttached("x".into());
        assert_eq!(info(from_engine(&missing)).code, INVALID_SCHEMA_NAME);
        let internal = annql_engine::Error::Internal("x".into());
        assert_eq!(info(from_engine(&internal)).code, INTERNAL_ERROR);
    }

    #[test]
    fn positions_point_into_the_query_or_the_pipeline() {
        let parser = ParserError::ParserError("Expected: x, found: y at Line: 2, Column: 3".into());
        let e = info(from_error(&parser, Some("SELECT 1;\nSELEC 2")));
        assert_eq!(
            (e.code.as_str(), e.position.as_deref()),
            (SYNTAX_ERROR, Some("13"))
        );
        let pipeline = annql_lang::Error::Diagnostics(Diagnostics::new(
            "from t | where nope == 1",
            vec![
                annql_lang::Diagnostic::new("unknown column `nope`", annql_lang::Span::new(15, 19))
                    .with_kind(annql_lang::DiagnosticKind::UnknownColumn),
            ],
        ));
        let wrapped = DataFusionError::External(Box::new(pipeline));
        let e = info(from_error(&wrapped, Some("SELECT * FROM aql('…')")));
        assert_eq!(e.code, UNDEFINED_COLUMN);
        assert_eq!(e.position, None);
        assert_eq!(e.internal_position.as_deref(), Some("16"));
        assert_eq!(
            e.internal_query.as_deref(),
            Some("from t | where nope == 1")
        );
    }
}
