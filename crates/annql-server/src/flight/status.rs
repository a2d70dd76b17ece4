//! Errors as Flight SQL clients see them: a gRPC status whose code follows the error's SQLSTATE
//! (the same classification the PostgreSQL side reports), with the SQLSTATE in the message.

use std::error::Error;

use tonic::{Code, Status};

use crate::sqlstate;

/// The status a client sees for `e`.
pub fn from_error(e: &(dyn Error + 'static)) -> Status {
    let state = sqlstate::code(e);
    Status::new(
        code_of(state),
        format!("{} (SQLSTATE {state})", sqlstate::message(e)),
    )
}

/// The gRPC code for a SQLSTATE: what a client can act on (retry, fix the statement, ask for
/// less), by the state's class.
pub fn code_of(state: &str) -> Code {
    match state {
        sqlstate::QUERY_CANCELED => Code::Cancelled,
        sqlstate::READ_ONLY | sqlstate::INSUFFICIENT_PRIVILEGE => Code::PermissionDenied,
        sqlstate::UNDEFINED_TABLE | sqlstate::INVALID_SCHEMA_NAME => Code::NotFound,
        sqlstate::FEATURE_NOT_SUPPORTED => Code::Unimplemented,
        sqlstate::DATA_CORRUPTED => Code::DataLoss,
        sqlstate::IO_ERROR => Code::Unavailable,
        sqlstate::INTERNAL_ERROR => Code::Internal,
        s if s.starts_with("53") || s.starts_with("54") => Code::ResourceExhausted,
        s if s.starts_with("42") || s.starts_with("22") => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

/// A statement refused because the server is read-only.
pub fn read_only(what: &str) -> Status {
    Status::permission_denied(format!(
        "cannot execute {what}: annql serves datasets read-only (SQLSTATE {})",
        sqlstate::READ_ONLY
    ))
}

/// The statement was cancelled (`CancelFlightInfo`, or the call dropped).
pub fn cancelled() -> Status {
    Status::cancelled(format!(
        "canceling statement due to user request (SQLSTATE {})",
        sqlstate::QUERY_CANCELED
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_sqlstate_class() {
        assert_eq!(code_of("42601"), Code::InvalidArgument);
        assert_eq!(code_of("42P01"), Code::NotFound);
        assert_eq!(code_of("53200"), Code::ResourceExhausted);
        assert_eq!(code_of("25006"), Code::PermissionDenied);
        assert_eq!(code_of("57014"), Code::Cancelled);
        assert_eq!(code_of("XX001"), Code::DataLoss);
    }
}
