//! The command ends quietly (exit 0, nothing on standard error) when the
//! reader of its standard output goes away, as `jembatan audit export … |
//! head -1` does; and its log format follows `--log-format` or
//! `JEMBATAN_LOG_FORMAT`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn jembatan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jembatan"))
}

/// A store holding `n` audit entries.
fn store_with_entries(path: &std::path::Path, n: usize) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let s = jembatan_store::Store::connect(path.to_str().unwrap())
            .await
            .unwrap();
        let log = jembatan_store::AuditLog::start(s.clone());
        let mut appends = tokio::task::JoinSet::new();
        for i in 0..n {
            let e: jembatan_core::AuditEntry = serde_json::from_value(serde_json::json!({
                "v": 2, "kind": "decision", "exchange_id": format!("x-{i}"),
                "time": "2026-01-01T00:00:00.000000Z", "operation": "query",
                "caller": "agency:dinsos", "consumer": "dinsos", "provider": "prov",
                "dataset": "prov.penduduk", "purpose": "bansos", "fields": ["nik"],
                "filter": null, "subject_hash": null, "limit": null, "agreement_id": null,
                "agreement_terms_sha256": null, "decision": "allow", "reasons": [],
                "status": "started", "rows": 0, "bytes": 0, "payload_sha256": null,
                "duration_ms": null, "error": null, "trace_id": null,
            }))
            .unwrap();
            let log = log.clone();
            appends.spawn(async move { log.append(e).await });
        }
        while let Some(r) = appends.join_next().await {
            r.unwrap().unwrap();
        }
        s.close().await;
    });
}

#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("broker.db");
    // far more than a pipe's buffer: the export must still be writing
    // when its reader goes away
    store_with_entries(&store, 3000);

    for format in ["jsonl", "csv"] {
        let mut child = jembatan()
            .args(["audit", "export", "--format", format, "--store"])
            .arg(&store)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -1`: read one line, then close the pipe
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // the appends ran concurrently: any of them may be first
        assert!(
            first.contains("\"exchange_id\":\"x-") || first.starts_with("seq,"),
            "{format}: {first}"
        );
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert!(stderr.is_empty(), "{format}: {stderr}");
    }

    // the pipe closed before anything was written
    let mut child = jembatan()
        .args(["pki", "init", "--dir"])
        .arg(tmp.path().join("ca"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(tmp.path().join("ca/ca.pem").exists(), "the CA was made");

    // the whole export, read to the end, is still every entry
    let out = jembatan()
        .args(["audit", "export", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3000);
}

#[test]
fn log_lines_are_text_or_json() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("broker.db");
    store_with_entries(&store, 1);
    // the store's statements are logged at debug level
    let run = |format: Option<&str>, env: Option<&str>| {
        let mut cmd = jembatan();
        if let Some(f) = format {
            cmd.args(["--log-format", f]);
        }
        cmd.args(["audit", "export", "--store"])
            .arg(&store)
            .env("RUST_LOG", "debug")
            .env_remove("JEMBATAN_LOG_FORMAT");
        if let Some(e) = env {
            cmd.env("JEMBATAN_LOG_FORMAT", e);
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let json_lines = |stderr: &str| {
        stderr
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let text = run(None, None);
    assert!(!text.contains('\u{1b}'), "no colour off a terminal: {text}");
    assert!(json_lines(&text).is_empty(), "{text}");
    for stderr in [run(Some("json"), None), run(None, Some("json"))] {
        let lines = json_lines(&stderr);
        assert!(!lines.is_empty(), "{stderr}");
        assert!(
            lines
                .iter()
                .all(|l| l["level"].is_string() && l["fields"].is_object()),
            "{stderr}"
        );
    }
    let out = jembatan()
        .args(["--log-format", "xml", "pki", "revoked", "--ca", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("text or json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
