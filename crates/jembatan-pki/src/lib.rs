//! Development PKI and mTLS plumbing.
//!
//! `Ca` creates a certificate authority, issues role certificates whose
//! URI subject alternative name carries the holder's [`Identity`]
//! (`spiffe://jembatan/<role>[/<agency>]`) and revokes them on its CRL
//! (`crl`). [`TlsFiles`] turns a CA, certificate, key and revocation list
//! on disk into a server's TLS ([`ServerTls`]) and a caller's
//! ([`ClientTls`]), both reloading their files without a restart, and
//! [`peer_identity`] reads the caller's identity from the verified client
//! certificate of a request — the only place identity comes from.
//! [`pkcs12`] packs a certificate and its key for keystores that read no
//! PEM (Java's).

mod broker;
mod client;
pub mod crl;
pub mod files;
mod live;
mod pkcs12;
mod server;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use jembatan_core::{Identity, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig};
use tonic::{Request, Status};

pub use broker::{BrokerAddress, BrokerConnectError};
pub use client::{
    ClientTls, ConnectError, WRONG_IDENTITY, WrongIdentity, refused_by, rustls_config,
    wrong_identity_in,
};
pub use crl::{BadSerial, CertError, CrlError, Reason, RevocationList, RevokeOutcome, Serial};
pub use live::RELOAD_INTERVAL;
pub use pkcs12::{Pkcs12Error, pkcs12};
pub use server::{
    Closing, LINGER, RevocationCheck, RevocationLayer, Revocations, ServerTls, TlsConnection,
    TlsIncoming,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path} is not a usable certificate: {source}")]
    BadCertificate { path: PathBuf, source: CertError },
    #[error("{0} already exists; refusing to overwrite an existing CA")]
    Exists(PathBuf),
    #[error("{path} is not a usable revocation list: {source}")]
    BadCrl { path: PathBuf, source: CrlError },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("endpoint {url:?} {message}")]
    Endpoint { url: String, message: String },
}

/// Paths of the PEM files a service presents and trusts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificate every peer must chain to.
    pub ca: PathBuf,
    /// This service's certificate.
    pub cert: PathBuf,
    /// This service's private key.
    pub key: PathBuf,
    /// The CA's revocation list (`crl.pem`), when the service checks
    /// peers against one; reloaded when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `data` beside `path` and renames it into place (0600 when
/// `private`), so that a service watching `path` reads either the old file
/// or the new one.
fn write_atomic(path: &Path, data: &str, private: bool) -> Result<(), PkiError> {
    let written = if private {
        files::write_secret(path, data.as_bytes())
    } else {
        files::write_public(path, data.as_bytes())
    };
    written.map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

impl TlsFiles {
    /// Resolves relative paths against `base` (the directory of the config
    /// file that named them).
    pub fn relative_to(&self, base: &Path) -> TlsFiles {
        TlsFiles {
            ca: base.join(&self.ca),
            cert: base.join(&self.cert),
            key: base.join(&self.key),
            crl: self.crl.as_ref().map(|crl| base.join(crl)),
        }
    }

    /// The identity in this service's own certificate.
    pub fn identity(&self) -> Result<Identity, PkiError> {
        let pem = read(&self.cert)?;
        identity_from_pem(&pem).map_err(|e| PkiError::BadCertificate {
            path: self.cert.clone(),
            source: e.into(),
        })
    }

    /// Server TLS that requires a client certificate chaining to the CA
    /// and, when `crl` is set, not on the revocation list; certificate,
    /// key and list are reloaded when their files change.
    pub fn server_config(&self) -> Result<ServerTls, PkiError> {
        ServerTls::load(self)
    }

    /// TLS for calling other services with this certificate (reloaded
    /// when it changes), requiring theirs to chain to the CA, name the
    /// host, carry the expected identity and, when `crl` is set, not be
    /// revoked.
    pub fn client_tls(&self) -> Result<ClientTls, PkiError> {
        ClientTls::load(self)
    }

    /// tonic client TLS presenting this certificate and trusting only the
    /// CA, for tools and agency systems calling the broker. `domain` is
    /// the name the server's certificate must carry.
    pub fn client_config(&self, domain: &str) -> Result<ClientTlsConfig, PkiError> {
        let identity = tonic::transport::Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(identity)
            .domain_name(domain))
    }
}

/// Why a certificate names no Jembatan identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertIdentityError {
    #[error("not a PEM certificate: {0}")]
    NotPem(String),
    #[error("not an X.509 certificate: {0}")]
    NotX509(String),
    #[error("bad subject alternative names: {0}")]
    BadNames(String),
    #[error("certificate has no subject alternative names")]
    NoNames,
    #[error("certificate carries more than one jembatan identity")]
    Several,
    #[error("certificate carries no spiffe://jembatan/... identity")]
    NoIdentity,
}

