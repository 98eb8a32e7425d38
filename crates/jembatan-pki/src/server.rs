//! Mutual TLS for Jembatan's servers, on rustls directly: a TCP acceptor
//! that completes each handshake with the certificate in force (reloaded
//! from disk without a restart), client certificates that must chain to
//! the CA and not be revoked, and the revocation list in every request's
//! extensions so that [`crate::peer_identity`] refuses a certificate
//! revoked after its connection was opened.
//!
//! The streams it yields wrap tokio-rustls server streams, so tonic puts
//! the peer's certificates in each request's
//! `TlsConnectInfo<TcpConnectInfo>` as before and [`crate::peer_identity`]
//! reads them from there. A connection the server is done with is closed
//! lingering: its write side is shut, and what the client still sends is
//! read and dropped until the client closes too or [`LINGER`] passes.
//! Closed at once, a socket holding bytes it has not read (a window
//! update, a ping) is reset, and a reset makes the client drop the last
//! frames it has not read yet: the status that ends a drained stream.

use std::cell::RefCell;
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpIncoming};

use crate::PkiError;
use crate::crl::Serial;
use crate::live::{Live, RELOAD_INTERVAL};

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on accepted connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Longest a closed connection is kept reading what its client still
/// sends, so that the client reads the server's last frames before the
/// socket goes.
pub const LINGER: Duration = Duration::from_secs(3);

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
        // HTTP/2 or HTTP/1.1 by ALPN (gRPC needs `h2`; HTTP/JSON clients
        // such as PHP's curl may offer `http/1.1` only); clients without
        // ALPN get HTTP/1.1 where the server accepts it
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
    /// concurrently, and one that fails is dropped and logged (a warning
    /// naming the peer, the reason and the certificate presented; at most
    /// 20 a minute, the rest counted). Starts the
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
        TlsIncoming {
            rx,
            accept,
            closing: TaskTracker::new(),
        }
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
    let refusals = Arc::new(Refusals::new());
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
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            let peer = stream.peer_addr().ok();
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let (result, presented) = PRESENTED
                .scope(RefCell::new(None), async {
                    let result = handshake.await;
                    (result, PRESENTED.with(|p| p.borrow_mut().take()))
                })
                .await;
            let reason = match result {
                Ok(Ok(tls)) => {
                    let _ = tx.send(tls).await;
                    return;
                }
                // a connection closed before it said anything (a port
                // probe, a TCP health check) is not a refusal
                Ok(Err(err))
                    if err.kind() == std::io::ErrorKind::UnexpectedEof && presented.is_none() =>
                {
                    tracing::debug!(peer = ?peer, error = %err, "connection closed during the TLS handshake");
                    return;
                }
                Ok(Err(err)) => refusal_reason(&err),
                Err(_) => "the handshake timed out".to_owned(),
            };
            refusals.log(peer, &reason, presented.as_deref());
        });
    }
}

tokio::task_local! {
    /// The client certificate presented in the handshake this task runs,
    /// kept by the verifier so that a refusal can name it.
    static PRESENTED: RefCell<Option<Vec<u8>>>;
}

/// Why a handshake failed, in words: the certificate error when there is
/// one (`UnknownIssuer` for another CA's certificate).
fn refusal_reason(err: &std::io::Error) -> String {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "the client certificate is not issued by this server's CA (unknown issuer)".into()
        }
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked)) => {
            "the client certificate has been revoked".into()
        }
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "the client certificate has expired".into(),
        Some(rustls::Error::NoCertificatesPresented) => {
            "no client certificate was presented".into()
        }
        Some(rustls::Error::InvalidCertificate(e)) => {
            format!("the client certificate is invalid: {e:?}")
        }
        Some(e) => e.to_string(),
        None => err.to_string(),
    }
}

/// How many refused handshakes are logged per [`REFUSAL_WINDOW`]; the rest
/// are counted and the count logged when the window ends, so a flood of
/// bad handshakes cannot fill the log.
const REFUSALS_LOGGED_PER_WINDOW: u32 = 20;
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// The refused-handshake log and its rate limit.
#[derive(Debug)]
struct Refusals {
    window: std::sync::Mutex<RefusalWindow>,
}

