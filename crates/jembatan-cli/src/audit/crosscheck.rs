//! `jembatan audit crosscheck`: an adapter's receipt log against the
//! broker's audit log, so a provider agency can show that what left its
//! database is what the broker logged, and the other way round.
//!
//! For every `served` line: the broker's log must hold the exchange's end
//! (its completion entry, or a lookup's one `answered` entry), for the same
//! dataset and consumer, and when both sides
//! finished `ok`, with the same rows, bytes and payload SHA-256 (for a
//! translated exchange, those the broker logged as `received` before
//! translation) (when either
//! side did not finish, the broker cannot have logged more rows than the
//! adapter served — unless this adapter failed before sending any record
//! and the end names the endpoint that served instead, a provider with
//! several endpoints; that endpoint's receipt log accounts for the rows). For every `receipt` line: the entries it names must be
//! on the log, be this exchange's decision and completion (for a lookup,
//! both name its one `answered` entry), hash to the
//! receipt's `entry_sha256`, and agree with its rows and payload hash.
//! Every signed checkpoint the receipts carried must parse (and verify,
//! given the broker's public key), and the broker's log at that size must
//! have that root: the broker cannot rewrite history it already committed
//! to in front of the provider.
//!
//! For a subscription's `changes` lines (one per poll that returned
//! changes): every poll the adapter finished `ok` must be one of the
//! exchange's `delivery` entries, with the same changes, bytes and payload
//! SHA-256 as the entry's `received` — except the stream's last two polls
//! when the stream's end is on the log: the broker read them and stopped
//! before delivering (the consumer went, the agreement ended; while it
//! delivers a full batch it reads the next one ahead). A receipt may name
//! a delivery entry instead of an exchange's end.
//!
//! On a store whose oldest entries are archived, lines of exchanges whose
//! entries left with them (a receipt naming an archived entry; a fetch or
//! poll the store has no entry of, made before its first stored entry)
//! are counted, not compared, and the receipts' checkpoints below the
//! archived point are compared with the tree's tiles.

use jembatan_adapter::{AckedReceipt, FetchStatus, LogEntry, ServedEntry};
use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::verify::{VerifyError, catch_up};
use jembatan_store::{EntryQuery, RawEntry, Store, StoreError};
use jembatan_tlog::merkle::CompactRange;
use jembatan_tlog::note::{Checkpoint, Note, Verifier};

/// Most entries one exchange may have on the log (a decision and a
/// completion, or one `answered` entry); more are read only to report them.
const ENTRIES_PER_EXCHANGE: u64 = 16;

/// What was compared, and every disagreement found.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) served: u64,
    /// Change polls (`changes` lines) compared.
    pub(super) changes: u64,
    pub(super) receipts: u64,
    /// Distinct signed checkpoints the receipts carried.
    pub(super) checkpoints: u64,
    /// Lines of exchanges whose entries are archived, not compared.
    pub(super) archived: u64,
    pub(super) mismatches: Vec<String>,
}

/// Where the store's entries begin once the oldest are archived.
struct Archived {
    /// Entries below this one are archived.
    up_to: u64,
    /// When the first stored entry was recorded (none stored: `None`).
    first: Option<chrono::DateTime<chrono::Utc>>,
}

impl Archived {
    async fn of(store: &Store) -> Result<Archived, StoreError> {
        let up_to = store.archived_up_to().await?;
        let first = match up_to {
            0 => None,
            n => store
                .raw_entries(n, 1)
                .await?
                .first()
                .and_then(|e| jembatan_core::agreement::parse_instant(&e.recorded_at).ok()),
        };
        Ok(Archived { up_to, first })
    }

    /// Whether what the adapter did at `time` (and the broker has no entry
    /// of) came before the store's first entry: its entries are archived.
    fn before(&self, time: &str) -> bool {
        if self.up_to == 0 {
            return false;
        }
        let Some(first) = self.first else {
            return true;
        };
        jembatan_core::agreement::parse_instant(time).is_ok_and(|t| t <= first)
    }
}

/// A finding: an entry of the broker's log that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "exchange {exchange_id}: entry {seq} on the broker's log is not a canonical entry: {source}"
)]
struct NotCanonical {
    exchange_id: String,
    seq: u64,
    source: jembatan_core::CanonicalError,
}

