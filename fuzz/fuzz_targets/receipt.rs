//! Receipts the adapter records: protobuf bytes → `pb::Receipt` →
//! `AckedReceipt` (as `Acknowledge` converts it), and receipt-log text →
//! the parser behind `read_receipt_log`.
//!
//! Input: one selector byte; even: the rest is a protobuf `Receipt`; odd:
//! the rest is receipt-log text.
//!
//! Asserts: nothing panics; a converted receipt written as a log line
//! (as the adapter appends it) parses back to the same entry; every entry
//! parsed from a log re-serializes to a line that parses back equal.

#![no_main]

use jembatan_adapter::fuzzing::parse_receipt_log_text;
use jembatan_adapter::{AckedReceipt, LogEntry, ReceiptEntry};
use jembatan_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn round_trip(entry: &LogEntry) {
    let line = serde_json::to_string(entry).expect("serialize");
    assert!(!line.contains('\n'), "a log line spans lines: {line}");
    let back = parse_receipt_log_text(&line).expect("an entry's own line parses");
    assert_eq!(back.len(), 1);
    assert_eq!(&back[0], entry, "{line}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let Ok(receipt) = pb::Receipt::decode(rest) else {
            return;
        };
        let acked = AckedReceipt::from(&receipt);
        if let Some(t) = &acked.completed_at {
            assert!(!t.is_empty());
        }
        round_trip(&LogEntry::Receipt(ReceiptEntry {
            time: "2026-01-01T00:00:00.000000Z".into(),
            dataset: "disdukcapil.penduduk".into(),
            consumer: "dinsos".into(),
            receipt: acked,
        }));
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(entries) = parse_receipt_log_text(text) {
            for e in &entries {
                round_trip(e);
            }
        }
    }
});
