//! The broker's connections to provider adapters: one lazily connected
//! channel per provider and endpoint, presenting the broker's certificate
//! in force and requiring the adapter's certificate to carry that
//! provider's `adapter` identity. When the broker's certificate is
//! rotated, exchanges that start afterwards get new channels (so new
//! connections, with the new certificate); running ones finish on theirs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jembatan_core::{AgencyId, Identity, Role};
use jembatan_pki::{ClientTls, PkiError, Serial, TlsFiles};
use tonic::Status;
use tonic::transport::Channel;

/// Lazily connected channels to the adapters.
#[derive(Debug)]
pub(crate) struct AdapterPool {
    tls: ClientTls,
    /// By provider and endpoint: the channel and the serial of the
    /// broker certificate its connections present.
    channels: Mutex<HashMap<(AgencyId, String), (Serial, Channel)>>,
}

impl AdapterPool {
    pub(crate) fn new(tls: &TlsFiles) -> Result<Self, PkiError> {
        Ok(Self {
            tls: tls.client_tls()?,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// The channel to `provider`'s adapter at `endpoint`.
    pub(crate) fn channel(&self, endpoint: &str, provider: &AgencyId) -> Result<Channel, Status> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| Status::internal("adapter pool poisoned"))?;
        let key = (provider.clone(), endpoint.to_owned());
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
            })
            .map_err(|err| {
                tracing::error!(error = %err, endpoint, "bad adapter endpoint");
                Status::internal("bad adapter endpoint")
            })?;
        channels.insert(key, (serial, channel.clone()));
        Ok(channel)
    }
}

/// The identity check an adapter call failed, when the adapter's
/// certificate carried another identity than the provider's adapter.
pub(crate) fn wrong_identity(status: &Status) -> Option<&jembatan_pki::WrongIdentity> {
    jembatan_pki::wrong_identity_in(status)
}
