//! Certificates in operation, in process on 127.0.0.1:0: revocation takes
//! effect without a restart (at the handshake and on connections already
//! open, at the broker and at the adapter), certificates rotate under
//! running exchanges, and the broker talks to a provider only through a
//! certificate carrying that provider's adapter identity.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use jembatan_adapter::{AdapterConfig, LogEntry, read_receipt_log};
use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{Decision, ExchangeStatus, Identity, Role};
use jembatan_pki::{Ca, Reason, RevocationList, Serial, TlsFiles};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_testkit::{Pki, Stop, serve};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

fn ident(role: Role, agency: Option<&str>) -> Identity {
    Identity::new(role, agency.map(|a| a.parse().unwrap())).unwrap()
}

/// What a cluster is built with.
struct Setup {
    rows: usize,
    /// Certificate name the prov adapter serves with.
    adapter_cert: &'static str,
    /// Whether broker and adapter check the CA's revocation list.
    broker_crl: bool,
    adapter_crl: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            rows: 40,
            adapter_cert: "adapter-prov",
            broker_crl: true,
            adapter_crl: true,
        }
    }
}

/// A provider (SQLite behind a real adapter), a probe provider `lab`
/// whose fake adapter records the certificates the broker presents, the
/// broker, and a CA directory with its revocation list.
struct Cluster {
    certs: PathBuf,
    ca: Ca,
    files: Pki,
    broker: Broker,
    broker_port: u16,
    adapter_port: u16,
    receipt_log: PathBuf,
    lab_seen: Arc<Mutex<Vec<Serial>>>,
    _stop: Stop,
    _tmp: tempfile::TempDir,
}

async fn make_db(path: &Path, rows: usize) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE penduduk (nik TEXT PRIMARY KEY, nama TEXT NOT NULL, diubah INTEGER NOT NULL DEFAULT 0)",
    )
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO penduduk (nik, nama) WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
         SELECT printf('15070%011d', i), 'WARGA NOMOR ' || i || ' DARI DESA SUKAMAJU KECAMATAN SABAK' FROM n",
    )
    .bind(rows as i64)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// The lab provider's adapter: one batch, and the serial of every client
/// certificate it was called with.
struct LabAdapter {
    seen: Arc<Mutex<Vec<Serial>>>,
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;
type ChangesStream = Pin<Box<dyn Stream<Item = Result<pb::ChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::adapter_server::Adapter for LabAdapter {
    type FetchStream = FetchStream;

    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(pb::DescribeResponse::default()))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let leaf = request.peer_certs().unwrap()[0].clone();
        self.seen
            .lock()
            .unwrap()
            .push(Serial::of_der(leaf.as_ref()).unwrap());
        let batch = pb::FetchResponse {
            batch: Some(pb::RecordBatch {
                records: vec![r#"{"nik":"1","nama":"LAB"}"#.to_owned()],
            }),
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(batch)]))))
    }

    async fn acknowledge(
        &self,
        _: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        Ok(Response::new(pb::AcknowledgeResponse {}))
    }

    async fn acknowledge_batch(
        &self,
        _: Request<pb::AcknowledgeBatchRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        Ok(Response::new(pb::AcknowledgeResponse {}))
    }

    type ChangesStream = ChangesStream;

    async fn changes(
        &self,
        _: Request<pb::ChangesRequest>,
    ) -> Result<Response<Self::ChangesStream>, Status> {
        Err(Status::unimplemented("the lab adapter offers no changes"))
    }
}