fn parse(row: &RawEntry) -> Result<AuditEntry, NotCanonical> {
    AuditEntry::from_canonical(&row.entry).map_err(|source| NotCanonical {
        exchange_id: row.exchange_id.clone(),
        seq: row.seq,
        source,
    })
}

/// Compares every line of a receipt log with the broker's log.
pub(super) async fn crosscheck(
    store: &Store,
    lines: &[LogEntry],
    verifier: Option<&Verifier>,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let archived = Archived::of(store).await?;
    let changes = check_changes(store, lines, &archived, &mut report).await?;
    report.mismatches.extend(changes);
    for line in lines {
        match line {
            LogEntry::Served(served) => {
                report.served += 1;
                let query = EntryQuery {
                    exchange_id: Some(served.exchange_id.clone()),
                    ..EntryQuery::default()
                };
                let rows = store.query_entries(&query, ENTRIES_PER_EXCHANGE).await?;
                if rows.is_empty() && archived.before(&served.time) {
                    report.archived += 1;
                    continue;
                }
                report.mismatches.extend(check_served(served, &rows));
            }
            LogEntry::Receipt(receipt) => {
                report.receipts += 1;
                let r = &receipt.receipt;
                if r.decision_seq.min(r.entry_seq) < archived.up_to {
                    report.archived += 1;
                    continue;
                }
                let completion = store.raw_entries(r.entry_seq, 1).await?;
                let decision = store.raw_entries(r.decision_seq, 1).await?;
                report
                    .mismatches
                    .extend(check_receipt(r, &decision, &completion));
            }
            // compared per exchange, above
            LogEntry::Changes(_) => {}
        }
    }
    let (checked, findings) = check_checkpoints(store, lines, verifier, archived.up_to).await?;
    report.checkpoints = checked;
    report.mismatches.extend(findings);
    Ok(report)
}

/// The checkpoints the receipts carried, against the broker's log: one
/// pass over the log, recomputing the root at each checkpoint's size.
async fn check_checkpoints(
    store: &Store,
    lines: &[LogEntry],
    verifier: Option<&Verifier>,
    archived: u64,
) -> Result<(u64, Vec<String>), StoreError> {
    let mut findings = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut wanted: Vec<(Checkpoint, String)> = Vec::new();
    for line in lines {
        let LogEntry::Receipt(receipt) = line else {
            continue;
        };
        let r = &receipt.receipt;
        if r.checkpoint.is_empty() || !seen.insert(r.checkpoint.as_str()) {
            continue;
        }
        let id = &r.exchange_id;
        let parsed = match verifier {
            Some(v) => Checkpoint::open(&r.checkpoint, v),
            None => Note::parse(&r.checkpoint).and_then(|n| Checkpoint::parse_body(n.text())),
        };
        match parsed {
            Ok(c) => wanted.push((c, id.clone())),
            Err(e) => findings.push(format!(
                "exchange {id}: the checkpoint on its receipt does not {}: {e}",
                if verifier.is_some() {
                    "verify"
                } else {
                    "parse"
                }
            )),
        }
    }
    let checked = wanted.len() as u64;
    wanted.sort_by_key(|(c, _)| c.size);
    // below the archived point the tree is the tiles'; from it on, the
    // entries continue the tree the tiles give there
    let mut range = match archived {
        0 => CompactRange::new(),
        n => store.tree_at(n).await?,
    };
    for (c, id) in wanted {
        if c.size < archived {
            if store.tiles_root(c.size).await? != c.root {
                findings.push(format!(
                    "exchange {id}: the broker's tree at size {} (archived; from its tiles) does not have the root of the checkpoint on the receipt",
                    c.size
                ));
            }
            continue;
        }
        match catch_up(store, &mut range, Some(c.size)).await {
            Ok(()) => {}
            Err(VerifyError::Store(e)) => return Err(e),
            Err(e) => {
                findings.push(format!(
                    "exchange {id}: cannot recompute the log up to the receipt's checkpoint at size {}: {e}",
                    c.size
                ));
                break;
            }
        }
        if range.size() < c.size {
            findings.push(format!(
                "exchange {id}: the receipt's checkpoint commits to {} entries; the broker's log has only {}",
                c.size,
                range.size()
            ));
            break;
        }
        if range.root() != c.root {
            findings.push(format!(
                "exchange {id}: the broker's log at size {} does not have the root of the checkpoint on the receipt",
                c.size
            ));
        }
    }
    Ok((checked, findings))
}

