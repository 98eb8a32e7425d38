//! `jembatan audit verify|export|query|who-accessed|proof --broker`
//! against a broker started from a kept demo: the same answers as the
//! store-file mode, through the Audit service with an auditor's
//! certificate, each read itself on the log, a changed entry or a wrong
//! key caught, and other certificates refused.

mod support;

use std::path::Path;

use support::{Demo, jembatan};

/// Runs `jembatan audit ARGS` through the demo's broker with `who`'s
/// certificate: exit code, standard output and error.
fn remote(demo: &Demo, who: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let certs = demo.keep.join("certs");
    let out = jembatan()
        .arg("audit")
        .args(args)
        .arg("--broker")
        .arg(format!("https://localhost:{}", demo.broker_port))
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("{who}.pem")))
        .arg("--key")
        .arg(certs.join(format!("{who}-key.pem")))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `jembatan audit ARGS --store` on the demo's store.
fn local(demo: &Demo, args: &[&str]) -> (Option<i32>, String, String) {
    let out = jembatan()
        .arg("audit")
        .args(args)
        .arg("--store")
        .arg(demo.keep.join("broker.db"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn entries(jsonl: &str) -> Vec<serde_json::Value> {
    jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_audit_tools_through_a_running_broker() {
    let demo = Demo::start();
    let public_key = demo.keep.join("checkpoint.key.pub");
    let audit_key = demo.keep.join("audit-hmac.key");

    // verify: every entry streamed and checked against signed checkpoints
    let (code, out, err) = remote(
        &demo,
        "auditor",
        &["verify", "--public-key", path(&public_key)],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let mut lines = out.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("verified ")
            && first.contains(" entries through the broker's Audit service, root ")
            && first.contains("against the signed checkpoint"),
        "{out}"
    );
    let coverage = lines.next().unwrap();
    assert!(
        coverage.starts_with("the newest ") || coverage.starts_with("every entry is under"),
        "{out}"
    );
    if coverage.starts_with("the newest ") {
        assert!(
            coverage.contains("the broker signs the next checkpoint by ")
                && coverage.contains("or sooner after 8 new entries"),
            "the broker says when the next checkpoint is due: {out}"
        );
    }
    assert!(
        lines.next().unwrap().ends_with(
            "; each read is on the log as an audit_read entry, after the entries it read"
        ),
        "{out}"
    );

    // export: the entries the store holds, byte for byte; the store then
    // holds the export's own read as well
    let (code, through, err) = remote(&demo, "auditor", &["export"]);
    assert_eq!(code, Some(0), "{err}");
    let through = entries(&through);
    let (_, stored, _) = local(&demo, &["export"]);
    let stored = entries(&stored);
    assert!(stored.len() > through.len(), "the export is on the log");
    assert_eq!(through[..], stored[..through.len()]);
    let read = stored[through.len()..]
        .iter()
        .find(|e| e["entry"]["operation"] == "audit.query_entries")
        .unwrap();
    assert_eq!(read["entry"]["kind"], "audit_read");
    assert_eq!(read["entry"]["caller"], "auditor");
    assert_eq!(read["entry"]["decision"], "allow");

    // query with filters, as CSV
    let (code, csv, err) = remote(
        &demo,
        "auditor",
        &["query", "--decision", "deny", "--format", "csv"],
    );
    assert_eq!(code, Some(0), "{err}");
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().starts_with("seq,time,kind"));
    let rows: Vec<&str> = rows.collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|l| l.contains(",deny,")),
        "{csv}"
    );

    // who accessed this NIK: the hash is computed here, the key never
    // sent; the second look lists the first
    let who = |demo: &Demo| {
        remote(
            demo,
            "auditor",
            &[
                "who-accessed",
                "--audit-key",
                path(&audit_key),
                "--dataset",
                "disdukcapil.penduduk",
                &demo.nik,
            ],
        )
    };
    let (code, first, err) = who(&demo);
    assert_eq!(code, Some(0), "{err}");
    assert!(first.contains(" lookup "), "{first}");
    assert!(!first.contains("audit_read"), "{first}");
    let (_, second, _) = who(&demo);
    assert!(
        second.contains("audit_read") && second.contains("audit.subject_lookup"),
        "the auditor's first look is on the subject's history: {second}"
    );
    let (_, offline, _) = local(
        &demo,
        &[
            "who-accessed",
            "--audit-key",
            path(&audit_key),
            "--dataset",
            "disdukcapil.penduduk",
            &demo.nik,
        ],
    );
    assert_eq!(
        offline.lines().count(),
        second.lines().count() + 1,
        "the store lists the second look too:\n{offline}\n{second}"
    );
    let (_, log, _) = local(&demo, &["export"]);
    assert!(!log.contains(&demo.nik), "the NIK is on the log");

    // proof: checked against the signed root, the same as offline
    let (code, proof, err) = remote(
        &demo,
        "auditor",
        &["proof", "--index", "3", "--public-key", path(&public_key)],
    );
    assert_eq!(code, Some(0), "{err}");
    let proof: serde_json::Value = serde_json::from_str(&proof).unwrap();
    let size = proof["size"].as_u64().unwrap().to_string();
    let (code, offline, err) = local(&demo, &["proof", "--index", "3", "--size", &size]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        proof,
        serde_json::from_str::<serde_json::Value>(&offline).unwrap()
    );

    // other certificates are refused, and the refusal is on the log
    let (code, _, err) = remote(&demo, "agency-dinsos", &["export"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("role is agency"),
        "{err}"
    );
    let (_, log, _) = local(&demo, &["export"]);
    let refused = entries(&log)
        .into_iter()
        .rev()
        .find(|e| e["entry"]["caller"] == "agency:dinsos" && e["entry"]["kind"] == "audit_read")
        .expect("the refused read is on the log");
    assert_eq!(refused["entry"]["decision"], "deny");
    assert_eq!(refused["entry"]["reasons"][0]["code"], "role_not_allowed");

    // neither a store nor a broker: a usage error
    let out = jembatan()
        .args(["audit", "export"])
        .env_remove("JEMBATAN_BROKER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --store"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the receipts the adapter kept still agree with the grown log
    let out = jembatan()
        .args(["audit", "crosscheck", "--store"])
        .arg(demo.keep.join("broker.db"))
        .arg("--receipts")
        .arg(demo.keep.join("receipts-disdukcapil.jsonl"))
        .arg("--public-key")
        .arg(&public_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // a key that did not sign the checkpoints is refused
    let text = std::fs::read_to_string(&public_key).unwrap();
    let name = text.trim().split('+').next().unwrap();
    let other = demo.dir.path().join("other.pub");
    // RFC 8032's first test key: a valid Ed25519 key that signed nothing here
    let stranger: [u8; 32] =
        hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap()
            .try_into()
            .unwrap();
    let stranger = jembatan_tlog::note::Verifier::new(name, &stranger).unwrap();
    std::fs::write(&other, format!("{stranger}\n")).unwrap();
    let (code, out, err) = remote(&demo, "auditor", &["verify", "--public-key", path(&other)]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("verification failed: checkpoint at size")
            && err.contains("signature does not verify with key"),
        "{err}"
    );

    // an entry changed in the store is named
    let seq = through
        .iter()
        .find(|e| e["entry"]["decision"] == "deny")
        .map(|e| e["seq"].as_u64().unwrap())
        .unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", demo.keep.join("broker.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE audit_log SET entry = CAST(replace(CAST(entry AS TEXT), '\"deny\"', '\"allow\"') AS BLOB) WHERE seq = ?",
        )
        .bind(i64::try_from(seq).unwrap())
        .execute(&mut db)
        .await
        .unwrap();
    });
    let (code, out, err) = remote(
        &demo,
        "auditor",
        &["verify", "--public-key", path(&public_key)],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!(
            "verification failed: entry {seq}: entry_sha256 does not match the entry bytes"
        )),
        "{err}"
    );
}
