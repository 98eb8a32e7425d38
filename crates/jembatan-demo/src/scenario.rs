//! The demo scenario: the regency's offices exchanging data through one
//! broker and their own adapters, all in this process on loopback.
//!
//! It generates the agencies' databases, a development PKI, adapter and
//! broker configs (written to disk, then loaded like an operator's), starts
//! everything, runs exchanges drawn from how these offices need each other
//! — allowed, denied for each reason — and prints the audit log.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jembatan_adapter::AdapterConfig;
use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{Identity, Role};
use jembatan_pki::TlsFiles;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::agreements_client::AgreementsClient;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_testkit::{Stop, serve};
use tokio::net::TcpListener;
use tonic::transport::Channel;

use crate::data::{DataOptions, Generated, generate_with_examples};

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Keep databases, store, configs and certificates in this directory
    /// (created; must be empty). Without it, a temporary directory is used
    /// and removed at the end.
    pub keep: Option<PathBuf>,
    pub data: DataOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0} exists and is not empty; choose a new directory for --keep")]
    NotEmpty(PathBuf),
    #[error("demo: {0}")]
    Step(String),
}

pub(crate) fn step<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> DemoError + '_ {
    move |e| DemoError::Step(format!("{what}: {e}"))
}

/// What happened, for callers that check the demo (tests).
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    pub allowed: usize,
    pub denied: Vec<(String, String)>,
    pub audit_entries: u64,
    pub rows_delivered: u64,
    /// Schema changes the registry refused as incompatible.
    pub schema_refusals: usize,
    /// Agreement lifecycle steps taken through the Agreements service.
    pub agreement_steps: usize,
    /// Changes Dinas Sosial's subscription delivered (catch-up included).
    pub subscription_changes: u64,
    /// The aid recipients Dinas Sosial flagged from those changes, as
    /// printed.
    pub flagged: Vec<String>,
    pub dir: Option<PathBuf>,
}

/// One whitelisted dataset of a demo adapter.
struct Exposed {
    name: &'static str,
    table: &'static str,
    key: Option<&'static str>,
    columns: &'static [&'static str],
    /// Fixed row filter, in TOML.
    row_filter: Option<&'static str>,
    /// The `[datasets.changes]` table's keys, in TOML.
    changes: Option<&'static str>,
}

/// Providers whose adapters the demo runs, with their whitelists.
const ADAPTERS: &[(&str, &[Exposed])] = &[
    (
        "disdukcapil",
        &[
            Exposed {
                name: "penduduk",
                table: "penduduk",
                key: Some("nik"),
                columns: &[
                    "nik",
                    "no_kk",
                    "nama_lengkap",
                    "tempat_lahir",
                    "tgl_lahir",
                    "jenis_kelamin",
                    "agama",
                    "pekerjaan",
                    "kode_desa",
                    "kode_kecamatan",
                    "status",
                ],
                row_filter: None,
                // SIAK sets `diubah` on every write; the registry has no
                // tombstone status (a death or a move is a status or an
                // address, not a removed record)
                changes: Some(CHANGES_PENDUDUK),
            },
            Exposed {
                name: "keluarga",
                table: "keluarga",
                key: Some("no_kk"),
                columns: &[
                    "no_kk",
                    "nik_kepala_keluarga",
                    "kode_desa",
                    "kode_kecamatan",
                    "jumlah_anggota",
                ],
                row_filter: None,
                changes: None,
            },
        ],
    ),
    (
        "dpmptsp",
        &[Exposed {
            name: "izin_usaha",
            table: "izin_usaha",
            key: Some("nomor_izin"),
            columns: &[
                "nomor_izin",
                "nib",
                "nama_usaha",
                "jenis_izin",
                "kbli",
                "tanggal_terbit",
                "berlaku_sampai",
                "status",
            ],
            row_filter: None,
            changes: None,
        }],
    ),
    (
        "dinsos",
        &[Exposed {
            name: "penerima_bansos",
            table: "penerima_bansos",
            key: None,
            columns: &[
                "nik",
                "program",
                "tahun",
                "nominal",
                "kode_kecamatan",
                "status",
            ],
            row_filter: Some(r#"{ field = "status", op = "ne", value = "DIUSULKAN" }"#),
            changes: None,
        }],
    ),
];

/// The population registry's change source: polled often, so that the
/// demo's subscriber sees a death or a move within a second.
const CHANGES_PENDUDUK: &str = r#"column = "diubah"
key = "nik"
poll_interval = "250ms"
lag = "250ms"
"#;

/// Consumers that get a certificate.
const CONSUMERS: &[&str] = &["dpmptsp", "lpse", "bpn", "dinsos", "dinkes", "diskominfo"];

struct AgreementSpec {
    id: &'static str,
    consumer: &'static str,
    dataset: &'static str,
    fields: &'static [&'static str],
    purpose: &'static str,
    /// Days from now: (from, until).
    window: (i64, i64),
    row_filter: Option<&'static str>,
    /// Whether the consumer may subscribe to the dataset's changes.
    subscribe: bool,
}

/// The demo datasets' schemas and mapping (`schemas/` at the repository
/// root), written beside the broker config and registered at start.
const SCHEMA_FILES: &[(&str, &str)] = &[
    (
        "disdukcapil.penduduk.v1.json",
        include_str!("../../../schemas/disdukcapil.penduduk.v1.json"),
    ),
    (
        "dinsos.warga.v1.json",
        include_str!("../../../schemas/dinsos.warga.v1.json"),
    ),
    (
        "disdukcapil.penduduk-to-dinsos.warga.toml",
        include_str!("../../../schemas/disdukcapil.penduduk-to-dinsos.warga.toml"),
    ),
];

/// The registry section of the demo broker's config.
const REGISTRY_TOML: &str = r#"
[registry]
default_compatibility = "BACKWARD"
schemas = [
  { dataset = "disdukcapil.penduduk", file = "schemas/disdukcapil.penduduk.v1.json" },
  { dataset = "dinsos.warga", file = "schemas/dinsos.warga.v1.json" },
]
mappings = ["schemas/disdukcapil.penduduk-to-dinsos.warga.toml"]
"#;

