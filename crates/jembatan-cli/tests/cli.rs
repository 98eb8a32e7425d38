//! The `jembatan` binary as an operator uses it: PKI (with PKCS#12
//! export), adapter init, demo.

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
fn pki_p12_packs_an_issued_certificate_and_key_for_java() {
    use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = jembatan().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let (ok, _, err) = run(&[&os("pki"), &os("init"), &os("--dir"), ca.as_os_str()]);
    assert!(ok, "{err}");
    let issue = [
        &os("pki"),
        &os("issue"),
        &os("--role"),
        &os("agency"),
        &os("--agency"),
        &os("dinsos"),
        &os("--dir"),
        ca.as_os_str(),
    ];
    let (ok, _, err) = run(&issue);
    assert!(ok, "{err}");
    let (cert, key) = (
        ca.join("agency-dinsos.pem"),
        ca.join("agency-dinsos-key.pem"),
    );
    let password = dir.path().join("password");
    std::fs::write(&password, "kata sandi\n").unwrap();
    let out = dir.path().join("agency-dinsos.p12");
    let p12 = |password: &std::path::Path| {
        run(&[
            &os("pki"),
            &os("p12"),
            &os("--cert"),
            cert.as_os_str(),
            &os("--key"),
            key.as_os_str(),
            &os("--out"),
            out.as_os_str(),
            &os("--password-file"),
            password.as_os_str(),
        ])
    };
    let (ok, stdout, err) = p12(&password);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("agency:dinsos") || stdout.contains("agency/dinsos"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // the password is the file's first line, without its newline
    let data = std::fs::read(&out).unwrap();
    assert!(KeyStore::from_pkcs12(&data, "kata sandi\n", Pkcs12ImportPolicy::Strict).is_err());
    let store = KeyStore::from_pkcs12(&data, "kata sandi", Pkcs12ImportPolicy::Strict).unwrap();
    let (alias, chain) = store.private_key_chain().unwrap();
    assert_eq!(alias, "agency-dinsos");
    let id = jembatan_pki::identity_from_der(chain.certs()[0].as_der()).unwrap();
    assert_eq!(id.uri(), "spiffe://jembatan/agency/dinsos");

    // an existing file is left alone; an empty password is refused
    let (ok, _, err) = p12(&password);
    assert!(!ok && err.contains("cannot create"), "{err}");
    std::fs::remove_file(&out).unwrap();
    std::fs::write(&password, "\n").unwrap();
    let (ok, _, err) = p12(&password);
    assert!(!ok && err.contains("password is empty"), "{err}");
    assert!(!out.exists());
}

#[test]
fn pki_revoke_keeps_a_ca_signed_revocation_list() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let run = |args: &[&str]| {
        let out = jembatan().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ca_arg = ca.to_str().unwrap();
    let (ok, out, err) = run(&["pki", "init", "--dir", ca_arg]);
    assert!(ok, "{err}");
    assert!(out.contains("crl.pem"), "{out}");
    let ca_der = jembatan_pki::Ca::load(&ca).unwrap().cert_der().unwrap();
    let list = |path: &std::path::Path| jembatan_pki::RevocationList::load(path, &ca_der).unwrap();
    assert!(list(&ca.join("crl.pem")).is_empty());

    for agency in ["dinsos", "dinkes"] {
        let (ok, out, err) = run(&[
            "pki", "issue", "--dir", ca_arg, "--role", "agency", "--agency", agency,
        ]);
        assert!(ok && out.contains("serial"), "{out}{err}");
    }
    let cert = ca.join("agency-dinsos.pem");
    let serial = jembatan_pki::Serial::of_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let (ok, out, err) = run(&[
        "pki",
        "revoke",
        "--ca",
        ca_arg,
        "--cert",
        cert.to_str().unwrap(),
        "--reason",
        "key-compromise",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&serial.to_string()) && out.contains("agency:dinsos"),
        "{out}"
    );
    let crl = list(&ca.join("crl.pem"));
    assert!(crl.is_revoked(&serial));
    assert_eq!(crl.entries[&serial].reason_code, Some(1));
    assert_eq!(crl.number, 2, "the empty list of init was number 1");

    // by serial; a second time changes nothing
    let other = jembatan_pki::Serial::of_pem(&std::fs::read(ca.join("agency-dinkes.pem")).unwrap())
        .unwrap();
    let (ok, _, err) = run(&[
        "pki",
        "revoke",
        "--ca",
        ca_arg,
        "--serial",
        &other.to_string(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&[
        "pki",
        "revoke",
        "--ca",
        ca_arg,
        "--serial",
        &other.to_string(),
    ]);
    assert!(ok && out.contains("already revoked"), "{out}");
    let crl = list(&ca.join("crl.pem"));
    assert_eq!((crl.number, crl.len()), (3, 2));
    let (ok, out, _) = run(&["pki", "revoked", "--ca", ca_arg]);
    assert!(
        ok && out.contains(&serial.to_string()) && out.contains("key-compromise"),
        "{out}"
    );

    // bad input gets a clear error
    let foreign = dir.path().join("foreign");
    assert!(run(&["pki", "init", "--dir", foreign.to_str().unwrap()]).0);
    assert!(
        run(&[
            "pki",
            "issue",
            "--dir",
            foreign.to_str().unwrap(),
            "--role",
            "broker"
        ])
        .0
    );
    let foreign_cert = foreign.join("broker.pem");
    for (args, want) in [
        (
            vec!["--cert", foreign_cert.to_str().unwrap()],
            "not issued by this CA",
        ),
        (vec!["--serial", "xyz"], "not a certificate serial number"),
        (
            vec!["--serial", "01", "--reason", "boredom"],
            "unknown reason",
        ),
        (vec![], "--cert"),
    ] {
        let mut all = vec!["pki", "revoke", "--ca", ca_arg];
        all.extend(args.iter().copied());
        let (ok, _, err) = run(&all);
        assert!(!ok, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(
        list(&ca.join("crl.pem")).number,
        3,
        "refusals wrote nothing"
    );
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
        // a query translated into the consumer's schema
        "as dinsos.warga@1",
        "birth_date=",
        "sex=F",
        // an incompatible schema change, refused with its explanation
        "required_added",
        "counterexample",
        // Dinas Sosial's subscription in its own schema, its batches on
        // the log, and the death and the move it delivered, flagged
        "Subscribe disdukcapil.penduduk as dinsos.warga@1",
        " delivery ",
    ] {
        assert!(
            stdout.contains(want),
            "demo output lacks {want:?}:\n{stdout}"
        );
    }
    let flags: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("⚑ bansos recipient "))
        .collect();
    assert_eq!(flags.len(), 2, "two recipients flagged:\n{stdout}");
    assert!(
        flags[0].contains("flagged: no longer a living resident"),
        "the death arrives first, as a delete: {flags:?}"
    );
    assert!(
        flags[1].contains("flagged: moved from ") && flags[1].contains(" to "),
        "the move arrives as an upsert with the new village: {flags:?}"
    );
    for file in [
        "broker.db",
        "broker.toml",
        "adapter-disdukcapil.toml",
        "certs/ca.pem",
    ] {
        assert!(keep.join(file).exists(), "{file} was not kept");
    }
    audit_tools_work_on_the_kept_store(&keep, &stdout);
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

/// `jembatan audit` on the store a demo run kept: verify (exit 0, and 1
/// once tampered with), proofs that verify, exports, tail, exit 2 on usage
/// errors.
fn audit_tools_work_on_the_kept_store(keep: &std::path::Path, demo_stdout: &str) {
    let store = keep.join("broker.db");
    let public_key = keep.join("checkpoint.key.pub");
    assert!(public_key.exists(), "the public key was not kept");
    let command = format!(
        "jembatan audit verify --store {} --public-key {}",
        store.display(),
        public_key.display()
    );
    assert!(demo_stdout.contains(&command), "{demo_stdout}");
    let run = |args: &[&str]| {
        let out = jembatan().arg("audit").args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let store_arg = store.to_str().unwrap();
    let key_arg = public_key.to_str().unwrap();

    let (code, stdout, stderr) = run(&["verify", "--store", store_arg, "--public-key", key_arg]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let mut lines = stdout.lines();
    let words: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(words[0], "verified", "{stdout}");
    // the demo signs a checkpoint over every entry at its end
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("every entry is under the latest signed checkpoint")),
        "{stdout}"
    );
    let size: u64 = words[1].parse().unwrap();
    assert!(size > 10, "{stdout}");
    let checkpoints: u64 = words[words.len() - 2].parse().unwrap();
    assert!(checkpoints >= 1, "{stdout}");

    // an inclusion proof against the latest checkpoint verifies
    let (code, stdout, stderr) = run(&["proof", "--store", store_arg, "--index", "3"]);
    assert_eq!(code, Some(0), "{stderr}");
    let proof: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(proof["index"], 3);
    assert_eq!(proof["size"], size);
    let hash = |v: &serde_json::Value| -> [u8; 32] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let path: Vec<[u8; 32]> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(hash)
        .collect();
    let root = hash(&proof["root"]);
    let leaf = hash(&proof["leaf_hash"]);
    jembatan_tlog::merkle::verify_inclusion(&leaf, 3, size, &path, &root).unwrap();
    // ...and the wrong leaf does not
    assert!(jembatan_tlog::merkle::verify_inclusion(&leaf, 4, size, &path, &root).is_err());
    let verifier: jembatan_tlog::note::Verifier = std::fs::read_to_string(&public_key)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let checkpoint =
        jembatan_tlog::note::Checkpoint::open(proof["checkpoint"].as_str().unwrap(), &verifier)
            .unwrap();
    assert_eq!((checkpoint.size, checkpoint.root), (size, root));

    // exports: one line per entry; the leaf hash is that of the canonical bytes
    let (code, stdout, stderr) = run(&["export", "--store", store_arg]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, size);
    assert_eq!(lines[3]["leaf_hash"], proof["leaf_hash"]);
    assert_eq!(lines[3]["seq"], 3);
    assert!(lines[3]["entry"]["exchange_id"].is_string());
    let (code, stdout, stderr) = run(&["export", "--store", store_arg, "--format", "csv"]);
    assert_eq!(code, Some(0), "{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len() as u64, size + 1);
    assert!(rows[0].starts_with("seq,time,kind,caller,"), "{}", rows[0]);
    assert!(rows[4].starts_with("3,") && rows[4].ends_with(proof["leaf_hash"].as_str().unwrap()));
    let (code, stdout, _) = run(&["tail", "--store", store_arg, "-n", "2"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.lines().count(), 3, "{stdout}");

    // usage errors and stores that do not exist: exit 2, nothing created
    let missing = keep.join("missing.db");
    let (code, _, stderr) = run(&[
        "verify",
        "--store",
        missing.to_str().unwrap(),
        "--public-key",
        key_arg,
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!missing.exists());
    let (code, _, stderr) = run(&["proof", "--store", store_arg, "--index", &size.to_string()]);
    assert_eq!(code, Some(2), "{stderr}");
    let (code, _, stderr) = run(&["proof", "--store", store_arg, "--index", "0", "--size", "1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no checkpoint at size 1"), "{stderr}");

    // a rogue edit of a copy of the store: exit 1 naming the entry
    let copy = keep.join("tampered.db");
    std::fs::copy(&store, &copy).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}", copy.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        for sql in [
            "DROP TRIGGER audit_log_no_update",
            "UPDATE audit_log SET status = 'tampered' WHERE seq = 2",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
    });
    let (code, stdout, stderr) = run(&[
        "verify",
        "--store",
        copy.to_str().unwrap(),
        "--public-key",
        key_arg,
    ]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("entry 2: stored bytes do not match the indexed column status"),
        "{stderr}"
    );
}
