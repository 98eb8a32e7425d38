//! Mutual TLS for a service that calls another (the broker calling
//! adapters), on rustls directly: the client certificate in force is
//! reloaded from disk without a restart, and the server must present a
//! certificate from the CA, for the host name dialled, not revoked, and
//! carrying exactly the Jembatan identity the caller expects.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use jembatan_core::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::PkiError;
use crate::live::{Live, RELOAD_INTERVAL};
use crate::server::{describe, revoked_serial};

/// The beginning of the message of a connection refused because the
/// server's certificate carries another identity than the one expected.
pub const WRONG_IDENTITY: &str = "the server's certificate carries the wrong identity";

/// A client's TLS: its certificate and key, the CA servers must chain to,
/// and the revocation list, reloaded when their files change.
#[derive(Debug, Clone)]
pub struct ClientTls {
    live: Arc<Live>,
    reload_every: Duration,
}

impl ClientTls {
    pub(crate) fn load(files: &crate::TlsFiles) -> Result<ClientTls, PkiError> {
        Ok(ClientTls {
            live: Live::load(files, "client")?,
            reload_every: RELOAD_INTERVAL,
        })
    }

    /// Looks at the files this often instead of every
    /// [`RELOAD_INTERVAL`](crate::RELOAD_INTERVAL).
    pub fn reload_every(mut self, every: Duration) -> ClientTls {
        self.reload_every = every;
        self
    }

    /// The serial of the certificate new connections present.
    pub fn serial(&self) -> crate::Serial {
        self.live.own().serial.clone()
    }

    /// A lazily connected channel to `url` (`https://host:port`) whose
    /// every connection requires the server certificate to carry `expect`.
    /// `configure` sets the endpoint's timeouts and keepalives. Starts the
    /// watcher that reloads the files (it needs a Tokio runtime).
    pub fn channel(
        &self,
        url: &str,
        expect: &Identity,
        configure: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, PkiError> {
        let bad = |message: String| PkiError::Endpoint {
            url: url.to_owned(),
            message,
        };
        let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("must be an https:// URL".into()));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| bad(format!("bad host: {e}")))?;
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&self.live.roots),
            Arc::clone(&self.live.provider),
        )
        .build()
        .map_err(|e| PkiError::Tls(format!("server certificate verifier: {e}")))?;
        let verifier = Arc::new(ExpectIdentity {
            webpki,
            expect: expect.clone(),
            live: Arc::clone(&self.live),
        });
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.live.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(OwnCert(Arc::clone(&self.live))));
        config.alpn_protocols = vec![b"h2".to_vec()];
        // a resumed session would skip the identity check
        config.resumption = Resumption::disabled();
        // TLS is done by the connector; tonic sees a plain connection
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| bad("has no host".into()))?;
        let endpoint =
            Endpoint::from_shared(format!("http://{authority}")).map_err(|e| bad(e.to_string()))?;
        Live::watch(&self.live, self.reload_every);
        let connector = Connector {
            tls: TlsConnector::from(Arc::new(config)),
            server_name,
            host,
            port,
        };
        Ok(configure(endpoint).connect_with_connector_lazy(connector))
    }
}

/// Presents the certificate in force.
#[derive(Debug)]
struct OwnCert(Arc<Live>);

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.own().key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server certificate that chains to the CA and names the host, but
/// carries another identity than the one expected.
#[derive(Debug)]
pub struct WrongIdentity {
    pub expected: Identity,
    pub found: String,
}

impl fmt::Display for WrongIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{WRONG_IDENTITY}: {} is required, it carries {}",
            self.expected.uri(),
            self.found
        )
    }
}

impl std::error::Error for WrongIdentity {}

/// The identity check that refused a connection, when that is why `err`
/// happened: a failed call's `Status` keeps the transport error as its
/// source, and the chain leads to the [`ConnectError`] of the handshake.
pub fn wrong_identity_in<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a WrongIdentity> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(ConnectError::WrongIdentity(w)) = e.downcast_ref::<ConnectError>() {
            return Some(w);
        }
        if let Some(w) = e.downcast_ref::<WrongIdentity>() {
            return Some(w);
        }
        // `io::Error::source` skips the error it wraps; look inside it
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The CA's verifier (chain and host name), then the identity, then the
/// revocation list in force.
#[derive(Debug)]
struct ExpectIdentity {
    webpki: Arc<WebPkiServerVerifier>,
    expect: Identity,
    live: Arc<Live>,
}