const PURPOSE_LICENCE: &str = "verifikasi identitas pemohon izin usaha";
const PURPOSE_TENDER: &str = "verifikasi izin usaha peserta tender";
const PURPOSE_LAND: &str = "verifikasi pemilik hak atas tanah";
const PURPOSE_DTKS: &str = "pemutakhiran data terpadu kesejahteraan sosial";
const PURPOSE_COMPLAINT: &str = "verifikasi identitas pelapor pengaduan";
const PURPOSE_IMMUNISATION: &str = "pendataan sasaran imunisasi";

/// The legal bases agreements may name: (purpose, legal basis).
const PURPOSES: &[(&str, &str)] = &[
    (
        PURPOSE_LICENCE,
        "PP 5/2021 tentang Perizinan Berusaha Berbasis Risiko",
    ),
    (
        PURPOSE_TENDER,
        "Perpres 16/2018 tentang Pengadaan Barang/Jasa Pemerintah",
    ),
    (
        PURPOSE_LAND,
        "PP 18/2021 tentang Hak Pengelolaan dan Hak atas Tanah",
    ),
    (
        PURPOSE_DTKS,
        "Permensos 3/2021 tentang Pengelolaan Data Terpadu Kesejahteraan Sosial",
    ),
    (
        PURPOSE_COMPLAINT,
        "Perpres 76/2013 tentang Pengelolaan Pelayanan Publik",
    ),
    (
        PURPOSE_IMMUNISATION,
        "Permenkes 12/2017 tentang Penyelenggaraan Imunisasi",
    ),
];

const AGREEMENTS: &[AgreementSpec] = &[
    AgreementSpec {
        id: "pks-2026-001-dpmptsp-penduduk",
        consumer: "dpmptsp",
        dataset: "disdukcapil.penduduk",
        fields: &[
            "nik",
            "nama_lengkap",
            "tgl_lahir",
            "jenis_kelamin",
            "kode_kecamatan",
            "status",
        ],
        purpose: PURPOSE_LICENCE,
        window: (-200, 500),
        row_filter: None,
        subscribe: false,
    },
    AgreementSpec {
        id: "pks-2026-002-lpse-izin",
        consumer: "lpse",
        dataset: "dpmptsp.izin_usaha",
        fields: &[
            "nomor_izin",
            "nama_usaha",
            "jenis_izin",
            "tanggal_terbit",
            "berlaku_sampai",
            "status",
        ],
        purpose: PURPOSE_TENDER,
        window: (-100, 600),
        row_filter: None,
        subscribe: false,
    },
    AgreementSpec {
        id: "pks-2026-003-bpn-penduduk",
        consumer: "bpn",
        dataset: "disdukcapil.penduduk",
        fields: &["nik", "nama_lengkap", "status"],
        purpose: PURPOSE_LAND,
        window: (-300, 400),
        row_filter: None,
        subscribe: false,
    },
    AgreementSpec {
        id: "pks-2026-004-dinsos-penduduk",
        consumer: "dinsos",
        dataset: "disdukcapil.penduduk",
        fields: &[
            "nik",
            "no_kk",
            "nama_lengkap",
            "tgl_lahir",
            "jenis_kelamin",
            "kode_desa",
            "kode_kecamatan",
            "status",
        ],
        purpose: PURPOSE_DTKS,
        window: (-60, 300),
        row_filter: Some(r#"{ field = "status", op = "eq", value = "HIDUP" }"#),
        subscribe: true,
    },
    AgreementSpec {
        id: "pks-2024-017-diskominfo-penduduk",
        consumer: "diskominfo",
        dataset: "disdukcapil.penduduk",
        fields: &["nik", "nama_lengkap"],
        purpose: PURPOSE_COMPLAINT,
        window: (-760, -30),
        row_filter: None,
        subscribe: false,
    },
];

/// A TOML string literal.
fn q(s: &str) -> String {
    toml_string(s)
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn tls_toml(files: &TlsFiles, base: &Path) -> String {
    let rel = |p: &Path| p.strip_prefix(base).unwrap_or(p).display().to_string();
    format!(
        "[tls]\nca = {}\ncert = {}\nkey = {}\n",
        q(&rel(&files.ca)),
        q(&rel(&files.cert)),
        q(&rel(&files.key))
    )
}

/// A console config for the kept demo, with `files`' certificate.
fn console_toml(broker_port: u16, listen: u16, files: &TlsFiles, base: &Path) -> String {
    let mut s = format!(
        "# Console, generated by `jembatan demo`: `jembatan console --config` this file.\nversion = 1\nlisten = \"127.0.0.1:{listen}\"\nbroker = \"https://localhost:{broker_port}\"\naudit_key = \"audit-hmac.key\"\ncheckpoint_key = \"checkpoint.key.pub\"\n\n{}\n[agencies]\n",
        tls_toml(files, base)
    );
    for (id, name) in crate::data::AGENCIES {
        let _ = writeln!(s, "{id} = {}", q(name));
    }
    s
}

fn adapter_toml(
    agency: &str,
    db_url: &str,
    port: u16,
    tls: &TlsFiles,
    base: &Path,
    datasets: &[Exposed],
) -> String {
    // a database inside the kept folder is named relative to the config,
    // so the folder can be moved or copied
    let db_url = db_url
        .strip_prefix("sqlite://")
        .and_then(|p| Path::new(p).strip_prefix(base).ok())
        .map_or_else(
            || db_url.to_owned(),
            |rel| format!("sqlite://{}", rel.display()),
        );
    let mut s = format!(
        "# Adapter of {agency}, generated by `jembatan demo`.\nversion = 1\nagency = {}\ndatabase = {}\nlisten = \"127.0.0.1:{port}\"\nreceipt_log = {}\n\n{}",
        q(agency),
        q(&db_url),
        q(&format!("receipts-{agency}.jsonl")),
        tls_toml(tls, base)
    );
    for d in datasets {
        let _ = write!(
            s,
            "\n[[datasets]]\nname = {}\ntable = {}\ncolumns = {}\n",
            q(d.name),
            q(d.table),
            list(d.columns)
        );
        if let Some(k) = d.key {
            let _ = writeln!(s, "key = {}", q(k));
        }
        if let Some(f) = d.row_filter {
            let _ = writeln!(s, "row_filter = {f}");
        }
        if let Some(c) = d.changes {
            let _ = write!(s, "\n[datasets.changes]\n{c}");
        }
    }
    s
}

fn broker_toml(port: u16, tls: &TlsFiles, base: &Path, adapter_ports: &[(&str, u16)]) -> String {
    let now = chrono::Utc::now();
    let day = |d: i64| jembatan_core::agreement::format_instant(&(now + chrono::Duration::days(d)));
    let mut s = format!(
        "# Broker, generated by `jembatan demo`.\nversion = 1\nlisten = \"127.0.0.1:{port}\"\nstore = \"broker.db\"\naudit_key = \"audit-hmac.key\"\n# Sign checkpoints often, so receipts carry them.\ncheckpoint_every = 8\n\n{}",
        tls_toml(tls, base)
    );
    for (id, name) in crate::data::AGENCIES {
        let _ = write!(s, "\n[[agencies]]\nid = {}\nname = {}\n", q(id), q(name));
        if let Some((_, p)) = adapter_ports.iter().find(|(a, _)| **a == *id) {
            let _ = writeln!(s, "adapter = \"https://127.0.0.1:{p}\"");
        }
    }
    for (agency, datasets) in ADAPTERS {
        for d in *datasets {
            let _ = write!(
                s,
                "\n[[datasets]]\nid = {}\n",
                q(&format!("{agency}.{}", d.name))
            );
            if let Some(k) = d.key {
                let _ = writeln!(s, "key = {}", q(k));
            }
        }
    }
    for (id, basis) in PURPOSES {
        let _ = write!(
            s,
            "\n[[purposes]]\nid = {}\nlegal_basis = {}\n",
            q(id),
            q(basis)
        );
    }
    for a in AGREEMENTS {
        let provider = a.dataset.split('.').next().unwrap_or_default();
        let _ = write!(
            s,
            "\n[[agreements]]\nid = {}\nprovider = {}\nconsumer = {}\ndataset = {}\nfields = {}\npurpose = {}\nvalid_from = {}\nvalid_until = {}\nstatus = \"approved\"\n",
            q(a.id),
            q(provider),
            q(a.consumer),
            q(a.dataset),
            list(a.fields),
            q(a.purpose),
            q(&day(a.window.0)),
            q(&day(a.window.1)),
        );
        if let Some(f) = a.row_filter {
            let _ = writeln!(s, "row_filter = {f}");
        }
        if a.subscribe {
            s.push_str("subscribe = true\n");
        }
    }
    s.push_str(REGISTRY_TOML);
    s
}

/// A server's task, ending with why it failed (or its task did) in words,
/// so adapters and the broker are waited for alike.
fn server_ended<E: std::fmt::Display + Send + 'static>(
    served: tokio::task::JoinHandle<Result<(), E>>,
) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        served
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    })
}