async fn cluster(setup: Setup) -> Cluster {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let certs = dir.join("certs");
    make_db(&dir.join("prov.db"), setup.rows).await;
    let members = [
        ident(Role::Broker, None),
        ident(Role::Adapter, Some("prov")),
        ident(Role::Adapter, Some("other")),
        ident(Role::Adapter, Some("lab")),
        ident(Role::Agency, Some("dinsos")),
        ident(Role::Agency, Some("dinkes")),
    ]
    .map(|id| (jembatan_pki::default_name(&id), id));
    let members: Vec<(&str, Identity)> = members
        .iter()
        .map(|(name, id)| (name.as_str(), id.clone()))
        .collect();
    let files = Pki::issue(&certs, &members).unwrap();
    let ca = files.ca().unwrap();
    let crl = files.revocation_list().unwrap();
    let stop = Stop::new();
    let crl_line = |on: bool| {
        if on {
            format!("crl = \"{}\"\n", crl.display())
        } else {
            String::new()
        }
    };

    let (adapter_listener, adapter_port) = serve::loopback().await.unwrap();
    let a = &files[setup.adapter_cert];
    let adapter_toml = format!(
        r#"
version = 1
agency = "prov"
database = "sqlite://{db}"
listen = "127.0.0.1:{adapter_port}"
receipt_log = "receipts.jsonl"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
{crl}
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama"]
changes = {{ column = "diubah", poll_interval = "50ms" }}
"#,
        db = dir.join("prov.db").display(),
        ca = a.ca.display(),
        cert = a.cert.display(),
        key = a.key.display(),
        crl = crl_line(setup.adapter_crl),
    );
    let config = AdapterConfig::from_toml(&adapter_toml, &dir).unwrap();
    let receipt_log = config.receipt_log.clone();
    serve::adapter(&config, adapter_listener, stop.signal())
        .await
        .unwrap();

    let (lab_listener, lab_port) = serve::loopback().await.unwrap();
    let lab_seen = Arc::new(Mutex::new(Vec::new()));
    let lab = LabAdapter {
        seen: lab_seen.clone(),
    };
    serve::adapter_service(lab, &files["adapter-lab"], lab_listener, stop.signal()).unwrap();

    let b = &files["broker"];
    let agreement = |id: &str, provider: &str, consumer: &str| {
        format!(
            r#"
[[agreements]]
id = "{id}"
provider = "{provider}"
consumer = "{consumer}"
dataset = "{provider}.penduduk"
fields = ["nik", "nama"]
purpose = "bansos"
valid_from = "2020-01-01"
status = "approved"
subscribe = true
"#
        )
    };
    let broker_toml = format!(
        r#"
version = 1
listen = "127.0.0.1:0"
store = "broker.db"
audit_key = "audit.key"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
{crl}
[[agencies]]
id = "prov"
name = "Provider"
adapter = "https://127.0.0.1:{adapter_port}"
[[agencies]]
id = "lab"
name = "Probe provider"
adapter = "https://localhost:{lab_port}"
[[agencies]]
id = "dinsos"
name = "Dinas Sosial"
[[agencies]]
id = "dinkes"
name = "Dinas Kesehatan"
[[datasets]]
id = "prov.penduduk"
key = "nik"
[[datasets]]
id = "lab.penduduk"
key = "nik"
{a1}{a2}{a3}
"#,
        ca = b.ca.display(),
        cert = b.cert.display(),
        key = b.key.display(),
        crl = crl_line(setup.broker_crl),
        a1 = agreement("prov-dinsos", "prov", "dinsos"),
        a2 = agreement("prov-dinkes", "prov", "dinkes"),
        a3 = agreement("lab-dinsos", "lab", "dinsos"),
    );
    let config = BrokerConfig::from_toml(&broker_toml, &dir).unwrap();
    let (listener, _) = serve::loopback().await.unwrap();
    let served = serve::broker(&config, listener, stop.signal())
        .await
        .unwrap();
    Cluster {
        certs,
        ca,
        files,
        broker: served.broker,
        broker_port: served.port,
        adapter_port,
        receipt_log,
        lab_seen,
        _stop: stop,
        _tmp: tmp,
    }
}

impl Cluster {
    async fn consumer(&self, who: &str) -> ExchangeClient<Channel> {
        let channel = serve::channel(self.broker_port, &self.files[who], Default::default())
            .await
            .unwrap();
        ExchangeClient::new(channel)
    }

    fn serial(&self, name: &str) -> Serial {
        self.ca.serial_of_issued(&self.files[name].cert).unwrap()
    }

