//! A logical replication slot's `pgoutput` messages → the adapter's
//! decoder → the reader's fold into each committed transaction's changed
//! keys, for a text-keyed and an integer-keyed dataset.
//!
//! Input: one byte for the journal's consumed mark (the byte × 16), then
//! messages, each a big-endian `u16` length and that many bytes.
//!
//! Asserts: nothing panics; a folded transaction committed after the
//! consumed mark and changed something of a known dataset (an integer
//! dataset's keys are integers); the fold of the first half of the
//! messages succeeds too and its transactions are the first of the whole
//! fold's (nothing later changes what came before).

#![no_main]

use jembatan_adapter::fuzzing::fold_pgoutput;
use libfuzzer_sys::fuzz_target;

fn messages(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let [hi, lo, rest @ ..] = data {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        out.push(rest[..len].to_vec());
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mark, rest)) = data.split_first() else {
        return;
    };
    let consumed = u64::from(mark) * 16;
    let messages = messages(rest);
    let Ok(whole) = fold_pgoutput(&messages, consumed) else {
        return;
    };
    for tx in &whole.transactions {
        assert!(tx.lsn > consumed, "a transaction at or before the mark");
        assert!(
            !tx.keys.is_empty() || !tx.truncated.is_empty(),
            "an empty transaction"
        );
        for (dataset, key, _) in &tx.keys {
            match dataset.as_str() {
                "penduduk" => {}
                "kk" => assert!(key.parse::<i64>().is_ok(), "integer key {key:?}"),
                other => panic!("a change of unknown dataset {other:?}"),
            }
        }
    }
    let half = fold_pgoutput(&messages[..messages.len() / 2], consumed)
        .expect("a prefix of a peek that folds folds too");
    assert!(
        whole.transactions.starts_with(&half.transactions),
        "a later message changed an earlier transaction"
    );
});
