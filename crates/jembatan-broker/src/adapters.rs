//! The broker's connections to provider adapters, presenting the broker's
//! certificate in force and requiring the adapter's certificate to carry
//! that provider's `adapter` identity. When the broker's certificate is
//! rotated, exchanges that start afterwards get new channels (so new
//! connections, with the new certificate); running ones finish on theirs.
//!
//! Connections are kept apart by what they carry, so that a consumer that
//! stops reading slows only itself. Records a consumer has not read yet
//! wait in the HTTP/2 receive windows of the broker's connection to the
//! adapter, and every stream on a connection shares its connection
//! window: with one connection per adapter, a few unread query streams
//! filled it (hyper's client default: 5 MiB, 2 MiB a stream) and every
//! other exchange with that provider waited. So each provider gets one
//! connection for lookups and receipts (short calls whose answers the
//! broker reads at once) and one per consumer agency for its query
//! streams, whose connection window holds the stream windows of every
//! stream that consumer may have open there: its unread streams can never
//! hold back another of its own streams either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jembatan_core::{AgencyId, Identity, Role};
use jembatan_pki::{ClientTls, PkiError, Serial, TlsFiles};
use tonic::Status;
use tonic::transport::Channel;

use crate::error::ExchangeError;

/// What an adapter may send on one stream before the broker reads it:
/// each stream's HTTP/2 receive window (hyper's client default, enough for
/// bulk reads on a LAN or a regional link).
pub(crate) const STREAM_WINDOW: u32 = 2 << 20;
/// The connection window for lookups and receipts, which the broker reads
/// as they arrive.
const CALLS_WINDOW: u32 = 8 << 20;

/// What a connection to an adapter carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// Lookups and receipts, for every consumer.
    Calls,
    /// The query streams of one consumer agency.
    Streams(AgencyId),
}

/// Lazily connected channels to the adapters.
#[derive(Debug)]
pub(crate) struct AdapterPool {
    tls: ClientTls,
    /// The connection window of a consumer's streams lane: the stream
    /// windows of every stream it may have open against one provider,
    /// and one more.
    streams_window: u32,
    /// By provider, endpoint and lane: the channel and the serial of the
    /// broker certificate its connections present.
    channels: Mutex<HashMap<ChannelKey, (Serial, Channel)>>,
}

/// A provider, its adapter's endpoint, and the lane.
type ChannelKey = (AgencyId, String, Lane);

impl AdapterPool {
    /// `streams_per_consumer`: most query streams one consumer may have
    /// open against one provider (the broker's `max_streams_per_provider`).
    pub(crate) fn new(tls: &TlsFiles, streams_per_consumer: usize) -> Result<Self, PkiError> {
        let streams = u32::try_from(streams_per_consumer)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        Ok(Self {
            tls: tls.client_tls()?,
            streams_window: STREAM_WINDOW.saturating_mul(streams),
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// The channel to `provider`'s adapter at `endpoint` for `lane`.
    pub(crate) fn channel(
        &self,
        endpoint: &str,
        provider: &AgencyId,
        lane: Lane,
    ) -> Result<Channel, ExchangeError> {
        // a map of channels is left whole by a panic elsewhere
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let connection_window = match lane {
            Lane::Calls => CALLS_WINDOW,
            Lane::Streams(_) => self.streams_window,
        };
        let key = (provider.clone(), endpoint.to_owned(), lane);
        let serial = self.tls.serial();
        if let Some((made_with, c)) = channels.get(&key)
            && *made_with == serial
        {
            return Ok(c.clone());
        }
        let expect = Identity {
            role: Role::Adapter,
            agency: Some(provider.clone()),
        };
        let channel = self
            .tls
            .channel(endpoint, &expect, |e| {
                e.connect_timeout(Duration::from_secs(5))
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .initial_stream_window_size(STREAM_WINDOW)
                    .initial_connection_window_size(connection_window)
            })
            .map_err(|err| ExchangeError::AdapterEndpoint {
                endpoint: endpoint.to_owned(),
                cause: Box::new(err),
            })?;
        channels.insert(key, (serial, channel.clone()));
        Ok(channel)
    }
}

/// Longest the broker waits for an adapter to describe its whitelist.
pub(crate) const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

impl AdapterPool {
    /// What `provider`'s adapter at `endpoint` serves: its whitelist of
    /// datasets and columns (`Adapter.Describe`). The status says why
    /// when it cannot be asked or does not answer in time.
    pub(crate) async fn describe(
        &self,
        endpoint: &str,
        provider: &AgencyId,
    ) -> Result<jembatan_proto::v1::DescribeResponse, Status> {
        let mut client = jembatan_proto::v1::adapter_client::AdapterClient::new(self.channel(
            endpoint,
            provider,
            Lane::Calls,
        )?);
        let mut request = tonic::Request::new(jembatan_proto::v1::DescribeRequest {});
        request.set_timeout(DESCRIBE_TIMEOUT);
        let described = tokio::time::timeout(DESCRIBE_TIMEOUT, client.describe(request))
            .await
            .map_err(|_| Status::from(ExchangeError::AdapterTimeout))??;
        Ok(described.into_inner())
    }
}
