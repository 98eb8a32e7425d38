//! The auditor's and operator's console in the browser.
//!
//! A separate process beside the broker: a gRPC client of it with its own
//! certificate (an auditor's or an operator's) that serves server-rendered
//! HTML on a loopback address. It holds no data of its own and adds no
//! way into the broker: whatever it shows, the broker gave its
//! certificate. Logins are the one-time token printed at start or users
//! with argon2-hashed passwords; every form carries a CSRF token.
//! Templates, styles, scripts and translations are part of the binary.

pub mod auth;
pub mod broker;
pub mod config;
pub mod entries;
pub mod i18n;
mod pages;
mod proof;
mod registry;
mod server;
pub mod templates;
mod verify;

pub use config::ConsoleConfig;
pub use server::Console;

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("config {path}: {message}")]
    Config { path: String, message: String },
    #[error("certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error(
        "certificate {path} is {identity}'s: a console needs an auditor's, an operator's or an agency's certificate"
    )]
    Role { path: String, identity: String },
    #[error("{0}")]
    Broker(#[from] jembatan_pki::BrokerConnectError),
    #[error("{what} {path}: {message}")]
    Key {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("templates: {0}")]
    Templates(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}
