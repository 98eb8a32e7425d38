//! The Jembatan broker: authenticates callers by certificate, enforces
//! data-sharing agreements (deny by default), relays records from the
//! provider's adapter to the consumer, and writes every exchange to the
//! audit log — the allow decision durably before the first record leaves.

mod acks;
mod adapters;
mod admit;
mod agreements;
mod audit_service;
mod checkpoint;
pub mod config;
pub mod cursor;
mod decide;
mod drain;
mod error;
mod exchange;
mod facts;
mod health;
mod http_json;
mod isolation;
mod journal;
mod lifecycle;
mod members;
pub mod policy;
mod policy_cache;
mod recheck;
mod registry;
mod registry_http;
mod registry_log;
mod registry_service;
mod relay;
mod replica;
mod server;
mod state;
mod subscribe;
mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jembatan_pki::TlsFiles;
use jembatan_store::{Agency, AuditLog, Dataset, Store, StoreError};
use jembatan_tlog::note::Verifier;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub use agreements::AgreementsService;
pub use audit_service::AuditService;
pub use config::{AdapterEndpoints, BrokerConfig};
pub use cursor::{CursorError, CursorPosition, CursorSealer};
pub use exchange::ExchangeService;
pub use facts::subject_hash;
pub use jembatan_core::limits::MAX_REQUEST_BYTES;
pub use registry_service::RegistryService;
pub use relay::QueryStream;
pub use server::{REFLECTED_SERVICES, serve};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker config {path}: {message}")]
    Config { path: String, message: String },
    #[error("broker config {path}: {source}")]
    BadConfig {
        path: String,
        source: config::ConfigError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] jembatan_pki::PkiError),
    #[error("cannot read or create the audit key {path}: {message}")]
    AuditKey { path: String, message: String },
    #[error("cannot read the audit key {path}: {message}")]
    AuditKeyRead { path: String, message: String },
    #[error("cannot read or create the checkpoint key {path}: {message}")]
    CheckpointKey { path: String, message: String },
    #[error("audit log checkpoints: {0}")]
    Checkpoint(String),
    #[error("broker server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("broker certificate must carry the broker identity, not {0}")]
    NotBroker(String),
    #[error("registry: {0}")]
    Registry(String),
}

/// A running broker's shared state.
#[derive(Debug, Clone)]
pub struct Broker {
    pub(crate) inner: Arc<state::State>,
    checkpoints: Arc<Checkpoints>,
    audit_service: AuditService,
    /// The agreement watcher (expiry, changes made through other replicas).
    watcher: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    /// The replica's heartbeat (its lease, gone replicas' exchanges).
    heartbeat: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    /// The full re-check of the log after start (`recheck.rs`), if on.
    recheck: Arc<std::sync::Mutex<Option<JoinHandle<Rechecked>>>>,
    /// How often the server's health checks the audit log.
    pub(crate) health_interval: std::time::Duration,
}

/// The outcome of the full re-check of the log after start.
pub type Rechecked =
    Result<jembatan_store::verify::VerifyReport, jembatan_store::verify::VerifyError>;

/// The checkpointer and its periodic task.
#[derive(Debug)]
struct Checkpoints {
    checkpointer: Arc<Mutex<checkpoint::Checkpointer>>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    verifier: Verifier,
}