/// Whether an entry of this kind ends an exchange.
fn is_end(kind: EntryKind) -> bool {
    matches!(kind, EntryKind::Completion | EntryKind::Answered)
}

/// The findings for the change polls of subscriptions, each exchange's
/// polls against its delivery entries.
async fn check_changes(
    store: &Store,
    lines: &[LogEntry],
    archived: &Archived,
    report: &mut Report,
) -> Result<Vec<String>, StoreError> {
    let mut polls: std::collections::BTreeMap<&str, Vec<&ServedEntry>> = Default::default();
    for line in lines {
        if let LogEntry::Changes(poll) = line {
            report.changes += 1;
            // delivered before the store's first entry: archived
            if archived.before(&poll.time) {
                report.archived += 1;
                continue;
            }
            polls
                .entry(poll.exchange_id.as_str())
                .or_default()
                .push(poll);
        }
    }
    let mut findings = Vec::new();
    for (id, polls) in polls {
        let query = EntryQuery {
            exchange_id: Some(id.to_owned()),
            ..EntryQuery::default()
        };
        let limit = ENTRIES_PER_EXCHANGE + 2 * polls.len() as u64;
        let rows = store.query_entries(&query, limit).await?;
        let mut delivered = Vec::new();
        let mut ended = false;
        for row in &rows {
            match parse(row) {
                Ok(e) if e.kind == EntryKind::Delivery => {
                    if let Some(r) = e.received {
                        delivered.push((r.rows, r.bytes, r.payload_sha256));
                    }
                }
                Ok(e) if is_end(e.kind) => ended = true,
                Ok(_) => {}
                Err(finding) => findings.push(finding.to_string()),
            }
        }
        if rows.is_empty() {
            findings.push(format!(
                "exchange {id}: the adapter answered its change polls, but the broker's log has no entry of it"
            ));
            continue;
        }
        let finished: Vec<&&ServedEntry> = polls
            .iter()
            .filter(|p| p.status == FetchStatus::Ok && p.rows > 0)
            .collect();
        for (i, poll) in finished.iter().enumerate() {
            let key = (poll.rows, poll.bytes, poll.payload_sha256.clone());
            if let Some(at) = delivered.iter().position(|d| *d == key) {
                delivered.swap_remove(at);
            } else if !(ended && i + 2 >= finished.len()) {
                findings.push(format!(
                    "exchange {id}: the adapter sent {} changes ({} bytes, payload sha256 {}) in a poll of {} that no delivery entry on the broker's log accounts for",
                    poll.rows, poll.bytes, poll.payload_sha256, poll.time
                ));
            }
        }
    }
    Ok(findings)
}

/// The findings for one served fetch, given the exchange's entries.
fn check_served(served: &ServedEntry, rows: &[RawEntry]) -> Vec<String> {
    let id = &served.exchange_id;
    if rows.is_empty() {
        return vec![format!(
            "exchange {id}: the adapter served it, but the broker's log has no entry of it"
        )];
    }
    let mut completion = None;
    for row in rows {
        match parse(row) {
            Ok(e) if is_end(e.kind) => {
                completion = Some(e);
                break;
            }
            Ok(_) => {}
            Err(finding) => return vec![finding.to_string()],
        }
    }
    let Some(e) = completion else {
        return vec![format!(
            "exchange {id}: the broker's log has no completion entry"
        )];
    };
    let mut findings = Vec::new();
    let (dataset, consumer) = (
        e.dataset.as_deref().unwrap_or("-"),
        e.consumer.as_deref().unwrap_or("-"),
    );
    if dataset != served.dataset || consumer != served.consumer {
        findings.push(format!(
            "exchange {id}: adapter served {} to {}, broker logged {dataset} to {consumer}",
            served.dataset, served.consumer
        ));
    }
    // a translated exchange logs what it received from the adapter apart
    // from what it delivered; the adapter's log is compared with the former
    let (rows, bytes, logged) = match &e.received {
        Some(r) => (r.rows, r.bytes, r.payload_sha256.as_str()),
        None => (e.rows, e.bytes, e.payload_sha256.as_deref().unwrap_or("-")),
    };
    let both_ok = served.status == FetchStatus::Ok && e.status == ExchangeStatus::Ok;
    if both_ok {
        if served.rows != rows {
            findings.push(format!(
                "exchange {id}: adapter served {} rows, broker logged {rows}",
                served.rows
            ));
        }
        if served.bytes != bytes {
            findings.push(format!(
                "exchange {id}: adapter served {} bytes, broker logged {bytes}",
                served.bytes
            ));
        }
        if served.payload_sha256 != logged {
            findings.push(format!(
                "exchange {id}: adapter's payload sha256 {} differs from the broker's {logged}",
                served.payload_sha256
            ));
        }
    } else if rows > served.rows && !passed_over(served, &e) {
        findings.push(format!(
            "exchange {id}: broker logged {rows} rows, adapter served only {}",
            served.rows
        ));
    }
    findings
}