#[derive(Debug)]
struct RefusalWindow {
    started: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl Refusals {
    fn new() -> Refusals {
        Refusals {
            window: std::sync::Mutex::new(RefusalWindow {
                started: std::time::Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Logs a refused handshake: the peer, the reason, and the subject,
    /// identity and SHA-256 fingerprint of the certificate it presented.
    fn log(&self, peer: Option<std::net::SocketAddr>, reason: &str, cert: Option<&[u8]>) {
        {
            let Ok(mut w) = self.window.lock() else {
                return;
            };
            if w.started.elapsed() >= REFUSAL_WINDOW {
                if w.suppressed > 0 {
                    tracing::warn!(
                        suppressed = w.suppressed,
                        window = ?REFUSAL_WINDOW,
                        "more TLS handshakes were refused than are logged one by one"
                    );
                }
                *w = RefusalWindow {
                    started: std::time::Instant::now(),
                    logged: 0,
                    suppressed: 0,
                };
            }
            if w.logged >= REFUSALS_LOGGED_PER_WINDOW {
                w.suppressed += 1;
                return;
            }
            w.logged += 1;
        }
        let peer = peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into());
        match cert {
            Some(der) => tracing::warn!(
                peer = %peer,
                reason = %reason,
                subject = %subject(der),
                identity = %describe(der),
                sha256 = %fingerprint(der),
                "refused a TLS handshake"
            ),
            None => tracing::warn!(
                peer = %peer,
                reason = %reason,
                "refused a TLS handshake (no client certificate presented)"
            ),
        }
    }
}

/// The subject name of a DER certificate, for the log.
fn subject(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert.subject().to_string(),
        Err(_) => "(unparsable certificate)".into(),
    }
}

/// SHA-256 of a DER certificate in hex, as `openssl x509 -fingerprint
/// -sha256` shows it (without colons).
pub(crate) fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Connections whose TLS handshake has completed, for tonic's
/// `serve_with_incoming`. Dropping it stops accepting.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<TlsStream<TcpStream>>,
    accept: JoinHandle<()>,
    /// The lingering closes of connections the server is done with.
    closing: TaskTracker,
}

impl TlsIncoming {
    /// What tells when the connections of this stream have all closed.
    pub fn closing(&self) -> Closing {
        Closing(self.closing.clone())
    }
}

impl futures::Stream for TlsIncoming {
    type Item = Result<TlsConnection, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let closing = self.closing.clone();
        self.rx.poll_recv(cx).map(|next| {
            next.map(|tls| {
                Ok(TlsConnection {
                    tls: Some(tls),
                    closing,
                })
            })
        })
    }
}

/// The lingering closes of a [`TlsIncoming`]'s connections.
#[derive(Debug, Clone)]
pub struct Closing(TaskTracker);

impl Closing {
    /// Completes once every connection the server has let go of is
    /// closed, at most [`LINGER`] after the last was let go. For after
    /// the server stopped: a process that exits at once resets them.
    pub async fn closed(self) {
        self.0.close();
        self.0.wait().await;
    }
}

/// One accepted connection: a TLS stream that closes lingering when the
/// server drops it.
#[derive(Debug)]
pub struct TlsConnection {
    /// Always there until the connection is dropped.
    tls: Option<TlsStream<TcpStream>>,
    closing: TaskTracker,
}

impl TlsConnection {
    fn tls(self: Pin<&mut Self>) -> Pin<&mut TlsStream<TcpStream>> {
        Pin::new(
            self.get_mut()
                .tls
                .as_mut()
                .expect("a connection's stream is there until it is dropped"),
        )
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tls
            .as_ref()
            .expect("a connection's stream is there until it is dropped")
            .connect_info()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.tls().poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.tls().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.tls().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tls().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tls().poll_shutdown(cx)
    }
}

impl Drop for TlsConnection {
    fn drop(&mut self) {
        let Some(tls) = self.tls.take() else {
            return;
        };
        // dropped outside a runtime (the runtime itself going): closed at once
        if tokio::runtime::Handle::try_current().is_ok() {
            self.closing.spawn(linger(tls));
        }
    }
}

/// Closes a connection the server is done with: shuts its write side
/// (after what is queued), then reads and drops what the client still
/// sends until it closes or [`LINGER`] passes.
async fn linger(mut tls: TlsStream<TcpStream>) {
    let _ = tokio::time::timeout(LINGER, async move {
        // close_notify after what is queued, then the TCP write side
        if tls.shutdown().await.is_err() {
            return;
        }
        let (mut tcp, _) = tls.into_inner();
        let mut sink = [0u8; 4096];
        while let Ok(1..) = tcp.read(&mut sink).await {}
    })
    .await;
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
        // kept for the log line of a refused handshake
        let _ = PRESENTED.try_with(|p| *p.borrow_mut() = Some(end_entity.to_vec()));
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
pub struct Revocations(pub(crate) Arc<Live>);

impl Revocations {
    /// The `nextUpdate` of the list in force when it has passed.
    pub fn expired(&self) -> Option<time::OffsetDateTime> {
        self.0.revoked().expired(time::OffsetDateTime::now_utc())
    }

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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use jembatan_core::Role;
    use rustls::pki_types::{PrivateKeyDer, ServerName, pem::PemObject};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;
    use crate::crl::pem_contents;
    use crate::{Ca, loopback_hosts};

    /// Log lines written while a test runs.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    /// A broker's server TLS with a certificate from `ca`, accepting on a
    /// loopback port.
    async fn broker_on_loopback(ca: &Ca) -> (TlsIncoming, std::net::SocketAddr) {
        let broker = jembatan_core::Identity::new(Role::Broker, None).unwrap();
        let server = ca
            .issue_to(&broker, &loopback_hosts(), 1, "broker")
            .unwrap();
        let tls = ServerTls::load(&server).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (tls.incoming(listener), addr)
    }

    /// A TLS client trusting `ca` and presenting `cert`.
    fn connector(ca: &Ca, cert: &crate::Issued) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(
                pem_contents(ca.cert_pem().as_bytes()).unwrap(),
            ))
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(
                pem_contents(cert.cert_pem.as_bytes()).unwrap(),
            )],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A handshake with a certificate from another CA is refused and
    /// leaves a line naming the peer, the reason, and the certificate's
    /// subject and fingerprint.
    #[tokio::test]
    async fn a_handshake_refused_for_another_cas_certificate_is_logged() {
        let (log, _guard) = capture();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), "test CA").unwrap();
        let other = Ca::create(&dir.path().join("other"), "other CA").unwrap();
        let (_incoming, addr) = broker_on_loopback(&ca).await;

        let agency = jembatan_core::Identity::agency("dinsos".parse().unwrap());
        let foreign = other.issue(&agency, &[], 1).unwrap();
        let foreign_der = pem_contents(foreign.cert_pem.as_bytes()).unwrap();
        let connector = connector(&ca, &foreign);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let client_addr = tcp.local_addr().unwrap();
        // TLS 1.3: the client's side completes; the refusal is an alert on
        // the first read
        let refused = match connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
        {
            Err(_) => true,
            Ok(mut stream) => {
                let _ = stream.write_all(b"hello").await;
                let mut buf = [0u8; 16];
                !matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
            }
        };
        assert!(refused, "the server accepted another CA's certificate");

        let started = std::time::Instant::now();
        while !log.text().contains("refused a TLS handshake") {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no log line: {}",
                log.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = log.text();
        let line = text
            .lines()
            .find(|l| l.contains("refused a TLS handshake"))
            .unwrap();
        for want in [
            format!("peer={client_addr}"),
            "not issued by this server's CA".into(),
            "CN=agency dinsos".into(),
            "identity=agency:dinsos".into(),
            format!("sha256={}", fingerprint(&foreign_der)),
        ] {
            assert!(line.contains(&want), "{want:?} missing from {line}");
        }
    }

    /// A connection the server lets go of while its client still sends
    /// (unread bytes in the server's socket) is not reset: the client
    /// reads everything the server wrote, then a clean end.
    #[tokio::test]
    async fn a_client_reads_to_the_end_of_a_connection_let_go_with_unread_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), "test CA").unwrap();
        let (mut incoming, addr) = broker_on_loopback(&ca).await;
        let closing = incoming.closing();

        let agency = jembatan_core::Identity::agency("dinsos".parse().unwrap());
        let client = ca.issue(&agency, &[], 1).unwrap();
        let connector = connector(&ca, &client);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut stream = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();

        // more than the sockets buffer: some of it is still queued when
        // the server lets go
        const SENT: usize = 16 << 20;
        let mut connection = incoming.next().await.unwrap().unwrap();
        let served = tokio::spawn(async move {
            connection.write_all(&vec![7u8; SENT]).await.unwrap();
            connection.flush().await.unwrap();
            drop(connection);
        });
        // bytes the server never reads
        stream.write_all(b"a window update").await.unwrap();
        stream.flush().await.unwrap();
        let mut received = Vec::new();
        let end = stream.read_to_end(&mut received).await;
        served.await.unwrap();
        assert!(end.is_ok(), "the connection was reset: {end:?}");
        assert_eq!(received.len(), SENT);
        drop(stream);
        tokio::time::timeout(LINGER + Duration::from_secs(2), closing.closed())
            .await
            .expect("the lingering close ends once the client closed");
    }

    #[test]
    fn a_flood_of_refusals_is_logged_up_to_the_limit() {
        let (log, _guard) = capture();
        let refusals = Refusals::new();
        for _ in 0..REFUSALS_LOGGED_PER_WINDOW + 30 {
            refusals.log(None, "no client certificate was presented", None);
        }
        let lines = log.text().matches("refused a TLS handshake").count();
        assert_eq!(lines, REFUSALS_LOGGED_PER_WINDOW as usize);
        assert_eq!(refusals.window.lock().unwrap().suppressed, 30);
    }
}