    fn served(&self) -> usize {
        if !self.receipt_log.exists() {
            return 0;
        }
        read_receipt_log(&self.receipt_log)
            .unwrap()
            .iter()
            .filter(|e| matches!(e, LogEntry::Served(_)))
            .count()
    }

    /// Issues a new certificate and key over `name`'s files.
    fn rotate(&self, name: &str) -> Serial {
        let id = jembatan_pki::identity_from_pem(&std::fs::read(&self.files[name].cert).unwrap())
            .unwrap();
        self.ca
            .issue_to(&id, &jembatan_pki::loopback_hosts(), 30, name)
            .unwrap();
        self.serial(name)
    }

    async fn audit(&self) -> Vec<jembatan_core::AuditEntry> {
        self.broker
            .audit()
            .entries(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.entry)
            .collect()
    }
}

fn query(dataset: &str) -> pb::QueryRequest {
    pb::QueryRequest {
        dataset: dataset.into(),
        purpose: "bansos".into(),
        fields: vec!["nik".into(), "nama".into()],
        ..Default::default()
    }
}

/// Runs a query to its end; the records received and the receipt.
async fn run(
    client: &mut ExchangeClient<Channel>,
    dataset: &str,
) -> Result<(usize, Option<pb::Receipt>), Status> {
    let mut stream = client.query(query(dataset)).await?.into_inner();
    let (mut rows, mut receipt) = (0, None);
    while let Some(msg) = stream.message().await? {
        match msg.item.unwrap() {
            pb::query_response::Item::Batch(b) => rows += b.records.len(),
            pb::query_response::Item::Receipt(r) => receipt = Some(r),
        }
    }
    Ok((rows, receipt))
}

/// Opens a TLS connection to `port` as `files` and returns the serial of
/// the certificate the server presents, or the handshake's error. The
/// client reads once so that a refusal of its own certificate, which a
/// TLS 1.3 server sends after the client's handshake is done, shows.
async fn handshake(port: u16, files: &TlsFiles) -> Result<Serial, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let serial = Serial::of_der(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref()).unwrap();
    // the HTTP/2 preface and an empty SETTINGS frame; a server that took
    // the client's certificate answers with its SETTINGS, one that
    // refused it with an alert
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    if let Err(e) = tls.write_all(&hello).await {
        return Err(e.to_string());
    }
    let mut buf = [0u8; 9];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(serial),
        Ok(Ok(_)) => Err("connection closed".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// Retries `attempt` until it returns `Some`, for up to 20 seconds (the
/// services look at their files every two).
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(out) = attempt().await {
            return out;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_at_the_handshake_and_on_open_connections() {
    let c = cluster(Setup::default()).await;
    let mut dinsos = c.consumer("agency-dinsos").await;
    let mut dinkes = c.consumer("agency-dinkes").await;
    assert_eq!(run(&mut dinsos, "prov.penduduk").await.unwrap().0, 40);
    assert_eq!(run(&mut dinkes, "prov.penduduk").await.unwrap().0, 40);
    assert!(
        handshake(c.broker_port, &c.files["agency-dinsos"])
            .await
            .is_ok()
    );

    // the operator revokes dinsos's certificate; the broker is not restarted
    let serial = c.serial("agency-dinsos");
    c.ca.revoke(&serial, Reason::KeyCompromise).unwrap();

    // the connection dinsos opened before is refused on its next request
    let status = eventually("the open connection to be refused", || {
        let mut client = dinsos.clone();
        async move { run(&mut client, "prov.penduduk").await.err() }
    })
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("certificate {serial} has been revoked")),
        "{status:?}"
    );
    // ... and that refusal is on the audit log like any other
    let entries = c.audit().await;
    let refused = entries.last().unwrap();
    assert_eq!(refused.decision, Decision::Deny);
    assert_eq!(refused.status, ExchangeStatus::Invalid);
    assert!(
        refused.error.as_deref().unwrap().contains("revoked"),
        "{refused:?}"
    );

    // a new connection is refused at the handshake
    let err = handshake(c.broker_port, &c.files["agency-dinsos"])
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    let fresh = Endpoint::from_shared(format!("https://localhost:{}", c.broker_port))
        .unwrap()
        .tls_config(c.files["agency-dinsos"].client_config("localhost").unwrap())
        .unwrap()
        .connect_lazy();
    let entries_before = c.audit().await.len();
    assert!(
        run(&mut ExchangeClient::new(fresh), "prov.penduduk")
            .await
            .is_err()
    );
    assert_eq!(
        c.audit().await.len(),
        entries_before,
        "no request got through"
    );

    // everyone else goes on, on open connections and new ones
    assert_eq!(run(&mut dinkes, "prov.penduduk").await.unwrap().0, 40);
    let mut dinkes_again = c.consumer("agency-dinkes").await;
    assert_eq!(run(&mut dinkes_again, "prov.penduduk").await.unwrap().0, 40);
}