async fn client(port: u16, files: &TlsFiles) -> Result<ExchangeClient<Channel>, DemoError> {
    Ok(ExchangeClient::new(channel(port, files).await?))
}

async fn channel(port: u16, files: &TlsFiles) -> Result<Channel, DemoError> {
    serve::channel(port, files, Default::default())
        .await
        .map_err(step("connect to broker"))
}

fn key(s: &str) -> Option<pb::Scalar> {
    Some(pb::Scalar {
        kind: Some(pb::scalar::Kind::StringValue(s.to_owned())),
    })
}

pub(crate) fn eq(field: &str, value: &str) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: pb::Operator::Eq as i32,
            value: key(value),
            values: vec![],
        })),
    }
}

fn compare(field: &str, op: pb::Operator, value: &str) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: field.into(),
            op: op as i32,
            value: key(value),
            values: vec![],
        })),
    }
}

fn all(filters: Vec<pb::Filter>) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::All(pb::FilterList { filters })),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

/// Prints a record's fields on one indented line.
fn show_record(out: &mut impl Write, record: &str) -> std::io::Result<()> {
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(record).unwrap_or_default();
    let fields: Vec<String> = parsed
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    writeln!(out, "      {}", fields.join("  "))
}

struct Scenario<'a, W: Write> {
    out: &'a mut W,
    report: DemoReport,
}

