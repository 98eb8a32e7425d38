//! Reaching the broker as a client: its `https://host:port` address and
//! an mTLS channel presenting the caller's certificate, for every tool
//! that calls it (the CLI, the console).

use std::fmt;

use tonic::transport::{Channel, Endpoint};

use crate::{PkiError, TlsFiles};

/// Why the broker could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum BrokerConnectError {
    #[error("broker address {0:?} must be https://host:port")]
    BadAddress(String),
    #[error(transparent)]
    Tls(#[from] PkiError),
    #[error("cannot reach the broker at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A broker's address, `https://host:port` (port 443 when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    url: String,
    host: String,
    port: u16,
}

impl BrokerAddress {
    /// Parses `https://host[:port][/]`.
    pub fn parse(url: &str) -> Result<BrokerAddress, BrokerConnectError> {
        let bad = || BrokerConnectError::BadAddress(url.to_owned());
        let authority = url
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next())
            .filter(|a| !a.is_empty())
            .ok_or_else(bad)?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
            None => (authority, 443),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(BrokerAddress {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
        })
    }

    /// The name the broker's certificate must carry.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An mTLS channel to the broker presenting `files`' certificate and
    /// trusting only its CA.
    pub async fn connect(&self, files: &TlsFiles) -> Result<Channel, BrokerConnectError> {
        let tls = files.client_config(&self.host)?;
        let unreachable = |source| BrokerConnectError::Unreachable {
            url: self.url.clone(),
            source,
        };
        Endpoint::from_shared(self.url.clone())
            .map_err(unreachable)?
            .tls_config(tls)
            .map_err(unreachable)?
            .connect()
            .await
            .map_err(unreachable)
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_are_refused() {
        let a = BrokerAddress::parse("https://localhost:7443").unwrap();
        assert_eq!((a.host(), a.port()), ("localhost", 7443));
        let a = BrokerAddress::parse("https://broker.example/").unwrap();
        assert_eq!((a.host(), a.port()), ("broker.example", 443));
        for bad in [
            "http://localhost:1",
            "localhost:1",
            "https://",
            "https://:9",
            "https://h:x",
        ] {
            assert!(BrokerAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