/// A subscription's batch, or how its stream ended.
async fn next_batch(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
) -> Result<pb::ChangeBatch, Status> {
    loop {
        match stream.message().await? {
            Some(pb::SubscribeResponse {
                item: Some(pb::subscribe_response::Item::Batch(b)),
            }) => return Ok(b),
            Some(_) => {}
            None => return Err(Status::unknown("the stream ended without a status")),
        }
    }
}

async fn subscribe(
    client: &mut ExchangeClient<Channel>,
) -> tonic::Streaming<pb::SubscribeResponse> {
    let request = pb::SubscribeRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        ..Default::default()
    };
    client.subscribe(request).await.unwrap().into_inner()
}

#[tokio::test]
async fn a_running_subscription_ends_when_its_consumers_certificate_is_revoked() {
    let c = cluster(Setup::default()).await;
    let mut dinsos = c.consumer("agency-dinsos").await;
    let mut dinkes = c.consumer("agency-dinkes").await;
    let mut revoked = subscribe(&mut dinsos).await;
    let mut kept = subscribe(&mut dinkes).await;
    for stream in [&mut revoked, &mut kept] {
        let mut rows = 0;
        while rows < 40 {
            rows += next_batch(stream).await.unwrap().changes.len();
        }
    }

    // the operator revokes dinsos's certificate while its stream runs
    let serial = c.serial("agency-dinsos");
    c.ca.revoke(&serial, Reason::KeyCompromise).unwrap();
    let db = c._tmp.path().join("prov.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    // a change after the revocation: dinsos must not receive it
    let changed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut version = 0;
        loop {
            version += 1;
            sqlx::query("UPDATE penduduk SET nama = 'PINDAH', diubah = ? WHERE nik = '15070' || printf('%011d', 7)")
                .bind(version)
                .execute(&pool)
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_millis(500), next_batch(&mut revoked)).await {
                Ok(Err(status)) => return status,
                Ok(Ok(batch)) => {
                    // delivered before the list in force named the certificate
                    assert_eq!(batch.changes.len(), 1);
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the revoked consumer's stream to end");
    assert_eq!(changed.code(), Code::Unauthenticated, "{changed:?}");
    assert!(
        changed
            .message()
            .contains(&format!("certificate {serial} has been revoked")),
        "{changed:?}"
    );
    // its end is on the log, stopped, naming the revocation
    let entries = c.audit().await;
    let end = entries
        .iter()
        .rev()
        .find(|e| {
            e.consumer.as_deref() == Some("dinsos")
                && e.kind == jembatan_core::EntryKind::Completion
        })
        .expect("the subscription's completion entry");
    assert_eq!(end.status, ExchangeStatus::Stopped, "{end:?}");
    assert!(end.error.as_deref().unwrap().contains("revoked"), "{end:?}");

    // dinkes's subscription goes on and sees the change
    let batch = tokio::time::timeout(Duration::from_secs(10), next_batch(&mut kept))
        .await
        .unwrap()
        .unwrap();
    assert!(batch.changes[0].record.contains("PINDAH"), "{batch:?}");
    pool.close().await;
}

#[tokio::test]
async fn an_unusable_revocation_list_is_refused_and_the_one_in_force_stays() {
    let c = cluster(Setup::default()).await;
    let mut dinsos = c.consumer("agency-dinsos").await;
    let mut dinkes = c.consumer("agency-dinkes").await;
    let serial = c.serial("agency-dinsos");
    c.ca.revoke(&serial, Reason::Unspecified).unwrap();
    eventually("the revocation to take effect", || {
        let mut client = dinsos.clone();
        async move { run(&mut client, "prov.penduduk").await.err() }
    })
    .await;

    // a list signed by another CA (same name, other key), then garbage:
    // each is refused, the list in force stays
    let crl = Ca::crl_path(&c.certs);
    let other = Ca::create(&c.certs.join("other"), "Jembatan development CA").unwrap();
    other.write_crl(&RevocationList::default()).unwrap();
    for bad in [
        std::fs::read(Ca::crl_path(other.dir())).unwrap(),
        b"-----BEGIN X509 CRL-----\nbm90IGEgbGlzdA==\n-----END X509 CRL-----\n".to_vec(),
    ] {
        std::fs::write(&crl, bad).unwrap();
        // the services look every two seconds: give them two looks
        tokio::time::sleep(jembatan_pki::RELOAD_INTERVAL * 2 + Duration::from_millis(500)).await;
        let status = run(&mut dinsos, "prov.penduduk").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            handshake(c.broker_port, &c.files["agency-dinsos"])
                .await
                .is_err()
        );
        assert_eq!(run(&mut dinkes, "prov.penduduk").await.unwrap().0, 40);
    }

    // a service does not start on such a list
    let mut files = c.files["broker"].clone();
    files.crl = Some(crl);
    let err = files.server_config().unwrap_err().to_string();
    assert!(err.contains("not a usable revocation list"), "{err}");
    let err = files.client_tls().unwrap_err().to_string();
    assert!(err.contains("not a usable revocation list"), "{err}");
}

#[tokio::test]
async fn the_adapter_refuses_a_revoked_broker_certificate() {
    let c = cluster(Setup {
        broker_crl: false,
        ..Setup::default()
    })
    .await;
    let mut dinsos = c.consumer("agency-dinsos").await;
    assert_eq!(run(&mut dinsos, "prov.penduduk").await.unwrap().0, 40);
    assert!(handshake(c.adapter_port, &c.files["broker"]).await.is_ok());

    let serial = c.serial("broker");
    c.ca.revoke(&serial, Reason::KeyCompromise).unwrap();
    // the broker's open connection to the adapter is refused per request
    let status = eventually("the adapter to refuse the broker", || {
        let mut client = dinsos.clone();
        async move { run(&mut client, "prov.penduduk").await.err() }
    })
    .await;
    assert!(
        status
            .message()
            .contains(&format!("certificate {serial} has been revoked")),
        "{status:?}"
    );
    let failed = c.audit().await.pop().unwrap();
    assert_eq!(failed.status, ExchangeStatus::Failed);
    assert!(
        failed.error.as_deref().unwrap().contains("revoked"),
        "{failed:?}"
    );
    // and a new connection at the handshake
    let err = handshake(c.adapter_port, &c.files["broker"])
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    let served = c.served();
    assert!(run(&mut dinsos, "prov.penduduk").await.is_err());
    assert_eq!(c.served(), served, "nothing served since");
}

#[tokio::test]
async fn rotated_certificates_serve_new_connections_while_running_streams_finish() {
    const ROWS: usize = 60_000;
    let c = cluster(Setup {
        rows: ROWS,
        ..Setup::default()
    })
    .await;
    let old_broker = c.serial("broker");
    let old_adapter = c.serial("adapter-prov");
    assert_eq!(
        handshake(c.broker_port, &c.files["agency-dinsos"]).await,
        Ok(old_broker.clone())
    );
    assert_eq!(
        handshake(c.adapter_port, &c.files["broker"]).await,
        Ok(old_adapter.clone())
    );

    // the broker's connection to lab presents the broker's certificate
    let mut dinsos_lab = c.consumer("agency-dinsos").await;
    assert_eq!(run(&mut dinsos_lab, "lab.penduduk").await.unwrap().0, 1);
    assert_eq!(*c.lab_seen.lock().unwrap(), vec![old_broker.clone()]);

    // a long exchange starts and is held after its first batch: the
    // consumer reads no further, backpressure holds the adapter's cursor
    let mut dinsos = c.consumer("agency-dinsos").await;
    let mut stream = dinsos
        .query(query("prov.penduduk"))
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    if let Some(pb::query_response::Item::Batch(b)) = stream.message().await.unwrap().unwrap().item
    {
        rows += b.records.len();
    }
    assert!(rows > 0 && rows < ROWS);

    // new certificates and keys from the same CA, over the old files
    let new_broker = c.rotate("broker");
    let new_adapter = c.rotate("adapter-prov");
    assert_ne!(new_broker, old_broker);
    assert_ne!(new_adapter, old_adapter);
    let rotated = Instant::now();

    // new connections get the new certificates, without a restart
    eventually("the broker to present its new certificate", || async {
        (handshake(c.broker_port, &c.files["agency-dinsos"]).await == Ok(new_broker.clone()))
            .then_some(())
    })
    .await;
    eventually("the adapter to present its new certificate", || async {
        (handshake(c.adapter_port, &c.files["broker"]).await == Ok(new_adapter.clone()))
            .then_some(())
    })
    .await;
    // exchanges starting now reach adapters on new connections with the
    // broker's new certificate (its files have been looked at since the
    // rotation once two intervals have passed)
    let wait = (jembatan_pki::RELOAD_INTERVAL * 2 + Duration::from_millis(500))
        .saturating_sub(rotated.elapsed());
    tokio::time::sleep(wait).await;
    assert_eq!(run(&mut dinsos_lab, "lab.penduduk").await.unwrap().0, 1);
    assert_eq!(
        *c.lab_seen.lock().unwrap(),
        vec![old_broker.clone(), new_broker.clone()]
    );

    // the held exchange is still running on its old connections...
    let entries = c.audit().await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.dataset.as_deref() == Some("prov.penduduk"))
            .count(),
        1,
        "only its decision entry so far"
    );
    // ...and finishes with every row and its receipt
    let mut receipt = None;
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.item.unwrap() {
            pb::query_response::Item::Batch(b) => rows += b.records.len(),
            pb::query_response::Item::Receipt(r) => receipt = Some(r),
        }
    }
    assert_eq!(rows, ROWS);
    let receipt = receipt.expect("a receipt");
    assert_eq!(receipt.rows, ROWS as u64);
    let done = c
        .audit()
        .await
        .into_iter()
        .rfind(|e| e.dataset.as_deref() == Some("prov.penduduk"))
        .unwrap();
    assert_eq!(done.status, ExchangeStatus::Ok);
    assert_eq!(done.rows, ROWS as u64);
}

