//! Servers on loopback that run until a [`Stop`]: an adapter from its
//! config, any implementation of the adapter protocol (a fake adapter),
//! and brokers; and the client channel to them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jembatan_adapter::{Adapter, AdapterConfig, AdapterError};
use jembatan_broker::{Broker, BrokerConfig, BrokerError};
use jembatan_pki::{PkiError, TlsFiles};
use jembatan_proto::v1::adapter_server::{Adapter as AdapterProtocol, AdapterServer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Server};

/// What starting a server or connecting to one can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS: {0}")]
    Pki(#[from] PkiError),
    #[error("adapter: {0}")]
    Adapter(#[from] AdapterError),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("loopback listener: {0}")]
    Listen(#[from] std::io::Error),
    #[error("connecting to 127.0.0.1:{port}: {source}")]
    Connect {
        port: u16,
        source: tonic::transport::Error,
    },
}

/// Stops every server started with it, when [`Stop::stop`] is called or
/// it is dropped.
#[derive(Debug)]
pub struct Stop(watch::Sender<bool>);

impl Stop {
    /// A signal not given yet.
    pub fn new() -> Stop {
        Stop(watch::Sender::new(false))
    }

    /// Tells every server started with it to shut down.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Completes once [`Stop::stop`] was called or the `Stop` dropped: a
    /// server's shutdown signal.
    pub fn signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.0.subscribe();
        async move {
            // an error is the sender gone: stopped too
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }
    }
}

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listener on a free loopback port, and the port.
pub async fn loopback() -> Result<(TcpListener, u16), ServeError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// Connects the adapter `config` describes (its `listen` is not used) and
/// serves it on `listener` until `shutdown`; returns the serving task.
pub async fn adapter(
    config: &AdapterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<Result<(), AdapterError>>, ServeError> {
    let adapter = Arc::new(Adapter::connect(config).await?);
    let tls = config.tls.server_config()?;
    Ok(tokio::spawn(jembatan_adapter::serve(
        adapter, listener, tls, shutdown,
    )))
}

/// Serves `service`, any implementation of the adapter protocol (a fake
/// adapter that fails on cue, records what it is asked), with the
/// certificate `tls` on `listener` until `shutdown`, behind the same
/// mutual TLS and revocation check as a real adapter.
pub fn adapter_service<A: AdapterProtocol>(
    service: A,
    tls: &TlsFiles,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<Result<(), tonic::transport::Error>>, ServeError> {
    let tls = tls.server_config()?;
    let served = Server::builder()
        .layer(tls.revocation_layer())
        .add_service(AdapterServer::new(service))
        .serve_with_incoming_shutdown(tls.incoming(listener), shutdown);
    Ok(tokio::spawn(served))
}

/// A broker started and served.
pub struct ServedBroker {
    pub broker: Broker,
    /// The port of the listener it serves on.
    pub port: u16,
    /// The serving task; it ends once the shutdown signal came and every
    /// call ended.
    pub task: JoinHandle<Result<(), BrokerError>>,
}

/// Starts a broker from `config` (another replica when one runs on the
/// same store; its `listen` is not used) and serves it on `listener` until
/// `shutdown`.
pub async fn broker(
    config: &BrokerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServedBroker, ServeError> {
    let port = listener.local_addr()?.port();
    let broker = Broker::start(config).await?;
    let tls = config.tls.server_config()?;
    let task = tokio::spawn(jembatan_broker::serve(
        broker.clone(),
        listener,
        tls,
        shutdown,
    ));
    Ok(ServedBroker { broker, port, task })
}

/// How a client channel is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelOptions {
    /// HTTP/2 windows of 64 KiB, so that a client that stops reading holds
    /// the server back instead of buffering a whole stream.
    pub small_windows: bool,
}

/// A mutual-TLS channel to the server on 127.0.0.1:`port` (named
/// `localhost`, as development certificates are), presenting `tls`.
pub async fn channel(
    port: u16,
    tls: &TlsFiles,
    options: ChannelOptions,
) -> Result<Channel, ServeError> {
    let connect = |source| ServeError::Connect { port, source };
    let mut endpoint = Endpoint::from_shared(format!("https://localhost:{port}"))
        .map_err(connect)?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls.client_config("localhost")?)
        .map_err(connect)?;
    if options.small_windows {
        endpoint = endpoint
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    }
    endpoint.connect().await.map_err(connect)
}
