//! The adapter's own receipt log: one JSON line per fetch it served and per
//! receipt the broker acknowledged, so an agency can see what left its
//! database without trusting the broker.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use jembatan_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::AdapterError;

/// One line of the receipt log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogEntry {
    /// A fetch this adapter served (whether it finished, failed or was cancelled).
    Served(ServedEntry),
    /// A receipt the broker acknowledged for an exchange.
    Receipt(ReceiptEntry),
    /// A change poll (`Changes`) that returned at least one change: `rows`
    /// counts the changes, `bytes` and `payload_sha256` cover the records
    /// of the upserts in scope, in the order sent. Polls that found
    /// nothing are not logged.
    Changes(ServedEntry),
}

/// How a fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchStatus {
    /// Every row was handed to the transport.
    Ok,
    /// A database or decoding error ended the stream.
    Failed,
    /// The broker went away before the end.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedEntry {
    /// RFC 3339, UTC.
    pub time: String,
    pub exchange_id: String,
    pub dataset: String,
    pub consumer: String,
    pub purpose: String,
    pub columns: Vec<String>,
    /// Records handed to the transport.
    pub rows: u64,
    /// Bytes of those records' JSON text (without separators).
    pub bytes: u64,
    /// Lowercase hex SHA-256 of each record's JSON text followed by one
    /// newline byte, in the order sent.
    pub payload_sha256: String,
    pub status: FetchStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptEntry {
    pub time: String,
    pub dataset: String,
    pub consumer: String,
    pub receipt: AckedReceipt,
}

/// The fields of a `jembatan.v1.Receipt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckedReceipt {
    pub exchange_id: String,
    pub entry_seq: u64,
    pub decision_seq: u64,
    pub payload_sha256: String,
    pub rows: u64,
    pub bytes: u64,
    /// RFC 3339, when the broker set it.
    pub completed_at: Option<String>,
    pub entry_sha256: String,
    /// RFC 6962 leaf hash of the completion entry (hex), for inclusion
    /// proofs against the broker's signed checkpoints.
    #[serde(default)]
    pub leaf_hash: String,
    /// The broker's latest signed checkpoint when it issued the receipt
    /// (C2SP signed note), empty if it had signed none. Kept so the agency
    /// can later show that the broker's log at that size has this root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checkpoint: String,
}

impl From<&pb::Receipt> for AckedReceipt {
    fn from(r: &pb::Receipt) -> Self {
        AckedReceipt {
            exchange_id: r.exchange_id.clone(),
            entry_seq: r.entry_seq,
            decision_seq: r.decision_seq,
            payload_sha256: r.payload_sha256.clone(),
            rows: r.rows,
            bytes: r.bytes,
            completed_at: r.completed_at.as_ref().and_then(|t| {
                let nanos = u32::try_from(t.nanos).ok()?;
                chrono::DateTime::from_timestamp(t.seconds, nanos)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }),
            entry_sha256: r.entry_sha256.clone(),
            leaf_hash: r.leaf_hash.clone(),
            checkpoint: r.checkpoint.clone(),
        }
    }
}

/// The current time as the log writes it.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Most lines written before one sync.
const MAX_LINES_PER_SYNC: usize = 1024;

type Pending = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

/// An append-only JSON Lines file. Each line is synced to disk before
/// `append` returns; lines appended concurrently share one write and one
/// sync (group commit), so concurrent fetches do not queue behind each
/// other's `fsync`.
#[derive(Debug)]
pub(crate) struct ReceiptLog {
    path: PathBuf,
    tx: mpsc::Sender<Pending>,
}

