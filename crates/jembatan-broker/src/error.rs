//! Why an exchange is refused or stops after it was allowed, as types:
//! the relay and the exchange service answer with these, and each becomes
//! a `tonic::Status` only through [`jembatan_core::error::status`].
//!
//! Failures of the broker itself (its store, its audit log, a worker)
//! reach the consumer as a generic message; their detail goes to the log
//! where the status is made. Denials and receipts add their trailers to
//! the status of one of these errors.

use std::borrow::Cow;
use std::time::Duration;

use jembatan_core::{AgencyId, ErrorCode, ServiceError};
use tonic::{Code, Status};

use crate::registry::TranslateError;

/// The detail of a failure of the broker's own, for the log.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A record the adapter sent that the broker does not deliver: the
/// exchange fails.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadRecord {
    #[error("adapter sent more than the limit of {limit} records")]
    OverLimit { limit: u64 },
    #[error("adapter sent a record of {0} bytes")]
    TooLarge(usize),
    #[error("adapter sent a record that is not a JSON object: {0}")]
    NotAnObject(String),
    /// The field's name, at most 64 bytes of it.
    #[error("adapter sent field {0:?} outside the grant")]
    OutsideGrant(String),
    /// Not the adapter's fault: the record is one the registered schema
    /// or mapping does not handle (a mapping failure).
    #[error("record {record} does not map: {source}")]
    Untranslatable {
        /// Its number in the exchange, from 1.
        record: u64,
        source: TranslateError,
    },
}

/// Why an exchange is refused after its request was read, or why one
/// that was allowed ends early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error("the audit log cannot be written; the exchange is refused: {0}")]
    AuditRefused(Cause),
    #[error("the audit log cannot be written; no receipt can be issued: {0}")]
    AuditNoReceipt(Cause),
    #[error("the broker store is unavailable: {0}")]
    Store(Cause),
    #[error(
        "cannot find provider {provider}'s adapter: the broker's store is unavailable: {cause}"
    )]
    AdapterLookup { provider: AgencyId, cause: Cause },
    #[error("provider {provider} has no adapter registered")]
    NoAdapter { provider: AgencyId },
    #[error("bad adapter endpoint {endpoint}: {cause}")]
    AdapterEndpoint { endpoint: String, cause: Cause },
    #[error("the adapter did not answer in time")]
    AdapterTimeout,
    #[error("provider {provider}'s adapter failed the identity check: {reason}")]
    AdapterIdentity { provider: String, reason: String },
    /// The adapter refused the fetch; its words are passed on.
    #[error("provider {provider}'s adapter refused: {message}")]
    AdapterRefused {
        provider: String,
        code: ErrorCode,
        message: String,
    },
    #[error("provider {provider}'s adapter is unreachable: {status}")]
    AdapterUnreachable {
        provider: String,
        status: Box<Status>,
    },
    /// The adapter stopped the query at a deadline: the consumer's,
    /// passed on, or its own `max_query_time`; its words say which.
    #[error("provider {provider}'s adapter stopped the query: {message}")]
    AdapterDeadline { provider: String, message: String },
    #[error("provider {provider}'s adapter failed: {status}")]
    AdapterFailed {
        provider: String,
        status: Box<Status>,
    },
    /// The request was denied; the reasons in words.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("dataset {0} offers no lookups (it has no key field)")]
    NoLookups(String),
    #[error("mapping reads a field with an invalid name")]
    MappingField,
    #[error("bad key field")]
    KeyField,
    #[error("the exchange has ended already")]
    EndedTwice,
    /// This replica's lease in the store is over (or it was found gone):
    /// it starts and ends no exchange until it holds one again, and
    /// another replica closes the exchanges it had open.
    #[error(
        "this broker replica's lease in the store is not current; retry, on another replica if there is one"
    )]
    LeaseLost,
    #[error("an allowed exchange without a consumer")]
    NoConsumer,
    #[error("consumer went away")]
    ConsumerGone,
    #[error(
        "the broker is shutting down; the stream was ended after its drain_time \
         (retry, on another replica if there is one)"
    )]
    ShuttingDown,
    #[error(
        "the stream was ended: the consumer did not read for {0:?} (the broker's stall_timeout)"
    )]
    Stalled(Duration),
    #[error("agreement {0} was revoked while the exchange was running")]
    AgreementRevoked(String),
    #[error("agreement {0} expired while the exchange was running")]
    AgreementExpired(String),
    #[error("agreement {0} is no longer approved")]
    AgreementNotApproved(String),
    #[error(
        "agreement {id} allows {per_day} rows per day: the quota ran out after {rows} rows of this exchange"
    )]
    QuotaRanOut { id: String, per_day: u64, rows: u64 },
    #[error("agreement {id} allows {per_day} rows per day and none are left today")]
    QuotaNoneLeft { id: String, per_day: u64 },
    #[error("the exchange was stopped: {0}")]
    BadRecord(#[from] BadRecord),
    #[error("the exchange was stopped: the broker could not check a batch: {0}")]
    AdmitLost(Cause),
    #[error("the exchange was stopped: the dataset's key matched more than one record")]
    KeyMatchedMany,
    #[error("dataset {0} offers no subscriptions (it has no key field)")]
    NoSubscriptions(String),
    /// The cursor cannot be resumed; the words say why and what to do.
    #[error("{0}")]
    CursorNotResumable(String),
    #[error(
        "the subscription was resumed on another stream from an earlier cursor; this stream ends (resume from the newest cursor kept)"
    )]
    SubscriptionMoved,
    #[error("provider {provider}'s adapter sent a change it must not have: {what}")]
    BadChange {
        provider: String,
        what: &'static str,
    },
}

