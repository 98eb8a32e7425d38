//! The small error vocabulary every service maps to gRPC status codes,
//! and the one place an error becomes a `tonic::Status`.
//!
//! Each library crate has its own error enums; those a service answers
//! with implement [`ServiceError`]: the class of each variant
//! ([`ErrorCode`]) and what the caller may be told. [`status`] turns one
//! into a `Status`: database and internal failures reach the caller as a
//! generic message while their detail goes to the log, once, there.

use std::borrow::Cow;

use tonic::{Code, Status};

/// Error classes a caller can act on. Database and internal failures reach
/// the caller only as a generic message; their detail goes to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Unavailable,
    FailedPrecondition,
    /// A concurrent change won; the caller may retry.
    Aborted,
    /// What the caller creates exists already.
    AlreadyExists,
    /// The exchange ended before it finished (the consumer went away).
    Cancelled,
    /// A time limit ran out before the work was done.
    DeadlineExceeded,
    /// Stored data is lost or corrupted.
    DataLoss,
    Internal,
}

/// An error a service answers with.
pub trait ServiceError: std::error::Error {
    /// Its class, which decides the gRPC code.
    fn code(&self) -> ErrorCode;

    /// What the caller is told: by default the error's text. An error of
    /// the service itself (a database, a poisoned lock) answers with a
    /// generic message here; [`status`] logs the full text.
    fn public_message(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_string())
    }
}

/// The `Status` a service answers `err` with. When the caller is told
/// less than the error's full text, the full text is logged here.
pub fn status(err: &(impl ServiceError + ?Sized)) -> Status {
    let code = err.code();
    let public = err.public_message();
    let full = err.to_string();
    if public != full {
        tracing::error!(code = ?code, error = %full, "{public}");
    }
    Status::new(code.into(), public.into_owned())
}

/// An error made on the spot, with its class and message: for checks whose
/// failure needs no type of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl ServiceError for Failure {
    fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<Failure> for Status {
    fn from(err: Failure) -> Status {
        status(&err)
    }
}

impl From<ErrorCode> for Code {
    fn from(code: ErrorCode) -> Code {
        match code {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::Aborted => Code::Aborted,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::Cancelled => Code::Cancelled,
            ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorCode::DataLoss => Code::DataLoss,
            ErrorCode::Internal => Code::Internal,
        }
    }
}

/// A request field that failed validation; becomes `InvalidArgument`
/// naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidArgument {
    pub field: String,
    pub message: String,
}

impl InvalidArgument {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path, for errors found inside a nested message.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl ServiceError for InvalidArgument {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

impl From<InvalidArgument> for Status {
    fn from(err: InvalidArgument) -> Status {
        status(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose full text must not reach the caller.
    #[derive(Debug, thiserror::Error)]
    #[error("store database error: connection to 10.0.0.5 refused")]
    struct Database;

    impl ServiceError for Database {
        fn code(&self) -> ErrorCode {
            ErrorCode::Unavailable
        }
        fn public_message(&self) -> Cow<'_, str> {
            Cow::Borrowed("the store is unavailable")
        }
    }

    #[test]
    fn errors_become_statuses_in_one_place() {
        let cases: [(&str, Status, Code, &str); 4] = [
            (
                "invalid argument names the field",
                InvalidArgument::new("filter.field", "empty").into(),
                Code::InvalidArgument,
                "invalid filter.field: empty",
            ),
            (
                "a failure keeps its message",
                Failure::new(ErrorCode::Aborted, "someone else registered first").into(),
                Code::Aborted,
                "someone else registered first",
            ),
            (
                "a not found",
                Failure::not_found("no dataset a.b").into(),
                Code::NotFound,
                "no dataset a.b",
            ),
            (
                "internal detail stays in the log",
                status(&Database),
                Code::Unavailable,
                "the store is unavailable",
            ),
        ];
        for (name, status, code, message) in cases {
            assert_eq!((status.code(), status.message()), (code, message), "{name}");
        }
    }

    #[test]
    fn every_code_maps_to_its_grpc_code() {
        let cases = [
            (ErrorCode::InvalidArgument, Code::InvalidArgument),
            (ErrorCode::NotFound, Code::NotFound),
            (ErrorCode::PermissionDenied, Code::PermissionDenied),
            (ErrorCode::Unauthenticated, Code::Unauthenticated),
            (ErrorCode::ResourceExhausted, Code::ResourceExhausted),
            (ErrorCode::Unavailable, Code::Unavailable),
            (ErrorCode::FailedPrecondition, Code::FailedPrecondition),
            (ErrorCode::Aborted, Code::Aborted),
            (ErrorCode::AlreadyExists, Code::AlreadyExists),
            (ErrorCode::Cancelled, Code::Cancelled),
            (ErrorCode::DeadlineExceeded, Code::DeadlineExceeded),
            (ErrorCode::DataLoss, Code::DataLoss),
            (ErrorCode::Internal, Code::Internal),
        ];
        for (ours, grpc) in cases {
            assert_eq!(Code::from(ours), grpc, "{ours:?}");
        }
    }
}
