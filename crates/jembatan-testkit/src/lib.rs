//! A Jembatan federation on loopback in one process, for the tests, the
//! bench and the demo: a development PKI with certificates by name
//! ([`Pki`]), servers that run until a [`Stop`] ([`serve`]), fresh provider
//! databases and broker stores on SQLite, PostgreSQL and MariaDB
//! ([`databases`]), and the [`Federation`] built from them — a provider
//! `prov` whose table `penduduk` sits behind a real adapter (or fake ones),
//! any number of brokers on one store, and the request helpers the tests
//! share ([`requests`]).
//!
//! The [`Federation`] and the [`databases`] are for tests: they panic on
//! what a test cannot go on without. [`Pki`] and [`serve`] return errors,
//! for the bench and the demo.

pub mod databases;
mod federation;
mod pki;
pub mod requests;
pub mod serve;

pub use databases::{Kind, PgStore, ProviderDb, nik};
pub use federation::{AdapterHandle, BrokerHandle, Builder, Federation, IDENTITIES};
pub use pki::Pki;
pub use requests::{
    Streamed, agreement_toml, denial_codes, denial_details, eq, query, receipt_of, run_query,
    string,
};
pub use serve::Stop;