impl ExchangeError {
    /// The store failed; `err` goes to the log only.
    pub(crate) fn store(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        ExchangeError::Store(Box::new(err))
    }
}

impl ServiceError for ExchangeError {
    fn code(&self) -> ErrorCode {
        use ExchangeError as E;
        match self {
            E::AuditRefused(_)
            | E::AuditNoReceipt(_)
            | E::Store(_)
            | E::AdapterLookup { .. }
            | E::NoAdapter { .. }
            | E::AdapterIdentity { .. }
            | E::AdapterUnreachable { .. }
            | E::AdapterFailed { .. }
            | E::LeaseLost
            | E::ShuttingDown => ErrorCode::Unavailable,
            E::AdapterRefused { code, .. } => *code,
            E::AdapterTimeout | E::AdapterDeadline { .. } => ErrorCode::DeadlineExceeded,
            E::Exhausted(_) | E::QuotaRanOut { .. } | E::QuotaNoneLeft { .. } => {
                ErrorCode::ResourceExhausted
            }
            E::NoLookups(_)
            | E::NoSubscriptions(_)
            | E::CursorNotResumable(_)
            | E::BadRecord(BadRecord::Untranslatable { .. }) => ErrorCode::FailedPrecondition,
            E::SubscriptionMoved => ErrorCode::Aborted,
            E::ConsumerGone | E::Stalled(_) => ErrorCode::Cancelled,
            E::Denied(_)
            | E::AgreementRevoked(_)
            | E::AgreementExpired(_)
            | E::AgreementNotApproved(_) => ErrorCode::PermissionDenied,
            E::AdapterEndpoint { .. }
            | E::MappingField
            | E::KeyField
            | E::EndedTwice
            | E::NoConsumer
            | E::BadRecord(_)
            | E::AdmitLost(_)
            | E::KeyMatchedMany
            | E::BadChange { .. } => ErrorCode::Internal,
        }
    }

    fn public_message(&self) -> Cow<'_, str> {
        use ExchangeError as E;
        Cow::Borrowed(match self {
            E::AuditRefused(_) => "the audit log cannot be written; the exchange is refused",
            E::AuditNoReceipt(_) => "the audit log cannot be written; no receipt can be issued",
            E::Store(_) => "the broker store is unavailable",
            E::AdapterLookup { provider, .. } => {
                return Cow::Owned(format!(
                    "cannot find provider {provider}'s adapter: the broker's store is unavailable"
                ));
            }
            E::AdapterEndpoint { .. } => "bad adapter endpoint",
            E::AdapterUnreachable { provider, .. } => {
                return Cow::Owned(format!("provider {provider}'s adapter is unreachable"));
            }
            E::AdapterFailed { provider, .. } => {
                return Cow::Owned(format!("provider {provider}'s adapter failed"));
            }
            E::AdmitLost(_) => "the exchange was stopped: the broker could not check a batch",
            other => return Cow::Owned(other.to_string()),
        })
    }
}

impl From<ExchangeError> for Status {
    fn from(err: ExchangeError) -> Status {
        jembatan_core::error::status(&err)
    }
}