impl Broker {
    /// Opens the store, applies the agencies, datasets and agreements the
    /// config declares, and starts the audit appender.
    pub async fn start(config: &BrokerConfig) -> Result<Broker, BrokerError> {
        let identity = config.tls.identity()?;
        if identity.role != jembatan_core::Role::Broker {
            return Err(BrokerError::NotBroker(identity.to_string()));
        }
        let store = Store::connect_with(&config.store, &config.store_tls).await?;
        for a in &config.agencies {
            store
                .upsert_agency(&Agency {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    adapter_endpoints: a
                        .adapter
                        .as_ref()
                        .map(|e| e.urls().to_vec())
                        .unwrap_or_default(),
                })
                .await?;
        }
        for d in &config.datasets {
            store
                .upsert_dataset(&Dataset {
                    id: d.id.clone(),
                    key_field: d.key.as_ref().map(|k| k.to_string()),
                    description: d.description.clone(),
                })
                .await?;
        }
        for a in &config.agreements {
            if let Some(stored) = store.seed_agreement(a).await?
                && stored != *a
            {
                tracing::warn!(
                    agreement = %a.id,
                    stored_status = %stored.status,
                    "the config's agreement differs from the stored one, which stays in force; change agreements through the Agreements service"
                );
            }
        }
        let audit_key = load_or_create_key(&config.audit_key)?;
        let signer = checkpoint::load_or_create_signer(&config.checkpoint_key, &config.log_origin)?;
        let verifier = signer.verifier();
        let checkpointer = checkpoint::Checkpointer::open(store.clone(), signer).await?;
        let checkpoint_notes = checkpointer.notes();
        let checkpointer = Arc::new(Mutex::new(checkpointer));
        let audit = AuditLog::start(store.clone());
        let replica = replica::Replica::start(
            store.clone(),
            audit.clone(),
            replica::Timing {
                heartbeat: config.replica_heartbeat,
                lease: config.replica_lease,
            },
            config.max_streams_per_agency,
            config.max_streams_per_provider,
        )
        .await?;
        // the first heartbeat at once: the leases are taken, and what gone
        // replicas left open is closed, before the first checkpoint
        replica.tick().await;
        let heartbeat = tokio::spawn(replica::run(replica.clone()));
        let task = tokio::spawn(checkpoint::run(
            checkpointer.clone(),
            config.checkpoint_every,
            config.checkpoint_interval,
            audit.appended(),
            replica.clone(),
        ));
        let adapters = adapters::AdapterPool::new(&config.tls, config.max_streams_per_provider)?;
        let audit_service = AuditService::new(
            store.clone(),
            audit.clone(),
            verifier.clone(),
            audit_service::Schedule {
                every: config.checkpoint_every,
                interval: config.checkpoint_interval,
            },
        );
        let members = members::Members::new(config.agencies.iter().map(|a| a.id.clone()));
        let registry =
            Arc::new(start_registry(&store, &audit, &config.registry, members.clone()).await?);
        let inner = Arc::new(state::State {
            journal: journal::Journal::new(audit.clone()),
            store,
            audit,
            adapters,
            cursors: cursor::CursorSealer::from_audit_key(&audit_key),
            audit_key: facts::AuditKey::new(&audit_key),
            subject_fields: config
                .datasets
                .iter()
                .map(|d| (d.id.to_string(), d.subject_fields()))
                .collect(),
            checkpoint_notes,
            registry,
            members,
            lifecycle: lifecycle::Lifecycle::new(config.operator_approval, &config.purposes),
            policy: policy_cache::PolicyCache::default(),
            isolation: isolation::Isolation::new(config.stall_timeout),
            replica,
            workers: admit::Workers::new(),
            acks: acks::Acks::default(),
            drain: drain::Drain::new(config.drain_time),
        });
        // agreements that ended while the broker was down are recorded
        // as expired before it serves anything
        let mut watcher = agreements::Watcher::default();
        watcher.tick(&inner).await;
        let watcher = tokio::spawn(agreements::watch(
            inner.clone(),
            watcher,
            config.agreement_watch_interval,
        ));
        let recheck = config
            .recheck_log
            .then(|| tokio::spawn(recheck::run(inner.store.clone(), verifier.clone())));
        Ok(Broker {
            inner,
            watcher: Arc::new(std::sync::Mutex::new(Some(watcher))),
            heartbeat: Arc::new(std::sync::Mutex::new(Some(heartbeat))),
            recheck: Arc::new(std::sync::Mutex::new(recheck)),
            checkpoints: Arc::new(Checkpoints {
                checkpointer,
                task: std::sync::Mutex::new(Some(task)),
                verifier,
            }),
            audit_service,
            health_interval: config.health_interval,
        })
    }

    /// Signs and stores a checkpoint of the log's current size if it grew
    /// since the latest one and this replica holds the checkpoint lease
    /// (taking it when nobody does); returns the size checkpointed, if
    /// any. Without the lease it only follows the latest stored one.
    pub async fn checkpoint_now(&self) -> Result<Option<u64>, BrokerError> {
        let replica = &self.inner.replica;
        let mut checkpointer = self.checkpoints.checkpointer.lock().await;
        if replica.take_checkpoint_lease().await {
            checkpointer.checkpoint(&replica.checkpoint).await
        } else {
            checkpointer.follow().await.map(|()| None)
        }
    }

    /// This broker's replica id in the store.
    pub fn replica_id(&self) -> String {
        self.inner.replica.id().to_string()
    }

    /// Waits for the full re-check of the log started with the broker
    /// (`recheck_log`) and returns its outcome; `None` when it is off,
    /// was stopped, or its outcome was taken already.
    pub async fn log_rechecked(&self) -> Option<Rechecked> {
        let task = self.recheck.lock().ok()?.take()?;
        task.await.ok()
    }

    /// The key that verifies this broker's checkpoints.
    pub fn checkpoint_verifier(&self) -> &Verifier {
        &self.checkpoints.verifier
    }

