//! The console's config file (TOML): where it listens, the broker it
//! calls and the certificate it calls with, the keys it needs to answer
//! "who accessed this person?" and to check checkpoints, and its users.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jembatan_pki::TlsFiles;
use serde::Deserialize;

use crate::ConsoleError;

/// The only config version this build reads.
pub const CONFIG_VERSION: u32 = 1;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_session_minutes() -> u64 {
    8 * 60
}

/// Console configuration (`jembatan console --config FILE`). Relative
/// paths are resolved against the config file's directory.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Config format version; must be 1.
    pub version: u32,
    /// HTTP address; loopback by default. The console speaks plain HTTP:
    /// put it behind a TLS-terminating proxy to serve it off this machine.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The broker, `https://host:port`.
    pub broker: String,
    /// The console's own certificate (an auditor's or an operator's).
    pub tls: TlsFiles,
    /// The broker's audit HMAC key (its `audit_key`): needed to turn a
    /// NIK into the keyed hash the log is searched by. Without it the
    /// "who accessed" page says so.
    #[serde(default)]
    pub audit_key: Option<PathBuf>,
    /// The checkpoint verifier key (`checkpoint.key.pub`), shown to the
    /// browser so it checks checkpoint signatures against the key the
    /// auditor gave, not one the broker sends.
    #[serde(default)]
    pub checkpoint_key: Option<PathBuf>,
    /// How long a login lasts, in minutes (1 to 10080).
    #[serde(default = "default_session_minutes")]
    pub session_minutes: u64,
    /// Agency names shown beside their ids (`dinsos = "Dinas Sosial"`).
    #[serde(default)]
    pub agencies: BTreeMap<String, String>,
    /// Users who log in with a password (argon2 PHC hashes, made with
    /// `jembatan console hash-password`), besides the one-time token.
    #[serde(default)]
    pub users: Vec<User>,
}

/// A user who logs in with a name and password.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The name the user logs in with (1 to 64 bytes).
    pub name: String,
    /// The password's argon2 hash as a PHC string (`$argon2id$...`),
    /// made with `jembatan console hash-password`.
    pub password_hash: String,
}

impl ConsoleConfig {
    /// The JSON Schema of the config file, from these structs' fields,
    /// serde attributes and doc comments.
    pub fn schema() -> schemars::Schema {
        schemars::schema_for!(ConsoleConfig)
    }

    /// Reads and checks a config file; relative paths are taken from its
    /// directory.
    pub fn load(path: &Path) -> Result<ConsoleConfig, ConsoleError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConsoleError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|message| ConsoleError::Config {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses config text, resolving relative paths against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<ConsoleConfig, String> {
        let mut config: ConsoleConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.version != CONFIG_VERSION {
            return Err(format!(
                "version {} is not supported (this build reads version {CONFIG_VERSION})",
                config.version
            ));
        }
        jembatan_pki::BrokerAddress::parse(&config.broker).map_err(|e| e.to_string())?;
        if !(1..=7 * 24 * 60).contains(&config.session_minutes) {
            return Err("session_minutes must be between 1 and 10080".into());
        }
        for user in &config.users {
            if user.name.is_empty() || user.name.len() > 64 {
                return Err("a user's name must have 1 to 64 bytes".into());
            }
            argon2::PasswordHash::new(&user.password_hash).map_err(|e| {
                format!(
                    "user {:?}: password_hash is not an argon2 PHC string: {e}",
                    user.name
                )
            })?;
        }
        let join = |p: &mut PathBuf| *p = base.join(&*p);
        join(&mut config.tls.ca);
        join(&mut config.tls.cert);
        join(&mut config.tls.key);
        if let Some(crl) = config.tls.crl.as_mut() {
            join(crl);
        }
        if let Some(k) = config.audit_key.as_mut() {
            join(k);
        }
        if let Some(k) = config.checkpoint_key.as_mut() {
            join(k);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
broker = "https://localhost:7443"
[tls]
ca = "certs/ca.pem"
cert = "certs/auditor.pem"
key = "certs/auditor-key.pem"
"#;

    #[test]
    fn a_minimal_config_listens_on_loopback_with_paths_from_its_directory() {
        let c = ConsoleConfig::parse(MINIMAL, Path::new("/etc/jembatan")).unwrap();
        assert_eq!(c.listen, default_listen());
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.tls.cert, Path::new("/etc/jembatan/certs/auditor.pem"));
        assert!(c.users.is_empty());
    }

    #[test]
    fn bad_configs_are_refused_naming_the_fault() {
        let cases = [
            (
                "unknown key",
                format!("{MINIMAL}\nfoo = 1"),
                "unknown field",
            ),
            (
                "wrong version",
                MINIMAL.replace("version = 1", "version = 2"),
                "version 2",
            ),
            (
                "plain http broker",
                MINIMAL.replace("https://localhost:7443", "http://localhost:7443"),
                "https://host:port",
            ),
            (
                "bad password hash",
                format!("{MINIMAL}\n[[users]]\nname = \"a\"\npassword_hash = \"secret\"\n"),
                "argon2",
            ),
        ];
        for (name, text, want) in cases {
            let err = ConsoleConfig::parse(&text, Path::new(".")).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