impl<W: Write> Scenario<'_, W> {
    async fn lookup(
        &mut self,
        title: &str,
        client: &mut ExchangeClient<Channel>,
        request: pb::LookupRequest,
    ) -> Result<(), DemoError> {
        writeln!(self.out, "\n▶ {title}").map_err(step("write output"))?;
        writeln!(
            self.out,
            "    Lookup {} key={} purpose={:?}",
            request.dataset,
            match request.key.as_ref().and_then(|k| k.kind.clone()) {
                Some(pb::scalar::Kind::StringValue(s)) => s,
                other => format!("{other:?}"),
            },
            request.purpose
        )
        .map_err(step("write output"))?;
        match client.lookup(request).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                self.report.allowed += 1;
                if resp.found {
                    writeln!(self.out, "    ✔ allowed — record found:")
                        .map_err(step("write output"))?;
                    show_record(self.out, &resp.record).map_err(step("write output"))?;
                } else {
                    writeln!(self.out, "    ✔ allowed — no such record")
                        .map_err(step("write output"))?;
                }
                if let Some(r) = resp.receipt {
                    self.report.rows_delivered += r.rows;
                    writeln!(
                        self.out,
                        "    receipt: exchange {} · audit entries #{} (decision) and #{} (completion) · payload sha256 {}…",
                        r.exchange_id, r.decision_seq, r.entry_seq, short(&r.payload_sha256)
                    )
                    .map_err(step("write output"))?;
                }
            }
            Err(status) => self.denied(status)?,
        }
        Ok(())
    }

    async fn query(
        &mut self,
        title: &str,
        client: &mut ExchangeClient<Channel>,
        request: pb::QueryRequest,
    ) -> Result<(), DemoError> {
        writeln!(self.out, "\n▶ {title}").map_err(step("write output"))?;
        let target = if request.target_schema.is_empty() {
            String::new()
        } else {
            format!(" as {}", request.target_schema)
        };
        writeln!(
            self.out,
            "    Query {}{target} fields=[{}] purpose={:?}",
            request.dataset,
            request.fields.join(", "),
            request.purpose
        )
        .map_err(step("write output"))?;
        let mut stream = match client.query(request).await {
            Ok(s) => s.into_inner(),
            Err(status) => return self.denied(status),
        };
        let (mut rows, mut batches, mut first) = (0u64, 0u64, Vec::new());
        loop {
            match stream.message().await {
                Ok(Some(msg)) => match msg.item {
                    Some(pb::query_response::Item::Batch(b)) => {
                        batches += 1;
                        rows += b.records.len() as u64;
                        if first.len() < 3 {
                            first.extend(b.records.into_iter().take(3 - first.len()));
                        }
                    }
                    Some(pb::query_response::Item::Receipt(r)) => {
                        self.report.allowed += 1;
                        self.report.rows_delivered += r.rows;
                        writeln!(
                            self.out,
                            "    ✔ allowed — {rows} records in {batches} batches, first three:"
                        )
                        .map_err(step("write output"))?;
                        for rec in &first {
                            show_record(self.out, rec).map_err(step("write output"))?;
                        }
                        writeln!(
                            self.out,
                            "    receipt: exchange {} · audit entries #{} and #{} · {} rows, {} bytes, payload sha256 {}…",
                            r.exchange_id, r.decision_seq, r.entry_seq, r.rows, r.bytes, short(&r.payload_sha256)
                        )
                        .map_err(step("write output"))?;
                    }
                    None => {}
                },
                Ok(None) => break,
                Err(status) => return self.denied(status),
            }
        }
        Ok(())
    }

    /// Dinas Sosial's integrator tries a breaking change to its schema;
    /// the registry refuses it and says why.
    async fn incompatible_change(&mut self, port: u16, files: &TlsFiles) -> Result<(), DemoError> {
        let w = step::<std::io::Error>;
        writeln!(
            self.out,
            "\n▶ Dinas Sosial's integrator registers dinsos.warga v2 with a new required field `income` — the registry refuses it (mode BACKWARD)"
        )
        .map_err(w("write output"))?;
        let mut v2: serde_json::Value =
            serde_json::from_str(include_str!("../../../schemas/dinsos.warga.v1.json"))
                .map_err(step("parse dinsos.warga v1"))?;
        v2["properties"]["income"] = serde_json::json!({ "type": "integer", "minimum": 0 });
        if let Some(required) = v2["required"].as_array_mut() {
            required.push("income".into());
        }
        let channel = channel(port, files).await?;
        let mut registry = pb::registry_client::RegistryClient::new(channel);
        let result = registry
            .register_schema(pb::RegisterSchemaRequest {
                dataset: "dinsos.warga".into(),
                schema_json: v2.to_string(),
            })
            .await;
        match result {
            Ok(r) => {
                let v = r.into_inner().version.unwrap_or_default();
                return Err(DemoError::Step(format!(
                    "the registry accepted an incompatible schema as {}@{}",
                    v.dataset, v.version
                )));
            }
            Err(status) => {
                writeln!(self.out, "    ✘ {:?}: {}", status.code(), status.message())
                    .map_err(w("write output"))?;
                let details = jembatan_proto::trailers::incompatibilities(status.metadata())
                    .unwrap_or_default();
                for i in &details.incompatibilities {
                    writeln!(self.out, "    {} at {}: {}", i.kind, i.path, i.message)
                        .map_err(w("write output"))?;
                    writeln!(
                        self.out,
                        "    counterexample (the {} schema accepts it, the other does not): {}",
                        i.accepted_by, i.counterexample_json
                    )
                    .map_err(w("write output"))?;
                }
                self.report.schema_refusals += 1;
            }
        }
        Ok(())
    }

    /// Dinas Kesehatan proposes an agreement, Disdukcapil approves it,
    /// Dinas Kesehatan reads masked values and verifies a name it holds,
    /// then revokes the agreement; each step is an audit entry.
    async fn lifecycle(
        &mut self,
        port: u16,
        dinkes: &TlsFiles,
        registry_agency: &TlsFiles,
        nik: &str,
        name: &str,
        village: &str,
    ) -> Result<(), DemoError> {
        let out = || step::<std::io::Error>("write output");
        let mut proposer = AgreementsClient::new(channel(port, dinkes).await?);
        let mut provider = AgreementsClient::new(channel(port, registry_agency).await?);
        let grant = |field: &str, mode: pb::AccessMode, mask: &str| pb::FieldGrant {
            field: field.into(),
            mode: mode as i32,
            mask: mask.into(),
        };
        writeln!(
            self.out,
            "\n▶ Dinas Kesehatan proposes an agreement for its immunisation register (Agreements.Propose)"
        )
        .map_err(out())?;
        let proposed = proposer
            .propose(pb::ProposeRequest {
                agreement: Some(pb::Agreement {
                    id: "pks-2026-005-dinkes-penduduk".into(),
                    dataset: "disdukcapil.penduduk".into(),
                    purpose: PURPOSE_IMMUNISATION.into(),
                    fields: vec![
                        grant("nik", pb::AccessMode::Masked, "keep_last:4"),
                        grant("tgl_lahir", pb::AccessMode::Masked, "year"),
                        grant("jenis_kelamin", pb::AccessMode::Read, ""),
                        grant("kode_desa", pb::AccessMode::Read, ""),
                        grant("nama_lengkap", pb::AccessMode::Verify, ""),
                    ],
                    quota: Some(pb::Quota {
                        rows_per_day: 5_000,
                        requests_per_minute: 60,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .map_err(step("propose an agreement"))?
            .into_inner();
        writeln!(
            self.out,
            "    ✔ {} proposed: nik masked keep_last:4 · tgl_lahir masked year · jenis_kelamin, kode_desa read · nama_lengkap verify only · 5000 rows/day, 60 requests/minute",
            proposed.id
        )
        .map_err(out())?;
        let mut consumer = client(port, dinkes).await?;
        let request = pb::QueryRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: PURPOSE_IMMUNISATION.into(),
            filter: Some(eq("kode_desa", village)),
            limit: 3,
            ..Default::default()
        };
        self.query(
            "…and asks for data before Disdukcapil approved it",
            &mut consumer,
            request.clone(),
        )
        .await?;
        let approved = provider
            .approve(pb::ApproveRequest {
                id: proposed.id.clone(),
            })
            .await
            .map_err(step("approve the agreement"))?
            .into_inner();
        writeln!(
            self.out,
            "\n▶ Disdukcapil approves it (Agreements.Approve, with Disdukcapil's own certificate)\n    ✔ {} is {}",
            approved.id,
            if approved.status == pb::AgreementStatus::Approved as i32 { "approved" } else { "not approved" }
        )
        .map_err(out())?;
        self.query(
            "Dinas Kesehatan reads three residents of a village: NIK and birth date arrive masked",
            &mut consumer,
            request,
        )
        .await?;
        let verify = |claimed: &str| pb::LookupRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: PURPOSE_IMMUNISATION.into(),
            key: key(nik),
            verify: [(
                "nama_lengkap".to_owned(),
                pb::Scalar {
                    kind: Some(pb::scalar::Kind::StringValue(claimed.to_owned())),
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        for (title, claimed) in [
            (
                "Dinas Kesehatan checks the name a mother gave at the clinic (verify: the registry's value never leaves)",
                name.to_owned(),
            ),
            ("…and a misspelt one", format!("{name}X")),
        ] {
            writeln!(self.out, "\n▶ {title}").map_err(out())?;
            match consumer.lookup(verify(&claimed)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.report.allowed += 1;
                    writeln!(
                        self.out,
                        "    ✔ nama_lengkap {:?}: {}",
                        claimed,
                        match r.verified.get("nama_lengkap") {
                            Some(true) => "matches",
                            Some(false) => "does not match",
                            None => "not found",
                        }
                    )
                    .map_err(out())?;
                    show_record(self.out, &r.record).map_err(out())?;
                }
                Err(status) => self.denied(status)?,
            }
        }
        let revoked = proposer
            .revoke(pb::RevokeRequest {
                id: proposed.id.clone(),
                reason: "immunisation campaign finished".into(),
            })
            .await
            .map_err(step("revoke the agreement"))?
            .into_inner();
        writeln!(
            self.out,
            "\n▶ Dinas Kesehatan revokes it when the campaign ends (Agreements.Revoke)\n    ✔ {} is {}",
            revoked.id,
            if revoked.status == pb::AgreementStatus::Revoked as i32 { "revoked" } else { "not revoked" }
        )
        .map_err(out())?;
        self.report.agreement_steps += 3;
        Ok(())
    }

    fn denied(&mut self, status: tonic::Status) -> Result<(), DemoError> {
        let details = jembatan_proto::trailers::denial_details(status.metadata());
        writeln!(self.out, "    ✘ {:?}: {}", status.code(), status.message())
            .map_err(step("write output"))?;
        if let Some(d) = details {
            let codes: Vec<String> = d.reasons.iter().map(|r| r.reason.clone()).collect();
            writeln!(
                self.out,
                "    reason codes: [{}] · denial recorded as audit entry #{}",
                codes.join(", "),
                d.entry_seq
            )
            .map_err(step("write output"))?;
            self.report
                .denied
                .push((codes.join(","), status.message().to_owned()));
        } else {
            self.report
                .denied
                .push((format!("{:?}", status.code()), status.message().to_owned()));
        }
        Ok(())
    }
}

/// Runs the whole demo, writing its story to `out`.
pub async fn run(options: &DemoOptions, out: &mut impl Write) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let temp;
    let dir: PathBuf = match &options.keep {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(dir)
                    .map_err(step("read --keep directory"))?
                    .next()
                    .is_some()
            {
                return Err(DemoError::NotEmpty(dir.clone()));
            }
            std::fs::create_dir_all(dir).map_err(step("create --keep directory"))?;
            std::path::absolute(dir).map_err(step("resolve --keep directory"))?
        }
        None => {
            temp = tempfile::tempdir().map_err(step("create a temporary directory"))?;
            temp.path().to_owned()
        }
    };
    let w = step::<std::io::Error>;
    writeln!(
        out,
        "Jembatan demo — Kabupaten Tanjung Jabung Timur, Jambi (Kemendagri 15.07)"
    )
    .map_err(w("write output"))?;
    writeln!(
        out,
        "═══════════════════════════════════════════════════════════════════════"
    )
    .map_err(w("write output"))?;

    // 1. The agencies' own databases.
    let t = Instant::now();
    let generated: Generated = generate_with_examples(&dir.join("data"), &options.data)
        .await
        .map_err(step("generate agency databases"))?;
    writeln!(
        out,
        "\nAgency databases (synthetic, seed {}, {:.1}s):",
        options.data.seed,
        t.elapsed().as_secs_f64()
    )
    .map_err(w("write output"))?;
    for db in &generated.databases {
        let tables: Vec<String> = db
            .tables
            .iter()
            .map(|t| format!("{} {}", t.name, t.rows))
            .collect();
        writeln!(
            out,
            "  {:<12} {:<60} {}",
            db.agency,
            db.name,
            tables.join(", ")
        )
        .map_err(w("write output"))?;
    }

    // 2. Development PKI: identities travel in certificates.
    let certs = dir.join("certs");
    let mut identities = vec![Identity::new(Role::Broker, None).map_err(step("identity"))?];
    for (agency, _) in ADAPTERS {
        identities.push(
            Identity::new(
                Role::Adapter,
                Some(agency.parse().map_err(step("agency id"))?),
            )
            .map_err(step("identity"))?,
        );
    }
    for c in CONSUMERS {
        identities.push(Identity::agency(c.parse().map_err(step("agency id"))?));
    }
    let integrator = Identity::new(
        Role::Integrator,
        Some("dinsos".parse().map_err(step("agency id"))?),
    )
    .map_err(step("identity"))?;
    identities.push(integrator.clone());
    // the population registry's own agency certificate: it approves and
    // revokes agreements over its datasets
    let registry_agency = Identity::agency("disdukcapil".parse().map_err(step("agency id"))?);
    identities.push(registry_agency.clone());
    // for the console on a kept demo: one to read the log, one to approve
    let auditor = Identity::new(Role::Auditor, None).map_err(step("identity"))?;
    let operator = Identity::new(Role::Operator, None).map_err(step("identity"))?;
    identities.push(auditor.clone());
    identities.push(operator.clone());
    let issued =
        jembatan_pki::dev_pki(&certs, &identities).map_err(step("create development PKI"))?;
    let files_of = |id: &Identity| -> Result<TlsFiles, DemoError> {
        issued
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, f)| f.clone())
            .ok_or_else(|| DemoError::Step(format!("no certificate for {id}")))
    };
    writeln!(
        out,
        "\nDevelopment PKI: {} certificates under {} (identity in the URI SAN, e.g. {})",
        issued.len(),
        certs.display(),
        identities[0].uri()
    )
    .map_err(w("write output"))?;

    // 3. Adapters, one per providing agency, each with its whitelist.
    let stop = Stop::new();
    let mut tasks = Vec::new();
    let mut adapter_ports = Vec::new();
    for (agency, datasets) in ADAPTERS {
        let db = generated
            .database(agency)
            .ok_or_else(|| DemoError::Step(format!("no database for {agency}")))?;
        let id = Identity::new(
            Role::Adapter,
            Some(agency.parse().map_err(step("agency id"))?),
        )
        .map_err(step("identity"))?;
        let tls = files_of(&id)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(step("bind adapter"))?;
        let port = listener
            .local_addr()
            .map_err(step("adapter address"))?
            .port();
        let text = adapter_toml(agency, &db.url, port, &tls, &dir, datasets);
        let path = dir.join(format!("adapter-{agency}.toml"));
        std::fs::write(&path, &text).map_err(step("write adapter config"))?;
        let config = AdapterConfig::load(&path).map_err(step("load adapter config"))?;
        let served = serve::adapter(&config, listener, stop.signal())
            .await
            .map_err(step("start adapter"))?;
        tasks.push(server_ended(served));
        writeln!(
            out,
            "Adapter {agency:<12} on 127.0.0.1:{port}, whitelist: {}",
            datasets
                .iter()
                .map(|d| format!("{}.{} ({} columns)", agency, d.name, d.columns.len()))
                .collect::<Vec<_>>()
                .join(", ")
        )
        .map_err(w("write output"))?;
        adapter_ports.push((*agency, port));
    }

    // 4. The broker, with agencies, datasets and agreements from its config.
    let broker_files = files_of(&identities[0])?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(step("bind broker"))?;
    let broker_port = listener
        .local_addr()
        .map_err(step("broker address"))?
        .port();
    let schema_dir = dir.join("schemas");
    std::fs::create_dir_all(&schema_dir).map_err(step("create schemas directory"))?;
    for (name, text) in SCHEMA_FILES {
        std::fs::write(schema_dir.join(name), text).map_err(step("write schema files"))?;
    }
    let broker_path = dir.join("broker.toml");
    std::fs::write(
        &broker_path,
        broker_toml(broker_port, &broker_files, &dir, &adapter_ports),
    )
    .map_err(step("write broker config"))?;
    let config = BrokerConfig::load(&broker_path).map_err(step("load broker config"))?;
    let served = serve::broker(&config, listener, stop.signal())
        .await
        .map_err(step("start broker"))?;
    let broker = served.broker;
    let task = served.task;
    tasks.push(server_ended(task));
    writeln!(
        out,
        "Broker on 127.0.0.1:{broker_port}, store {}, {} agreements",
        config.store,
        AGREEMENTS.len()
    )
    .map_err(w("write output"))?;
    for a in AGREEMENTS {
        writeln!(
            out,
            "  agreement {:<34} {:<10} ← {:<22} for {:?}",
            a.id, a.consumer, a.dataset, a.purpose
        )
        .map_err(w("write output"))?;
    }

    // 5. The exchanges.
    let mut clients = std::collections::HashMap::new();
    for c in CONSUMERS {
        let files = files_of(&Identity::agency(c.parse().map_err(step("agency id"))?))?;
        clients.insert(*c, client(broker_port, &files).await?);
    }
    let client_of = |c: &str| {
        clients
            .get(c)
            .cloned()
            .ok_or_else(|| DemoError::Step(format!("no client {c}")))
    };
    let ex = &generated.examples;
    let mut s = Scenario {
        out: &mut *out,
        report: DemoReport::default(),
    };
    writeln!(s.out, "\nExchanges\n─────────").map_err(w("write output"))?;

    s.lookup(
        "DPMPTSP (perizinan online) checks a licence applicant's identity with the population registry",
        &mut client_of("dpmptsp")?,
        pb::LookupRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: PURPOSE_LICENCE.into(),
            fields: vec!["nik".into(), "nama_lengkap".into(), "tgl_lahir".into(), "jenis_kelamin".into(), "status".into()],
            key: key(&ex.licence_owner_nik),
            ..Default::default()
        },
    )
    .await?;
    s.lookup(
        "LPSE (e-procurement) checks a winning bidder's business licence with DPMPTSP",
        &mut client_of("lpse")?,
        pb::LookupRequest {
            dataset: "dpmptsp.izin_usaha".into(),
            purpose: PURPOSE_TENDER.into(),
            key: key(&ex.bidder_licence_number),
            ..Default::default()
        },
    )
    .await?;
    s.lookup(
        "LPSE checks a licence number another bidder cited — DPMPTSP never issued it",
        &mut client_of("lpse")?,
        pb::LookupRequest {
            dataset: "dpmptsp.izin_usaha".into(),
            purpose: PURPOSE_TENDER.into(),
            key: key(&ex.unregistered_licence_number),
            ..Default::default()
        },
    )
    .await?;
    s.lookup(
        "The land office (LARASITA) checks a certificate holder with the population registry",
        &mut client_of("bpn")?,
        pb::LookupRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: PURPOSE_LAND.into(),
            key: key(&ex.land_owner_nik),
            ..Default::default()
        },
    )
    .await?;
    let district = &ex.district_code;
    s.query(
        &format!("Dinas Sosial lists the living residents of district {district} to update its welfare data (agreement adds status = HIDUP)"),
        &mut client_of("dinsos")?,
        pb::QueryRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: PURPOSE_DTKS.into(),
            fields: vec!["nik".into(), "no_kk".into(), "nama_lengkap".into(), "tgl_lahir".into(), "jenis_kelamin".into(), "kode_desa".into()],
            filter: Some(eq("kode_kecamatan", district)),
            ..Default::default()
        },
    )
    .await?;
    s.query(
        "Dinas Sosial asks for the same residents in its own schema, dinsos.warga@1: women born since 1990, filter in its own field names",
        &mut client_of("dinsos")?,
        pb::QueryRequest {
            dataset: "disdukcapil.penduduk".into(),
            target_schema: "dinsos.warga@1".into(),
            purpose: PURPOSE_DTKS.into(),
            filter: Some(all(vec![
                eq("district_code", district),
                eq("sex", "F"),
                compare("birth_date", pb::Operator::Ge, "1990-01-01"),
            ])),
            ..Default::default()
        },
    )
    .await?;
    s.incompatible_change(broker_port, &files_of(&integrator)?)
        .await?;
    s.query(
        "Dinas Kesehatan asks for the population registry — it has no agreement",
        &mut client_of("dinkes")?,
        pb::QueryRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: PURPOSE_IMMUNISATION.into(),
            fields: vec!["nik".into(), "nama_lengkap".into(), "tgl_lahir".into()],
            ..Default::default()
        },
    )
    .await?;
    s.lifecycle(
        broker_port,
        &files_of(&Identity::agency(
            "dinkes".parse().map_err(step("agency id"))?,
        ))?,
        &files_of(&registry_agency)?,
        &ex.resident_nik,
        &ex.resident_name,
        &ex.village_code,
    )
    .await?;
    s.query(
        "Dinas Sosial also asks for religion and occupation — fields its agreement does not grant",
        &mut client_of("dinsos")?,
        pb::QueryRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: PURPOSE_DTKS.into(),
            fields: vec![
                "nik".into(),
                "nama_lengkap".into(),
                "agama".into(),
                "pekerjaan".into(),
            ],
            filter: Some(eq("kode_kecamatan", district)),
            ..Default::default()
        },
    )
    .await?;
    s.lookup(
        "Diskominfo's SMS complaint centre checks a sender's NIK — its agreement expired last month",
        &mut client_of("diskominfo")?,
        pb::LookupRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: PURPOSE_COMPLAINT.into(),
            key: key(&ex.resident_nik),
            ..Default::default()
        },
    )
    .await?;
    s.lookup(
        "DPMPTSP asks the registry for a purpose its agreement does not cover",
        &mut client_of("dpmptsp")?,
        pb::LookupRequest {
            dataset: "disdukcapil.penduduk".into(),
            purpose: "promosi layanan perizinan".into(),
            key: key(&ex.resident_nik),
            ..Default::default()
        },
    )
    .await?;
    let registry_db = generated
        .database("disdukcapil")
        .ok_or_else(|| DemoError::Step("no database for disdukcapil".into()))?;
    let aid_db = generated
        .database("dinsos")
        .ok_or_else(|| DemoError::Step("no database for dinsos".into()))?;
    let followed = crate::follow::death_and_move(
        s.out,
        &mut client_of("dinsos")?,
        &crate::follow::Setting {
            registry_url: &registry_db.url,
            aid_url: &aid_db.url,
            district,
            purpose: PURPOSE_DTKS,
        },
    )
    .await?;
    let mut report = s.report;
    report.allowed += 1;
    report.rows_delivered += followed.receipt_rows;
    report.subscription_changes = followed.changes;
    report.flagged = followed.flagged;
    // the consumer has gone: the stream's end entry follows
    wait_for_end(&broker, &followed.exchange_id).await?;

    // 6. The audit log.
    let entries = broker
        .audit()
        .entries(0, 10_000)
        .await
        .map_err(step("read audit log"))?;
    report.audit_entries = entries.len() as u64;
    writeln!(
        out,
        "\nAudit log ({} entries; lookup keys appear only as keyed hashes)\n─────────",
        entries.len()
    )
    .map_err(w("write output"))?;
    writeln!(
        out,
        "{:>4}  {:<10} {:<17} {:<22} {:<6} {:<9} {:>6}  reason / agreement",
        "seq", "kind", "caller", "dataset", "dec.", "status", "rows"
    )
    .map_err(w("write output"))?;
    for e in &entries {
        let e_ = &e.entry;
        let why = if e_.reasons.is_empty() {
            e_.agreement_id.clone().unwrap_or_default()
        } else {
            e_.reasons
                .iter()
                .map(|r| r.code.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        writeln!(
            out,
            "{:>4}  {:<10} {:<17} {:<22} {:<6} {:<9} {:>6}  {}",
            e.seq,
            e_.kind.as_str(),
            e_.caller,
            e_.dataset.as_deref().unwrap_or("-"),
            e_.decision.as_str(),
            e_.status.as_str(),
            e_.rows,
            why
        )
        .map_err(w("write output"))?;
    }

    // 7. Shut down.
    drop(clients);
    stop.stop();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(DemoError::Step(format!("server failed: {e}"))),
            Ok(Err(e)) => return Err(DemoError::Step(format!("server task failed: {e}"))),
            Err(_) => return Err(DemoError::Step("a server did not shut down in 10 s".into())),
        }
    }
    // The final checkpoint covers every entry of the run.
    broker
        .shutdown()
        .await
        .map_err(step("sign the final checkpoint"))?;
    writeln!(
        out,
        "\nDone in {:.1}s: {} exchanges allowed, {} denied, {} audit entries.",
        started.elapsed().as_secs_f64(),
        report.allowed,
        report.denied.len(),
        report.audit_entries
    )
    .map_err(w("write output"))?;
    if options.keep.is_some() {
        let store = dir.join("broker.db");
        let public_key = dir.join("checkpoint.key.pub");
        writeln!(out, "Kept in {}:\n  broker store    {}\n  broker config   {}\n  checkpoint key  {} (public; the private key is {})\n  adapter configs, databases (data/), certificates (certs/), adapter receipt logs",
            dir.display(), store.display(), broker_path.display(), public_key.display(), config.checkpoint_key.display()).map_err(w("write output"))?;
        writeln!(
            out,
            "Verify the audit log offline:\n  jembatan audit verify --store {} --public-key {}",
            store.display(),
            public_key.display()
        )
        .map_err(w("write output"))?;
        let console_path = dir.join("console.toml");
        let operator_path = dir.join("console-operator.toml");
        for (path, who, listen) in [
            (&console_path, &auditor, 8080),
            (&operator_path, &operator, 8081),
        ] {
            std::fs::write(
                path,
                console_toml(broker_port, listen, &files_of(who)?, &dir),
            )
            .map_err(step("write console config"))?;
        }
        writeln!(
            out,
            "Browse the log in the console (auditor; console-operator.toml approves and revokes):\n  jembatan broker --config {} & jembatan console --config {}",
            broker_path.display(),
            console_path.display()
        )
        .map_err(w("write output"))?;
        write_client_commands(out, &dir, broker_port).map_err(w("write output"))?;
        report.dir = Some(dir);
    }
    Ok(report)
}

