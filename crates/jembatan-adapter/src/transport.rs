//! TLS to the agency database: the rule of [`jembatan_core::dbtls`]
//! applied to the TLS mode and host the driver reads from the URL, and the
//! CA file of `[database_tls]` handed to the driver.

use jembatan_core::dbtls::{self, DatabaseTls, Endpoint, Transport};
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::error::{AdapterError, redact_url};

fn refused(url: &str, message: String) -> AdapterError {
    AdapterError::Config {
        origin: format!("database {}", redact_url(url)),
        message,
    }
}

/// The CA file of `tls`, refused when the URL names one too.
fn ca<'a>(url: &str, tls: &'a DatabaseTls) -> Result<Option<&'a std::path::Path>, AdapterError> {
    match &tls.ca {
        Some(_) if dbtls::url_names_ca(url) => Err(refused(
            url,
            "the CA is named twice, by [database_tls] ca and in the URL".into(),
        )),
        ca => Ok(ca.as_deref()),
    }
}

/// Checks a database URL against the TLS rule without connecting (for
/// config validation); SQLite is a local file and always passes.
pub(crate) fn check_url(url: &str, tls: &DatabaseTls) -> Result<(), AdapterError> {
    use std::str::FromStr;
    let parse = |e: sqlx::Error| refused(url, e.to_string());
    match crate::config::Backend::from_url(url) {
        Some(crate::config::Backend::Postgres) => {
            secure_postgres(PgConnectOptions::from_str(url).map_err(parse)?, url, tls).map(drop)
        }
        Some(crate::config::Backend::MySql) => {
            secure_mysql(MySqlConnectOptions::from_str(url).map_err(parse)?, url, tls).map(drop)
        }
        Some(crate::config::Backend::Sqlite) | None => Ok(()),
    }
}

/// Checks a PostgreSQL connection against the TLS rule and adds the CA.
pub(crate) fn secure_postgres(
    options: PgConnectOptions,
    url: &str,
    tls: &DatabaseTls,
) -> Result<PgConnectOptions, AdapterError> {
    let transport = match options.get_ssl_mode() {
        PgSslMode::Disable => Transport::Plaintext,
        PgSslMode::Allow | PgSslMode::Prefer => Transport::MaybePlaintext,
        PgSslMode::Require => Transport::Unverified,
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => Transport::Verified,
    };
    let endpoint = match options.get_socket() {
        Some(_) => Endpoint::Socket,
        None => Endpoint::Host(options.get_host()),
    };
    dbtls::check(endpoint, transport, tls).map_err(|e| refused(url, e.to_string()))?;
    Ok(match ca(url, tls)? {
        Some(ca) => options.ssl_root_cert(ca),
        None => options,
    })
}

/// Checks a MariaDB/MySQL connection against the TLS rule and adds the CA.
pub(crate) fn secure_mysql(
    options: MySqlConnectOptions,
    url: &str,
    tls: &DatabaseTls,
) -> Result<MySqlConnectOptions, AdapterError> {
    let transport = match options.get_ssl_mode() {
        MySqlSslMode::Disabled => Transport::Plaintext,
        MySqlSslMode::Preferred => Transport::MaybePlaintext,
        MySqlSslMode::Required => Transport::Unverified,
        MySqlSslMode::VerifyCa | MySqlSslMode::VerifyIdentity => Transport::Verified,
    };
    let endpoint = match options.get_socket() {
        Some(_) => Endpoint::Socket,
        None => Endpoint::Host(options.get_host()),
    };
    dbtls::check(endpoint, transport, tls).map_err(|e| refused(url, e.to_string()))?;
    Ok(match ca(url, tls)? {
        Some(ca) => options.ssl_ca(ca),
        None => options,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn plaintext_to_another_host_is_refused_before_connecting() {
        let strict = DatabaseTls::default();
        // (url, refused)
        let cases = [
            ("postgres://u@db.example.go.id/x?sslmode=disable", true),
            ("postgres://u@db.example.go.id/x", true),
            ("postgres://u@db.example.go.id/x?sslmode=require", true),
            ("postgres://u@db.example.go.id/x?sslmode=verify-full", false),
            ("postgres://u@db.example.go.id/x?sslmode=verify-ca", false),
            ("postgres://u@127.0.0.1/x?sslmode=disable", false),
            ("postgres://u@localhost/x?sslmode=disable", false),
            (
                "postgres://u@db.example.go.id/x?host=/run/postgresql&sslmode=disable",
                false,
            ),
        ];
        for (url, want_refused) in cases {
            let options = PgConnectOptions::from_str(url).unwrap();
            let result = secure_postgres(options, url, &strict);
            assert_eq!(result.is_err(), want_refused, "{url}");
            if let Err(e) = result {
                let message = e.to_string();
                assert!(message.contains("\"db.example.go.id\""), "{message}");
            }
        }
        let cases = [
            (
                "mysql://u:secret@db.example.go.id/x?ssl-mode=DISABLED",
                true,
            ),
            ("mysql://u@db.example.go.id/x", true),
            ("mysql://u@db.example.go.id/x?ssl-mode=REQUIRED", true),
            ("mysql://u@db.example.go.id/x?ssl-mode=VERIFY_CA", false),
            (
                "mysql://u@db.example.go.id/x?ssl-mode=VERIFY_IDENTITY",
                false,
            ),
            ("mysql://u@127.0.0.1/x?ssl-mode=DISABLED", false),
            (
                "mysql://u@db.example.go.id/x?socket=/run/mysqld/mysqld.sock",
                false,
            ),
        ];
        for (url, want_refused) in cases {
            let options = MySqlConnectOptions::from_str(url).unwrap();
            let result = secure_mysql(options, url, &strict);
            assert_eq!(result.is_err(), want_refused, "{url}");
            if let Err(e) = result {
                let message = e.to_string();
                assert!(message.contains("\"db.example.go.id\""), "{message}");
                assert!(!message.contains("secret"), "{message}");
            }
        }
        // said so explicitly: accepted
        let lax = DatabaseTls {
            ca: None,
            allow_plaintext: true,
        };
        let url = "postgres://u@db.example.go.id/x?sslmode=disable";
        assert!(secure_postgres(PgConnectOptions::from_str(url).unwrap(), url, &lax).is_ok());
        // a CA named twice is refused
        let twice = DatabaseTls {
            ca: Some("/etc/ca.pem".into()),
            allow_plaintext: false,
        };
        let url = "postgres://u@db.example.go.id/x?sslmode=verify-full&sslrootcert=/ca.pem";
        let err = secure_postgres(PgConnectOptions::from_str(url).unwrap(), url, &twice)
            .unwrap_err()
            .to_string();
        assert!(err.contains("named twice"), "{err}");
    }
}
