//! The `jembatan` command: demo, broker, adapter, PKI and audit log tools.

mod agreement;
mod audit;
mod failure;
mod filter_expr;
mod health;
mod parquet_out;
mod query;
mod schema;
mod store;
mod subscribe;
mod telemetry;
mod verify;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use jembatan_core::{AgencyId, Identity, Role};
use tokio::net::TcpListener;

/// Jembatan: a cross-agency data-exchange bus with agreements and an audit log.
#[derive(Debug, Parser)]
#[command(name = "jembatan", version, about, long_about = None)]
struct Cli {
    /// Log lines on standard error as `text` (human-readable) or `json`
    /// (one object a line).
    #[arg(long, global = true, env = jembatan_telemetry::LOG_FORMAT_VAR, value_name = "FORMAT")]
    log_format: Option<jembatan_telemetry::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole system in this process on loopback with synthetic
    /// agency data, and show allowed, denied and audited exchanges.
    Demo(DemoArgs),
    /// Run the broker.
    Broker {
        /// Broker config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Only create the keys the config names (audit HMAC key,
        /// checkpoint signer key, mapping secrets) where they are missing,
        /// print their files and exit: for replicas that share keys made
        /// beforehand.
        #[arg(long)]
        create_keys: bool,
    },
    /// Run an agency's adapter, or write a starting config for one.
    Adapter(AdapterArgs),
    /// Development PKI: a CA, role certificates and their revocation.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Audit log tools: verify, export, inclusion proofs, tail, who looked
    /// a key up, crosscheck an adapter's receipt log — on the broker's
    /// store, or through a running broker with an auditor's certificate.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// The broker's store: move it from SQLite to PostgreSQL.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// The schema registry: register, list and check dataset schemas
    /// (`check --old --new` works offline).
    Schema {
        #[command(subcommand)]
        command: schema::SchemaCommand,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// Data-sharing agreements: propose, approve, revoke, get, list.
    Agreement {
        #[command(subcommand)]
        command: agreement::AgreementCommand,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// Read a dataset under an agreement (consumer): records streamed to
    /// JSONL or CSV, the receipt checked and printed; exit 3 when denied.
    Query {
        #[command(flatten)]
        args: query::QueryArgs,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// Follow a dataset's changes under an agreement (consumer): one JSON
    /// line per change to JSONL or a NATS JetStream subject, each batch's
    /// receipt checked, resumable from a cursor file; exit 3 when denied.
    Subscribe {
        #[command(flatten)]
        args: subscribe::SubscribeArgs,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// Fetch one record by its key (consumer), or verify values against
    /// it with `--verify FIELD=VALUE`; exit 3 when denied.
    Lookup {
        #[command(flatten)]
        args: query::LookupArgs,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// Verify a list of keys against a dataset (consumer): CSV in — a key
    /// column and the values to check — CSV out, one answer per key
    /// (matches, does_not_match, not_found), up to 10,000 keys a call,
    /// every receipt checked; exit 3 when denied.
    Verify {
        #[command(flatten)]
        args: verify::VerifyArgs,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// Mappings between schemas: register, get, and dry-run on sample
    /// records (`test` works offline).
    Mapping {
        #[command(subcommand)]
        command: schema::MappingCommand,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// Ask a broker's (or adapter's) gRPC health service over mutual TLS,
    /// for readiness and liveness probes: exit 0 when serving, 1 when not,
    /// 2 when unreachable.
    Health {
        #[command(flatten)]
        args: health::HealthArgs,
        #[command(flatten)]
        connection: schema::Connection,
    },
    /// The auditor's and operator's console in the browser: a gRPC client
    /// of the broker with its own certificate, serving HTML on loopback
    /// (see docs/console.md).
    Console(ConsoleArgs),
    /// Measure Jembatan against direct PostgreSQL reads in the same run
    /// (bulk query, lookups, audit appends, memory); see docs/benchmarks.md.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Rows in the benchmark table [default: 1000000, 50000 with --quick].
    #[arg(long)]
    rows: Option<u64>,
    /// PostgreSQL server; a schema and a database are created there and
    /// dropped at the end.
    #[arg(long, default_value = jembatan_bench::DEFAULT_PG_URL)]
    pg: String,
    /// Small and short, for smoke runs (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Duration of each timed phase [default: 10s, 2s with --quick].
    #[arg(long, value_parser = jembatan_bench::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Run only these parts (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<jembatan_bench::Part>,
}

impl BenchArgs {
    async fn run(self) -> Result<()> {
        let exe = std::env::current_exe().ok();
        let mut options =
            jembatan_bench::Options::new(self.rows, self.pg, self.quick, self.duration, exe);
        options.only = self.only;
        let report = jembatan_bench::run(&options).await?;
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{}", report.to_json())?;
        } else {
            write!(out, "{report}")?;
        }
        out.flush()?;
        Ok(())
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ConsoleArgs {
    #[command(subcommand)]
    command: Option<ConsoleCommand>,
    /// Console config file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ConsoleCommand {
    /// Read a password from standard input and print its argon2id hash,
    /// for a `[[users]]` entry of the console's config.
    HashPassword,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Keep the databases, broker store, configs and certificates in DIR
    /// (a new or empty directory).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Residents in the synthetic population registry.
    #[arg(long, default_value_t = 100_000)]
    residents: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AdapterArgs {
    #[command(subcommand)]
    command: Option<AdapterCommand>,
    /// Adapter config file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AdapterCommand {
    /// Introspect a database and write a commented adapter config that
    /// lists every table and column, all disabled (deny by default).
    Init {
        /// Database URL: sqlite://FILE, postgres://..., mysql://...
        #[arg(long)]
        database: String,
        /// Where to write the config; standard output when absent.
        #[arg(long)]
        output: Option<PathBuf>,
        /// CA certificate (PEM) the database server's certificate must
        /// chain to (or sslrootcert / ssl-ca in the URL).
        #[arg(long, value_name = "FILE")]
        database_ca: Option<PathBuf>,
        /// Reach a database off this machine without verified TLS
        /// (refused otherwise); written into the config too.
        #[arg(long)]
        allow_plaintext: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a CA in DIR (ca.pem, ca-key.pem, and an empty revocation
    /// list crl.pem).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Jembatan CA")]
        name: String,
    },
    /// Issue a certificate from the CA in DIR for a role (and agency).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// broker, adapter, agency, integrator, auditor or operator.
        #[arg(long)]
        role: String,
        /// The agency id (for adapter, agency and integrator).
        #[arg(long)]
        agency: Option<String>,
        /// DNS names or IP addresses a server certificate answers to
        /// (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// File name stem; default `<role>[-<agency>]`.
        #[arg(long)]
        name: Option<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 397)]
        days: i64,
    },
    /// Revoke a certificate: add it to the CA's revocation list (crl.pem
    /// in the CA directory, re-signed by the CA). Brokers and adapters
    /// whose `[tls] crl` names that file refuse it within seconds, on new
    /// connections and on every request of open ones.
    Revoke {
        /// The CA directory (ca.pem, ca-key.pem, crl.pem).
        #[arg(long, alias = "dir", value_name = "DIR")]
        ca: PathBuf,
        /// The certificate to revoke (PEM); it must be one this CA issued.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "serial",
            conflicts_with = "serial"
        )]
        cert: Option<PathBuf>,
        /// The serial number to revoke, in hex (as `pki issue` prints it).
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
        /// Why: unspecified, key-compromise, affiliation-changed,
        /// superseded, cessation-of-operation or privilege-withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Pack a certificate and its key into one PKCS#12 file for keystores
    /// that read no PEM (Java's `KeyStore`), encrypted with PBES2
    /// (AES-256-CBC, PBKDF2 with HMAC-SHA-256). The password is read from
    /// a file, never from the command line.
    P12 {
        /// The certificate (PEM) as `pki issue` wrote it; any chain
        /// certificates after it are packed too.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Its private key (PEM, PKCS#8).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The PKCS#12 file to create (0600); an existing file is left
        /// alone and is an error.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// A file whose first line is the password.
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
        /// The entry's name in the keystore; default the certificate
        /// file's name without `.pem`.
        #[arg(long)]
        alias: Option<String>,
    },
    /// Sign the CA's revocation list again, current for DAYS more. A list
    /// past its next update makes brokers and adapters refuse agency,
    /// integrator, auditor and operator certificates: renew it well before
    /// then (e.g. weekly, from cron). Services pick it up within seconds.
    RenewCrl {
        /// The CA directory (ca.pem, ca-key.pem, crl.pem).
        #[arg(long, alias = "dir", value_name = "DIR")]
        ca: PathBuf,
        /// Days until the list's next update (1 to 366).
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// List the certificates on the CA's revocation list.
    Revoked {
        /// The CA directory.
        #[arg(long, alias = "dir", value_name = "DIR")]
        ca: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match runtime.block_on(async { telemetry::install(&cli) }) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // a reader that stopped early (`| head`) is a normal end
        Err(err) if failure::closed_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let done = match cli.command {
        // audit commands report their own errors, with their own exit codes
        Command::Audit {
            command,
            connection,
        } => return Ok(audit::run(command, &connection).await),
        Command::Store { command } => return Ok(store::run(command).await),
        Command::Schema {
            command,
            connection,
        } => return Ok(schema::run_schema(command, &connection).await),
        Command::Mapping {
            command,
            connection,
        } => return Ok(schema::run_mapping(command, &connection).await),
        Command::Agreement {
            command,
            connection,
        } => return Ok(agreement::run(command, &connection).await),
        Command::Query { args, connection } => return Ok(query::run_query(args, &connection).await),
        Command::Subscribe { args, connection } => {
            return Ok(subscribe::run(args, &connection).await);
        }
        Command::Lookup { args, connection } => {
            return Ok(query::run_lookup(args, &connection).await);
        }
        Command::Verify { args, connection } => {
            return Ok(verify::run(args, &connection).await);
        }
        Command::Demo(args) => demo(args).await,
        Command::Health { args, connection } => return Ok(health::run(args, &connection).await),
        Command::Broker {
            config,
            create_keys: true,
        } => create_keys(config),
        Command::Broker {
            config,
            create_keys: false,
        } => broker(config).await,
        Command::Adapter(args) => match (args.command, args.config) {
            (
                Some(AdapterCommand::Init {
                    database,
                    output,
                    database_ca,
                    allow_plaintext,
                }),
                _,
            ) => {
                let tls = jembatan_core::dbtls::DatabaseTls {
                    // absolute: the config resolves paths against its own directory
                    ca: database_ca.map(|p| std::path::absolute(&p).unwrap_or(p)),
                    allow_plaintext,
                };
                adapter_init(database, &tls, output).await
            }
            (None, Some(config)) => adapter(config).await,
            (None, None) => {
                bail!("give --config FILE to run an adapter, or `adapter init --database URL`")
            }
        },
        Command::Pki { command } => pki(command),
        Command::Bench(args) => args.run().await,
        Command::Console(args) => match (args.command, args.config) {
            (Some(ConsoleCommand::HashPassword), _) => hash_password(),
            (None, Some(config)) => console(config).await,
            (None, None) => {
                bail!("give --config FILE to run a console, or `console hash-password`")
            }
        },
    };
    done.map(|()| ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> Result<()> {
    let options = jembatan_demo::scenario::DemoOptions {
        keep: args.keep,
        data: jembatan_demo::data::DataOptions {
            seed: args.seed,
            residents: args.residents,
        },
    };
    let mut out = std::io::stdout().lock();
    jembatan_demo::scenario::run(&options, &mut out).await?;
    out.flush()?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("shutting down");
}

fn create_keys(path: PathBuf) -> Result<()> {
    let config = jembatan_broker::BrokerConfig::load(&path)?;
    for file in jembatan_broker::create_keys(&config)? {
        println!("{}", file.display());
    }
    Ok(())
}

async fn broker(path: PathBuf) -> Result<()> {
    let config = jembatan_broker::BrokerConfig::load(&path)?;
    telemetry::serve_metrics(config.metrics_listen).await?;
    let broker = jembatan_broker::Broker::start(&config).await?;
    let tls = config.tls.server_config()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    eprintln!(
        "broker listening on {} (store {})",
        config.listen, config.store
    );
    let served = jembatan_broker::serve(broker.clone(), listener, tls, shutdown_signal()).await;
    // sign the final checkpoint even when the server failed
    let closed = broker.shutdown().await;
    served?;
    closed?;
    Ok(())
}

async fn console(path: PathBuf) -> Result<()> {
    let config = jembatan_console::ConsoleConfig::load(&path)?;
    let console = jembatan_console::Console::start(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "console ({} certificate) for broker {} listening on http://{addr}\n  log in once with: http://{addr}/login?token={}",
        console.role(),
        config.broker,
        console.token()
    );
    console.serve(listener, shutdown_signal()).await?;
    Ok(())
}

fn hash_password() -> Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 12 {
        bail!("the password must have at least 12 characters");
    }
    let hash = jembatan_console::auth::hash_password(password)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    println!("{hash}");
    Ok(())
}

async fn adapter(path: PathBuf) -> Result<()> {
    let config = jembatan_adapter::AdapterConfig::load(&path)?;
    telemetry::serve_metrics(config.metrics_listen).await?;
    let adapter = std::sync::Arc::new(jembatan_adapter::Adapter::connect(&config).await?);
    let tls = config.tls.server_config()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    eprintln!(
        "adapter of {} listening on {} ({} datasets)",
        config.agency,
        config.listen,
        config.datasets.len()
    );
    jembatan_adapter::serve(adapter, listener, tls, shutdown_signal()).await?;
    Ok(())
}

async fn adapter_init(
    database: String,
    tls: &jembatan_core::dbtls::DatabaseTls,
    output: Option<PathBuf>,
) -> Result<()> {
    let text = jembatan_adapter::introspect_with(&database, tls).await?;
    match output {
        Some(path) => {
            // 0600: the database URL may carry a password
            match jembatan_pki::files::create_secret(&path, text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    bail!("{} exists; refusing to overwrite it", path.display())
                }
                written => written.with_context(|| format!("cannot write {}", path.display()))?,
            }
            eprintln!(
                "wrote {}: every table and column is listed and disabled; uncomment what your agreements name",
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

fn pki(command: PkiCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        PkiCommand::Init { dir, name } => {
            let ca = jembatan_pki::Ca::create(&dir, &name)?;
            ca.write_crl(&jembatan_pki::RevocationList::default())?;
            writeln!(
                out,
                "created CA {}\n  revocation list {}",
                jembatan_pki::Ca::cert_path(&dir).display(),
                jembatan_pki::Ca::crl_path(&dir).display()
            )?;
        }
        PkiCommand::Issue {
            dir,
            role,
            agency,
            hosts,
            name,
            days,
        } => {
            let role = Role::parse(&role).with_context(|| {
                format!("unknown role {role:?}: broker, adapter, agency, integrator, auditor or operator")
            })?;
            let agency: Option<AgencyId> = agency.map(|a| a.parse()).transpose()?;
            let identity = Identity::new(role, agency).map_err(anyhow::Error::msg)?;
            if !(1..=3650).contains(&days) {
                bail!("--days must be between 1 and 3650");
            }
            let ca = jembatan_pki::Ca::load(&dir)?;
            let name = name.unwrap_or_else(|| jembatan_pki::default_name(&identity));
            let files = ca.issue_to(&identity, &hosts, days, &name)?;
            let serial = ca.serial_of_issued(&files.cert)?;
            writeln!(
                out,
                "issued {} for {}\n  serial      {serial}\n  certificate {}\n  key         {}",
                identity,
                identity.uri(),
                files.cert.display(),
                files.key.display()
            )?;
        }
        PkiCommand::Revoke {
            ca,
            cert,
            serial,
            reason,
        } => {
            let reason = jembatan_pki::Reason::parse(&reason).with_context(|| {
                let all: Vec<&str> = jembatan_pki::Reason::ALL
                    .iter()
                    .map(|r| r.as_str())
                    .collect();
                format!("unknown reason {reason:?}: {}", all.join(", "))
            })?;
            let authority = jembatan_pki::Ca::load(&ca)?;
            let (serial, what) = match (cert, serial) {
                (Some(path), _) => {
                    let serial = authority.serial_of_issued(&path)?;
                    let pem = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let who = jembatan_pki::identity_from_pem(&pem)
                        .map(|id| id.to_string())
                        .unwrap_or_else(|_| "no jembatan identity".into());
                    (serial, format!(" ({who}, {})", path.display()))
                }
                (None, Some(hex)) => (
                    jembatan_pki::Serial::parse(&hex).map_err(anyhow::Error::msg)?,
                    String::new(),
                ),
                (None, None) => bail!("give --cert FILE or --serial HEX"),
            };
            let crl = jembatan_pki::Ca::crl_path(&ca);
            let outcome = authority.revoke(&serial, reason)?;
            match outcome {
                jembatan_pki::RevokeOutcome::Revoked { number, listed } => writeln!(
                    out,
                    "revoked serial {serial}{what}: {reason}\n  revocation list {} (CRL number {number}, {listed} revoked)",
                    crl.display()
                ),
                jembatan_pki::RevokeOutcome::AlreadyRevoked(entry) => writeln!(
                    out,
                    "serial {serial} was already revoked on {}; {} unchanged",
                    entry.revoked_at.date(),
                    crl.display()
                ),
            }?;
        }
        PkiCommand::P12 {
            cert,
            key,
            out,
            password_file,
            alias,
        } => {
            let read = |path: &PathBuf| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            };
            let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
            let password = String::from_utf8(read(&password_file)?)
                .with_context(|| format!("{} is not UTF-8 text", password_file.display()))?;
            let password = password.lines().next().unwrap_or_default();
            let identity = jembatan_pki::identity_from_pem(&cert_pem)
                .with_context(|| format!("{} is not a Jembatan certificate", cert.display()))?;
            let alias = alias.unwrap_or_else(|| {
                cert.file_stem().map_or_else(
                    || "jembatan".to_owned(),
                    |s| s.to_string_lossy().into_owned(),
                )
            });
            let p12 = jembatan_pki::pkcs12(&cert_pem, &key_pem, &alias, password)
                .with_context(|| format!("cannot pack {} and {}", cert.display(), key.display()))?;
            jembatan_pki::files::create_secret(&out, &p12)
                .with_context(|| format!("cannot create {}", out.display()))?;
            println!(
                "wrote {} (PKCS#12) for {identity}, entry {alias:?}",
                out.display()
            );
        }
        PkiCommand::RenewCrl { ca, days } => {
            if !(1..=366).contains(&days) {
                bail!("--days must be between 1 and 366");
            }
            let authority = jembatan_pki::Ca::load(&ca)?;
            let (number, next_update) = authority.renew_crl(time::Duration::days(days))?;
            writeln!(
                out,
                "renewed {} (CRL number {number}), current until {next_update}",
                jembatan_pki::Ca::crl_path(&ca).display()
            )?;
        }
        PkiCommand::Revoked { ca } => {
            let authority = jembatan_pki::Ca::load(&ca)?;
            let list = authority.revocation_list()?;
            let current = match list.next_update {
                Some(next) if list.expired(time::OffsetDateTime::now_utc()).is_some() => {
                    format!("EXPIRED at {next}: renew it with `jembatan pki renew-crl`")
                }
                Some(next) => format!("current until {next}"),
                None => "no next update".into(),
            };
            writeln!(
                out,
                "{} (CRL number {}, {current}): {} revoked",
                jembatan_pki::Ca::crl_path(&ca).display(),
                list.number,
                list.len()
            )?;
            for entry in list.entries.values() {
                writeln!(
                    out,
                    "  {}  {}  {}",
                    entry.serial,
                    entry.revoked_at.date(),
                    entry
                        .reason_code
                        .map_or("-", jembatan_pki::crl::reason_name)
                )?;
            }
        }
    }
    Ok(())
}
