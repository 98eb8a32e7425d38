//! The rule for connections to databases — the broker's store and each
//! agency's database: to a host that is not this machine, TLS with a
//! verified server certificate, unless the config accepts less in so many
//! words (`allow_plaintext = true`). Loopback addresses and unix sockets
//! stay allowed in plaintext. The drivers' own URL parsing says which host
//! and which TLS mode a URL means; this module only judges them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// TLS settings for a database connection, beside its URL in a config
/// (`[store_tls]` in the broker's, `[database_tls]` in an adapter's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTls {
    /// CA certificate (PEM) the server's certificate must chain to; the
    /// same as `sslrootcert` (PostgreSQL) or `ssl-ca` (MariaDB) in the
    /// URL, which must then not name one too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Accept a connection to a host off this machine without TLS or
    /// without checking the server's certificate (any `sslmode` below
    /// `verify-ca`, any `ssl-mode` below `VERIFY_CA`).
    #[serde(default)]
    pub allow_plaintext: bool,
}

impl DatabaseTls {
    /// Resolves a relative `ca` against `base` (the config file's
    /// directory).
    pub fn relative_to(&self, base: &Path) -> DatabaseTls {
        DatabaseTls {
            ca: self.ca.as_ref().map(|ca| base.join(ca)),
            allow_plaintext: self.allow_plaintext,
        }
    }
}

/// What a connection's TLS mode guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No TLS (`sslmode=disable`, `ssl-mode=DISABLED`).
    Plaintext,
    /// TLS when the server offers it, plaintext otherwise (`allow`,
    /// `prefer` — the drivers' default — and `PREFERRED`).
    MaybePlaintext,
    /// TLS whose server certificate is not checked (`require`,
    /// `REQUIRED`): anyone on the path can pose as the server.
    Unverified,
    /// TLS with the server's certificate checked against a CA
    /// (`verify-ca`, `verify-full`, `VERIFY_CA`, `VERIFY_IDENTITY`).
    Verified,
}

impl Transport {
    fn describe(self) -> &'static str {
        match self {
            Transport::Plaintext => "is plaintext",
            Transport::MaybePlaintext => "falls back to plaintext when the server offers no TLS",
            Transport::Unverified => "does not check the server's certificate",
            Transport::Verified => "is TLS with a verified certificate",
        }
    }
}

/// A connection the rule refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "database host {host:?} is not on this machine and the connection {}: \
     use sslmode=verify-full (PostgreSQL) or ssl-mode=VERIFY_IDENTITY (MariaDB) \
     with the server's CA, or set allow_plaintext = true to accept it",
    transport.describe()
)]
pub struct PlaintextRefused {
    pub host: String,
    pub transport: Transport,
}

/// Where a connection goes, as the driver reads it from the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A unix socket: never leaves the machine.
    Socket,
    /// A host name or address.
    Host(&'a str),
}

/// Refuses a connection to a host off this machine whose transport is
/// weaker than verified TLS, unless `tls.allow_plaintext`.
pub fn check(
    endpoint: Endpoint<'_>,
    transport: Transport,
    tls: &DatabaseTls,
) -> Result<(), PlaintextRefused> {
    let host = match endpoint {
        Endpoint::Socket => return Ok(()),
        Endpoint::Host(host) => host,
    };
    if transport == Transport::Verified || tls.allow_plaintext || is_loopback(host) {
        return Ok(());
    }
    Err(PlaintextRefused {
        host: host.to_owned(),
        transport,
    })
}

/// `localhost`, or an address in 127.0.0.0/8 or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The URL parameters that name a CA file, in either driver.
const CA_PARAMETERS: [&str; 4] = ["sslrootcert", "ssl-root-cert", "ssl-ca", "sslca"];

/// Whether a database URL names a CA file in its query.
pub fn url_names_ca(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    query
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .any(|key| CA_PARAMETERS.contains(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verified_tls_leaves_the_machine_unless_allowed() {
        let strict = DatabaseTls::default();
        let lax = DatabaseTls {
            ca: None,
            allow_plaintext: true,
        };
        use Transport::*;
        // (endpoint, transport, allowed by default)
        let cases = [
            (Endpoint::Socket, Plaintext, true),
            (Endpoint::Host("127.0.0.1"), Plaintext, true),
            (Endpoint::Host("127.3.4.5"), MaybePlaintext, true),
            (Endpoint::Host("::1"), Plaintext, true),
            (Endpoint::Host("[::1]"), Plaintext, true),
            (Endpoint::Host("LocalHost"), Plaintext, true),
            (Endpoint::Host("db.dukcapil.go.id"), Plaintext, false),
            (Endpoint::Host("db.dukcapil.go.id"), MaybePlaintext, false),
            (Endpoint::Host("db.dukcapil.go.id"), Unverified, false),
            (Endpoint::Host("db.dukcapil.go.id"), Verified, true),
            (Endpoint::Host("10.0.0.5"), Plaintext, false),
            (Endpoint::Host("localhost.example.org"), Plaintext, false),
            (Endpoint::Host("128.0.0.1"), Unverified, false),
        ];
        for (endpoint, transport, allowed) in cases {
            let result = check(endpoint, transport, &strict);
            assert_eq!(result.is_ok(), allowed, "{endpoint:?} {transport:?}");
            if let (Err(e), Endpoint::Host(host)) = (result, endpoint) {
                let message = e.to_string();
                assert!(message.contains(host), "{message}");
                assert!(message.contains("allow_plaintext"), "{message}");
            }
            assert!(check(endpoint, transport, &lax).is_ok());
        }
    }

    #[test]
    fn ca_parameters_are_found_in_the_query_only() {
        assert!(url_names_ca(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem"
        ));
        assert!(url_names_ca("mysql://h/db?ssl-ca=/ca.pem"));
        assert!(!url_names_ca("postgres://h/sslrootcert?sslmode=require"));
        assert!(!url_names_ca("postgres://h/db"));
    }
}
