//! Mutual TLS for Jembatan's servers, on rustls directly: a TCP acceptor
//! that completes each handshake with the certificate in force (reloaded
//! from disk without a restart), client certificates that must chain to
//! the CA and not be revoked, and the revocation list in every request's
//! extensions so that [`crate::peer_identity`] refuses a certificate
//! revoked after its connection was opened.
//!
//! The streams it yields are tokio-rustls server streams, so tonic puts
//! the peer's certificates in each request's
//! `TlsConnectInfo<TcpConnectInfo>` as before and [`crate::peer_identity`]
//! reads them from there.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use jembatan_core::Identity;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::codegen::http;
use tonic::transport::server::TcpIncoming;

use crate::PkiError;
use crate::crl::Serial;
use crate::live::{Live, RELOAD_INTERVAL};

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on accepted connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A server's TLS: its certificate and key, the CA its clients must chain
/// to, and the revocation list, all reloaded when their files change.
#[derive(Debug, Clone)]
pub struct ServerTls {
    live: Arc<Live>,
    config: Arc<ServerConfig>,
    reload_every: Duration,
}

impl ServerTls {
    pub(crate) fn load(files: &crate::TlsFiles) -> Result<ServerTls, PkiError> {
        let live = Live::load(files, "server")?;
        let webpki = WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&live.roots),
            Arc::clone(&live.provider),
        )
        .build()
        .map_err(|e| PkiError::Tls(format!("client certificate verifier: {e}")))?;
        let verifier = Arc::new(NotRevoked {
            webpki,
            live: Arc::clone(&live),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&live.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(OwnCert(Arc::clone(&live))));
        // HTTP/2 is negotiated by ALPN; clients without ALPN get HTTP/1.1
        // where the server accepts it
        config.alpn_protocols = vec![b"h2".to_vec()];
        // no resumption: every connection presents (and has checked
        // against the revocation list) a full client certificate
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            live,
            config: Arc::new(config),
            reload_every: RELOAD_INTERVAL,
        })
    }

    /// Looks at the files this often instead of every
    /// [`RELOAD_INTERVAL`](crate::RELOAD_INTERVAL).
    pub fn reload_every(mut self, every: Duration) -> ServerTls {
        self.reload_every = every;
        self
    }

    /// The identity in this server's certificate.
    pub fn identity(&self) -> &Identity {
        self.live.identity()
    }

    /// The serial of the certificate new handshakes present.
    pub fn serial(&self) -> Serial {
        self.live.own().serial.clone()
    }

    /// Accepts connections on `listener` (TCP_NODELAY and keepalive set)
    /// and yields each once its handshake has completed; handshakes run
    /// concurrently, and one that fails is logged and dropped. Starts the
    /// watcher that reloads the files; it stops with the stream.
    pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
        Live::watch(&self.live, self.reload_every);
        // Nagle's algorithm would hold small responses back ~40 ms
        let tcp = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE));
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        let accept = tokio::spawn(accept_loop(tcp, acceptor, tx));
        TlsIncoming { rx, accept }
    }

    /// The layer that lets [`crate::peer_identity`] refuse, on every
    /// request, a client certificate revoked since its connection was
    /// opened. Every server built on [`ServerTls::incoming`] installs it.
    pub fn revocation_layer(&self) -> RevocationLayer {
        RevocationLayer {
            live: Arc::clone(&self.live),
        }
    }
}

async fn accept_loop(
    mut tcp: TcpIncoming,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<TlsStream<TcpStream>>,
) {
    loop {
        let next = tokio::select! {
            _ = tx.closed() => break,
            next = tcp.next() => next,
        };
        let stream = match next {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(err)) => {
                // out of descriptors and the like: wait instead of spinning
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let peer = stream.peer_addr().ok();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(tls).await;
                }
                Ok(Err(err)) => {
                    tracing::debug!(peer = ?peer, error = %err, "TLS handshake failed");
                }
                Err(_) => tracing::debug!(peer = ?peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Connections whose TLS handshake has completed, for tonic's
/// `serve_with_incoming`. Dropping it stops accepting.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsStream<TcpStream>>,
    accept: JoinHandle<()>,
}

impl futures::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|next| next.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Presents the certificate in force.
#[derive(Debug)]
struct OwnCert(Arc<Live>);

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.own().key))
    }
}

/// The CA's verifier, then the revocation list in force.
#[derive(Debug)]
struct NotRevoked {
    webpki: Arc<dyn ClientCertVerifier>,
    live: Arc<Live>,
}

impl ClientCertVerifier for NotRevoked {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(serial) = revoked_serial(&self.live, end_entity) {
            tracing::warn!(
                serial = %serial,
                identity = %describe(end_entity),
                "refused a revoked client certificate"
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

/// The serial of `cert` when the list in force revokes it.
pub(crate) fn revoked_serial(live: &Live, cert: &[u8]) -> Option<Serial> {
    let list = live.revoked();
    if list.is_empty() {
        return None;
    }
    // a certificate the CA verifier accepted always parses
    let serial = Serial::of_der(cert).ok()?;
    list.is_revoked(&serial).then_some(serial)
}

/// The identity a certificate names, for the log.
pub(crate) fn describe(cert: &[u8]) -> String {
    crate::identity_from_der(cert)
        .map(|id| id.to_string())
        .unwrap_or_else(|m| format!("(none: {m})"))
}

/// Puts the revocation list in force ([`Revocations`]) in every
/// request's extensions, where [`crate::peer_identity`] checks the
/// caller's certificate against it: a certificate revoked after its
/// connection was opened is refused on the connection's next request. See
/// [`ServerTls::revocation_layer`].
#[derive(Debug, Clone)]
pub struct RevocationLayer {
    live: Arc<Live>,
}

impl<S> tower::Layer<S> for RevocationLayer {
    type Service = RevocationCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RevocationCheck {
            inner,
            live: Arc::clone(&self.live),
        }
    }
}

/// The service [`RevocationLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct RevocationCheck<S> {
    inner: S,
    live: Arc<Live>,
}

impl<S, B> tower::Service<http::Request<B>> for RevocationCheck<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request
            .extensions_mut()
            .insert(Revocations(Arc::clone(&self.live)));
        self.inner.call(request)
    }
}

/// The revocation list of the server a request came to, as it is in force
/// when the request is checked.
#[derive(Debug, Clone)]
pub struct Revocations(Arc<Live>);

impl Revocations {
    /// The serial of `cert` (DER) when it has been revoked.
    pub fn revoked(&self, cert: &[u8]) -> Option<Serial> {
        let serial = revoked_serial(&self.0, cert)?;
        tracing::warn!(
            serial = %serial,
            identity = %describe(cert),
            "refused a request: its client certificate has been revoked"
        );
        Some(serial)
    }
}
