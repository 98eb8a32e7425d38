//! The gRPC `Registry` service over [`Registry`]: reads for any
//! certificate of the federation, writes for the dataset agency's
//! integrator (and, for modes and version states, an operator). Every
//! write, and every refused attempt, is on the audit log before it
//! counts (see `registry_log.rs`).

use std::sync::Arc;

use jembatan_core::{Failure, Identity};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::registry_server;
use jembatan_schema::wire::{incompatibility_to_proto, mode_from_proto, mode_to_proto};
use jembatan_store::{StoredMapping, StoredSchemaVersion, VersionState};
use tonic::{Request, Response, Status};

use crate::registry::{Registry, RegistryError, check_reader};

/// The gRPC `Registry` service; cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryService {
    registry: Arc<Registry>,
}

impl RegistryService {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    /// A request field as parsed; one that does not parse refuses the
    /// write `action`, and the refusal is on the log.
    async fn parsed<T>(
        &self,
        identity: &Identity,
        action: &'static str,
        parsed: Result<T, RegistryError>,
    ) -> Result<T, Status> {
        match parsed {
            Ok(value) => Ok(value),
            Err(err) => Err(self
                .registry
                .refuse_request(identity, action, err)
                .await
                .into()),
        }
    }
}

/// The caller, if it may read the registry.
fn reader<T>(request: &Request<T>) -> Result<Identity, Status> {
    let identity = jembatan_pki::peer_identity(request)?;
    check_reader(&identity)?;
    Ok(identity)
}

fn state_to_proto(state: VersionState) -> pb::VersionState {
    match state {
        VersionState::Active => pb::VersionState::Active,
        VersionState::Deprecated => pb::VersionState::Deprecated,
        VersionState::Disabled => pb::VersionState::Disabled,
    }
}

