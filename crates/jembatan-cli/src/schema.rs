//! `jembatan schema ...` and `jembatan mapping ...`: the schema registry
//! from the command line. `schema check --old --new` and `mapping test`
//! with schema files work offline; `mapping test --broker` dry-runs a
//! candidate on live records through the broker's `Exchange.TestMapping`
//! with the consumer agency's certificate; the others call the broker's
//! `Registry` service with the caller's certificate.
//!
//! Exit codes: 0 done (or compatible), 1 refused, incompatible or a
//! record failed the test, 2 usage errors, unreadable files, invalid
//! schemas and unreachable brokers, 3 a mapping test denied by policy.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};

use crate::failure::{Failure, certificate_refusal, exit};
use clap::{Args, Subcommand};
use jembatan_pki::TlsFiles;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::registry_client::RegistryClient;
use jembatan_schema::{CheckOptions, CompatMode, Schema};
use tonic::transport::Channel;

/// Where the broker is and which certificate to call it with.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// The broker, `https://host:port`.
    #[arg(long, env = "JEMBATAN_BROKER", global = true)]
    broker: Option<String>,
    /// CA certificate the broker's certificate must chain to.
    #[arg(long, env = "JEMBATAN_CA", global = true)]
    ca: Option<PathBuf>,
    /// This caller's certificate (an integrator's to register).
    #[arg(long, env = "JEMBATAN_CERT", global = true)]
    cert: Option<PathBuf>,
    /// This caller's private key.
    #[arg(long, env = "JEMBATAN_KEY", global = true)]
    key: Option<PathBuf>,
}

impl Connection {
    /// Whether a broker is named (`--broker` or `JEMBATAN_BROKER`).
    pub(crate) fn names_a_broker(&self) -> bool {
        self.broker.is_some()
    }

    async fn registry(&self) -> Result<RegistryClient<Channel>, Failure> {
        Ok(RegistryClient::new(self.channel().await?))
    }

    /// An mTLS channel to the broker with this caller's certificate.
    pub(crate) async fn channel(&self) -> Result<Channel, Failure> {
        let missing = |what: &str| {
            Failure::Usage(anyhow!(
                "--{what} is needed to reach the broker (or set JEMBATAN_{})",
                what.to_uppercase()
            ))
        };
        let broker = self.broker.as_deref().ok_or_else(|| missing("broker"))?;
        let files = TlsFiles {
            ca: self.ca.clone().ok_or_else(|| missing("ca"))?,
            cert: self.cert.clone().ok_or_else(|| missing("cert"))?,
            key: self.key.clone().ok_or_else(|| missing("key"))?,
            crl: None,
        };
        let address = jembatan_pki::BrokerAddress::parse(broker).map_err(|_| {
            Failure::Usage(anyhow!("--broker {broker:?} must be https://host:port"))
        })?;
        crate::failure::set_broker(&files, address.host(), address.port());
        let channel = match address.connect(&files).await {
            Ok(channel) => channel,
            Err(jembatan_pki::BrokerConnectError::Unreachable { source, .. }) => {
                if let Some(refusal) = certificate_refusal(&source) {
                    return Err(Failure::Usage(anyhow!("{refusal}")));
                }
                return Err(Failure::Usage(
                    anyhow::Error::new(source)
                        .context(format!("cannot reach the broker at {broker}")),
                ));
            }
            Err(err) => return Err(Failure::Usage(anyhow::Error::new(err))),
        };
        Ok(channel)
    }
}

