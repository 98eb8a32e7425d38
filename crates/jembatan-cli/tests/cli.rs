//! The `jembatan` binary as an operator uses it: PKI, adapter init, demo.

use std::process::Command;

fn jembatan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jembatan"))
}

#[test]
fn pki_init_and_issue_write_certificates_carrying_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = jembatan()
        .args(["pki", "init", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = jembatan()
        .args([
            "pki", "issue", "--role", "agency", "--agency", "dinsos", "--dir",
        ])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read(ca.join("agency-dinsos.pem")).unwrap();
    let id = jembatan_pki::identity_from_pem(&pem).unwrap();
    assert_eq!(id.uri(), "spiffe://jembatan/agency/dinsos");

    // a second init must not overwrite the CA
    let out = jembatan()
        .args(["pki", "init", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));

    // bad input gets a clear error
    for (args, want) in [
        (vec!["--role", "king"], "unknown role"),
        (vec!["--role", "agency"], "needs an agency"),
        (vec!["--role", "agency", "--agency", "Bad Id"], "agency id"),
        (vec!["--role", "broker", "--days", "0"], "--days"),
    ] {
        let out = jembatan()
            .args(["pki", "issue", "--dir"])
            .arg(&ca)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn demo_runs_end_to_end_and_keeps_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = jembatan()
        .args(["demo", "--residents", "3000", "--keep"])
        .arg(&keep)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "allowed",
        "no_agreement",
        "field_not_granted",
        "expired",
        "wrong_purpose",
        "Audit log",
    ] {
        assert!(
            stdout.contains(want),
            "demo output lacks {want:?}:\n{stdout}"
        );
    }
    for file in [
        "broker.db",
        "broker.toml",
        "adapter-disdukcapil.toml",
        "certs/ca.pem",
    ] {
        assert!(keep.join(file).exists(), "{file} was not kept");
    }
    // --keep refuses a non-empty directory
    let out = jembatan()
        .args(["demo", "--keep"])
        .arg(&keep)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[tokio::test]
async fn adapter_init_lists_every_column_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agency.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE warga (nik TEXT PRIMARY KEY, nama TEXT, lahir DATE)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let config = dir.path().join("adapter.toml");
    let init = |output: &std::path::Path| {
        jembatan()
            .args(["adapter", "init", "--database"])
            .arg(format!("sqlite://{}", db.display()))
            .arg("--output")
            .arg(output)
            .output()
            .unwrap()
    };
    let out = init(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&config).unwrap();
    for column in ["warga", "nik", "nama", "lahir"] {
        assert!(text.contains(column), "{column} not listed:\n{text}");
    }
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("[[datasets]]")),
        "a dataset is enabled:\n{text}"
    );
    // refuses to overwrite
    assert!(!init(&config).status.success());
    // a database that is not there is an error, not a new empty file
    let out = jembatan()
        .args([
            "adapter",
            "init",
            "--database",
            "sqlite:///nonexistent/x.db",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
