//! `jembatan audit who-accessed` and `jembatan audit crosscheck` on the
//! files a demo run kept: the demo's lookups found by the resident's key,
//! receipt logs that agree with the broker's log, and forged receipt logs
//! refused naming the exchange.

use std::io::Write;
use std::path::Path;
use std::process::Command;

fn jembatan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jembatan"))
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = jembatan().arg("audit").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn demo(keep: &Path) -> String {
    let out = jembatan()
        .args(["demo", "--residents", "2000", "--keep"])
        .arg(keep)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The keys of the demo's lookups on the population registry, in order,
/// with the purpose asked.
fn registry_lookups(demo_stdout: &str) -> Vec<(String, String)> {
    demo_stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Lookup disdukcapil.penduduk key="))
        .map(|rest| {
            let (key, purpose) = rest.split_once(" purpose=").unwrap();
            (key.to_owned(), purpose.trim_matches('"').to_owned())
        })
        .collect()
}

/// A copy of `from` with `extra` appended as JSON lines.
fn forged(from: &Path, to: &Path, extra: &[serde_json::Value]) {
    std::fs::copy(from, to).unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(to).unwrap();
    for line in extra {
        writeln!(file, "{line}").unwrap();
    }
}

#[test]
fn who_accessed_and_crosscheck_on_a_demo_run() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let stdout = demo(&keep);
    let store = keep.join("broker.db");
    let store = store.to_str().unwrap();
    let audit_key = keep.join("audit-hmac.key");
    let audit_key = audit_key.to_str().unwrap();

    // who looked the licence applicant up: DPMPTSP, allowed, one row
    let lookups = registry_lookups(&stdout);
    assert!(lookups.len() >= 4, "{stdout}");
    let who = |key: &str| {
        run(&[
            "who-accessed",
            "--store",
            store,
            "--audit-key",
            audit_key,
            "--dataset",
            "disdukcapil.penduduk",
            key,
        ])
    };
    let (code, out, err) = who(&lookups[0].0);
    assert_eq!(code, Some(0), "{out}{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // a lookup is one entry: its decision and its answer
    let looked_up: Vec<&Vec<&str>> = rows.iter().filter(|r| r[3] == "lookup").collect();
    assert_eq!(looked_up.len(), 1, "{out}");
    assert_eq!(
        looked_up[0][2..8],
        ["answered", "lookup", "dpmptsp", "allow", "ok", "1"]
    );
    // anything else is a batch of Dinas Sosial's subscription to the
    // district, which names each resident it delivered
    assert!(
        rows.iter()
            .all(|r| r[3] == "lookup" || r[2..5] == ["delivery", "subscribe", "dinsos"]),
        "{out}"
    );
    assert!(out.contains(&lookups[0].1), "{out}");
    // the resident two agencies were refused: both denials, neither
    // allowed; the only allowed lookups are Dinas Kesehatan's two
    // verifications of the resident's name (one entry each)
    let (resident, _) = lookups.last().unwrap();
    let (code, out, err) = who(resident);
    assert_eq!(code, Some(0), "{out}{err}");
    for consumer in ["diskominfo", "dpmptsp"] {
        assert!(
            out.lines()
                .any(|l| l.contains(consumer) && l.contains(" deny ") && l.contains("denied")),
            "{consumer}: {out}"
        );
    }
    let allowed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" allow ") && l.contains(" lookup "))
        .collect();
    assert_eq!(allowed.len(), 2, "{out}");
    assert!(allowed.iter().all(|l| l.contains("dinkes")), "{out}");
    // a key nobody looked up, and the same key in another dataset
    let (code, out, _) = who("1507000000000000");
    assert_eq!(code, Some(0));
    assert!(out.starts_with("no entries"), "{out}");
    let (code, out, _) = run(&[
        "who-accessed",
        "--store",
        store,
        "--audit-key",
        audit_key,
        "--dataset",
        "dinsos.penerima_bansos",
        &lookups[0].0,
    ]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("no entries"), "{out}");
    // the wrong key file finds nothing; a missing one is a usage error
    let other_key = keep.join("other.key");
    std::fs::write(&other_key, "11".repeat(32)).unwrap();
    let (code, out, _) = run(&[
        "who-accessed",
        "--store",
        store,
        "--audit-key",
        other_key.to_str().unwrap(),
        "--dataset",
        "disdukcapil.penduduk",
        &lookups[0].0,
    ]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("no entries"), "{out}");
    let missing = keep.join("missing.key");
    let (code, _, err) = run(&[
        "who-accessed",
        "--store",
        store,
        "--audit-key",
        missing.to_str().unwrap(),
        "--dataset",
        "disdukcapil.penduduk",
        "1",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot read the audit key"), "{err}");

    // every adapter's receipt log agrees with the broker's log
    let receipts = keep.join("receipts-disdukcapil.jsonl");
    let crosscheck = |receipts: &Path| {
        run(&[
            "crosscheck",
            "--store",
            store,
            "--receipts",
            receipts.to_str().unwrap(),
        ])
    };
    let (code, out, err) = crosscheck(&receipts);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("all agree with the broker's log"), "{out}");
    let served: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(served >= 3, "{out}");
    for agency in ["dpmptsp", "dinsos"] {
        let (code, out, err) = crosscheck(&keep.join(format!("receipts-{agency}.jsonl")));
        assert_eq!(code, Some(0), "{agency}: {out}{err}");
    }

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&receipts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first_served = lines.iter().find(|l| l["kind"] == "served").unwrap();
    let first_receipt = lines.iter().find(|l| l["kind"] == "receipt").unwrap();

    // a fetch the broker never logged
    let ghost = "01a2ffff-0000-7000-8000-000000000000";
    let mut line = first_served.clone();
    line["exchange_id"] = ghost.into();
    let copy = keep.join("receipts-forged.jsonl");
    forged(&receipts, &copy, &[line]);
    let (code, out, err) = crosscheck(&copy);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!(
            "exchange {ghost}: the adapter served it, but the broker's log has no entry of it"
        )),
        "{out}"
    );
    assert!(err.contains("1 mismatch between"), "{err}");

    // more rows served than the broker logged, with another payload
    let id = first_served["exchange_id"].as_str().unwrap();
    let rows = first_served["rows"].as_u64().unwrap();
    let mut line = first_served.clone();
    line["rows"] = (rows + 1).into();
    line["payload_sha256"] = "00".repeat(32).into();
    // a receipt whose entry hash is not the logged entry's
    let mut receipt = first_receipt.clone();
    receipt["receipt"]["entry_sha256"] = "11".repeat(32).into();
    assert_eq!(
        receipt["receipt"]["leaf_hash"].as_str().map(str::len),
        Some(64),
        "receipts carry the entry's leaf hash"
    );
    receipt["receipt"]["leaf_hash"] = "22".repeat(32).into();
    let receipt_id = receipt["receipt"]["exchange_id"]
        .as_str()
        .unwrap()
        .to_owned();
    forged(&receipts, &copy, &[line, receipt]);
    let (code, out, err) = crosscheck(&copy);
    assert_eq!(code, Some(1), "{out}{err}");
    for want in [
        format!(
            "exchange {id}: adapter served {} rows, broker logged {rows}",
            rows + 1
        ),
        format!(
            "exchange {id}: adapter's payload sha256 {}",
            "00".repeat(32)
        ),
        format!("exchange {receipt_id}: receipt's entry_sha256 does not match entry"),
        format!("exchange {receipt_id}: receipt's leaf_hash does not match entry"),
    ] {
        assert!(out.contains(&want), "{want:?} not in:\n{out}");
    }
    assert_eq!(out.lines().count(), 4, "{out}");

    // receipts carry signed checkpoints; the log agrees with every one
    let public_key = keep.join("checkpoint.key.pub");
    let (code, out, err) = run(&[
        "crosscheck",
        "--store",
        store,
        "--receipts",
        receipts.to_str().unwrap(),
        "--public-key",
        public_key.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let checkpoints: u64 = out
        .split(" receipts and ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no checkpoint count in {out}"));
    assert!(checkpoints >= 1, "{out}");
    // a receipt whose checkpoint has another root, signed by another key:
    // found by the root alone, and by the signature given the key
    let mut receipt = lines
        .iter()
        .find(|l| l["kind"] == "receipt" && l["receipt"]["checkpoint"].is_string())
        .expect("a receipt with a checkpoint")
        .clone();
    let note = receipt["receipt"]["checkpoint"].as_str().unwrap();
    let body = jembatan_tlog::note::Note::parse(note).unwrap();
    let real = jembatan_tlog::note::Checkpoint::parse_body(body.text()).unwrap();
    let rogue = jembatan_tlog::note::Signer::from_seed(&real.origin, &[9; 32]).unwrap();
    let forged_note = jembatan_tlog::note::Checkpoint::new(real.origin.clone(), real.size, [7; 32])
        .sign(&rogue)
        .unwrap();
    receipt["receipt"]["checkpoint"] = forged_note.into();
    let forged_id = receipt["receipt"]["exchange_id"]
        .as_str()
        .unwrap()
        .to_owned();
    forged(&receipts, &copy, &[receipt]);
    let (code, out, err) = crosscheck(&copy);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!(
            "exchange {forged_id}: the broker's log at size {} does not have the root of the checkpoint on the receipt",
            real.size
        )),
        "{out}"
    );
    let (code, out, err) = run(&[
        "crosscheck",
        "--store",
        store,
        "--receipts",
        copy.to_str().unwrap(),
        "--public-key",
        public_key.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!(
            "exchange {forged_id}: the checkpoint on its receipt does not verify"
        )),
        "{out}"
    );

    // an unreadable receipt log is a usage error
    let bad = keep.join("receipts-bad.jsonl");
    std::fs::write(&bad, "not json\n").unwrap();
    let (code, _, err) = crosscheck(&bad);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn query_filters_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("demo");
    demo(&keep);
    let store = keep.join("broker.db");
    let store = store.to_str().unwrap();
    let lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["query", "--store", store];
        all.extend_from_slice(args);
        let (code, out, err) = run(&all);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let denials = lines(&["--decision", "deny"]);
    assert_eq!(
        denials.len(),
        6,
        "the demo's five denied exchanges and its refused schema registration"
    );
    assert!(denials.iter().all(|e| e["entry"]["decision"] == "deny"));
    let refused: Vec<_> = denials
        .iter()
        .filter(|e| e["entry"]["kind"] == "registry")
        .collect();
    assert_eq!(refused.len(), 1, "{denials:?}");
    assert_eq!(refused[0]["entry"]["operation"], "registry.register_schema");
    assert_eq!(refused[0]["entry"]["dataset"], "dinsos.warga");
    let lpse = lines(&["--agency", "lpse"]);
    assert!(!lpse.is_empty());
    assert!(lpse.iter().all(|e| e["entry"]["consumer"] == "lpse"));
    let ok = lines(&["--status", "ok", "--dataset", "dpmptsp.izin_usaha"]);
    assert_eq!(ok.len(), 2, "two licence lookups completed");
    assert!(lines(&["--from", "2099-01-01"]).is_empty());
    // the subscription's entries: its decision, a delivery per poll that
    // found changes (how many depends on timing), its end
    let all = lines(&["--until", "2099-01-01"]);
    let subscription = all
        .iter()
        .filter(|e| e["entry"]["operation"] == "subscribe")
        .count();
    assert!(subscription >= 4, "{all:?}");
    assert_eq!(all.len() - subscription, 22);
    let (code, _, err) = run(&["query", "--store", store, "--from", "yesterday"]);
    assert_eq!(code, Some(2), "{err}");
}