/// What the consumer sees of a status an adapter answered with: the
/// adapter's refusal is passed on, transport trouble is `Unavailable`.
/// The one place an upstream status is mapped.
pub(crate) fn from_adapter(provider: &str, status: Status) -> ExchangeError {
    let provider = provider.to_owned();
    if let Some(reason) = jembatan_pki::wrong_identity_in(&status) {
        // the consumer is told why; the log keeps the transport's words
        tracing::warn!(provider = %provider, error = %status, "adapter failed the identity check");
        return ExchangeError::AdapterIdentity {
            provider,
            reason: reason.to_string(),
        };
    }
    let refused = |code| ExchangeError::AdapterRefused {
        provider: provider.clone(),
        code,
        message: status.message().to_owned(),
    };
    match status.code() {
        Code::PermissionDenied => refused(ErrorCode::PermissionDenied),
        Code::InvalidArgument => refused(ErrorCode::InvalidArgument),
        Code::Unauthenticated => refused(ErrorCode::Unauthenticated),
        Code::DeadlineExceeded => ExchangeError::AdapterDeadline {
            provider,
            message: status.message().to_owned(),
        },
        Code::Unavailable | Code::Unknown | Code::Cancelled => ExchangeError::AdapterUnreachable {
            provider,
            status: Box::new(status),
        },
        _ => ExchangeError::AdapterFailed {
            provider,
            status: Box::new(status),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreement() -> String {
        "agr-1".to_owned()
    }

    #[test]
    fn exchange_errors_become_statuses_in_one_place() {
        let provider: AgencyId = "prov".parse().expect("agency id");
        let pool_closed = || -> Cause { "pool closed on 10.0.0.5".into() };
        let cases: Vec<(&str, ExchangeError, Code, String)> = vec![
            (
                "the audit log's failure stays in the log",
                ExchangeError::AuditRefused(pool_closed()),
                Code::Unavailable,
                "the audit log cannot be written; the exchange is refused".into(),
            ),
            (
                "no receipt without the completion entry",
                ExchangeError::AuditNoReceipt(pool_closed()),
                Code::Unavailable,
                "the audit log cannot be written; no receipt can be issued".into(),
            ),
            (
                "a store error",
                ExchangeError::Store(pool_closed()),
                Code::Unavailable,
                "the broker store is unavailable".into(),
            ),
            (
                "a store error is not a missing adapter",
                ExchangeError::AdapterLookup {
                    provider: provider.clone(),
                    cause: pool_closed(),
                },
                Code::Unavailable,
                "cannot find provider prov's adapter: the broker's store is unavailable".into(),
            ),
            (
                "a missing adapter",
                ExchangeError::NoAdapter { provider },
                Code::Unavailable,
                "provider prov has no adapter registered".into(),
            ),
            (
                "a limit of the broker",
                ExchangeError::Exhausted("agency a has 4 exchanges running".into()),
                Code::ResourceExhausted,
                "agency a has 4 exchanges running".into(),
            ),
            (
                "the consumer went away",
                ExchangeError::ConsumerGone,
                Code::Cancelled,
                "consumer went away".into(),
            ),
            (
                "the consumer stopped reading",
                ExchangeError::Stalled(Duration::from_secs(30)),
                Code::Cancelled,
                "the stream was ended: the consumer did not read for 30s (the broker's stall_timeout)"
                    .into(),
            ),
            (
                "revoked on the way",
                ExchangeError::AgreementRevoked(agreement()),
                Code::PermissionDenied,
                "agreement agr-1 was revoked while the exchange was running".into(),
            ),
            (
                "expired on the way",
                ExchangeError::AgreementExpired(agreement()),
                Code::PermissionDenied,
                "agreement agr-1 expired while the exchange was running".into(),
            ),
            (
                "rows ran out",
                ExchangeError::QuotaRanOut {
                    id: agreement(),
                    per_day: 10,
                    rows: 4,
                },
                Code::ResourceExhausted,
                "agreement agr-1 allows 10 rows per day: the quota ran out after 4 rows of this exchange".into(),
            ),
            (
                "a bad record",
                BadRecord::OutsideGrant("secret".into()).into(),
                Code::Internal,
                "the exchange was stopped: adapter sent field \"secret\" outside the grant".into(),
            ),
            (
                "a record the mapping does not handle is a mapping failure, not the adapter's",
                BadRecord::Untranslatable {
                    record: 3,
                    source: TranslateError::Mapping {
                        mapping: "prov.penduduk@1 -> dinsos.orang@1 version 2".into(),
                        failure: "rule 2 (district): value_map: the value is not in the map"
                            .into(),
                    },
                }
                .into(),
                Code::FailedPrecondition,
                "the exchange was stopped: record 3 does not map: mapping prov.penduduk@1 -> \
                 dinsos.orang@1 version 2 failed at rule 2 (district): value_map: the value is \
                 not in the map"
                    .into(),
            ),
            (
                "a worker's failure stays in the log",
                ExchangeError::AdmitLost("task panicked".into()),
                Code::Internal,
                "the exchange was stopped: the broker could not check a batch".into(),
            ),
            (
                "an adapter's refusal is passed on",
                from_adapter("prov", Status::permission_denied("not whitelisted")),
                Code::PermissionDenied,
                "provider prov's adapter refused: not whitelisted".into(),
            ),
            (
                "an adapter's transport trouble",
                from_adapter("prov", Status::unavailable("connection refused")),
                Code::Unavailable,
                "provider prov's adapter is unreachable".into(),
            ),
            (
                "an adapter's own failure",
                from_adapter("prov", Status::internal("database error")),
                Code::Unavailable,
                "provider prov's adapter failed".into(),
            ),
        ];
        for (name, err, code, message) in cases {
            let status = Status::from(err);
            assert_eq!(
                (status.code(), status.message()),
                (code, message.as_str()),
                "{name}"
            );
        }
    }
}
