//! `jembatan audit`: verify the audit log against its signed checkpoints,
//! export it, prove an entry's inclusion, show its tail, list who looked a
//! key up, and crosscheck an adapter's receipt log. `verify`, `export`,
//! `proof`, `query` and `who-accessed` read either the broker's store
//! (`--store`) or a running broker's `Audit` service with an auditor's
//! certificate (`--broker --ca --cert --key`, `remote.rs`); `tail` and
//! `crosscheck` read the store.
//!
//! Exit codes: 0 success, 1 the log failed verification (or a proof cannot
//! be made from it, or a receipt log disagrees with it), 2 usage errors and
//! unreadable stores, keys or receipt logs.

mod crosscheck;
mod remote;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Subcommand, ValueEnum};
use jembatan_core::AuditEntry;
use jembatan_store::archive::{
    ArchiveError, ArchiveReport, Bound, Progress, archive, read_entry, verify_archive,
};
use jembatan_store::verify::{VerifyError, leaf_hashes, verify};
use jembatan_store::{EntryQuery, Store};
use jembatan_tlog::merkle::{self, leaf_hash};
use jembatan_tlog::note::Verifier;

use crate::failure::Failure;
use crate::query::csv_quote;
use crate::schema::Connection;

/// Entries read per page.
const PAGE: u64 = 1000;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify every entry and checkpoint of the log with the checkpoint
    /// public key; exit 1 naming the first problem. Through a broker
    /// (`--broker`), every entry is streamed from its Audit service and
    /// checked against the signed checkpoints it returns, trusting only
    /// the key.
    Verify {
        /// The broker store: a SQLite file path or sqlite:PATH, or
        /// postgres://... (or `--broker` and an auditor's certificate).
        #[arg(long)]
        store: Option<String>,
        /// File holding the checkpoint verifier key (`checkpoint.key.pub`).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// An archive file (`audit archive`) to verify as well; repeat for
        /// each. With --store they must cover every archived entry.
        #[arg(long = "archive", value_name = "FILE")]
        archives: Vec<PathBuf>,
    },
    /// Move the oldest entries out of the store into a file that verifies
    /// on its own: the entries from where the last archive ended up to the
    /// newest signed checkpoint within --below or --before, each checked
    /// first. Entries leave the store up to that checkpoint's size rounded
    /// down to 256; proofs of them are still served. The broker may run.
    #[command(group(clap::ArgGroup::new("bound").required(true).args(["below", "before"])))]
    Archive {
        /// The broker store: a SQLite file path or sqlite:PATH, or
        /// postgres://...
        #[arg(long)]
        store: String,
        /// File holding the checkpoint verifier key (`checkpoint.key.pub`).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Archive entries below this seq.
        #[arg(long, value_name = "SEQ")]
        below: Option<u64>,
        /// Archive entries recorded before this time (RFC 3339 or
        /// YYYY-MM-DD).
        #[arg(long, value_name = "TIME", value_parser = instant)]
        before: Option<String>,
        /// The archive file to write; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write every entry to standard output.
    Export {
        /// The broker store (or `--broker` and an auditor's certificate).
        #[arg(long)]
        store: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
    /// Print the inclusion proof of one entry in a checkpointed tree (JSON).
    Proof {
        /// The broker store (or `--broker` and an auditor's certificate).
        #[arg(long)]
        store: Option<String>,
        /// The entry's seq (leaf index).
        #[arg(long)]
        index: u64,
        /// Tree size of the checkpoint to prove against; the latest when absent.
        #[arg(long)]
        size: Option<u64>,
        /// Through a broker: also check the checkpoint's signature with
        /// this verifier key file (the proof is always checked against
        /// the checkpoint's root).
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// The archive file holding the entry, once it is archived: the
        /// proof is checked against the entry there.
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
    },
    /// List the entries that match every filter given, oldest first.
    Query {
        /// The broker store: a SQLite file path or sqlite:PATH, or
        /// postgres://... (or `--broker` and an auditor's certificate).
        #[arg(long)]
        store: Option<String>,
        /// Entries whose consumer or provider is this agency.
        #[arg(long)]
        agency: Option<String>,
        /// Dataset id, `<agency>.<dataset>`.
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long)]
        purpose: Option<String>,
        /// `allow` or `deny`.
        #[arg(long, value_parser = ["allow", "deny"])]
        decision: Option<String>,
        #[arg(long, value_parser = ["started", "denied", "invalid", "ok", "failed", "cancelled", "stopped", "abandoned"])]
        status: Option<String>,
        /// Entries at or after this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_parser = instant)]
        from: Option<String>,
        /// Entries before this time (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_parser = instant)]
        until: Option<String>,
        /// Only the entries whose stored filter holds a consumer's values
        /// in clear (written before entry format 2, which logs filter
        /// values as keyed hashes and shapes), as seq, exchange id and
        /// time; the count goes to standard error.
        #[arg(long)]
        raw_filters: bool,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
    },
    /// Show the latest entries.
    Tail {
        #[arg(long)]
        store: String,
        /// How many entries.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        lines: u64,
    },
    /// List every entry naming one key (say, a resident's NIK): the lookups
    /// by it and the queries whose filter named it on a subject-key field
    /// — who, when, why, and what the broker decided.
    WhoAccessed {
        /// The broker store (or `--broker` and an auditor's certificate).
        #[arg(long)]
        store: Option<String>,
        /// The broker's audit HMAC key file (`audit_key` in its config).
        #[arg(long, value_name = "FILE")]
        audit_key: PathBuf,
        /// The dataset looked up, `<agency>.<dataset>`.
        #[arg(long)]
        dataset: String,
        /// The lookup key, as the consumer sent it (`--key` names this
        /// caller's private key when reading through a broker).
        #[arg(value_name = "KEY")]
        lookup_key: String,
    },
    /// Compare an adapter's receipt log with the broker's log; exit 1
    /// naming every exchange on which they disagree.
    Crosscheck {
        #[arg(long)]
        store: String,
        /// The adapter's receipt log (`receipt_log` in its config).
        #[arg(long, value_name = "FILE")]
        receipts: PathBuf,
        /// The broker's checkpoint public key: the checkpoints on the
        /// receipts must carry its signature. Without it they are only
        /// parsed and compared with the log.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

/// Where the log is read: the broker's store, or a running broker.
enum Source<'a> {
    Store(String),
    Broker(&'a Connection),
}

impl Source<'_> {
    fn of(store: Option<String>, conn: &Connection) -> Result<Source<'_>, Failure> {
        match store {
            Some(store) => Ok(Source::Store(store)),
            None if conn.names_a_broker() => Ok(Source::Broker(conn)),
            None => Err(Failure::Usage(anyhow!(
                "give --store (the broker's store) or --broker https://host:port with \
                 --ca, --cert and --key (an auditor's certificate)"
            ))),
        }
    }
}