impl ReceiptLog {
    pub(crate) async fn open(path: &Path) -> Result<ReceiptLog, AdapterError> {
        let err = |source| AdapterError::ReceiptLog {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent).await.map_err(err)?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(err)?
            .into_std()
            .await;
        let (tx, rx) = mpsc::channel(MAX_LINES_PER_SYNC);
        std::thread::Builder::new()
            .name("receipt-log".into())
            .spawn(move || write_lines(file, rx))
            .map_err(err)?;
        Ok(ReceiptLog {
            path: path.to_owned(),
            tx,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry; returns once it is synced to disk.
    pub(crate) async fn append(&self, entry: &LogEntry) -> std::io::Result<()> {
        self.append_all(std::slice::from_ref(entry)).await
    }

    /// Appends entries as consecutive lines, written together; returns
    /// once they are synced to disk.
    pub(crate) async fn append_all(&self, entries: &[LogEntry]) -> std::io::Result<()> {
        let mut line = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut line, entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
        }
        let (done, synced) = oneshot::channel();
        let stopped = || std::io::Error::other("the receipt log writer stopped");
        self.tx.send((line, done)).await.map_err(|_| stopped())?;
        synced.await.map_err(|_| stopped())?
    }
}

/// The receipt log's writer, on a thread of its own: takes every line
/// waiting, writes them in one go, syncs once, and answers each appender.
/// It ends when the log is dropped.
fn write_lines(mut file: std::fs::File, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_LINES_PER_SYNC);
    let mut buf = Vec::new();
    while rx.blocking_recv_many(&mut batch, MAX_LINES_PER_SYNC) > 0 {
        buf.clear();
        for (line, _) in &batch {
            buf.extend_from_slice(line);
        }
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        for (_, done) in batch.drain(..) {
            let _ = done.send(match &written {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// Reads every entry of a receipt log.
pub fn read_receipt_log(path: &Path) -> Result<Vec<LogEntry>, AdapterError> {
    let text = std::fs::read_to_string(path).map_err(|source| AdapterError::ReceiptLog {
        path: path.to_owned(),
        source,
    })?;
    parse_receipt_log(&text, path)
}

/// Parses the text of a receipt log; `path` only names the file in errors.
pub(crate) fn parse_receipt_log(text: &str, path: &Path) -> Result<Vec<LogEntry>, AdapterError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| AdapterError::ReceiptLogFormat {
                path: path.to_owned(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_round_trip_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/receipts.jsonl");
        let log = ReceiptLog::open(&path).await.unwrap();
        let served = LogEntry::Served(ServedEntry {
            time: now(),
            exchange_id: "e1".into(),
            dataset: "a.b".into(),
            consumer: "dinsos".into(),
            purpose: "bansos".into(),
            columns: vec!["nik".into()],
            rows: 2,
            bytes: 30,
            payload_sha256: "00".into(),
            status: FetchStatus::Cancelled,
        });
        let receipt = LogEntry::Receipt(ReceiptEntry {
            time: now(),
            dataset: "a.b".into(),
            consumer: "dinsos".into(),
            receipt: AckedReceipt::from(&pb::Receipt {
                exchange_id: "e1".into(),
                entry_seq: 7,
                completed_at: Some(prost_types::Timestamp {
                    seconds: 1_600_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        });
        log.append(&served).await.unwrap();
        log.append(&receipt).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "served");
        assert_eq!(first["status"], "cancelled");
        let second: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(second["kind"], "receipt");
        assert_eq!(second["receipt"]["entry_seq"], 7);
        assert_eq!(second["receipt"]["completed_at"], "2020-09-13T12:26:40Z");
        assert_eq!(read_receipt_log(&path).unwrap(), vec![served, receipt]);
    }

    /// Concurrent appends share syncs but every one lands as its own whole
    /// line, each acknowledged only after it is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_each_land_as_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.jsonl");
        let log = std::sync::Arc::new(ReceiptLog::open(&path).await.unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..300u64 {
            let (log, path) = (log.clone(), path.clone());
            tasks.spawn(async move {
                let entry = LogEntry::Served(ServedEntry {
                    time: now(),
                    exchange_id: format!("e{n}"),
                    dataset: "a.b".into(),
                    consumer: "dinsos".into(),
                    purpose: "bansos".into(),
                    columns: vec!["nik".into(); (n % 7) as usize],
                    rows: n,
                    bytes: 30,
                    payload_sha256: "00".into(),
                    status: FetchStatus::Ok,
                });
                log.append(&entry).await.unwrap();
                // acknowledged: the line is already in the file
                let text = tokio::fs::read_to_string(&path).await.unwrap();
                let line = format!("\"exchange_id\":\"e{n}\",");
                assert!(text.contains(&line), "e{n} acknowledged before written");
                n
            });
        }
        let mut acked = Vec::new();
        while let Some(n) = tasks.join_next().await {
            acked.push(n.unwrap());
        }
        let mut rows: Vec<u64> = read_receipt_log(&path)
            .unwrap()
            .into_iter()
            .map(|e| match e {
                LogEntry::Served(s) => s.rows,
                _ => panic!("only served entries were appended"),
            })
            .collect();
        rows.sort_unstable();
        acked.sort_unstable();
        assert_eq!(rows, acked);
        assert_eq!(rows, (0..300).collect::<Vec<_>>());
    }
}
