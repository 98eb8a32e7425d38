//! `jembatan subscribe`: a consumer follows a dataset's changes with the
//! agency's certificate. Each change is one JSON line,
//! `{"op":"upsert"|"delete","key":"<64 hex>","record":{...}}`, written to
//! standard output or appended to a file, or published to a NATS
//! JetStream subject. Every batch's receipt is checked against its lines
//! before any of them is written, and the batch's cursor is saved (when
//! `--cursor-file` is given) only once the batch is flushed or
//! acknowledged by JetStream: a crash never loses a change, and a
//! restart from the cursor file delivers what came after it.
//!
//! Exit codes as `jembatan query`'s: 0 stopped by `--idle-exit` (or by
//! the reader of standard output going away), 1 a refused or broken call
//! or a receipt that does not match its batch, 2 usage errors and
//! unreachable brokers or NATS servers, 3 denied by policy (also when
//! the agreement is revoked or expires while following).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::failure::{Failure, exit};
use crate::query::{PayloadHash, filter, refused, target_schema};
use crate::schema::Connection;

/// Longest cursor the broker issues.
const MAX_CURSOR_BYTES: usize = 4096;

/// Most changes a batch may hold.
const MAX_BATCH: u32 = 10_000;

#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// Dataset, `<agency>.<dataset>`; its provider must declare a change
    /// source for it.
    #[arg(long)]
    dataset: String,
    /// The purpose (legal basis) of the agreement to use; the agreement
    /// must grant `subscribe`.
    #[arg(long)]
    purpose: String,
    /// Fields wanted, repeatable or comma-separated [default: every field
    /// the agreement grants].
    #[arg(long = "field", value_name = "FIELD", value_delimiter = ',')]
    fields: Vec<String>,
    /// Which records, as an expression (as `jembatan query --filter`); a
    /// record that leaves it becomes a delete.
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Records in this schema, `SCHEMA@VERSION` [default: the provider's].
    #[arg(long = "as", value_name = "SCHEMA@VERSION")]
    target: Option<String>,
    /// Append the change lines to FILE [default: standard output].
    #[arg(long, value_name = "FILE", conflicts_with = "nats")]
    out: Option<PathBuf>,
    /// Resume from the cursor in FILE when it exists, and keep the cursor
    /// of every batch there once the batch is written (replaced
    /// atomically). The same request must be given again to resume.
    #[arg(long, value_name = "FILE")]
    cursor_file: Option<PathBuf>,
    /// Most changes per batch, 1 to 10000 [default: the broker's, 1000].
    #[arg(long, value_name = "N")]
    batch_size: Option<u32>,
    /// Exit 0 when no change arrived for this long (`30s`, `5m`), for
    /// scripts and cron [default: follow until stopped].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    idle_exit: Option<Duration>,
    /// No progress lines on standard error.
    #[arg(long, short)]
    quiet: bool,
    /// Publish each change line to NATS JetStream at URL
    /// (`nats://host:4222`) instead of writing it; the cursor is saved
    /// once JetStream has acknowledged every message of the batch.
    #[arg(long, value_name = "URL", requires = "nats_subject")]
    nats: Option<String>,
    /// The subject to publish to; a JetStream stream must capture it.
    #[arg(long, value_name = "SUBJECT", requires = "nats")]
    nats_subject: Option<String>,
    /// Create the stream NAME capturing `--nats-subject` when no stream
    /// captures it.
    #[arg(long, value_name = "NAME", requires = "nats")]
    nats_create_stream: Option<String>,
}

pub(crate) async fn run(args: SubscribeArgs, conn: &Connection) -> ExitCode {
    exit(subscribe(args, conn).await)
}

/// How a running subscription's end is reported: the agreement revoked
/// or expired (`PERMISSION_DENIED`) is a denial (exit 3) like a refused
/// start; anything else as any refused call.
fn stopped(status: tonic::Status) -> Failure {
    let without_reasons = jembatan_proto::trailers::denial_details(status.metadata()).is_none();
    if status.code() == tonic::Code::PermissionDenied && without_reasons {
        return Failure::Denied(anyhow!(
            "denied: the subscription was stopped by policy: {}",
            status.message()
        ));
    }
    refused(status)
}

