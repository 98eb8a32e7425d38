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
//!
//! A provider may list several endpoints of its adapter service. They are
//! tried in the order the config lists them, those that failed lately
//! last: an endpoint that cannot be reached, or answers `UNAVAILABLE`
//! before sending anything, is marked down for [`ENDPOINT_BACKOFF`] and
//! the call goes to the next ([`fails_over`]). A call that has received
//! anything never moves: a stream that breaks after records were
//! forwarded fails the exchange.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// By provider and endpoint: until when an endpoint that failed is
    /// tried only after the others.
    down: Mutex<HashMap<(AgencyId, String), Instant>>,
}

/// How long an endpoint that failed is tried only after the provider's
/// other endpoints.
pub(crate) const ENDPOINT_BACKOFF: Duration = Duration::from_secs(10);

/// Whether a call that failed with `status` before anything was received
/// goes to the provider's next endpoint: the endpoint could not be
/// reached or said it is unavailable. An endpoint that fails the identity
/// check is not skipped over: that is a fault to fix, not an outage.
pub(crate) fn fails_over(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && jembatan_pki::wrong_identity_in(status).is_none()
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
            down: Mutex::new(HashMap::new()),
        })
    }

    /// `endpoints` of `provider`'s adapter in the order to try them: as
    /// listed, those marked down (and not back yet) after the others,
    /// the one back soonest first.
    pub(crate) fn order(&self, provider: &AgencyId, endpoints: &[String]) -> Vec<String> {
        let now = Instant::now();
        let mut down = self
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        down.retain(|_, until| *until > now);
        let mut up = Vec::with_capacity(endpoints.len());
        let mut later = Vec::new();
        for endpoint in endpoints {
            match down.get(&(provider.clone(), endpoint.clone())) {
                Some(until) => later.push((*until, endpoint.clone())),
                None => up.push(endpoint.clone()),
            }
        }
        later.sort();
        up.extend(later.into_iter().map(|(_, e)| e));
        up
    }

    /// Marks `endpoint` of `provider`'s adapter down for
    /// [`ENDPOINT_BACKOFF`], after a call to it failed with `status`.
    pub(crate) fn mark_down(&self, provider: &AgencyId, endpoint: &str, status: &Status) {
        tracing::warn!(
            %provider,
            endpoint,
            code = ?status.code(),
            backoff = ?ENDPOINT_BACKOFF,
            "adapter endpoint unavailable; trying the next"
        );
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                (provider.clone(), endpoint.to_owned()),
                Instant::now() + ENDPOINT_BACKOFF,
            );
    }

    /// Marks `endpoint` of `provider`'s adapter up: it answered.
    pub(crate) fn mark_up(&self, provider: &AgencyId, endpoint: &str) {
        let mut down = self
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !down.is_empty() {
            down.remove(&(provider.clone(), endpoint.to_owned()));
        }
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
    /// What `provider`'s adapter serves: its whitelist of datasets and
    /// columns (`Adapter.Describe`), from the first of `endpoints` that
    /// answers. The status says why when none can be asked or the one
    /// asked does not answer in time.
    pub(crate) async fn describe(
        &self,
        endpoints: &[String],
        provider: &AgencyId,
    ) -> Result<jembatan_proto::v1::DescribeResponse, Status> {
        let order = self.order(provider, endpoints);
        let mut last = Status::from(ExchangeError::NoAdapter {
            provider: provider.clone(),
        });
        for (i, endpoint) in order.iter().enumerate() {
            match self.describe_at(endpoint, provider).await {
                Ok(described) => {
                    self.mark_up(provider, endpoint);
                    return Ok(described);
                }
                Err(status) if fails_over(&status) && i + 1 < order.len() => {
                    self.mark_down(provider, endpoint, &status);
                    last = status;
                }
                Err(status) => {
                    if fails_over(&status) {
                        self.mark_down(provider, endpoint, &status);
                    }
                    return Err(status);
                }
            }
        }
        Err(last)
    }

    /// `Adapter.Describe` at one endpoint.
    async fn describe_at(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_that_failed_are_tried_last_until_their_backoff_ends() {
        let files = tempfile::tempdir().expect("temp dir");
        let broker = jembatan_core::Identity::new(Role::Broker, None).expect("identity");
        let issued = jembatan_pki::dev_pki(files.path(), &[broker]).expect("pki");
        let pool = AdapterPool::new(&issued[0].1, 2).expect("pool");
        let prov: AgencyId = "prov".parse().expect("agency");
        let other: AgencyId = "other".parse().expect("agency");
        let endpoints: Vec<String> = ["https://a:1", "https://b:1", "https://c:1"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(pool.order(&prov, &endpoints), endpoints, "as listed");

        let unavailable = Status::unavailable("connection refused");
        pool.mark_down(&prov, "https://a:1", &unavailable);
        pool.mark_down(&prov, "https://b:1", &unavailable);
        assert_eq!(
            pool.order(&prov, &endpoints),
            ["https://c:1", "https://a:1", "https://b:1"],
            "the ones down last, the one back soonest first"
        );
        assert_eq!(
            pool.order(&other, &endpoints),
            endpoints,
            "another provider's endpoints of the same address are apart"
        );
        pool.mark_up(&prov, "https://b:1");
        assert_eq!(
            pool.order(&prov, &endpoints),
            ["https://b:1", "https://c:1", "https://a:1"]
        );
        // a back-off that ran out puts the endpoint back in its place
        pool.down
            .lock()
            .expect("lock")
            .insert((prov.clone(), "https://a:1".into()), Instant::now());
        assert_eq!(pool.order(&prov, &endpoints), endpoints);
    }

    #[test]
    fn only_unavailable_endpoints_are_skipped() {
        assert!(fails_over(&Status::unavailable("tcp connect error")));
        for status in [
            Status::permission_denied("not on the whitelist"),
            Status::invalid_argument("bad filter"),
            Status::deadline_exceeded("statement timeout"),
            Status::internal("database error"),
            Status::cancelled("cancelled"),
        ] {
            assert!(!fails_over(&status), "{status:?}");
        }
    }
}
