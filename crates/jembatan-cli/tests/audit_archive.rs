//! `jembatan audit archive` on a kept demo whose broker keeps running:
//! the oldest entries move to a file that verifies on its own, the store
//! verifies from where its entries resume (locally and through the
//! broker), proofs of archived entries are still made and check against
//! the entry in the file, and the adapter's receipts still crosscheck.

mod support;

use std::path::Path;

use jembatan_proto::v1 as pb;
use jembatan_proto::v1::audit_client::AuditClient;
use support::{Demo, jembatan};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The exit code, standard output and error of a finished command.
fn outcome(command: &mut std::process::Command) -> (Option<i32>, String, String) {
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `jembatan ARGS`.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    outcome(jembatan().args(args))
}

/// Runs `jembatan audit ARGS` through the demo's broker as the auditor.
fn remote(demo: &Demo, args: &[&str]) -> (Option<i32>, String, String) {
    let all = [&["audit"][..], args].concat();
    outcome(&mut demo.command("auditor", &all))
}

/// Runs `jembatan audit archive` on the demo's store with its checkpoint
/// key and `args`.
fn archive(demo: &Demo, args: &[&str]) -> (Option<i32>, String, String) {
    let store = demo.keep.join("broker.db");
    let key = demo.keep.join("checkpoint.key.pub");
    let common = [
        "audit",
        "archive",
        "--store",
        path(&store),
        "--public-key",
        path(&key),
    ];
    run(&[&common[..], args].concat())
}

async fn auditor(demo: &Demo) -> AuditClient<tonic::transport::Channel> {
    AuditClient::new(support::channel(&demo.keep, "auditor", demo.broker_port).await)
}

/// Grows the log past 300 entries (each proof asked for is an
/// `audit_read` entry) and waits for a checkpoint over them.
async fn grow(demo: &Demo) {
    let mut audit = auditor(demo).await;
    for _ in 0..300 {
        audit
            .inclusion_proof(pb::InclusionProofRequest {
                index: 0,
                tree_size: 0,
            })
            .await
            .unwrap();
    }
    for _ in 0..300 {
        let latest = audit
            .latest_checkpoint(pb::LatestCheckpointRequest {})
            .await
            .unwrap()
            .into_inner();
        if latest.size >= 300 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no checkpoint over 300 entries");
}

#[test]
fn archiving_the_oldest_entries_of_a_running_broker() {
    let demo = Demo::start_with(false, |_| {});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(grow(&demo));
    let store = demo.keep.join("broker.db");
    let public_key = demo.keep.join("checkpoint.key.pub");
    let file = demo.dir.path().join("audit-0.jsonl");

    let (code, out, err) = archive(&demo, &["--below", "300", "--out", path(&file)]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("archived entries 0 to "), "{out}");
    assert!(
        out.contains("entries below 256 have left the store"),
        "{out}"
    );
    assert!(err.contains("entries removed from the store"), "{err}");

    // a bound is required, and one only
    let (code, _, err) = archive(&demo, &["--out", path(&file)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--below <SEQ>|--before <TIME>"), "{err}");

    // the same file is not written twice
    let (code, _, err) = archive(&demo, &["--below", "300", "--out", path(&file)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("exists already"), "{err}");

    // the file holds what the log held: the key the demo looked up is
    // not in it in clear
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("\"operation\":\"lookup\""),
        "a lookup is archived"
    );
    assert!(
        !text.contains(&demo.nik),
        "a looked-up NIK is in the archive in clear"
    );

    // the store verifies from entry 256; with the file, everything
    let verify = [
        "audit",
        "verify",
        "--store",
        path(&store),
        "--public-key",
        path(&public_key),
    ];
    let (code, out, err) = run(&verify);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("entries (from entry 256 on)"), "{out}");
    assert!(out.contains("entries below 256 are archived"), "{out}");
    let with_file = [&verify[..], &["--archive", path(&file)]].concat();
    let (code, out, err) = run(&with_file);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("verified archive "), "{out}");
    assert!(
        out.contains("the archive files hold every archived entry (below 256)"),
        "{out}"
    );
    let (code, out, err) = run(&[
        "audit",
        "verify",
        "--public-key",
        path(&public_key),
        "--archive",
        path(&file),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");

    // through the broker: the entries it still serves, from the tree it
    // states for the archived ones
    let (code, out, err) = remote(&demo, &["verify", "--public-key", path(&public_key)]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("entries (from entry 256 on) through the broker's Audit service"),
        "{out}"
    );
    assert!(out.contains("entries below 256 are archived"), "{out}");

    // an archived entry's proof, from the store and through the broker,
    // is of the leaf the file holds for it
    let line: serde_json::Value = serde_json::from_str(text.lines().nth(1 + 5).unwrap()).unwrap();
    assert_eq!(line["seq"], 5);
    let (code, out, err) = run(&["audit", "proof", "--store", path(&store), "--index", "5"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let proof: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(proof["archived"], true);
    assert_eq!(proof["leaf_hash"], line["leaf_hash"]);
    let hashes: Vec<[u8; 32]> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let leaf: [u8; 32] = hex::decode(line["leaf_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let root: [u8; 32] = hex::decode(proof["root"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let size = proof["size"].as_u64().unwrap();
    jembatan_tlog::merkle::verify_inclusion(&leaf, 5, size, &hashes, &root).unwrap();
    let proof_args = ["proof", "--index", "5", "--public-key", path(&public_key)];
    let (code, out, err) = remote(&demo, &proof_args);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("give the archive file holding it with --archive FILE"),
        "{err}"
    );
    let (code, out, err) = remote(
        &demo,
        &[&proof_args[..], &["--archive", path(&file)]].concat(),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let through: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(through["leaf_hash"], line["leaf_hash"]);
    // a file whose entry is another is refused
    let (code, out, err) = run(&[
        "audit",
        "proof",
        "--store",
        path(&store),
        "--index",
        "6",
        "--archive",
        path(&file),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let other = demo.dir.path().join("other.jsonl");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut seventh: serde_json::Value = serde_json::from_str(&lines[8]).unwrap();
    seventh["seq"] = 6.into();
    lines[7] = seventh.to_string();
    std::fs::write(&other, lines.join("\n")).unwrap();
    let (code, out, err) = run(&[
        "audit",
        "proof",
        "--store",
        path(&store),
        "--index",
        "6",
        "--archive",
        path(&other),
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("entry 6 in the archive file is not the entry the tree holds"),
        "{err}"
    );

    // the adapter's receipts: those of archived exchanges are counted, the
    // rest still agree with the log
    let (code, out, err) = run(&[
        "audit",
        "crosscheck",
        "--store",
        path(&store),
        "--receipts",
        path(&demo.keep.join("receipts-disdukcapil.jsonl")),
        "--public-key",
        path(&public_key),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("are of exchanges whose entries are archived"),
        "{out}"
    );

    // export says what it leaves out
    let (code, out, err) = run(&["audit", "export", "--store", path(&store)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("entries below 256 are archived"), "{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 256);
}