    /// Stops signing periodically, signs a final checkpoint and closes the
    /// store. Call it once the server has stopped.
    pub async fn shutdown(&self) -> Result<(), BrokerError> {
        if let Ok(mut task) = self.recheck.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
        if let Ok(mut task) = self.watcher.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
        if let Ok(mut task) = self.checkpoints.task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
        let result = self.checkpoint_now().await;
        if let Ok(mut task) = self.heartbeat.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
        self.inner.replica.retire().await;
        self.inner.store.close().await;
        result.map(|_| ())
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    pub fn exchange_service(&self) -> ExchangeService {
        ExchangeService::new(self.inner.clone())
    }

    /// The `Agreements` service.
    pub fn agreements_service(&self) -> AgreementsService {
        AgreementsService::new(self.inner.clone())
    }

    /// The `Registry` service.
    pub fn registry_service(&self) -> RegistryService {
        RegistryService::new(self.inner.registry.clone())
    }

    /// The read-only HTTP/JSON view of the registry, served beside the
    /// gRPC services on the same mTLS port.
    pub fn registry_http(&self) -> tonic::service::Routes {
        registry_http::routes(self.inner.registry.clone())
    }

    /// The `Audit` service, which records every read of the log on it.
    pub fn audit_service(&self) -> AuditService {
        self.audit_service.clone()
    }
}

/// Opens the registry and registers the schemas and mappings the config
/// lists (each one already stored is found again, not duplicated).
async fn start_registry(
    store: &Store,
    audit: &AuditLog,
    config: &config::RegistryConfig,
    members: members::Members,
) -> Result<registry::Registry, BrokerError> {
    let fail = |m: String| BrokerError::Registry(m);
    let mode = config
        .default_compatibility
        .parse()
        .map_err(|e| fail(format!("default_compatibility: {e}")))?;
    let mut secrets = jembatan_mapping::Secrets::new();
    for (name, path) in &config.secrets {
        secrets.insert(name, load_or_create_key(path)?);
    }
    let registry = registry::Registry::new(store.clone(), audit.clone(), mode, secrets, members);
    let by = jembatan_core::Identity {
        role: jembatan_core::Role::Operator,
        agency: None,
    };
    for s in &config.schemas {
        let text = std::fs::read_to_string(&s.file)
            .map_err(|e| fail(format!("cannot read {}: {e}", s.file.display())))?;
        let (v, already) = registry
            .seed_schema(&s.dataset, &text)
            .await
            .map_err(|e| fail(format!("{} ({}): {e}", s.dataset, s.file.display())))?;
        if !already {
            tracing::info!(dataset = %s.dataset, version = v.version, "schema from config registered");
        }
    }
    for path in &config.mappings {
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        registry
            .seed_mapping(&by, &text)
            .await
            .map_err(|e| fail(format!("mapping {}: {e}", path.display())))?;
    }
    Ok(registry)
}

/// Reads the audit HMAC key (hex) without ever creating one, for tools
/// that recompute subject hashes offline.
pub fn read_audit_key(path: &Path) -> Result<Vec<u8>, BrokerError> {
    let err = |message: String| BrokerError::AuditKeyRead {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_audit_key(path, &text).map_err(|e| match e {
        BrokerError::AuditKey { message, .. } => err(message),
        other => other,
    })
}

fn parse_audit_key(path: &Path, text: &str) -> Result<Vec<u8>, BrokerError> {
    let err = |message: String| BrokerError::AuditKey {
        path: path.display().to_string(),
        message,
    };
    let key = hex::decode(text.trim()).map_err(|e| err(format!("not hex: {e}")))?;
    if key.len() < 32 {
        return Err(err(format!(
            "key has {} bytes; at least 32 are needed",
            key.len()
        )));
    }
    Ok(key)
}

/// Creates the broker's keys named by `config` where they do not exist yet
/// — the audit HMAC key, the checkpoint signer key (with its `.pub`) and
/// the mappings' secrets — and reads back those that do, without starting
/// the broker: for replicas that must share keys made beforehand (a
/// Kubernetes Secret). Returns the files, public key included.
pub fn create_keys(config: &BrokerConfig) -> Result<Vec<PathBuf>, BrokerError> {
    load_or_create_key(&config.audit_key)?;
    checkpoint::load_or_create_signer(&config.checkpoint_key, &config.log_origin)?;
    let mut files = vec![
        config.audit_key.clone(),
        config.checkpoint_key.clone(),
        checkpoint::public_key_path(&config.checkpoint_key),
    ];
    for path in config.registry.secrets.values() {
        load_or_create_key(path)?;
        files.push(path.clone());
    }
    Ok(files)
}

/// Reads the audit HMAC key (hex), creating a random one when the file
/// does not exist yet: mode 0600 from the start, written whole and synced
/// (`jembatan_pki::files`). A key another process created meanwhile wins.
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, BrokerError> {
    let err = |message: String| BrokerError::AuditKey {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => parse_audit_key(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            match jembatan_pki::files::create_secret(path, (hex::encode(key) + "\n").as_bytes()) {
                Ok(()) => Ok(key.to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                    parse_audit_key(path, &text)
                }
                Err(e) => Err(err(e.to_string())),
            }
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The TLS files of the broker, for callers that build their own servers.
pub fn tls_files(config: &BrokerConfig) -> &TlsFiles {
    &config.tls
}