pub(crate) async fn run(command: AuditCommand, conn: &Connection) -> ExitCode {
    crate::failure::exit(audit(command, conn).await)
}

async fn audit(command: AuditCommand, conn: &Connection) -> Result<(), Failure> {
    match command {
        AuditCommand::Verify {
            store,
            public_key,
            archives,
        } => {
            let files = verify_archives(&archives, &public_key).await?;
            if store.is_none() && !conn.names_a_broker() && !files.is_empty() {
                return Ok(());
            }
            match Source::of(store, conn)? {
                Source::Store(store) => verify_log(&store, &public_key, &files).await,
                Source::Broker(conn) => remote::verify(conn, &public_key).await,
            }
        }
        AuditCommand::Archive {
            store,
            public_key,
            below,
            before,
            out,
        } => {
            let bound = match (below, before) {
                (Some(seq), _) => Bound::Below(seq),
                (None, Some(time)) => Bound::Before(time),
                (None, None) => return Err(Failure::Usage(anyhow!("give --below or --before"))),
            };
            archive_log(&store, &public_key, &bound, &out).await
        }
        AuditCommand::Export { store, format } => match Source::of(store, conn)? {
            Source::Store(store) => export(&store, format).await,
            Source::Broker(conn) => {
                remote::query(
                    conn,
                    jembatan_proto::v1::QueryEntriesRequest::default(),
                    format,
                    false,
                )
                .await
            }
        },
        AuditCommand::Proof {
            store,
            index,
            size,
            public_key,
            archive,
        } => {
            let archived = archive
                .map(|file| {
                    let entry = read_entry(&file, index).map_err(archive_error)?;
                    Ok::<_, Failure>(leaf_hash(&entry))
                })
                .transpose()?;
            match Source::of(store, conn)? {
                Source::Store(store) => proof(&store, index, size, archived).await,
                Source::Broker(conn) => {
                    remote::proof(conn, index, size, public_key.as_deref(), archived).await
                }
            }
        }
        AuditCommand::Tail { store, lines } => tail(&store, lines).await,
        AuditCommand::Query {
            store,
            agency,
            dataset,
            purpose,
            decision,
            status,
            from,
            until,
            raw_filters,
            format,
        } => {
            let query = EntryQuery {
                agency,
                dataset,
                purpose,
                decision,
                status,
                from,
                until,
                ..EntryQuery::default()
            };
            match Source::of(store, conn)? {
                Source::Store(store) if raw_filters => {
                    raw_filter_entries(&store, query, format).await
                }
                Source::Store(store) => query_log(&store, query, format).await,
                Source::Broker(conn) => {
                    remote::query(conn, remote::request(query)?, format, raw_filters).await
                }
            }
        }
        AuditCommand::WhoAccessed {
            store,
            audit_key,
            dataset,
            lookup_key,
        } => {
            let (dataset, hash) = subject(&audit_key, &dataset, &lookup_key)?;
            match Source::of(store, conn)? {
                Source::Store(store) => who_accessed(&store, &dataset, &hash).await,
                Source::Broker(conn) => remote::who_accessed(conn, &dataset, &hash).await,
            }
        }
        AuditCommand::Crosscheck {
            store,
            receipts,
            public_key,
        } => crosscheck(&store, &receipts, public_key.as_deref()).await,
    }
}