/// A refused call: the broker's own words; transport trouble is a usage error.
pub(crate) fn call_failed(status: tonic::Status) -> Failure {
    use tonic::Code;
    // only a call that failed in transport can be a refused certificate
    if matches!(
        status.code(),
        Code::Unknown | Code::Cancelled | Code::Unavailable
    ) && let Some(refusal) = certificate_refusal(&status)
    {
        return Failure::Usage(anyhow!("{refusal}"));
    }
    let err = anyhow!("{}: {}", code_name(status.code()), status.message());
    match status.code() {
        Code::Unavailable | Code::Unauthenticated | Code::Unknown | Code::Internal => {
            Failure::Usage(err)
        }
        _ => Failure::Refused(err),
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::PermissionDenied => "permission denied",
        Code::FailedPrecondition => "refused",
        Code::Aborted => "conflict",
        Code::AlreadyExists => "already exists",
        Code::ResourceExhausted => "limit reached",
        Code::Unavailable => "unavailable",
        Code::Unauthenticated => "unauthenticated",
        _ => "error",
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Register a JSON Schema (2020-12) as a dataset's next version; the
    /// dataset's compatibility mode is enforced.
    Register {
        #[arg(long)]
        dataset: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a schema: `<dataset>@<version>`, `<dataset>@latest` or a `sha256:` id.
    Get { reference: String },
    /// List the registry's datasets.
    List,
    /// List a dataset's versions.
    Versions {
        #[arg(long)]
        dataset: String,
    },
    /// Judge a schema change. Offline with --old and --new; against the
    /// registry with --dataset and --new.
    Check {
        #[arg(long, value_name = "FILE")]
        old: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        new: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
        /// BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE,
        /// FULL, FULL_TRANSITIVE or NONE [offline default: BACKWARD;
        /// against the registry: the dataset's mode].
        #[arg(long)]
        mode: Option<String>,
        /// Accept an optional property added to an open content model.
        #[arg(long)]
        optional_friendly: bool,
    },
    /// Set a dataset's compatibility mode (`DEFAULT` to follow the registry's).
    SetMode {
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        mode: String,
        #[arg(long)]
        optional_friendly: bool,
    },
    /// Mark a version active, deprecated or disabled (refused for new exchanges).
    SetState {
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        version: u32,
        #[arg(long)]
        state: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MappingCommand {
    /// Register a mapping document (TOML or JSON); it is type-checked
    /// against both schemas first.
    Register {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a mapping (the latest version unless --version).
    Get {
        #[arg(long)]
        source: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Disable a mapping version (or make it active or deprecated again):
    /// exchanges use the newest version of the pair that is not disabled.
    SetState {
        #[arg(long)]
        source: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        version: u32,
        /// active, deprecated or disabled.
        #[arg(long)]
        state: String,
    },
    /// Dry-run a mapping. With --source-schema and --target-schema, on
    /// JSON Lines records from standard input: each is validated against
    /// the source schema, mapped and validated against the target schema,
    /// and written to standard output; stops at the first record that
    /// fails (exit 1, naming the record). With --broker (and the consumer
    /// agency's certificate), on live records of the mapping's source
    /// dataset, under the agency's agreement for --purpose: the broker
    /// checks at most --limit records and reports how many passed and the
    /// first failure, without any record's values (exit 1 when a record
    /// failed, 3 when denied). The mapping is never registered.
    Test {
        #[arg(long, value_name = "FILE")]
        mapping: PathBuf,
        /// The schema the mapping reads (offline).
        #[arg(long, value_name = "FILE")]
        source_schema: Option<PathBuf>,
        /// The schema the mapping produces (offline).
        #[arg(long, value_name = "FILE")]
        target_schema: Option<PathBuf>,
        /// A secret for `hash` operations, NAME=HEX (repeatable; offline:
        /// the broker uses its own).
        #[arg(long = "secret", value_name = "NAME=HEX")]
        secrets: Vec<String>,
        /// The exchange's purpose, as the agreement names it (--broker).
        #[arg(long)]
        purpose: Option<String>,
        /// Most provider records to check, 1 to 10000 (--broker; the
        /// broker's default is 1000). They count against the agreement's
        /// daily rows.
        #[arg(long)]
        limit: Option<u64>,
        /// Print the report as JSON (--broker).
        #[arg(long)]
        json: bool,
    },
}

fn read(path: &Path) -> Result<String, Failure> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?)
}

fn parse_mode(text: &str) -> Result<CompatMode, Failure> {
    text.parse::<CompatMode>()
        .map_err(|e| Failure::Usage(anyhow!("--mode {text:?}: {e}")))
}

fn parse_state(text: &str) -> Result<pb::VersionState, Failure> {
    match text.to_ascii_lowercase().as_str() {
        "active" => Ok(pb::VersionState::Active),
        "deprecated" => Ok(pb::VersionState::Deprecated),
        "disabled" => Ok(pb::VersionState::Disabled),
        other => Err(Failure::Usage(anyhow!(
            "--state {other:?}: expected active, deprecated or disabled"
        ))),
    }
}

fn load_schema(path: &Path) -> Result<Schema, Failure> {
    let text = read(path)?;
    Schema::parse(&text).map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))
}

pub(crate) async fn run_schema(command: SchemaCommand, conn: &Connection) -> ExitCode {
    exit(schema(command, conn).await)
}

pub(crate) async fn run_mapping(command: MappingCommand, conn: &Connection) -> ExitCode {
    exit(mapping(command, conn).await)
}

fn print_incompatibilities(
    out: &mut impl Write,
    list: &[pb::Incompatibility],
) -> std::io::Result<()> {
    for i in list {
        let against = if i.against_version > 0 {
            format!(" (against version {})", i.against_version)
        } else {
            String::new()
        };
        writeln!(
            out,
            "incompatible{against}: {} at {}: {}",
            i.kind, i.path, i.message
        )?;
        if !i.counterexample_json.is_empty() {
            let (yes, no) = if i.accepted_by == "new" {
                ("new", "old")
            } else {
                ("old", "new")
            };
            writeln!(
                out,
                "  counterexample ({yes} schema accepts, {no} rejects): {}",
                i.counterexample_json
            )?;
        }
    }
    Ok(())
}

async fn schema(command: SchemaCommand, conn: &Connection) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match command {
        SchemaCommand::Check {
            old: Some(old),
            new,
            dataset: None,
            mode,
            optional_friendly,
        } => {
            let mode = parse_mode(mode.as_deref().unwrap_or("BACKWARD"))?;
            let old = load_schema(&old)?;
            let new = load_schema(&new)?;
            let options = CheckOptions { optional_friendly };
            let reasons = jembatan_schema::check(mode, &new, &[(1, old)], &options);
            if reasons.is_empty() {
                writeln!(out, "compatible ({mode})")?;
                return Ok(());
            }
            let list: Vec<pb::Incompatibility> = reasons
                .iter()
                .map(jembatan_schema::wire::incompatibility_to_proto)
                .map(|mut i| {
                    i.against_version = 0;
                    i
                })
                .collect();
            print_incompatibilities(&mut out, &list)?;
            Err(Failure::Refused(anyhow!(
                "not {mode} compatible: {} reason{}",
                list.len(),
                if list.len() == 1 { "" } else { "s" }
            )))
        }
        SchemaCommand::Check {
            old: None,
            new,
            dataset: Some(dataset),
            mode,
            optional_friendly,
        } => {
            let mode = match mode {
                Some(m) => jembatan_schema::wire::mode_to_proto(parse_mode(&m)?) as i32,
                None => 0,
            };
            let schema_json = read(&new)?;
            let response = conn
                .registry()
                .await?
                .check_compatibility(pb::CheckCompatibilityRequest {
                    dataset,
                    schema_json,
                    mode,
                    optional_friendly,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if response.compatible {
                writeln!(out, "compatible")?;
                return Ok(());
            }
            print_incompatibilities(&mut out, &response.incompatibilities)?;
            Err(Failure::Refused(anyhow!("not compatible")))
        }
        SchemaCommand::Check { .. } => Err(Failure::Usage(anyhow!(
            "give --old and --new (offline), or --dataset and --new (against the registry)"
        ))),
        SchemaCommand::Register { dataset, file } => {
            let schema_json = read(&file)?;
            // an invalid schema is a usage error before any call
            Schema::parse(&schema_json)
                .map_err(|e| Failure::Usage(anyhow!("{}: {e}", file.display())))?;
            let result = conn
                .registry()
                .await?
                .register_schema(pb::RegisterSchemaRequest {
                    dataset,
                    schema_json,
                })
                .await;
            let response = match result {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    if let Some(details) =
                        jembatan_proto::trailers::incompatibilities(status.metadata())
                    {
                        print_incompatibilities(&mut out, &details.incompatibilities)?;
                        return Err(Failure::Refused(anyhow!(
                            "the registry refused the schema as incompatible"
                        )));
                    }
                    return Err(call_failed(status));
                }
            };
            let v = response.version.unwrap_or_default();
            if response.already_registered {
                writeln!(
                    out,
                    "already registered: {}@{} {}",
                    v.dataset, v.version, v.schema_id
                )?;
            } else {
                writeln!(
                    out,
                    "registered {}@{} {}",
                    v.dataset, v.version, v.schema_id
                )?;
            }
            Ok(())
        }
        SchemaCommand::Get { reference } => {
            let v = conn
                .registry()
                .await?
                .get_schema(pb::GetSchemaRequest { reference })
                .await
                .map_err(call_failed)?
                .into_inner();
            let pretty = serde_json::from_str::<serde_json::Value>(&v.schema_json)
                .and_then(|j| serde_json::to_string_pretty(&j))
                .unwrap_or(v.schema_json);
            writeln!(out, "{pretty}")?;
            Ok(())
        }
        SchemaCommand::List => {
            let list = conn
                .registry()
                .await?
                .list_datasets(pb::ListDatasetsRequest {})
                .await
                .map_err(call_failed)?
                .into_inner();
            writeln!(out, "{:<40} {:>7}  compatibility", "dataset", "latest")?;
            for d in list.datasets {
                let mode = pb::CompatibilityMode::try_from(d.compatibility)
                    .map(|m| {
                        m.as_str_name()
                            .trim_start_matches("COMPATIBILITY_MODE_")
                            .to_owned()
                    })
                    .unwrap_or_default();
                let friendly = if d.optional_friendly {
                    " (optional-friendly)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "{:<40} {:>7}  {mode}{friendly}",
                    d.dataset, d.latest_version
                )?;
            }
            Ok(())
        }
        SchemaCommand::Versions { dataset } => {
            let list = conn
                .registry()
                .await?
                .list_versions(pb::ListVersionsRequest { dataset })
                .await
                .map_err(call_failed)?
                .into_inner();
            for v in list.versions {
                let state = pb::VersionState::try_from(v.state)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("VERSION_STATE_")
                            .to_lowercase()
                    })
                    .unwrap_or_default();
                writeln!(out, "{}@{}  {}  {state}", v.dataset, v.version, v.schema_id)?;
            }
            Ok(())
        }
        SchemaCommand::SetMode {
            dataset,
            mode,
            optional_friendly,
        } => {
            let proto = if mode.eq_ignore_ascii_case("default") {
                0
            } else {
                jembatan_schema::wire::mode_to_proto(parse_mode(&mode)?) as i32
            };
            conn.registry()
                .await?
                .set_compatibility(pb::SetCompatibilityRequest {
                    dataset: dataset.clone(),
                    mode: proto,
                    optional_friendly,
                })
                .await
                .map_err(call_failed)?;
            writeln!(out, "{dataset}: compatibility {}", mode.to_uppercase())?;
            Ok(())
        }
        SchemaCommand::SetState {
            dataset,
            version,
            state,
        } => {
            let proto = parse_state(&state)?;
            let v = conn
                .registry()
                .await?
                .set_version_state(pb::SetVersionStateRequest {
                    dataset,
                    version,
                    state: proto as i32,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            writeln!(
                out,
                "{}@{} is {}",
                v.dataset,
                v.version,
                state.to_lowercase()
            )?;
            Ok(())
        }
    }
}

async fn mapping(command: MappingCommand, conn: &Connection) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match command {
        MappingCommand::Register { file } => {
            let document_json = read(&file)?;
            let m = conn
                .registry()
                .await?
                .register_mapping(pb::RegisterMappingRequest { document_json })
                .await
                .map_err(call_failed)?
                .into_inner();
            writeln!(
                out,
                "registered mapping {} -> {} version {}",
                m.source, m.target, m.version
            )?;
            Ok(())
        }
        MappingCommand::Get {
            source,
            target,
            version,
        } => {
            let m = conn
                .registry()
                .await?
                .get_mapping(pb::GetMappingRequest {
                    source,
                    target,
                    version: version.unwrap_or(0),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            let pretty = serde_json::from_str::<serde_json::Value>(&m.document_json)
                .and_then(|j| serde_json::to_string_pretty(&j))
                .unwrap_or(m.document_json);
            writeln!(out, "{pretty}")?;
            Ok(())
        }
        MappingCommand::SetState {
            source,
            target,
            version,
            state,
        } => {
            let proto = parse_state(&state)?;
            let m = conn
                .registry()
                .await?
                .set_mapping_state(pb::SetMappingStateRequest {
                    source,
                    target,
                    version,
                    state: proto as i32,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            writeln!(
                out,
                "mapping {} -> {} version {} is {}",
                m.source,
                m.target,
                m.version,
                state.to_lowercase()
            )?;
            Ok(())
        }
        MappingCommand::Test {
            mapping,
            source_schema,
            target_schema,
            secrets,
            purpose,
            limit,
            json,
        } => {
            let offline = source_schema.is_some() || target_schema.is_some();
            if !offline {
                if !conn.names_a_broker() {
                    return Err(Failure::Usage(anyhow!(
                        "mapping test needs --source-schema and --target-schema (offline) or --broker (on live records)"
                    )));
                }
                if !secrets.is_empty() {
                    return Err(Failure::Usage(anyhow!(
                        "--secret is for offline tests; the broker uses the secrets it holds"
                    )));
                }
                let purpose = purpose.ok_or_else(|| {
                    Failure::Usage(anyhow!(
                        "--purpose is needed to test on live records: the agreement's purpose"
                    ))
                })?;
                let document = read(&mapping)?;
                return test_on_broker(conn, document, purpose, limit, json, &mut out).await;
            }
            if purpose.is_some() || limit.is_some() || json {
                return Err(Failure::Usage(anyhow!(
                    "--purpose, --limit and --json are for tests on live records (--broker without schema files)"
                )));
            }
            let (Some(source_schema), Some(target_schema)) = (source_schema, target_schema) else {
                return Err(Failure::Usage(anyhow!(
                    "an offline mapping test needs both --source-schema and --target-schema"
                )));
            };
            let text = read(&mapping)?;
            let format = jembatan_mapping::Format::from_path(&mapping)
                .map_err(|e| Failure::Usage(anyhow!("{e}")))?;
            let parsed = jembatan_mapping::Mapping::parse(&text, format)
                .map_err(|e| Failure::Usage(anyhow!("{}: {e}", mapping.display())))?;
            let source = load_schema(&source_schema)?;
            let target = load_schema(&target_schema)?;
            let checked = parsed
                .check(source.value(), target.value())
                .map_err(|errors| {
                    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    Failure::Usage(anyhow!(
                        "{} does not type-check:\n  {}",
                        mapping.display(),
                        lines.join("\n  ")
                    ))
                })?;
            let mut keys = jembatan_mapping::Secrets::new();
            for s in &secrets {
                let (name, hex_key) = s
                    .split_once('=')
                    .ok_or_else(|| Failure::Usage(anyhow!("--secret {s:?}: expected NAME=HEX")))?;
                let key = hex::decode(hex_key)
                    .map_err(|e| Failure::Usage(anyhow!("--secret {name}: not hex: {e}")))?;
                keys.insert(name, key);
            }
            let stdin = std::io::stdin().lock();
            let writer = std::io::BufWriter::new(out);
            match run_test(&checked, &source, &target, stdin, writer, &keys) {
                Ok(n) => {
                    eprintln!("{n} records mapped");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Dry-runs `document` on live records through the broker and prints its
/// report: 0 when every record checked passed, 1 when one failed, 3 when
/// the test is denied.
async fn test_on_broker(
    conn: &Connection,
    document: String,
    purpose: String,
    limit: Option<u64>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if limit == Some(0) {
        return Err(Failure::Usage(anyhow!("--limit must be at least 1")));
    }
    let mut client =
        jembatan_proto::v1::exchange_client::ExchangeClient::new(conn.channel().await?);
    let report = client
        .test_mapping(pb::TestMappingRequest {
            document,
            purpose,
            limit: limit.unwrap_or(0),
        })
        .await
        .map_err(crate::query::refused)?
        .into_inner();
    if json {
        let value = jembatan_proto::json::to_json(&report)
            .map_err(|e| Failure::Usage(anyhow!("cannot write the report as JSON: {e}")))?;
        writeln!(out, "{value}")?;
    } else {
        print_test_report(out, &report)?;
    }
    if report.records_failed > 0 {
        return Err(Failure::Refused(anyhow!(
            "{} of {} records failed the mapping",
            report.records_failed,
            report.records_checked
        )));
    }
    Ok(())
}

fn print_test_report(out: &mut impl Write, r: &pb::TestMappingResponse) -> std::io::Result<()> {
    writeln!(
        out,
        "mapping {} -> {} version {} (sha256 {}), not registered",
        r.source_schema, r.target_schema, r.mapping_version, r.mapping_sha256
    )?;
    writeln!(
        out,
        "checked {} records: {} passed, {} failed",
        r.records_checked, r.records_passed, r.records_failed
    )?;
    if let Some(f) = &r.first_failure {
        let rule = if f.rule_target.is_empty() {
            String::new()
        } else {
            format!(", rule {} ({})", f.rule, f.rule_target)
        };
        writeln!(
            out,
            "first failure: record {}, step {}{rule}",
            f.record, f.stage
        )?;
        writeln!(out, "  {}", f.message)?;
        if !f.schema_path.is_empty() {
            writeln!(out, "  schema location {}", f.schema_path)?;
        }
        if !f.instance_path.is_empty() {
            writeln!(out, "  at {}", f.instance_path)?;
        }
    }
    if let Some(receipt) = &r.receipt {
        writeln!(
            out,
            "on the audit log: decision entry {}, completion entry {} (exchange {}); no record left the broker",
            receipt.decision_seq, receipt.entry_seq, receipt.exchange_id
        )?;
    }
    Ok(())
}

/// Validate → map → validate each JSON line; stop at the first failure.
fn run_test(
    mapping: &jembatan_mapping::CheckedMapping,
    source: &Schema,
    target: &Schema,
    input: impl BufRead,
    mut output: impl Write,
    secrets: &jembatan_mapping::Secrets,
) -> Result<u64, Failure> {
    let mut n = 0;
    for (i, line) in input.lines().enumerate() {
        let number = i + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let fail = |reason: String| Failure::Refused(anyhow!("record {number}: {reason}"));
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| fail(format!("not JSON: {e}")))?;
        if let Err(issues) = source.validate(&value) {
            return Err(fail(format!(
                "does not match the source schema: {}",
                jembatan_schema::ValidationIssue::summary(&issues)
            )));
        }
        let serde_json::Value::Object(map) = value else {
            return Err(fail("not a JSON object".into()));
        };
        let mapped = mapping
            .apply(&map, secrets)
            .map_err(|e| fail(format!("mapping failed: {e}")))?;
        if let Err(issues) = target.validate(&mapped) {
            return Err(fail(format!(
                "mapped record does not match the target schema: {}",
                jembatan_schema::ValidationIssue::summary(&issues)
            )));
        }
        serde_json::to_writer(&mut output, &mapped).map_err(|e| Failure::Usage(e.into()))?;
        output.write_all(b"\n")?;
        n += 1;
    }
    output.flush()?;
    Ok(n)
}
