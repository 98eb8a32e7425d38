//! Errors of the adapter library.

use std::path::PathBuf;

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