async fn open(url: &str) -> Result<Store, Failure> {
    Ok(Store::open_existing(url)
        .await
        .with_context(|| format!("cannot open the store {url}"))?)
}

fn store_error(err: VerifyError) -> Failure {
    match err {
        VerifyError::Store(e) => Failure::Usage(anyhow!("cannot read the store: {e}")),
        other => Failure::Refused(anyhow!("verification failed: {other}")),
    }
}

/// Reads a checkpoint verifier key file.
fn read_verifier(path: &std::path::Path) -> Result<Verifier, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key {}", path.display()))?;
    Ok(text
        .trim()
        .parse()
        .with_context(|| format!("{} is not a verifier key", path.display()))?)
}

async fn verify_log(
    url: &str,
    public_key: &std::path::Path,
    files: &[(PathBuf, ArchiveReport)],
) -> Result<(), Failure> {
    let verifier = read_verifier(public_key)?;
    let store = open(url).await?;
    let result = verify(&store, &verifier).await;
    let latest = store.latest_checkpoint().await;
    let records = store.archives().await;
    store.close().await;
    let report = result.map_err(store_error)?;
    let latest = latest.map_err(|e| store_error(VerifyError::Store(e)))?;
    let records = records.map_err(|e| store_error(VerifyError::Store(e)))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "verified {}, root {}, {} checkpoints",
        entries_verified(report.size, report.archived),
        report.root_hex(),
        report.checkpoints
    )?;
    let latest = latest.map(|c| (c.size, c.created_at));
    writeln!(out, "{}", coverage(report.size, latest, NEXT_CHECKPOINT))?;
    if report.archived == 0 {
        return Ok(());
    }
    if files.is_empty() {
        writeln!(out, "{}", archived_note(report.archived))?;
        for r in &records {
            writeln!(
                out,
                "  archived {}: entries {} to {} in a file of sha256 {}",
                r.archived_at,
                r.from_seq,
                r.checkpoint - 1,
                r.file_sha256
            )?;
        }
        return Ok(());
    }
    // the files given must leave no archived entry unchecked
    let mut ranges: Vec<(u64, u64)> = files.iter().map(|(_, f)| (f.from, f.to)).collect();
    ranges.sort_unstable();
    let mut covered = 0;
    for (from, to) in ranges {
        if from > covered {
            break;
        }
        covered = covered.max(to);
    }
    if covered < report.archived {
        return Err(Failure::Refused(anyhow!(
            "verification failed: entries {covered} to {} are archived, but no archive file given holds them",
            report.archived - 1
        )));
    }
    writeln!(
        out,
        "the archive files hold every archived entry (below {})",
        report.archived
    )?;
    Ok(())
}

