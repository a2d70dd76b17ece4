//! SQLSTATE codes for the errors annql raises, so clients can tell a missing table (42P01) from a
//! syntax error (42601) or a cancelled statement (57014) instead of seeing XX000 for everything.

use datafusion::error::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};

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

/// The statement was cancelled (by a CancelRequest).
pub const QUERY_CANCELED: &str = "57014";
/// A parse error.
pub const SYNTAX_ERROR: &str = "42601";
/// Writes on a read-only server.
pub const READ_ONLY: &str = "25006";
/// `insufficient_privilege`: a write outside the writable directory.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `duplicate_file`: the output of an export exists.
pub const DUPLICATE_FILE: &str = "58P02";
/// Not supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// The error a client sees for a DataFusion error.
pub fn from_datafusion(e: &DataFusionError) -> PgWireError {
    let (code, message) = classify(e);
    error(code, message)
}

/// The error a client sees for an engine error.
pub fn from_engine(e: &annql_engine::Error) -> PgWireError {
    match e {
        annql_engine::Error::DataFusion(df) => from_datafusion(df),
        annql_engine::Error::Predicate { source, .. } => {
            // The predicate's own code (42703 for a missing column), this error's message.
            let code = match from_engine(source) {
                PgWireError::UserError(info) => info.code,
                _ => "XX000".into(),
            };
            error(&code, e.to_string())
        }
        annql_engine::Error::ReadOnly(_) => error(READ_ONLY, e.to_string()),
        annql_engine::Error::WriteRefused { .. } => error(INSUFFICIENT_PRIVILEGE, e.to_string()),
        annql_engine::Error::Write(annql_write::Error::Exists(_)) => {
            error(DUPLICATE_FILE, e.to_string())
        }
        annql_engine::Error::Statement(_) => error(SYNTAX_ERROR, e.to_string()),
        annql_engine::Error::NotAttached(_) => error("3F000", e.to_string()),
        other => error("XX000", other.to_string()),
    }
}

fn classify(e: &DataFusionError) -> (&'static str, String) {
    let root = e.find_root();
    let message = root.to_string();
    let code = match root {
        DataFusionError::SQL(..) => SYNTAX_ERROR,
        DataFusionError::SchemaError(schema, _) => {
            use datafusion::common::SchemaError;
            match schema.as_ref() {
                SchemaError::FieldNotFound { .. } => "42703",
                SchemaError::AmbiguousReference { .. } => "42702",
                SchemaError::DuplicateQualifiedField { .. }
                | SchemaError::DuplicateUnqualifiedField { .. } => "42701",
                #[allow(unreachable_patterns)]
                _ => "42000",
            }
        }
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            datafusion::arrow::error::ArrowError::DivideByZero => "22012",
            datafusion::arrow::error::ArrowError::CastError(_)
            | datafusion::arrow::error::ArrowError::ParseError(_) => "22P02",
            datafusion::arrow::error::ArrowError::ArithmeticOverflow(_) => "22003",
            _ => "XX000",
        },
        DataFusionError::NotImplemented(_) => FEATURE_NOT_SUPPORTED,
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::Plan(msg) => plan_code(msg),
        DataFusionError::Execution(msg) => {
            if msg.contains("Divide by zero") {
                "22012"
            } else if msg.contains("cancel") {
                QUERY_CANCELED
            } else {
                "XX000"
            }
        }
        DataFusionError::Configuration(_) => "42704",
        _ => "XX000",
    };
    (code, message)
}

/// DataFusion reports most semantic errors as `Plan`; tell them apart by their message.
fn plan_code(msg: &str) -> &'static str {
    let m = msg.to_ascii_lowercase();
    if m.contains("table '") && m.contains("not found") || m.contains("table not found") {
        "42P01"
    } else if m.contains("invalid function") || m.contains("no function matches") {
        "42883"
    } else if m.contains("schema") && m.contains("not found") {
        "3F000"
    } else if m.contains("no field named") || m.contains("column") && m.contains("not found") {
        "42703"
    } else if m.contains("cannot be cast") || m.contains("coerc") || m.contains("type") {
        "42804"
    } else {
        "42000"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: PgWireError) -> String {
        match e {
            PgWireError::UserError(info) => info.code,
            other => format!("{other}"),
        }
    }

    #[test]
    fn plan_errors_map_to_their_codes() {
        let c = |m: &str| code(from_datafusion(&DataFusionError::Plan(m.into())));
        assert_eq!(c("table 'annql.public.nope' not found"), "42P01");
        assert_eq!(c("Invalid function 'nosuch'."), "42883");
        assert_eq!(
            code(from_datafusion(&DataFusionError::NotImplemented(
                "x".into()
            ))),
            "0A000"
        );
        assert_eq!(
            code(from_datafusion(&DataFusionError::ArrowError(
                Box::new(datafusion::arrow::error::ArrowError::DivideByZero),
                None
            ))),
            "22012"
        );
    }
}