fn timestamp(text: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn version_to_proto(v: StoredSchemaVersion) -> pb::SchemaVersion {
    pb::SchemaVersion {
        dataset: v.dataset,
        version: v.version,
        schema_id: v.schema_id,
        schema_json: v.document,
        state: state_to_proto(v.state) as i32,
        registered_at: timestamp(&v.registered_at),
    }
}

fn mapping_to_proto(m: StoredMapping) -> pb::Mapping {
    pb::Mapping {
        source: m.source,
        target: m.target,
        version: m.version,
        document_json: m.document,
        registered_at: timestamp(&m.registered_at),
        state: state_to_proto(m.state) as i32,
    }
}

fn state_from_proto(state: i32) -> Result<VersionState, RegistryError> {
    match pb::VersionState::try_from(state) {
        Ok(pb::VersionState::Active) => Ok(VersionState::Active),
        Ok(pb::VersionState::Deprecated) => Ok(VersionState::Deprecated),
        Ok(pb::VersionState::Disabled) => Ok(VersionState::Disabled),
        _ => Err(RegistryError::Invalid(
            "state must be ACTIVE, DEPRECATED or DISABLED".into(),
        )),
    }
}

#[tonic::async_trait]
impl registry_server::Registry for RegistryService {
    async fn list_datasets(
        &self,
        request: Request<pb::ListDatasetsRequest>,
    ) -> Result<Response<pb::ListDatasetsResponse>, Status> {
        reader(&request)?;
        let datasets = self
            .registry
            .datasets()
            .await?
            .into_iter()
            .map(|(d, mode)| pb::DatasetInfo {
                dataset: d.dataset,
                provider: String::new(),
                compatibility: mode_to_proto(mode) as i32,
                optional_friendly: d.optional_friendly,
                latest_version: d.latest_version,
            })
            .map(|mut info| {
                info.provider = info
                    .dataset
                    .split_once('.')
                    .map(|(a, _)| a.to_owned())
                    .unwrap_or_default();
                info
            })
            .collect();
        Ok(Response::new(pb::ListDatasetsResponse { datasets }))
    }

    async fn register_schema(
        &self,
        request: Request<pb::RegisterSchemaRequest>,
    ) -> Result<Response<pb::RegisterSchemaResponse>, Status> {
        let identity = jembatan_pki::peer_identity(&request)?;
        let req = request.into_inner();
        let (version, already) = self
            .registry
            .register_schema(&identity, &req.dataset, &req.schema_json)
            .await
            .map_err(registry_status)?;
        Ok(Response::new(pb::RegisterSchemaResponse {
            version: Some(version_to_proto(version)),
            already_registered: already,
        }))
    }

    async fn get_schema(
        &self,
        request: Request<pb::GetSchemaRequest>,
    ) -> Result<Response<pb::SchemaVersion>, Status> {
        reader(&request)?;
        let v = self
            .registry
            .schema(&request.into_inner().reference)
            .await?;
        Ok(Response::new(version_to_proto(v)))
    }

    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        reader(&request)?;
        let versions = self
            .registry
            .versions(&request.into_inner().dataset)
            .await?;
        Ok(Response::new(pb::ListVersionsResponse {
            versions: versions.into_iter().map(version_to_proto).collect(),
        }))
    }

    async fn check_compatibility(
        &self,
        request: Request<pb::CheckCompatibilityRequest>,
    ) -> Result<Response<pb::CheckCompatibilityResponse>, Status> {
        reader(&request)?;
        let req = request.into_inner();
        let mode = mode_from_proto(req.mode)
            .map_err(|e| Failure::invalid_argument(e.to_string()))?
            .map(|m| (m, req.optional_friendly));
        let (_, reasons, _, _) = self
            .registry
            .check(&req.dataset, &req.schema_json, mode)
            .await?;
        Ok(Response::new(pb::CheckCompatibilityResponse {
            compatible: reasons.is_empty(),
            incompatibilities: reasons.iter().map(incompatibility_to_proto).collect(),
        }))
    }

    async fn set_compatibility(
        &self,
        request: Request<pb::SetCompatibilityRequest>,
    ) -> Result<Response<pb::SetCompatibilityResponse>, Status> {
        let identity = jembatan_pki::peer_identity(&request)?;
        let req = request.into_inner();
        let mode = mode_from_proto(req.mode).map_err(|e| RegistryError::Invalid(e.to_string()));
        let mode = self.parsed(&identity, "set_compatibility", mode).await?;
        self.registry
            .set_compatibility(&identity, &req.dataset, mode, req.optional_friendly)
            .await?;
        Ok(Response::new(pb::SetCompatibilityResponse {}))
    }

    async fn set_version_state(
        &self,
        request: Request<pb::SetVersionStateRequest>,
    ) -> Result<Response<pb::SchemaVersion>, Status> {
        let identity = jembatan_pki::peer_identity(&request)?;
        let req = request.into_inner();
        let state = self
            .parsed(&identity, "set_version_state", state_from_proto(req.state))
            .await?;
        let v = self
            .registry
            .set_version_state(&identity, &req.dataset, req.version, state)
            .await?;
        Ok(Response::new(version_to_proto(v)))
    }

    async fn register_mapping(
        &self,
        request: Request<pb::RegisterMappingRequest>,
    ) -> Result<Response<pb::Mapping>, Status> {
        let identity = jembatan_pki::peer_identity(&request)?;
        let req = request.into_inner();
        let m = self
            .registry
            .register_mapping(&identity, &req.document_json)
            .await?;
        Ok(Response::new(mapping_to_proto(m)))
    }

    async fn set_mapping_state(
        &self,
        request: Request<pb::SetMappingStateRequest>,
    ) -> Result<Response<pb::Mapping>, Status> {
        let identity = jembatan_pki::peer_identity(&request)?;
        let req = request.into_inner();
        let state = self
            .parsed(&identity, "set_mapping_state", state_from_proto(req.state))
            .await?;
        let m = self
            .registry
            .set_mapping_state(&identity, &req.source, &req.target, req.version, state)
            .await?;
        Ok(Response::new(mapping_to_proto(m)))
    }

    async fn get_mapping(
        &self,
        request: Request<pb::GetMappingRequest>,
    ) -> Result<Response<pb::Mapping>, Status> {
        reader(&request)?;
        let req = request.into_inner();
        let version = (req.version > 0).then_some(req.version);
        let m = self
            .registry
            .mapping(&req.source, &req.target, version)
            .await?;
        Ok(Response::new(mapping_to_proto(m)))
    }

    async fn list_mappings(
        &self,
        request: Request<pb::ListMappingsRequest>,
    ) -> Result<Response<pb::ListMappingsResponse>, Status> {
        reader(&request)?;
        let dataset = request.into_inner().dataset;
        if !dataset.is_empty() {
            dataset
                .parse::<jembatan_core::DatasetId>()
                .map_err(|e| Status::from(e.within("dataset")))?;
        }
        let of_dataset = |reference: &str| {
            reference
                .rsplit_once('@')
                .is_some_and(|(d, _)| d == dataset)
        };
        let mappings = self
            .registry
            .mappings()
            .await?
            .into_iter()
            .filter(|m| dataset.is_empty() || of_dataset(&m.source) || of_dataset(&m.target))
            .map(mapping_to_proto)
            .collect();
        Ok(Response::new(pb::ListMappingsResponse { mappings }))
    }
}

/// An incompatible schema also carries each reason as a structured
/// `CheckCompatibilityResponse` in the `jembatan-incompatibility-bin`
/// trailer, so clients need not parse the message.
fn registry_status(err: RegistryError) -> Status {
    let details = match &err {
        RegistryError::Incompatible { reasons, .. } => Some(pb::CheckCompatibilityResponse {
            compatible: false,
            incompatibilities: reasons.iter().map(incompatibility_to_proto).collect(),
        }),
        _ => None,
    };
    let mut status = Status::from(err);
    if let Some(details) = details {
        jembatan_proto::trailers::insert(
            status.metadata_mut(),
            jembatan_proto::INCOMPATIBILITY_METADATA_KEY,
            &details,
        );
    }
    status
}