/// Reads the identity URI from a PEM certificate.
pub fn identity_from_pem(pem: &[u8]) -> Result<Identity, CertIdentityError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|e| CertIdentityError::NotPem(e.to_string()))?;
    identity_from_der(&pem.contents)
}

/// Reads the identity URI from a DER certificate.
pub fn identity_from_der(der: &[u8]) -> Result<Identity, CertIdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertIdentityError::NotX509(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertIdentityError::BadNames(e.to_string()))?
        .ok_or(CertIdentityError::NoNames)?;
    let mut found = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name
            && let Some(id) = Identity::from_uri(uri)
        {
            if found.is_some() {
                return Err(CertIdentityError::Several);
            }
            found = Some(id);
        }
    }
    found.ok_or(CertIdentityError::NoIdentity)
}

/// Why a caller has no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("a client certificate is required")]
    Missing,
    #[error("client certificate {0} has been revoked")]
    Revoked(Serial),
    #[error("client certificate rejected: {0}")]
    NoIdentity(String),
    /// The revocation list in force is past its `nextUpdate`, and the
    /// caller's role is one a stale list fails closed for
    /// ([`fails_closed_on_stale_list`]).
    #[error(
        "the server's certificate revocation list expired at {next_update} (its next update); \
         {role} certificates are refused until the CA's renewed list is installed"
    )]
    RevocationListExpired {
        next_update: time::OffsetDateTime,
        role: Role,
    },
}

/// Whether certificates of `role` are refused while the revocation list
/// in force is past its `nextUpdate`: the certificates of people and
/// agency systems (agency, integrator, auditor, operator). Broker and
/// adapter certificates are the federation's own services; they stay
/// accepted (the list's entries still apply to them), since refusing them
/// would stop every exchange between the federation's services; each
/// service logs an error when its list expires.
pub fn fails_closed_on_stale_list(role: Role) -> bool {
    match role {
        Role::Agency | Role::Integrator | Role::Auditor | Role::Operator => true,
        Role::Broker | Role::Adapter => false,
    }
}

/// The authenticated identity of a request's caller, from its verified
/// client certificate. `Unauthenticated` when there is none, it carries
/// no Jembatan identity, or the server's revocation list (see
/// [`RevocationLayer`]) names it — however long ago its connection was
/// opened.
pub fn peer_identity<T>(request: &Request<T>) -> Result<Identity, Status> {
    identity_of(
        request.peer_certs().as_deref().map(Vec::as_slice),
        request.extensions().get::<Revocations>(),
    )
    .map_err(|e| jembatan_core::error::status(&e))
}

impl jembatan_core::ServiceError for PeerError {
    fn code(&self) -> jembatan_core::ErrorCode {
        jembatan_core::ErrorCode::Unauthenticated
    }
}

/// The client certificate a request came with, kept to be checked again
/// against the revocation list in force while a long call runs (a
/// subscription): [`PeerCredential::check`] refuses it from the moment
/// the list revokes it, as [`peer_identity`] refuses a new request.
#[derive(Debug, Clone)]
pub struct PeerCredential {
    leaf: CertificateDer<'static>,
    revocations: Option<Revocations>,
}

impl PeerCredential {
    /// The request's verified client certificate; `None` without one.
    pub fn of<T>(request: &Request<T>) -> Option<Self> {
        let leaf = request.peer_certs()?.first()?.clone();
        Some(Self {
            leaf,
            revocations: request.extensions().get::<Revocations>().cloned(),
        })
    }

    /// The certificate's identity, or why it is no longer accepted: it
    /// has been revoked, or the list in force is past its `nextUpdate`
    /// for a role that fails closed.
    pub fn check(&self) -> Result<Identity, PeerError> {
        identity_of(
            Some(std::slice::from_ref(&self.leaf)),
            self.revocations.as_ref(),
        )
    }
}

/// [`peer_identity`] for a plain HTTP request's extensions (the
/// registry's HTTP view).
pub fn peer_identity_in(
    extensions: &tonic::codegen::http::Extensions,
) -> Result<Identity, PeerError> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs());
    identity_of(
        certs.as_deref().map(Vec::as_slice),
        extensions.get::<Revocations>(),
    )
}

