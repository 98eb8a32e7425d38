//! Domain types shared by every Jembatan crate: agency and dataset ids,
//! certificate identities, structured filters and denial reasons.
//!
//! Wire types from `jembatan-proto` are converted here with `TryFrom`,
//! validating as they go; a failed conversion names the offending field.

pub mod agreement;
pub mod audit;
pub mod config_schema;
pub mod dbtls;
pub mod denial;
pub mod error;
pub mod filter;
pub mod grant;
pub mod identity;
pub mod ids;
pub mod limits;
pub mod payload;
pub mod record;
pub mod redact;

pub use agreement::{Action, Agreement, AgreementStatus, TransitionError};
pub use audit::{
    AgreementChange, AuditEntry, CanonicalError, ChangeMark, Decision, EntryKind, ExchangeStatus,
    Received, RegistryChange, SubscriptionMark, Translation,
};
pub use denial::{Denial, DenialCode};
pub use error::{ErrorCode, Failure, InvalidArgument, ServiceError};
pub use filter::{Filter, Operator, Predicate, Scalar};
pub use grant::{AccessMode, FieldGrant, MaskRule, Quota};
pub use identity::{Identity, IdentityError, Role};
pub use ids::{AgencyId, DatasetId, FieldName};
pub use payload::PayloadHasher;