/// "N entries", or the range checked when the oldest are archived.
fn entries_verified(size: u64, archived: u64) -> String {
    match archived {
        0 => format!("{size} entries"),
        n if n >= size => format!("0 entries (all {size} are archived)"),
        n => format!("{} entries (from entry {n} on)", size - n),
    }
}

/// What a verification of the store says of its archived entries.
fn archived_note(archived: u64) -> String {
    format!(
        "entries below {archived} are archived: checked here through the tree's tiles and the \
         signed checkpoints only; check their entries with `jembatan audit verify --archive FILE`"
    )
}

/// Verifies each archive file, printing what it holds.
async fn verify_archives(
    paths: &[PathBuf],
    public_key: &std::path::Path,
) -> Result<Vec<(PathBuf, ArchiveReport)>, Failure> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let verifier = read_verifier(public_key)?;
    let mut files = Vec::new();
    for path in paths {
        let (file, verifier) = (path.clone(), verifier.clone());
        let report = tokio::task::spawn_blocking(move || verify_archive(&file, &verifier))
            .await
            .map_err(|e| anyhow!("archive verification stopped: {e}"))?
            .map_err(archive_error)?;
        writeln!(
            std::io::stdout().lock(),
            "verified archive {}: entries {} to {}, root {}, {} checkpoints, sha256 {}",
            path.display(),
            report.from,
            report.to - 1,
            hex::encode(report.root),
            report.checkpoints,
            report.file_sha256
        )?;
        files.push((path.clone(), report));
    }
    Ok(files)
}

fn archive_error(err: ArchiveError) -> Failure {
    match err {
        ArchiveError::Verify(VerifyError::Store(e)) | ArchiveError::Store(e) => {
            Failure::Usage(anyhow!("cannot read the store: {e}"))
        }
        e @ (ArchiveError::Verify(_) | ArchiveError::File { .. }) => {
            Failure::Refused(anyhow!("verification failed: {e}"))
        }
        e @ (ArchiveError::Io { .. } | ArchiveError::Exists(_) | ArchiveError::Nothing(_)) => {
            Failure::Usage(anyhow!("{e}"))
        }
    }
}

async fn archive_log(
    url: &str,
    public_key: &std::path::Path,
    bound: &Bound,
    path: &std::path::Path,
) -> Result<(), Failure> {
    let verifier = read_verifier(public_key)?;
    let store = open(url).await?;
    let mut shown = std::time::Instant::now();
    let mut progress = |p: Progress| {
        let (what, done, total) = match p {
            Progress::Writing { done, total } => ("checked and written", done, total),
            Progress::Removing { done, total } => ("removed from the store", done, total),
        };
        if done == total || shown.elapsed() >= std::time::Duration::from_secs(1) {
            shown = std::time::Instant::now();
            eprintln!("archive: {done} of {total} entries {what}");
        }
    };
    let result = archive(&store, &verifier, bound, path, &mut progress).await;
    store.close().await;
    let done = result.map_err(archive_error)?;
    let r = &done.record;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "archived entries {} to {} to {} ({} bytes, sha256 {}), checked against the signed checkpoint at size {}",
        r.from_seq,
        r.checkpoint - 1,
        path.display(),
        done.bytes,
        r.file_sha256,
        r.checkpoint
    )?;
    writeln!(
        out,
        "entries below {} have left the store ({} rows with their subject index){}",
        r.up_to,
        done.removed,
        if r.checkpoint > r.up_to {
            format!(
                "; entries {} to {} stay in it too: an archived range ends on a multiple of 256",
                r.up_to,
                r.checkpoint - 1
            )
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "keep the file: `jembatan audit verify --archive {} --public-key KEY` checks it on its own",
        path.display()
    )?;
    Ok(())
}

/// When a broker signs checkpoints, as its config says.
const NEXT_CHECKPOINT: &str = "the broker signs the next checkpoint after its checkpoint_every \
                               new entries (default 1000) or its checkpoint_interval (default 10s), \
                               whichever comes first, and when it shuts down";