#[tokio::test]
async fn an_adapter_with_another_agencys_certificate_fails_the_exchange() {
    // agency other's adapter certificate, valid from the same CA for the
    // same host, served at prov's adapter endpoint
    let c = cluster(Setup {
        adapter_cert: "adapter-other",
        ..Setup::default()
    })
    .await;
    let mut dinsos = c.consumer("agency-dinsos").await;
    let status = run(&mut dinsos, "prov.penduduk").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for want in [
        "provider prov's adapter failed the identity check",
        "spiffe://jembatan/adapter/prov is required",
        "spiffe://jembatan/adapter/other",
    ] {
        assert!(status.message().contains(want), "{want}: {status:?}");
    }
    let entries = c.audit().await;
    assert_eq!(entries.len(), 2, "decision and completion");
    assert_eq!(entries[0].status, ExchangeStatus::Started);
    assert_eq!(entries[1].status, ExchangeStatus::Failed);
    assert!(
        entries[1]
            .error
            .as_deref()
            .unwrap()
            .contains("spiffe://jembatan/adapter/other"),
        "{:?}",
        entries[1]
    );
    assert_eq!(entries[1].rows, 0);
    assert_eq!(c.served(), 0, "nothing was asked of the impostor");
    // the log still verifies
    c.broker.checkpoint_now().await.unwrap();
}