fn identity_of(
    certs: Option<&[CertificateDer<'static>]>,
    revocations: Option<&Revocations>,
) -> Result<Identity, PeerError> {
    let leaf = certs.and_then(|c| c.first()).ok_or(PeerError::Missing)?;
    if let Some(serial) = revocations.and_then(|r| r.revoked(leaf)) {
        return Err(PeerError::Revoked(serial));
    }
    let identity =
        identity_from_der(leaf.as_ref()).map_err(|e| PeerError::NoIdentity(e.to_string()))?;
    if let Some(next_update) = revocations.and_then(Revocations::expired)
        && fails_closed_on_stale_list(identity.role)
    {
        return Err(PeerError::RevocationListExpired {
            next_update,
            role: identity.role,
        });
    }
    Ok(identity)
}

/// A certificate authority on disk: `ca.pem` and `ca-key.pem` in a directory.
pub struct Ca {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A certificate and key issued by [`Ca::issue`], in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn cert_path(dir: &Path) -> PathBuf {
        dir.join("ca.pem")
    }

    fn key_path(dir: &Path) -> PathBuf {
        dir.join("ca-key.pem")
    }

    /// Creates a new CA in `dir`; refuses to overwrite an existing one.
    pub fn create(dir: &Path, name: &str) -> Result<Ca, PkiError> {
        let cert_path = Self::cert_path(dir);
        if cert_path.exists() {
            return Err(PkiError::Exists(cert_path));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Jembatan");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        // the key first, never over another: a CA whose certificate is
        // on disk always has its key
        let key_path = Self::key_path(dir);
        files::create_secret(&key_path, key.serialize_pem().as_bytes()).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::Exists(key_path.clone())
            } else {
                PkiError::Write {
                    path: key_path.clone(),
                    source,
                }
            }
        })?;
        files::create_public(&cert_path, cert_pem.as_bytes()).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::Exists(cert_path.clone())
            } else {
                PkiError::Write {
                    path: cert_path.clone(),
                    source,
                }
            }
        })?;
        Ok(Ca {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = Self::cert_path(dir);
        let cert_pem =
            String::from_utf8(read(&cert_path)?).map_err(|_| PkiError::BadCertificate {
                path: cert_path.clone(),
                source: CertError::NotUtf8,
            })?;
        let key_path = Self::key_path(dir);
        let key_pem =
            String::from_utf8(read(&key_path)?).map_err(|_| PkiError::BadCertificate {
                path: key_path.clone(),
                source: CertError::NotUtf8,
            })?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::BadCertificate {
                path: cert_path.clone(),
                source: CertError::NotCa(e),
            })?;
        Ok(Ca {
            dir: dir.to_owned(),
            issuer,
            cert_pem,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `identity`, valid for `days`. `hosts` are
    /// the DNS names and IP addresses a server certificate answers to.
    pub fn issue(
        &self,
        identity: &Identity,
        hosts: &[String],
        days: i64,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            identity
                .agency
                .as_ref()
                .map(|a| format!("{} {a}", identity.role))
                .unwrap_or_else(|| identity.role.to_string()),
        );
        dn.push(DnType::OrganizationName, "Jembatan");
        params.distinguished_name = dn;
        params
            .subject_alt_names
            .push(SanType::URI(identity.uri().try_into()?));
        for host in hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.clone().try_into()?),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate and writes it as `<dir>/<name>.pem` and
    /// `<dir>/<name>-key.pem`; returns the TLS files for it.
    pub fn issue_to(
        &self,
        identity: &Identity,
        hosts: &[String],
        days: i64,
        name: &str,
    ) -> Result<TlsFiles, PkiError> {
        let issued = self.issue(identity, hosts, days)?;
        let files = TlsFiles {
            ca: Self::cert_path(&self.dir),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
            crl: None,
        };
        // each file replaced whole: a service reloading them never reads
        // half of one (it waits until key and certificate match)
        write_atomic(&files.key, &issued.key_pem, true)?;
        write_atomic(&files.cert, &issued.cert_pem, false)?;
        Ok(files)
    }
}

/// The file name `jembatan pki` gives an identity's certificate, e.g.
/// `agency-dinsos` or `broker`.
pub fn default_name(identity: &Identity) -> String {
    match &identity.agency {
        Some(a) => format!("{}-{a}", identity.role),
        None => identity.role.to_string(),
    }
}

/// Hosts a loopback development server certificate answers to.
pub fn loopback_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// Creates a development PKI in `dir`: a CA, and one certificate for each
/// identity (server roles get loopback host names). Returns the files by
/// identity.
pub fn dev_pki(dir: &Path, identities: &[Identity]) -> Result<Vec<(Identity, TlsFiles)>, PkiError> {
    let ca = Ca::create(dir, "Jembatan development CA")?;
    identities
        .iter()
        .map(|id| {
            let hosts = if matches!(id.role, Role::Broker | Role::Adapter) {
                loopback_hosts()
            } else {
                Vec::new()
            };
            let files = ca.issue_to(id, &hosts, 825, &default_name(id))?;
            Ok((id.clone(), files))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_carries_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), "test CA").unwrap();
        let id = Identity::agency("dinsos".parse().unwrap());
        let files = ca.issue_to(&id, &[], 1, "x").unwrap();
        assert_eq!(files.identity().unwrap(), id);
        // a reloaded CA issues certificates too
        let ca = Ca::load(dir.path()).unwrap();
        let b = Identity::new(Role::Broker, None).unwrap();
        let issued = ca.issue(&b, &loopback_hosts(), 1).unwrap();
        assert_eq!(identity_from_pem(issued.cert_pem.as_bytes()).unwrap(), b);
        assert!(matches!(
            Ca::create(dir.path(), "again"),
            Err(PkiError::Exists(_))
        ));
    }
}