/// One change as it is written and as the batch's payload hash covers it.
pub(crate) fn change_line(change: &pb::ChangeRecord) -> String {
    let op = if change.op == pb::ChangeOp::Delete as i32 {
        "delete"
    } else {
        "upsert"
    };
    format!(
        "{{\"op\":\"{op}\",\"key\":\"{}\",\"record\":{}}}",
        change.key, change.record
    )
}

/// A batch's change lines, once they match its receipt: the payload hash
/// over the lines, their count and their bytes. A batch with changes and
/// no receipt is refused too.
pub(crate) fn checked_lines(batch: &pb::ChangeBatch) -> Result<Vec<String>, Failure> {
    let lines: Vec<String> = batch.changes.iter().map(change_line).collect();
    if lines.is_empty() {
        return Ok(lines);
    }
    let receipt = batch.receipt.as_ref().ok_or_else(|| {
        Failure::Refused(anyhow!(
            "the broker sent a batch of {} changes without its receipt",
            lines.len()
        ))
    })?;
    let mut hash = PayloadHash::default();
    lines.iter().for_each(|l| hash.add(l));
    hash.check(receipt)?;
    Ok(lines)
}

/// The cursor a cursor file holds; `None` when the file does not exist
/// or is empty.
fn read_cursor(path: &Path) -> Result<Option<String>, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Failure::Usage(
                anyhow::Error::new(e).context(format!("cannot read {}", path.display())),
            ));
        }
    };
    let cursor = text.trim();
    if cursor.is_empty() {
        return Ok(None);
    }
    if cursor.len() > MAX_CURSOR_BYTES || !cursor.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::Usage(anyhow!(
            "{} does not hold a cursor (one line of at most {MAX_CURSOR_BYTES} printable ASCII characters)",
            path.display()
        )));
    }
    Ok(Some(cursor.to_owned()))
}

/// Replaces the cursor file: a temporary file in the same directory,
/// written and synced, renamed over it, the directory synced.
fn write_cursor(path: &Path, cursor: &str) -> Result<(), Failure> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Failure::Usage(anyhow!("--cursor-file {} names no file", path.display())))?;
    let mut temp = name.to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp);
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(cursor.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // the rename itself is durable once the directory is
        std::fs::File::open(&dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Failure::Usage(anyhow::Error::new(e).context(format!("cannot write {}", path.display())))
    })
}

/// Removes a last line without its newline from the output file (a
/// batch being written when the command was killed: its cursor was not
/// saved, so its changes come again); how many bytes were removed.
fn torn_tail(path: &Path) -> Result<Option<u64>, Failure> {
    use std::io::{Read, Seek, SeekFrom};
    let cannot = |e: std::io::Error| {
        Failure::Usage(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(cannot)?;
    let len = file.metadata().map_err(cannot)?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    // back to the last newline
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(cannot)?;
        file.read_exact(part).map_err(cannot)?;
        if let Some(at) = part.iter().rposition(|b| *b == b'\n') {
            end = start + at as u64 + 1;
            break;
        }
        end = start;
    }
    if end == len {
        return Ok(None);
    }
    file.set_len(end).map_err(cannot)?;
    file.sync_all().map_err(cannot)?;
    Ok(Some(len - end))
}

/// Where change lines go.
enum Sink {
    Lines(Box<dyn Write + Send>),
    Nats(Box<NatsSink>),
}

impl Sink {
    async fn open(args: &SubscribeArgs) -> Result<Sink, Failure> {
        if let (Some(url), Some(subject)) = (&args.nats, &args.nats_subject) {
            let sink = NatsSink::connect(url, subject, args.nats_create_stream.as_deref()).await?;
            return Ok(Sink::Nats(Box::new(sink)));
        }
        match &args.out {
            None => Ok(Sink::Lines(Box::new(std::io::BufWriter::new(
                std::io::stdout(),
            )))),
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                if let Some(cut) = torn_tail(path)? {
                    eprintln!(
                        "{} ended in a line cut short ({cut} bytes, a batch not kept): removed; its changes come again",
                        path.display()
                    );
                }
                Ok(Sink::Lines(Box::new(std::io::BufWriter::with_capacity(
                    1 << 16,
                    file,
                ))))
            }
        }
    }

    /// Writes and flushes a batch's lines, or publishes them and waits
    /// for every acknowledgement.
    async fn put(&mut self, lines: &[String], after: &str) -> Result<(), Failure> {
        match self {
            Sink::Lines(out) => {
                for line in lines {
                    out.write_all(line.as_bytes())?;
                    out.write_all(b"\n")?;
                }
                out.flush()?;
                Ok(())
            }
            Sink::Nats(nats) => nats.publish(lines, after).await,
        }
    }
}