/// What the signed checkpoints cover of a log of `size` entries, given the
/// latest checkpoint's size and when it was signed: an auditor trusts an
/// entry through a checkpoint signed over it, so the newest entries not
/// yet under one are named, with when the next is due (`next`).
fn coverage(size: u64, latest: Option<(u64, String)>, next: &str) -> String {
    match latest {
        _ if size == 0 => "the log is empty".to_owned(),
        None => format!("none of the {size} entries is under a signed checkpoint yet: {next}"),
        Some((covered, signed)) if covered >= size => format!(
            "every entry is under the latest signed checkpoint ({covered} entries, signed {signed})"
        ),
        Some((covered, signed)) => format!(
            "the newest {} entries (indexes {covered} to {}) are not under a signed checkpoint yet; \
             the latest covers {covered} entries, signed {signed}; {next}",
            size - covered,
            size - 1,
        ),
    }
}

/// A time argument, normalized to the form entries are stored with.
fn instant(s: &str) -> Result<String, jembatan_core::agreement::BadInstant> {
    jembatan_core::agreement::parse_instant(s).map(|t| jembatan_core::agreement::format_instant(&t))
}

/// Says on standard error that the entries below the archived point are
/// not in the store, when some are archived.
async fn note_archived(store: &Store) -> Result<(), Failure> {
    let archived = store
        .archived_up_to()
        .await
        .context("cannot read the store")?;
    if archived > 0 {
        eprintln!(
            "note: entries below {archived} are archived and no longer in the store: \
             they are in the archive files (one entry per line, as `audit export` writes them)"
        );
    }
    Ok(())
}

async fn query_log(url: &str, mut query: EntryQuery, format: Format) -> Result<(), Failure> {
    let store = open(url).await?;
    note_archived(&store).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if format == Format::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    loop {
        let page = store
            .query_entries(&query, PAGE)
            .await
            .context("cannot read the store")?;
        let Some(last) = page.last() else { break };
        query.from_seq = last.seq + 1;
        for row in &page {
            match format {
                Format::Jsonl => {
                    writeln!(out, "{}", jsonl(row.seq, &row.entry, &row.entry_sha256)?)?
                }
                Format::Csv => writeln!(out, "{}", csv(row.seq, &row.entry)?)?,
            }
        }
    }
    out.flush()?;
    store.close().await;
    Ok(())
}

/// The entries matching `query` whose filter holds values in clear: seq,
/// exchange id and time of each, then their count on standard error.
async fn raw_filter_entries(
    url: &str,
    mut query: EntryQuery,
    format: Format,
) -> Result<(), Failure> {
    let store = open(url).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if format == Format::Csv {
        writeln!(out, "seq,exchange_id,time")?;
    }
    let mut found = 0u64;
    loop {
        let page = store
            .query_entries(&query, PAGE)
            .await
            .context("cannot read the store")?;
        let Some(last) = page.last() else { break };
        query.from_seq = last.seq + 1;
        for row in &page {
            found += u64::from(raw_filter_line(&mut out, row.seq, &row.entry, format)?);
        }
    }
    out.flush()?;
    store.close().await;
    eprintln!("{found} entries hold filter values in clear");
    Ok(())
}

/// Writes the entry's seq, exchange id and time when its stored filter
/// holds a consumer's values in clear; whether it did.
fn raw_filter_line(
    out: &mut impl Write,
    seq: u64,
    bytes: &[u8],
    format: Format,
) -> Result<bool, Failure> {
    let e = parse(seq, bytes)?;
    if !e.holds_raw_filter_values() {
        return Ok(false);
    }
    match format {
        Format::Jsonl => writeln!(
            out,
            "{}",
            serde_json::json!({"seq": seq, "exchange_id": e.exchange_id, "time": e.time})
        )?,
        Format::Csv => writeln!(
            out,
            "{},{},{}",
            seq,
            csv_quote(&e.exchange_id),
            csv_quote(&e.time)
        )?,
    }
    Ok(true)
}

const CSV_HEADER: &str = "seq,time,kind,caller,consumer,provider,dataset,purpose,decision,status,rows,bytes,payload_sha256,reasons,leaf_hash";

/// Every entry: a query with no filter.
async fn export(url: &str, format: Format) -> Result<(), Failure> {
    query_log(url, EntryQuery::default(), format).await
}