/// Whether the fetch `served` failed before sending anything and the
/// broker's end `e` names the adapter endpoint that served the exchange
/// (entry format 6): a provider with several endpoints, this one passed
/// over for another, whose receipt log accounts for the rows.
fn passed_over(served: &ServedEntry, e: &AuditEntry) -> bool {
    served.status == FetchStatus::Failed && served.rows == 0 && e.adapter_endpoint.is_some()
}

/// The findings for one receipt, given the rows at its decision and
/// completion seqs (empty when not on the log).
fn check_receipt(r: &AckedReceipt, decision: &[RawEntry], completion: &[RawEntry]) -> Vec<String> {
    let id = &r.exchange_id;
    let mut findings = Vec::new();
    match completion.first().filter(|row| row.seq == r.entry_seq) {
        None => findings.push(format!(
            "exchange {id}: receipt names entry {}, which is not on the broker's log",
            r.entry_seq
        )),
        Some(row) => {
            if AuditEntry::sha256(&row.entry) != r.entry_sha256 {
                findings.push(format!(
                    "exchange {id}: receipt's entry_sha256 does not match entry {} on the broker's log",
                    r.entry_seq
                ));
            }
            // receipts written before leaf hashes were issued carry none
            if !r.leaf_hash.is_empty()
                && hex::encode(jembatan_tlog::merkle::leaf_hash(&row.entry)) != r.leaf_hash
            {
                findings.push(format!(
                    "exchange {id}: receipt's leaf_hash does not match entry {} on the broker's log",
                    r.entry_seq
                ));
            }
            match parse(row) {
                Err(finding) => findings.push(finding.to_string()),
                Ok(e)
                    if e.exchange_id != *id
                        || !(is_end(e.kind) || e.kind == EntryKind::Delivery) =>
                {
                    findings.push(format!(
                        "exchange {id}: receipt names entry {}, which is the {} entry of exchange {}",
                        r.entry_seq,
                        e.kind.as_str(),
                        e.exchange_id
                    ));
                }
                Ok(e) => {
                    if e.rows != r.rows {
                        findings.push(format!(
                            "exchange {id}: receipt says {} rows, broker logged {}",
                            r.rows, e.rows
                        ));
                    }
                    if e.payload_sha256.as_deref() != Some(r.payload_sha256.as_str()) {
                        findings.push(format!(
                            "exchange {id}: receipt's payload sha256 differs from the broker's log"
                        ));
                    }
                }
            }
        }
    }
    match decision.first().filter(|row| row.seq == r.decision_seq) {
        None => findings.push(format!(
            "exchange {id}: receipt names decision entry {}, which is not on the broker's log",
            r.decision_seq
        )),
        Some(row) => match parse(row) {
            Err(finding) => findings.push(finding.to_string()),
            // a lookup's one entry is its decision too
            Ok(e)
                if e.exchange_id != *id
                    || !matches!(e.kind, EntryKind::Decision | EntryKind::Answered)
                    || e.decision != Decision::Allow
                    || (e.kind == EntryKind::Answered) != (r.decision_seq == r.entry_seq) =>
            {
                findings.push(format!(
                    "exchange {id}: receipt names entry {} as its decision, which is the {} {} entry of exchange {}",
                    r.decision_seq,
                    e.decision.as_str(),
                    e.kind.as_str(),
                    e.exchange_id
                ));
            }
            Ok(_) => {}
        },
    }
    findings
}