impl ServerCertVerifier for ExpectIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let found = crate::identity_from_der(end_entity);
        if found.as_ref() != Ok(&self.expect) {
            let found = match found {
                Ok(id) => id.uri(),
                Err(m) => format!("none ({m})"),
            };
            tracing::warn!(
                server = ?server_name,
                expected = %self.expect,
                found = %found,
                "refused a server certificate with the wrong identity"
            );
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(WrongIdentity {
                    expected: self.expect.clone(),
                    found,
                })),
            )));
        }
        if let Some(serial) = revoked_serial(&self.live, end_entity) {
            tracing::warn!(
                server = ?server_name,
                serial = %serial,
                identity = %describe(end_entity),
                "refused a revoked server certificate"
            );
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {address}: {source}")]
    Tcp {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {address} failed: {source}")]
    Handshake {
        address: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    WrongIdentity(WrongIdentity),
}

/// Dials the host and port of the channel's URL and completes the TLS
/// handshake; tonic then speaks HTTP/2 over the result.
#[derive(Clone)]
struct Connector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let address = format!("{}:{}", this.host, this.port);
            let tcp = TcpStream::connect((this.host.as_str(), this.port))
                .await
                .map_err(|source| ConnectError::Tcp {
                    address: address.clone(),
                    source,
                })?;
            // Nagle's algorithm would hold small requests back ~40 ms
            let _ = tcp.set_nodelay(true);
            let tls = this
                .tls
                .connect(this.server_name.clone(), tcp)
                .await
                .map_err(|source| handshake_error(address, source))?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A handshake refused for the server's identity is reported as such.
fn handshake_error(address: String, source: std::io::Error) -> ConnectError {
    let wrong = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .and_then(|e| match e {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<WrongIdentity>()
            }
            _ => None,
        });
    match wrong {
        Some(w) => ConnectError::WrongIdentity(WrongIdentity {
            expected: w.expected.clone(),
            found: format!("{} (at {address})", w.found),
        }),
        None => ConnectError::Handshake { address, source },
    }
}

/// A plain rustls client configuration that presents the certificate of
/// `files`, trusts their CA and offers `alpn`: for clients that speak HTTP
/// themselves (the HTTP/JSON door) rather than through a tonic channel.
pub fn rustls_config(files: &crate::TlsFiles, alpn: &[&[u8]]) -> Result<ClientConfig, PkiError> {
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
    let bad = |path: &std::path::Path, e: &dyn fmt::Display| {
        PkiError::Tls(format!("{}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&crate::read(&files.ca)?) {
        let ca = ca.map_err(|e| bad(&files.ca, &e))?;
        roots.add(ca).map_err(|e| bad(&files.ca, &e))?;
    }
    let chain = CertificateDer::pem_slice_iter(&crate::read(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.cert, &e))?;
    let key = PrivateKeyDer::from_pem_slice(&crate::read(&files.key)?)
        .map_err(|e| bad(&files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Whether the server at `host:port` refuses the certificate of `files`:
/// completes a TLS handshake presenting it, sends the HTTP/2 preface and
/// reads the answer. Returns the TLS alert the server sent when it refused
/// the certificate; `None` when it answered, or when it could not be
/// reached (the caller has its own error for that). For clients that got
/// only "transport error" from a call: HTTP/2 keeps the text of the I/O
/// error that ended a connection, not the alert.
pub fn refused_by(
    files: &crate::TlsFiles,
    host: &str,
    port: u16,
) -> Option<rustls::AlertDescription> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;

    const WAIT: Duration = Duration::from_secs(5);
    let config = rustls_config(files, &[b"h2"]).ok()?;
    let name = ServerName::try_from(host.to_owned()).ok()?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let sock = std::net::TcpStream::connect_timeout(&addr, WAIT).ok()?;
    sock.set_read_timeout(Some(WAIT)).ok()?;
    sock.set_write_timeout(Some(WAIT)).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    // the HTTP/2 preface and an empty SETTINGS frame: a server that took
    // the certificate answers with its SETTINGS
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut buf = [0u8; 64];
    let outcome = tls
        .write_all(preface)
        .and_then(|()| tls.flush())
        .and_then(|()| tls.read(&mut buf));
    match outcome {
        Ok(_) => None,
        Err(e) => match e.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::AlertReceived(alert) => Some(*alert),
            _ => None,
        },
    }
}