/// An entry as the broker wrote it in format `v`, with `filter`.
fn entry_with_filter(i: usize, v: u32, filter: Option<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "v": v, "kind": "decision", "exchange_id": format!("x-{i}"),
        "time": format!("2026-01-0{}T00:00:00.000000Z", i + 1), "operation": "query",
        "caller": "agency:dinsos", "consumer": "dinsos", "provider": "prov",
        "dataset": "prov.penduduk", "purpose": "bansos", "fields": ["nik"],
        "filter": filter, "subject_hash": null, "limit": null, "agreement_id": null,
        "agreement_terms_sha256": null, "decision": "allow", "reasons": [],
        "status": "started", "rows": 0, "bytes": 0, "payload_sha256": null,
        "duration_ms": null, "error": null, "trace_id": null,
    })
}

#[test]
fn query_lists_the_entries_whose_filters_hold_values() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("broker.db");
    let store = path.to_str().unwrap();
    let written = [
        // format 1: a value in clear, deep inside; no filter; no value
        (
            1,
            Some(
                serde_json::json!({"all": [{"not": {"field": "nik", "op": "in", "values": ["1507011234560001"]}}]}),
            ),
        ),
        (1, None),
        (
            1,
            Some(serde_json::json!({"field": "nik", "op": "is_null"})),
        ),
        // format 2: values as a subject hash and a shape
        (
            2,
            Some(serde_json::json!({"any": [
            {"field": "nik", "op": "eq", "value": {"subject": "ab".repeat(32)}},
            {"field": "nama", "op": "prefix", "value": {"type": "string", "len": 4}}]})),
        ),
        (
            1,
            Some(serde_json::json!({"field": "umur", "op": "gt", "value": 17})),
        ),
    ];
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let s = jembatan_store::Store::connect(store).await.unwrap();
        let log = jembatan_store::AuditLog::start(s.clone());
        for (i, (v, filter)) in written.into_iter().enumerate() {
            let e: jembatan_core::AuditEntry =
                serde_json::from_value(entry_with_filter(i, v, filter)).unwrap();
            log.append(e).await.unwrap();
        }
        s.close().await;
    });

    let (code, out, err) = run(&["query", "--store", store, "--raw-filters"]);
    assert_eq!(code, Some(0), "{err}");
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            serde_json::json!({"seq": 0, "exchange_id": "x-0", "time": "2026-01-01T00:00:00.000000Z"}),
            serde_json::json!({"seq": 4, "exchange_id": "x-4", "time": "2026-01-05T00:00:00.000000Z"}),
        ]
    );
    assert!(
        err.contains("2 entries hold filter values in clear"),
        "{err}"
    );
    // the other filters still apply, and CSV names the same entries
    let (code, out, err) = run(&[
        "query",
        "--store",
        store,
        "--raw-filters",
        "--from",
        "2026-01-02",
        "--format",
        "csv",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "seq,exchange_id,time\n4,x-4,2026-01-05T00:00:00.000000Z\n"
    );
    // every entry, old and new, is still exported as written
    let (code, out, err) = run(&["export", "--store", store]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 5);
    assert!(
        out.contains("1507011234560001"),
        "format 1 entries keep their bytes"
    );
}
