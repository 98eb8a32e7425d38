//! Errors of the adapter library.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use humantime::format_duration;
use jembatan_core::limits::{MAX_FIELDS, MAX_IDENT_BYTES};
use jembatan_core::{DatasetId, ErrorCode, InvalidArgument, ServiceError};

use crate::adapter::MAX_RECEIPTS_PER_BATCH;

/// Everything that can stop an adapter from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The configuration is unreadable or invalid; `origin` names the file.
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },
    #[error("cannot read adapter config {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database could not be opened (the URL is shown without password).
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database error while {context}: {source}")]
    Database {
        context: String,
        source: sqlx::Error,
    },
    /// The whitelist names tables or columns the database lacks, or columns
    /// of types the adapter cannot serve. The message names every problem.
    #[error("whitelist does not match the database: {0}")]
    Whitelist(String),
    #[error("cannot open receipt log {path}: {source}")]
    ReceiptLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("receipt log {path} line {line}: {message}")]
    ReceiptLogFormat {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(String),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Why the adapter refuses a call from the broker; each becomes a gRPC
/// status through [`jembatan_core::error::status`].
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "invalid dataset: dataset id of {0} bytes exceeds the limit max_ident_bytes = {max} (per part of <agency>.<dataset>)",
        max = MAX_IDENT_BYTES
    )]
    DatasetIdTooLong(usize),
    #[error("dataset {dataset:?} is not on the whitelist of this adapter (agency {agency})")]
    DatasetNotWhitelisted { dataset: String, agency: String },
    #[error("invalid columns: at least one column is required")]
    NoColumns,
    #[error("invalid columns: {0} columns exceed the limit max_fields = {max}", max = MAX_FIELDS)]
    TooManyColumns(usize),
    #[error(
        "invalid columns: a column name of {0} bytes exceeds the limit max_ident_bytes = {max}",
        max = MAX_IDENT_BYTES
    )]
    ColumnNameTooLong(usize),
    #[error("columns not on the whitelist of dataset {dataset}: {columns}")]
    ColumnsNotWhitelisted { dataset: String, columns: String },
    #[error("invalid columns: column {0:?} is requested more than once")]
    DuplicateColumn(String),
    #[error(
        "invalid parts: {0} parts exceed the limit max_fetch_parts = {max}",
        max = jembatan_core::limits::MAX_FETCH_PARTS
    )]
    TooManyParts(usize),
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("filter names fields not on the whitelist of dataset {dataset}: {fields}")]
    FilterNotWhitelisted { dataset: String, fields: String },
    #[error("invalid receipts: {0} in one batch, at most {max}", max = MAX_RECEIPTS_PER_BATCH)]
    TooManyReceipts(usize),
    #[error("invalid receipt: no receipt given")]
    NoReceipt,
    #[error("receipt {index} of the batch: {source}")]
    InBatch { index: usize, source: Box<Refused> },
    #[error("dataset {0} offers no changes: its adapter config declares no `changes`")]
    NoChangeSource(String),
    #[error(
        "dataset {dataset}: the subscription cannot be resumed from its position: {why}; start a new subscription"
    )]
    PositionGone { dataset: String, why: String },
    #[error(
        "dataset {0}: the adapter's change journal is still catching up with the database; try again shortly"
    )]
    JournalBehind(String),
    #[error("this adapter serves only the broker; caller is {0}")]
    NotTheBroker(String),
    /// The receipt log could not be written; the caller is told only
    /// that, the detail is logged.
    #[error("cannot append to the receipt log {}: {message}", path.display())]
    ReceiptLog { path: PathBuf, message: String },
}

