//! `jembatan store migrate` on a kept demo's SQLite store: the PostgreSQL
//! copy verifies with the same root, a broker started on it serves a
//! lookup and continues the log after the copied entries, a second copy
//! into the filled target is refused naming a table, and a target that is
//! not PostgreSQL (or a source that is not SQLite) is refused.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jembatan_store::Store;
use support::{Running, jembatan, listen_port};

/// Runs `jembatan ARGS`: exit code, standard output, standard error.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = jembatan().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `audit verify` on `store`: its report line, and the size it names.
fn verify(store: &str, public_key: &Path) -> (String, u64) {
    let (code, out, err) = run(&[
        "audit",
        "verify",
        "--store",
        store,
        "--public-key",
        public_key.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let size = out
        .strip_prefix("verified ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    (out.trim().to_owned(), size)
}

/// Runs `sql` on the test server's administrative connection.
fn admin(url: &str, sql: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pool = Store::admin_pool(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
}

/// A NIK of the demo's population registry.
fn a_nik(keep: &Path) -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let db = keep.join("data").join("disdukcapil.db");
        let pool = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .unwrap();
        let nik: String = sqlx::query_scalar("SELECT nik FROM penduduk WHERE status = 'HIDUP'")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        nik
    })
}

/// Starts a server and waits for its port.
fn start(what: &str, config: &Path) -> Running {
    let port = listen_port(config);
    let server = Running(
        jembatan()
            .args([what, "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the {what} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

#[test]
fn a_kept_demo_moves_to_postgres_and_runs_there() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keep: PathBuf = dir.path().join("demo");
    let (code, out, err) = run(&[
        "demo",
        "--residents",
        "1000",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let public_key = keep.join("checkpoint.key.pub");
    let source = format!("sqlite:{}", keep.join("broker.db").display());
    let (source_report, copied) = verify(&source, &public_key);

    let name = format!("jembatan_cli_migrate_{}", std::process::id());
    admin(&url, &format!("DROP DATABASE IF EXISTS {name}"));
    admin(&url, &format!("CREATE DATABASE {name}"));
    let (base, _) = url.rsplit_once('/').unwrap();
    let target = format!("{base}/{name}");
    let migrate = |to: &str| {
        run(&[
            "store",
            "migrate",
            "--from",
            &source,
            "--to",
            to,
            "--public-key",
            public_key.to_str().unwrap(),
        ])
    };

    let (code, out, err) = migrate(&target);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("the copy matches the source"), "{out}");
    for table in [
        "agreements",
        "audit_subjects",
        "schema_versions",
        "checkpoints",
    ] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no {table} in {out}"));
        let counts: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert!(counts[0] != "0" && counts[0] == counts[1], "{line}");
    }

    // the copy verifies as the source does: same size, root, checkpoints
    let (target_report, size) = verify(&target, &public_key);
    assert_eq!(target_report, source_report);
    assert_eq!(size, copied);

    // a broker on the copy serves a lookup and logs it after the copied entries
    let config = keep.join("broker-postgres.toml");
    let text = std::fs::read_to_string(keep.join("broker.toml")).unwrap();
    assert!(text.contains("store = \"broker.db\""), "{text}");
    std::fs::write(
        &config,
        text.replace("store = \"broker.db\"", &format!("store = \"{target}\"")),
    )
    .unwrap();
    let adapter = start("adapter", &keep.join("adapter-disdukcapil.toml"));
    let broker = start("broker", &config);
    let certs = keep.join("certs");
    let nik = a_nik(&keep);
    let (code, out, err) = run(&[
        "lookup",
        "--dataset",
        "disdukcapil.penduduk",
        "--purpose",
        "verifikasi identitas pemohon izin usaha",
        &nik,
        "--json",
        "--broker",
        &format!("https://localhost:{}", listen_port(&config)),
        "--ca",
        certs.join("ca.pem").to_str().unwrap(),
        "--cert",
        certs.join("agency-dpmptsp.pem").to_str().unwrap(),
        "--key",
        certs.join("agency-dpmptsp-key.pem").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(answer["found"], true, "{out}");
    assert_eq!(answer["record"]["nik"], nik.as_str());
    assert_eq!(answer["receipt"]["verified"], true);
    let decision = answer["receipt"]["decision_seq"].as_u64().unwrap();
    let completion = answer["receipt"]["entry_seq"].as_u64().unwrap();
    assert!(decision >= copied, "{decision} < {copied}");
    // a lookup's decision and answer are one entry
    assert_eq!(completion, decision);
    drop(broker);
    drop(adapter);
    // gap-free past the copied entries, and the source left as it was
    let (_, grown) = verify(&target, &public_key);
    assert_eq!(grown, completion + 1);
    assert_eq!(verify(&source, &public_key).0, source_report);

    // a second copy into the filled target is refused, naming a table
    let (code, out, err) = migrate(&target);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("the target store is not empty: table agencies holds rows"),
        "{err}"
    );
    assert_eq!(verify(&target, &public_key).1, grown);

    // only SQLite to PostgreSQL
    let elsewhere = dir.path().join("other.db");
    let (code, _, err) = migrate(&format!("sqlite:{}", elsewhere.display()));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("the target must be a PostgreSQL store"),
        "{err}"
    );
    assert!(!elsewhere.exists());
    let (code, _, err) = run(&[
        "store",
        "migrate",
        "--from",
        &target,
        "--to",
        &target,
        "--public-key",
        public_key.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the source must be a SQLite store"), "{err}");

    admin(
        &url,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}
