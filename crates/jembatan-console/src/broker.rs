//! The console's one way into the broker: its gRPC services, called with
//! the console's own certificate. The broker decides what that
//! certificate may do; the console only hides what it would refuse.

use std::path::Path;

use jembatan_core::{Identity, Role};
use jembatan_pki::{BrokerAddress, TlsFiles};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::agreements_client::AgreementsClient;
use jembatan_proto::v1::audit_client::AuditClient;
use jembatan_proto::v1::registry_client::RegistryClient;
use tonic::transport::Channel;

use crate::ConsoleError;

/// The broker, as the console reaches it.
#[derive(Debug, Clone)]
pub struct Broker {
    channel: Channel,
    identity: Identity,
    address: BrokerAddress,
}

/// The identity a console certificate must carry: an auditor's, an
/// operator's or an agency's. Integrator, adapter and broker
/// certificates are refused naming their role.
pub fn console_identity(cert: &Path) -> Result<Identity, ConsoleError> {
    let pem = std::fs::read(cert).map_err(|e| ConsoleError::Certificate {
        path: cert.display().to_string(),
        message: e.to_string(),
    })?;
    let identity =
        jembatan_pki::identity_from_pem(&pem).map_err(|e| ConsoleError::Certificate {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    match identity.role {
        Role::Auditor | Role::Operator | Role::Agency => Ok(identity),
        _ => Err(ConsoleError::Role {
            path: cert.display().to_string(),
            identity: identity.to_string(),
        }),
    }
}

impl Broker {
    /// Checks the certificate's role, then opens an mTLS channel.
    pub async fn connect(url: &str, files: &TlsFiles) -> Result<Broker, ConsoleError> {
        let identity = console_identity(&files.cert)?;
        let address = BrokerAddress::parse(url)?;
        let channel = address.connect(files).await?;
        Ok(Broker {
            channel,
            identity,
            address,
        })
    }

    pub fn role(&self) -> Role {
        self.identity.role
    }

    /// The console certificate's identity (`agency:dinsos`, `operator`).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn address(&self) -> &BrokerAddress {
        &self.address
    }

    pub fn audit(&self) -> AuditClient<Channel> {
        AuditClient::new(self.channel.clone())
    }

    pub fn agreements(&self) -> AgreementsClient<Channel> {
        AgreementsClient::new(self.channel.clone())
    }

    pub fn registry(&self) -> RegistryClient<Channel> {
        RegistryClient::new(self.channel.clone())
    }

    /// The broker's gRPC health answer for each of its services.
    pub async fn health(&self) -> Vec<(&'static str, String)> {
        use tonic_health::pb::health_client::HealthClient;
        let mut client = HealthClient::new(self.channel.clone());
        let mut out = Vec::new();
        for service in [
            "jembatan.v1.Exchange",
            "jembatan.v1.Agreements",
            "jembatan.v1.Registry",
            "jembatan.v1.Audit",
        ] {
            let status = match client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
            {
                Ok(r) => match r.into_inner().status() {
                    tonic_health::pb::health_check_response::ServingStatus::Serving => {
                        "serving".to_owned()
                    }
                    other => other.as_str_name().to_ascii_lowercase(),
                },
                Err(status) => status.message().to_owned(),
            };
            out.push((service.trim_start_matches("jembatan.v1."), status));
        }
        out
    }

    /// One page of entries.
    pub async fn entries(
        &self,
        request: pb::QueryEntriesRequest,
    ) -> Result<Vec<pb::AuditEntry>, tonic::Status> {
        let mut stream = self.audit().query_entries(request).await?.into_inner();
        let mut out = Vec::new();
        while let Some(entry) = stream.message().await? {
            out.push(entry);
        }
        Ok(out)
    }

    /// Entries matching `request`, page after page, at most `cap`.
    pub async fn all_entries(
        &self,
        mut request: pb::QueryEntriesRequest,
        cap: usize,
    ) -> Result<(Vec<pb::AuditEntry>, bool), tonic::Status> {
        request.page_size = 1000;
        let mut out = Vec::new();
        loop {
            let page = self.entries(request.clone()).await?;
            let next = page.last().map(|e| e.next_page_token.clone());
            out.extend(page);
            match next {
                Some(token) if !token.is_empty() && out.len() < cap => request.page_token = token,
                Some(token) => return Ok((out, !token.is_empty())),
                None => return Ok((out, false)),
            }
        }
    }

    /// The entry at `seq`, if there is one.
    ///
    /// The Audit service has no call for one entry; a page token is the
    /// seq a page starts at, so a page of one from there is that entry.
    pub async fn entry(&self, seq: u64) -> Result<Option<pb::AuditEntry>, tonic::Status> {
        let page = self
            .entries(pb::QueryEntriesRequest {
                page_size: 1,
                page_token: seq.to_string(),
                ..Default::default()
            })
            .await?;
        Ok(page.into_iter().next().filter(|e| e.seq == seq))
    }

    /// Every entry naming the subject with this keyed hash, at most `cap`.
    pub async fn subject_entries(
        &self,
        subject_hash: &str,
        cap: usize,
    ) -> Result<Vec<pb::AuditEntry>, tonic::Status> {
        let mut token = String::new();
        let mut out = Vec::new();
        loop {
            let mut stream = self
                .audit()
                .subject_lookup(pb::SubjectLookupRequest {
                    subject_hash: subject_hash.to_owned(),
                    page_size: 1000,
                    page_token: token.clone(),
                })
                .await?
                .into_inner();
            let mut next = String::new();
            while let Some(entry) = stream.message().await? {
                next.clone_from(&entry.next_page_token);
                out.push(entry);
            }
            if next.is_empty() || out.len() >= cap {
                return Ok(out);
            }
            token = next;
        }
    }
}