impl ServiceError for Refused {
    fn code(&self) -> ErrorCode {
        match self {
            Refused::DatasetNotWhitelisted { .. }
            | Refused::ColumnsNotWhitelisted { .. }
            | Refused::FilterNotWhitelisted { .. }
            | Refused::NotTheBroker(_) => ErrorCode::PermissionDenied,
            Refused::InBatch { source, .. } => source.code(),
            Refused::ReceiptLog { .. } => ErrorCode::Internal,
            Refused::JournalBehind(_) => ErrorCode::Unavailable,
            Refused::NoChangeSource(_) | Refused::PositionGone { .. } => {
                ErrorCode::FailedPrecondition
            }
            Refused::DatasetIdTooLong(_)
            | Refused::NoColumns
            | Refused::TooManyColumns(_)
            | Refused::TooManyParts(_)
            | Refused::ColumnNameTooLong(_)
            | Refused::DuplicateColumn(_)
            | Refused::Invalid(_)
            | Refused::TooManyReceipts(_)
            | Refused::NoReceipt => ErrorCode::InvalidArgument,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        match self {
            Refused::ReceiptLog { .. } => Cow::Borrowed("cannot record the receipt"),
            other => Cow::Owned(other.to_string()),
        }
    }
}

impl From<Refused> for tonic::Status {
    fn from(err: Refused) -> tonic::Status {
        jembatan_core::error::status(&err)
    }
}

/// Why a fetch under way stopped before its last batch; the stream ends
/// with its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchStopped {
    /// The database failed while rows were read; its detail is logged
    /// where it is met, never sent to the broker.
    #[error("database error while reading dataset {0}")]
    Database(DatasetId),
    #[error(
        "the fetch of dataset {dataset} did not finish within the caller's deadline of {} (grpc-timeout); the query was stopped",
        format_duration(*limit)
    )]
    CallerDeadline { dataset: DatasetId, limit: Duration },
    #[error(
        "the fetch of dataset {dataset} ran longer than the adapter's limit max_query_time = {}; the query was stopped",
        format_duration(*limit)
    )]
    ConfigDeadline { dataset: DatasetId, limit: Duration },
}

impl ServiceError for FetchStopped {
    fn code(&self) -> ErrorCode {
        match self {
            FetchStopped::Database(_) => ErrorCode::Internal,
            FetchStopped::CallerDeadline { .. } | FetchStopped::ConfigDeadline { .. } => {
                ErrorCode::DeadlineExceeded
            }
        }
    }
}

impl From<FetchStopped> for tonic::Status {
    fn from(err: FetchStopped) -> tonic::Status {
        jembatan_core::error::status(&err)
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end + 3],
        &userinfo[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn refusals_and_stopped_fetches_become_statuses() {
        let dataset: DatasetId = "dukcapil.penduduk".parse().unwrap();
        let cases: [(&str, tonic::Status, Code, &str); 5] = [
            (
                "off the whitelist",
                Refused::DatasetNotWhitelisted {
                    dataset: "dukcapil.rahasia".into(),
                    agency: "dukcapil".into(),
                }
                .into(),
                Code::PermissionDenied,
                "dataset \"dukcapil.rahasia\" is not on the whitelist of this adapter (agency dukcapil)",
            ),
            (
                "the receipt log's path stays in the log",
                Refused::ReceiptLog {
                    path: "/var/lib/adapter/receipts.jsonl".into(),
                    message: "disk full".into(),
                }
                .into(),
                Code::Internal,
                "cannot record the receipt",
            ),
            (
                "a database error names only the dataset",
                FetchStopped::Database(dataset.clone()).into(),
                Code::Internal,
                "database error while reading dataset dukcapil.penduduk",
            ),
            (
                "the caller's deadline",
                FetchStopped::CallerDeadline {
                    dataset: dataset.clone(),
                    limit: Duration::from_secs(2),
                }
                .into(),
                Code::DeadlineExceeded,
                "the fetch of dataset dukcapil.penduduk did not finish within the caller's deadline of 2s (grpc-timeout); the query was stopped",
            ),
            (
                "the adapter's limit",
                FetchStopped::ConfigDeadline {
                    dataset,
                    limit: Duration::from_secs(600),
                }
                .into(),
                Code::DeadlineExceeded,
                "the fetch of dataset dukcapil.penduduk ran longer than the adapter's limit max_query_time = 10m; the query was stopped",
            ),
        ];
        for (name, status, code, message) in cases {
            assert_eq!((status.code(), status.message()), (code, message), "{name}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("mysql://root@127.0.0.1/test", "mysql://root@127.0.0.1/test"),
            ("sqlite://siak.db", "sqlite://siak.db"),
            ("postgres://u:p@ss@h/db?x=1", "postgres://u:***@h/db?x=1"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