/// A JetStream subject that change lines are published to.
struct NatsSink {
    jetstream: async_nats::jetstream::Context,
    subject: String,
    url: String,
}

impl NatsSink {
    async fn connect(url: &str, subject: &str, create: Option<&str>) -> Result<NatsSink, Failure> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| {
                Failure::Usage(anyhow::Error::new(e).context(format!("cannot reach NATS at {url}")))
            })?;
        let jetstream = async_nats::jetstream::new(client);
        use async_nats::jetstream::context::GetStreamByNameErrorKind as Kind;
        match jetstream.stream_by_subject(subject).await {
            Ok(_) => {}
            Err(e) if e.kind() == Kind::NotFound => match create {
                Some(name) => {
                    jetstream
                        .create_stream(async_nats::jetstream::stream::Config {
                            name: name.to_owned(),
                            subjects: vec![subject.to_owned()],
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| {
                            Failure::Refused(anyhow::Error::new(e).context(format!(
                                "cannot create the JetStream stream {name} for {subject}"
                            )))
                        })?;
                }
                None => {
                    return Err(Failure::Usage(anyhow!(
                        "no JetStream stream at {url} captures the subject {subject}: create one (`nats stream add`) or give --nats-create-stream NAME"
                    )));
                }
            },
            Err(e) if e.kind() == Kind::InvalidSubject => {
                return Err(Failure::Usage(anyhow!(
                    "--nats-subject {subject:?} is not a subject one can publish to"
                )));
            }
            Err(e) => {
                return Err(Failure::Usage(anyhow::Error::new(e).context(format!(
                    "cannot ask the JetStream server at {url} for the stream of {subject} (is JetStream enabled?)"
                ))));
            }
        }
        Ok(NatsSink {
            jetstream,
            subject: subject.to_owned(),
            url: url.to_owned(),
        })
    }

    /// Publishes every line, then waits for JetStream to acknowledge each.
    async fn publish(&self, lines: &[String], after: &str) -> Result<(), Failure> {
        let failed = |e: &dyn std::fmt::Display| {
            Failure::Usage(anyhow!(
                "JetStream at {} did not take a change for {}: {e}",
                self.url,
                self.subject
            ))
        };
        let mut acks = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", message_id(after, i, line).as_str());
            let ack = self
                .jetstream
                .publish_with_headers(
                    self.subject.clone(),
                    headers,
                    line.clone().into_bytes().into(),
                )
                .await
                .map_err(|e| failed(&e))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| failed(&e))?;
        }
        Ok(())
    }
}

/// The `Nats-Msg-Id` of the change at `index` of the batch that follows
/// the cursor `after`: a batch delivered again after a restart from that
/// cursor gives the same change the same id, so JetStream drops it as a
/// duplicate within the stream's duplicate window. The line is part of
/// it: a change that is not the very same line is never dropped.
pub(crate) fn message_id(after: &str, index: usize, line: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(after.as_bytes());
    hash.update([0]);
    hash.update(index.to_string().as_bytes());
    hash.update([0]);
    hash.update(line.as_bytes());
    hex::encode(&hash.finalize()[..16])
}

/// Counts for the progress lines.
#[derive(Default)]
struct Totals {
    batches: u64,
    changes: u64,
    upserts: u64,
    deletes: u64,
}