fn parse(seq: u64, bytes: &[u8]) -> Result<AuditEntry, Failure> {
    serde_json::from_slice(bytes)
        .map_err(|e| Failure::Refused(anyhow!("entry {seq}: not an audit entry: {e}")))
}

/// An entry as `export --format jsonl` writes it.
fn jsonl(seq: u64, bytes: &[u8], entry_sha256: &str) -> Result<String, Failure> {
    jembatan_store::archive::entry_line(seq, bytes, entry_sha256)
        .map_err(|e| Failure::Refused(anyhow!(e)))
}

/// An entry as a CSV line under [`CSV_HEADER`].
fn csv(seq: u64, bytes: &[u8]) -> Result<String, Failure> {
    let e = parse(seq, bytes)?;
    let reasons = e
        .reasons
        .iter()
        .map(|r| r.code.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let fields = [
        seq.to_string(),
        e.time,
        e.kind.as_str().to_owned(),
        e.caller,
        e.consumer.unwrap_or_default(),
        e.provider.unwrap_or_default(),
        e.dataset.unwrap_or_default(),
        e.purpose.unwrap_or_default(),
        e.decision.as_str().to_owned(),
        e.status.as_str().to_owned(),
        e.rows.to_string(),
        e.bytes.to_string(),
        e.payload_sha256.unwrap_or_default(),
        reasons,
        hex::encode(leaf_hash(bytes)),
    ];
    Ok(fields
        .iter()
        .map(|f| csv_quote(f))
        .collect::<Vec<_>>()
        .join(","))
}

/// `audit proof --store`; `archived` is the entry's leaf hash from an
/// archive file, when one was given.
async fn proof(
    url: &str,
    index: u64,
    size: Option<u64>,
    archived: Option<merkle::Hash>,
) -> Result<(), Failure> {
    let store = open(url).await?;
    let checkpoint = match size {
        Some(size) => store
            .checkpoint_at(size)
            .await
            .context("cannot read the store")?
            .ok_or_else(|| anyhow!("no checkpoint at size {size}"))?,
        None => store
            .latest_checkpoint()
            .await
            .context("cannot read the store")?
            .ok_or_else(|| anyhow!("the log has no checkpoint yet"))?,
    };
    let size = checkpoint.size;
    if index >= size {
        return Err(Failure::Usage(anyhow!(
            "index {index} is not below the checkpoint's size {size}"
        )));
    }
    let proved = from_tiles(&store, index, size).await;
    if let Some(proved) = proved.transpose() {
        store.close().await;
        let (leaf, proof, in_archive) = proved?;
        if archived.is_some_and(|from_file| from_file != leaf) {
            return Err(Failure::Refused(anyhow!(
                "entry {index} in the archive file is not the entry the tree holds"
            )));
        }
        let root: merkle::Hash = hex::decode(&checkpoint.root_hash)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| anyhow!("checkpoint at size {size}: its stored root is not a hash"))?;
        merkle::verify_inclusion(&leaf, index, size, &proof, &root).map_err(|e| {
            Failure::Refused(anyhow!(
                "checkpoint at size {size}: the tree's tiles do not prove entry {index} in it: {e}"
            ))
        })?;
        return print_proof(
            index,
            size,
            &leaf,
            &proof,
            &root,
            &checkpoint.note,
            in_archive,
        );
    }
    // a store whose tiles are not built yet: from every entry
    let leaves = leaf_hashes(&store, size).await.map_err(store_error)?;
    store.close().await;
    if (leaves.len() as u64) < size {
        return Err(Failure::Refused(anyhow!(
            "checkpoint at size {size}: the log has only {} entries",
            leaves.len()
        )));
    }
    let root = merkle::root(&leaves);
    if hex::encode(root) != checkpoint.root_hash {
        return Err(Failure::Refused(anyhow!(
            "checkpoint at size {size}: root does not match the entries"
        )));
    }
    let proof = merkle::inclusion_proof(&leaves, index, size)
        .map_err(|e| Failure::Usage(anyhow!("cannot prove entry {index}: {e}")))?;
    let leaf = leaves
        .get(usize::try_from(index).unwrap_or(usize::MAX))
        .ok_or_else(|| anyhow!("entry {index} is not on the log"))?;
    print_proof(index, size, leaf, &proof, &root, &checkpoint.note, false)
}

