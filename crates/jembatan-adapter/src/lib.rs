//! The Jembatan adapter: serves whitelisted tables of one agency's database
//! to the broker, and nothing else.
//!
//! An adapter runs at a provider agency next to its database. Its
//! configuration ([`AdapterConfig`]) names the database and a whitelist of
//! datasets: a table, the columns it may expose, an optional key column and
//! an optional fixed row filter. [`Adapter::connect`] checks the whitelist
//! against the live schema and refuses to start when anything is missing;
//! [`serve`] then offers the `jembatan.v1.Adapter` gRPC service over mutual
//! TLS to the broker's certificate only.
//!
//! **The adapter never serves anything off its whitelist, whatever the
//! broker asks**: every request is re-checked here, SQL is built only from
//! whitelisted identifiers, and every value is bound as a parameter.

mod adapter;
mod config;
mod db;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod init;
mod kind;
mod logical;
mod receipts;
mod server;
mod sql;
mod transport;
mod typed;

pub use adapter::{
    Adapter, ChangesStream, ColumnInfo, DatasetInfo, FetchStream, MAX_BATCH_BYTES, MAX_BATCH_SIZE,
    MAX_RECEIPTS_PER_BATCH,
};
pub use config::{
    AdapterConfig, Backend, ChangesConfig, DEFAULT_BATCH_SIZE, DEFAULT_CHANGE_LAG,
    DEFAULT_LOGICAL_POLL_INTERVAL, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUERY_TIME,
    DEFAULT_POLL_INTERVAL, DEFAULT_RETAIN, DatasetConfig, DatasetConfigError, LogicalConfig,
    MAX_MAX_CONNECTIONS,
};
pub use error::{AdapterError, FetchStopped, Refused};
pub use init::{introspect, introspect_with};
pub use kind::ColumnKind;
pub use receipts::{
    AckedReceipt, FetchStatus, LogEntry, ReceiptEntry, ServedEntry, read_receipt_log,
};
pub use server::{AdapterService, MAX_REQUEST_BYTES, REFLECTED_SERVICES, serve};