async fn subscribe(args: SubscribeArgs, conn: &Connection) -> Result<(), Failure> {
    // arguments are checked before the broker is called
    let filter = filter(args.filter.as_deref())?;
    let target_schema = target_schema(args.target.clone())?;
    let batch_size = match args.batch_size {
        None => 0,
        Some(n) if (1..=MAX_BATCH).contains(&n) => n,
        Some(n) => {
            return Err(Failure::Usage(anyhow!(
                "--batch-size {n}: give 1 to {MAX_BATCH}"
            )));
        }
    };
    let mut cursor = match &args.cursor_file {
        Some(path) => read_cursor(path)?,
        None => None,
    };
    let mut sink = Sink::open(&args).await?;
    let request = pb::SubscribeRequest {
        dataset: args.dataset.clone(),
        target_schema,
        purpose: args.purpose.clone(),
        fields: args.fields.clone(),
        filter,
        cursor: cursor.clone().unwrap_or_default(),
        batch_size,
    };
    let progress = |text: &str| {
        if !args.quiet {
            eprintln!("{text}");
        }
    };
    let mut client = ExchangeClient::new(conn.channel().await?);
    let mut stream = client
        .subscribe(request)
        .await
        .map_err(refused)?
        .into_inner();
    let mut totals = Totals::default();
    let mut last_change = Instant::now();
    loop {
        let next = match args.idle_exit {
            Some(idle) => match tokio::time::timeout_at(last_change + idle, stream.message()).await
            {
                Ok(next) => next,
                Err(_) => {
                    progress(&format!(
                        "no change for {}: stopping after {} changes in {} batches",
                        humantime::format_duration(idle),
                        totals.changes,
                        totals.batches
                    ));
                    return Ok(());
                }
            },
            None => stream.message().await,
        };
        let message = match next {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(Failure::Refused(anyhow!(
                    "the broker ended the subscription without saying why"
                )));
            }
            Err(status) => return Err(stopped(status)),
        };
        match message.item {
            Some(pb::subscribe_response::Item::Started(started)) => {
                let from = if cursor.is_some() {
                    "resumed from the cursor file"
                } else {
                    "from the first change"
                };
                progress(&format!(
                    "subscription {} {from} (exchange {}, decision entry {})",
                    started.subscription_id, started.exchange_id, started.decision_seq
                ));
            }
            Some(pb::subscribe_response::Item::Batch(batch)) => {
                let lines = checked_lines(&batch)?;
                if !lines.is_empty() {
                    let after = cursor.as_deref().unwrap_or_default();
                    sink.put(&lines, after).await?;
                    let deletes = batch
                        .changes
                        .iter()
                        .filter(|c| c.op == pb::ChangeOp::Delete as i32)
                        .count() as u64;
                    totals.batches += 1;
                    totals.changes += lines.len() as u64;
                    totals.deletes += deletes;
                    totals.upserts += lines.len() as u64 - deletes;
                    last_change = Instant::now();
                    let entry = batch.receipt.as_ref().map_or(0, |r| r.entry_seq);
                    progress(&format!(
                        "batch {}: {} changes ({} upserts, {} deletes), audit entry {entry}; in all {} changes ({} upserts, {} deletes)",
                        totals.batches,
                        lines.len(),
                        lines.len() as u64 - deletes,
                        deletes,
                        totals.changes,
                        totals.upserts,
                        totals.deletes
                    ));
                }
                if batch.cursor.len() > MAX_CURSOR_BYTES {
                    return Err(Failure::Refused(anyhow!(
                        "the broker sent a cursor over {MAX_CURSOR_BYTES} bytes"
                    )));
                }
                if let Some(path) = &args.cursor_file {
                    write_cursor(path, &batch.cursor)?;
                }
                cursor = Some(batch.cursor);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: pb::ChangeOp, key: &str, record: &str) -> pb::ChangeRecord {
        pb::ChangeRecord {
            op: op as i32,
            key: key.into(),
            record: record.into(),
        }
    }

    fn receipt_of(lines: &[&str]) -> pb::Receipt {
        pb::Receipt {
            payload_sha256: jembatan_core::PayloadHasher::of(lines),
            rows: lines.len() as u64,
            bytes: lines.iter().map(|l| l.len() as u64).sum(),
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_is_kept_only_when_its_receipt_covers_its_lines() {
        let changes = vec![
            change(pb::ChangeOp::Upsert, "aa", r#"{"nik":"1"}"#),
            change(pb::ChangeOp::Delete, "bb", "{}"),
        ];
        let want = [
            r#"{"op":"upsert","key":"aa","record":{"nik":"1"}}"#,
            r#"{"op":"delete","key":"bb","record":{}}"#,
        ];
        let good = receipt_of(&want);
        let batch = |receipt: Option<pb::Receipt>| pb::ChangeBatch {
            changes: changes.clone(),
            cursor: "c1.x".into(),
            receipt,
        };
        assert_eq!(checked_lines(&batch(Some(good.clone()))).unwrap(), want);
        let cases = [
            ("no receipt", None),
            (
                "another hash",
                Some(pb::Receipt {
                    payload_sha256: "00".repeat(32),
                    ..good.clone()
                }),
            ),
            (
                "one row more",
                Some(pb::Receipt {
                    rows: 3,
                    ..good.clone()
                }),
            ),
            (
                "a byte less",
                Some(pb::Receipt {
                    bytes: good.bytes - 1,
                    ..good.clone()
                }),
            ),
            ("the first line only", Some(receipt_of(&want[..1]))),
        ];
        for (name, receipt) in cases {
            match checked_lines(&batch(receipt)) {
                Err(Failure::Refused(e)) => {
                    assert!(e.to_string().contains("receipt"), "{name}: {e}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // a heartbeat: the cursor alone
        let heartbeat = pb::ChangeBatch {
            changes: vec![],
            cursor: "c1.y".into(),
            receipt: None,
        };
        assert!(checked_lines(&heartbeat).unwrap().is_empty());
    }

    #[test]
    fn the_cursor_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        assert_eq!(read_cursor(&path).unwrap(), None);
        write_cursor(&path, "c1.abc").unwrap();
        assert_eq!(read_cursor(&path).unwrap().as_deref(), Some("c1.abc"));
        write_cursor(&path, "c1.def").unwrap();
        assert_eq!(read_cursor(&path).unwrap().as_deref(), Some("c1.def"));
        // nothing else is left in the directory
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(&path, "not a cursor\n").unwrap();
        assert!(matches!(read_cursor(&path), Err(Failure::Usage(_))));
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(read_cursor(&path).unwrap(), None);
    }

    #[test]
    fn a_line_cut_short_at_the_end_of_the_output_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let long = [b"{}\n".as_slice(), &[b'x'; 70_000]].concat();
        // name, the file before, the file after, the bytes removed
        type Case<'a> = (&'a str, &'a [u8], &'a [u8], Option<u64>);
        let cases: [Case; 5] = [
            ("empty", b"", b"", None),
            ("whole lines", b"{}\n{}\n", b"{}\n{}\n", None),
            ("cut short", b"{}\n{\"op\"", b"{}\n", Some(5)),
            ("only a cut line", b"{\"op", b"", Some(4)),
            (
                "a cut line longer than a read",
                &long,
                b"{}\n",
                Some(70_000),
            ),
        ];
        for (name, before, after, cut) in cases {
            std::fs::write(&path, before).unwrap();
            assert_eq!(torn_tail(&path).unwrap(), cut, "{name}");
            assert_eq!(std::fs::read(&path).unwrap(), after, "{name}");
        }
    }

    #[test]
    fn a_change_delivered_again_after_the_same_cursor_keeps_its_message_id() {
        let line = r#"{"op":"upsert","key":"aa","record":{}}"#;
        let id = message_id("c1.a", 0, line);
        assert_eq!(id.len(), 32);
        assert_eq!(id, message_id("c1.a", 0, line));
        assert_ne!(id, message_id("c1.b", 0, line));
        assert_ne!(id, message_id("c1.a", 1, line));
        assert_ne!(
            id,
            message_id("c1.a", 0, r#"{"op":"delete","key":"aa","record":{}}"#)
        );
    }
}