/// The leaf hash of entry `index` and its inclusion proof in the tree of
/// `size` entries, made from the stored tiles (the leaf from its entry,
/// or from the tiles once archived), and whether it is archived; `None`
/// when the tiles do not reach that far.
async fn from_tiles(
    store: &Store,
    index: u64,
    size: u64,
) -> Result<Option<(merkle::Hash, Vec<merkle::Hash>, bool)>, Failure> {
    let inputs = store
        .inclusion_inputs(index, size)
        .await
        .map_err(|e| Failure::Usage(anyhow!("cannot read the store: {e}")))?;
    let archived = inputs.archived;
    let Ok(proof) = inputs.tiles.inclusion_proof(index, size) else {
        return if archived {
            Err(Failure::Refused(anyhow!(
                "entry {index} is archived and the tree's tiles cannot prove it"
            )))
        } else {
            Ok(None)
        };
    };
    let leaf = inputs.leaf.ok_or_else(|| {
        Failure::Refused(if archived {
            anyhow!("entry {index} is archived and its leaf is not in the tree's tiles")
        } else {
            anyhow!("entry {index} missing from the store")
        })
    })?;
    Ok(Some((leaf, proof, archived)))
}

fn print_proof(
    index: u64,
    size: u64,
    leaf: &merkle::Hash,
    proof: &[merkle::Hash],
    root: &merkle::Hash,
    note: &str,
    archived: bool,
) -> Result<(), Failure> {
    let mut out = serde_json::json!({
        "index": index,
        "size": size,
        "leaf_hash": hex::encode(leaf),
        "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
        "root": hex::encode(root),
        "checkpoint": note,
    });
    if archived {
        // the entry itself is in an archive file: its leaf_hash there is
        // the one proven here
        out["archived"] = serde_json::Value::Bool(true);
    }
    let text = serde_json::to_string_pretty(&out)
        .map_err(|e| Failure::Usage(anyhow!("cannot encode the proof: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

async fn tail(url: &str, lines: u64) -> Result<(), Failure> {
    let store = open(url).await?;
    let size = store
        .audit_log_size()
        .await
        .context("cannot read the store")?;
    let rows = store
        .raw_entries(size.saturating_sub(lines), lines)
        .await
        .context("cannot read the store")?;
    store.close().await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>6}  {:<27} {:<10} {:<17} {:<24} {:<6} {:<9} {:>6}  exchange",
        "seq", "time", "kind", "caller", "dataset", "dec.", "status", "rows"
    )?;
    for row in &rows {
        let e = parse(row.seq, &row.entry)?;
        writeln!(
            out,
            "{:>6}  {:<27} {:<10} {:<17} {:<24} {:<6} {:<9} {:>6}  {}",
            row.seq,
            e.time,
            e.kind.as_str(),
            e.caller,
            e.dataset.as_deref().unwrap_or("-"),
            e.decision.as_str(),
            e.status.as_str(),
            e.rows,
            e.exchange_id
        )?;
    }
    Ok(())
}

/// The dataset and the keyed hash of a key looked up in it: the key
/// itself goes no further than this.
fn subject(
    audit_key: &std::path::Path,
    dataset: &str,
    key: &str,
) -> Result<(jembatan_core::DatasetId, String), Failure> {
    let dataset: jembatan_core::DatasetId = dataset
        .parse()
        .map_err(|e| anyhow!("--dataset {dataset:?}: {e}"))?;
    let audit_key = jembatan_broker::read_audit_key(audit_key).map_err(anyhow::Error::from)?;
    let hash = jembatan_broker::subject_hash(&audit_key, dataset.as_str(), key);
    Ok((dataset, hash))
}

async fn who_accessed(
    url: &str,
    dataset: &jembatan_core::DatasetId,
    hash: &str,
) -> Result<(), Failure> {
    let store = open(url).await?;
    note_archived(&store).await?;
    let mut query = EntryQuery {
        subject_hash: Some(hash.to_owned()),
        ..EntryQuery::default()
    };
    let mut rows = Vec::new();
    loop {
        let page = store
            .query_entries(&query, PAGE)
            .await
            .context("cannot read the store")?;
        let Some(last) = page.last() else { break };
        query.from_seq = last.seq + 1;
        rows.extend(page);
    }
    store.close().await;
    let rows: Vec<(u64, Vec<u8>)> = rows.into_iter().map(|r| (r.seq, r.entry)).collect();
    print_subject_entries(dataset, hash, &rows)
}

/// The entries naming one subject, as a table: who (the consumer, or
/// the auditor whose read of this subject's history is on the log),
/// when, why and what the broker decided.
fn print_subject_entries(
    dataset: &jembatan_core::DatasetId,
    hash: &str,
    rows: &[(u64, Vec<u8>)],
) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        writeln!(
            out,
            "no entries: no lookup or filter named this key in {dataset} (subject hash {hash})"
        )?;
        return Ok(());
    }
    let count = match rows.len() {
        1 => "1 entry".to_owned(),
        n => format!("{n} entries"),
    };
    writeln!(
        out,
        "{count} for this key in {dataset} (subject hash {hash})"
    )?;
    writeln!(
        out,
        "{:>6}  {:<27} {:<10} {:<7} {:<14} {:<6} {:<9} {:>4}  {:<36}  purpose",
        "seq", "time", "kind", "op", "who", "dec.", "status", "rows", "exchange"
    )?;
    for (seq, bytes) in rows {
        let e = parse(*seq, bytes)?;
        writeln!(
            out,
            "{:>6}  {:<27} {:<10} {:<7} {:<14} {:<6} {:<9} {:>4}  {:<36}  {}",
            seq,
            e.time,
            e.kind.as_str(),
            e.operation,
            e.consumer.as_deref().unwrap_or(&e.caller),
            e.decision.as_str(),
            e.status.as_str(),
            e.rows,
            e.exchange_id,
            e.purpose.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}

async fn crosscheck(
    url: &str,
    receipts: &std::path::Path,
    public_key: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let lines = jembatan_adapter::read_receipt_log(receipts).map_err(anyhow::Error::from)?;
    let verifier = public_key.map(read_verifier).transpose()?;
    let store = open(url).await?;
    let result = crosscheck::crosscheck(&store, &lines, verifier.as_ref()).await;
    store.close().await;
    let report = result.context("cannot read the store")?;
    let mut out = std::io::stdout().lock();
    for finding in &report.mismatches {
        writeln!(out, "{finding}")?;
    }
    if report.archived > 0 {
        writeln!(
            out,
            "{} lines are of exchanges whose entries are archived (before the store's first entry): not compared",
            report.archived
        )?;
    }
    let checked = format!(
        "{} served fetches, {} change polls, {} receipts and {} checkpoints in {}",
        report.served,
        report.changes,
        report.receipts,
        report.checkpoints,
        receipts.display()
    );
    if report.mismatches.is_empty() {
        writeln!(
            out,
            "crosschecked {checked}: all agree with the broker's log"
        )?;
        Ok(())
    } else {
        let n = report.mismatches.len();
        let plural = if n == 1 { "" } else { "es" };
        Err(Failure::Refused(anyhow!(
            "{n} mismatch{plural} between {checked} and the broker's log"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(size: u64) -> Option<(u64, String)> {
        Some((size, "2026-12-05T10:00:00Z".into()))
    }

    fn coverage(size: u64, latest: Option<(u64, String)>) -> String {
        super::coverage(size, latest, NEXT_CHECKPOINT)
    }

    #[test]
    fn verify_says_what_the_signed_checkpoints_cover() {
        assert_eq!(coverage(0, None), "the log is empty");
        assert!(
            coverage(5, None).starts_with("none of the 5 entries is under a signed checkpoint yet")
        );
        assert_eq!(
            coverage(8, checkpoint(8)),
            "every entry is under the latest signed checkpoint (8 entries, signed 2026-12-05T10:00:00Z)"
        );
        let partial = coverage(10, checkpoint(8));
        assert!(
            partial.starts_with(
                "the newest 2 entries (indexes 8 to 9) are not under a signed checkpoint yet; \
                 the latest covers 8 entries, signed 2026-12-05T10:00:00Z; the broker signs"
            ),
            "{partial}"
        );
    }
}