/// Waits until the log holds the end entry of exchange `id`.
async fn wait_for_end(broker: &Broker, id: &str) -> Result<(), DemoError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = broker
            .audit()
            .entries(0, 10_000)
            .await
            .map_err(step("read audit log"))?;
        if entries.iter().any(|e| {
            e.entry.exchange_id == id && e.entry.kind == jembatan_core::EntryKind::Completion
        }) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DemoError::Step(
                "the subscription's end entry is not on the log after 10 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ready-to-paste commands that run the example clients (`examples/`, from
/// the repository's root) as Dinas Sosial against the kept demo's broker.
fn write_client_commands(
    out: &mut impl std::io::Write,
    dir: &Path,
    port: u16,
) -> std::io::Result<()> {
    let d = dir.display();
    let certs = format!("--certs {d}/certs");
    let pem = format!(
        "--cacert {d}/certs/ca.pem --cert {d}/certs/agency-dinsos.pem --key {d}/certs/agency-dinsos-key.pem"
    );
    let body = r#"'{"dataset": "disdukcapil.penduduk", "purpose": "pemutakhiran data terpadu kesejahteraan sosial", "fields": ["nik", "nama_lengkap"], "limit": 3}'"#;
    let commands: [(&str, Vec<String>); 5] = [
        (
            "curl",
            vec![
                format!("curl {pem}"),
                format!("-d {body}"),
                format!("https://localhost:{port}/exchange/v1/query"),
            ],
        ),
        (
            "PHP",
            vec![format!(
                "php examples/php/client.php {certs} --broker https://localhost:{port} --out php.jsonl"
            )],
        ),
        (
            "Python",
            vec![
                "mkdir -p /tmp/stubs && python3 -m grpc_tools.protoc -I proto --python_out=/tmp/stubs --grpc_python_out=/tmp/stubs proto/jembatan/v1/*.proto".into(),
                format!("&& PYTHONPATH=/tmp/stubs python3 examples/python/query.py {certs} --broker localhost:{port} --out python.jsonl"),
            ],
        ),
        (
            "TypeScript",
            vec![
                "(cd examples/typescript && npm ci && npx tsc)".into(),
                format!("&& node examples/typescript/dist/client.js {certs} --broker localhost:{port} --out typescript.jsonl"),
            ],
        ),
        (
            "Java",
            vec![
                "head -c 18 /dev/urandom | base64 > p12-password".into(),
                format!("&& jembatan pki p12 --cert {d}/certs/agency-dinsos.pem --key {d}/certs/agency-dinsos-key.pem --out dinsos.p12 --password-file p12-password"),
                "&& javac -d java-classes examples/java/Client.java".into(),
                format!("&& java -cp java-classes Client --p12 dinsos.p12 --password-file p12-password --ca {d}/certs/ca.pem --broker https://localhost:{port} --out java.jsonl"),
            ],
        ),
    ];
    writeln!(
        out,
        "Call it from other languages: from the repository's root, with the adapter and broker running
  \
         (jembatan adapter --config {d}/adapter-disdukcapil.toml & jembatan broker --config {d}/broker.toml &):"
    )?;
    for (language, lines) in commands {
        writeln!(
            out,
            "  {language:<11} {}",
            lines.join(&format!(" \\\n  {:<11} ", ""))
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `schema` finds wrong with the TOML `text`.
    fn schema_errors(schema: &serde_json::Value, text: &str) -> Vec<String> {
        let doc: toml::Table = toml::from_str(text).expect("config is TOML");
        let doc = serde_json::to_value(doc).unwrap();
        let validator = jsonschema::validator_for(schema).expect("schema compiles");
        validator
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn generated_configs_match_the_published_schemas() {
        let base = Path::new("/srv/demo");
        let tls = TlsFiles {
            ca: base.join("certs/ca.pem"),
            cert: base.join("certs/x.pem"),
            key: base.join("certs/x-key.pem"),
            crl: None,
        };
        let ports: Vec<(&str, u16)> = ADAPTERS
            .iter()
            .zip(7101..)
            .map(|((agency, _), port)| (*agency, port))
            .collect();
        let mut configs = vec![
            (
                "broker",
                BrokerConfig::schema().to_value(),
                broker_toml(7443, &tls, base, &ports),
            ),
            (
                "console",
                jembatan_console::config::ConsoleConfig::schema().to_value(),
                console_toml(7443, 8080, &tls, base),
            ),
        ];
        for ((agency, datasets), (_, port)) in ADAPTERS.iter().zip(&ports) {
            configs.push((
                "adapter",
                AdapterConfig::schema().to_value(),
                adapter_toml(
                    agency,
                    "sqlite:///srv/demo/x.db",
                    *port,
                    &tls,
                    base,
                    datasets,
                ),
            ));
        }
        for (component, schema, text) in configs {
            let errors = schema_errors(&schema, &text);
            assert!(errors.is_empty(), "{component}: {errors:#?}\n{text}");
        }
    }
}
