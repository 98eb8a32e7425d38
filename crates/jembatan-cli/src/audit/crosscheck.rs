//! `jembatan audit crosscheck`: an adapter's receipt log against the
//! broker's audit log, so a provider agency can show that what left its
//! database is what the broker logged, and the other way round.
//!
//! For every `served` line: the broker's log must hold the exchange's
//! completion entry, for the same dataset and consumer, and when both sides
//! finished `ok`, with the same rows, bytes and payload SHA-256 (when either
//! side did not finish, the broker cannot have logged more rows than the
//! adapter served). For every `receipt` line: the entries it names must be
//! on the log, be this exchange's decision and completion, hash to the
//! receipt's `entry_sha256`, and agree with its rows and payload hash.

use jembatan_adapter::{AckedReceipt, FetchStatus, LogEntry, ServedEntry};
use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::{EntryQuery, RawEntry, Store, StoreError};

/// Most entries one exchange may have on the log (a decision and a
/// completion); more are read only to report them.
const ENTRIES_PER_EXCHANGE: u64 = 16;

/// What was compared, and every disagreement found.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) served: u64,
    pub(super) receipts: u64,
    pub(super) mismatches: Vec<String>,
}

fn parse(row: &RawEntry) -> Result<AuditEntry, String> {
    AuditEntry::from_canonical(&row.entry).map_err(|e| {
        format!(
            "exchange {}: entry {} on the broker's log is not a canonical entry: {e}",
            row.exchange_id, row.seq
        )
    })
}

/// Compares every line of a receipt log with the broker's log.
pub(super) async fn crosscheck(store: &Store, lines: &[LogEntry]) -> Result<Report, StoreError> {
    let mut report = Report::default();
    for line in lines {
        match line {
            LogEntry::Served(served) => {
                report.served += 1;
                let query = EntryQuery {
                    exchange_id: Some(served.exchange_id.clone()),
                    ..EntryQuery::default()
                };
                let rows = store.query_entries(&query, ENTRIES_PER_EXCHANGE).await?;
                report.mismatches.extend(check_served(served, &rows));
            }
            LogEntry::Receipt(receipt) => {
                report.receipts += 1;
                let r = &receipt.receipt;
                let completion = store.raw_entries(r.entry_seq, 1).await?;
                let decision = store.raw_entries(r.decision_seq, 1).await?;
                report
                    .mismatches
                    .extend(check_receipt(r, &decision, &completion));
            }
        }
    }
    Ok(report)
}

/// The findings for one served fetch, given the exchange's entries.
fn check_served(served: &ServedEntry, rows: &[RawEntry]) -> Vec<String> {
    let id = &served.exchange_id;
    let mut completion = None;
    for row in rows {
        match parse(row) {
            Ok(e) if e.kind == EntryKind::Completion => {
                completion = Some(e);
                break;
            }
            Ok(_) => {}
            Err(finding) => return vec![finding],
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
    let both_ok = served.status == FetchStatus::Ok && e.status == ExchangeStatus::Ok;
    if both_ok {
        if served.rows != e.rows {
            findings.push(format!(
                "exchange {id}: adapter served {} rows, broker logged {}",
                served.rows, e.rows
            ));
        }
        if served.bytes != e.bytes {
            findings.push(format!(
                "exchange {id}: adapter served {} bytes, broker logged {}",
                served.bytes, e.bytes
            ));
        }
        let logged = e.payload_sha256.as_deref().unwrap_or("-");
        if served.payload_sha256 != logged {
            findings.push(format!(
                "exchange {id}: adapter's payload sha256 {} differs from the broker's {logged}",
                served.payload_sha256
            ));
        }
    } else if e.rows > served.rows {
        findings.push(format!(
            "exchange {id}: broker logged {} rows, adapter served only {}",
            e.rows, served.rows
        ));
    }
    findings
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
                Err(finding) => findings.push(finding),
                Ok(e) if e.exchange_id != *id || e.kind != EntryKind::Completion => {
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
            Err(finding) => findings.push(finding),
            Ok(e)
                if e.exchange_id != *id
                    || e.kind != EntryKind::Decision
                    || e.decision != Decision::Allow =>
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
