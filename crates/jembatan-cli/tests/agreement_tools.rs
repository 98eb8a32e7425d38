//! `jembatan agreement ...` against a broker started from a kept demo:
//! each certificate may do only its own part of the lifecycle, and the
//! exit codes say refused (1) from usage errors (2).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{Running, jembatan, listen_port};

struct Cli {
    keep: PathBuf,
    port: u16,
}

impl Cli {
    /// Runs `jembatan agreement ARGS` with `who`'s certificate.
    fn run(&self, who: &str, args: &[&str]) -> (Option<i32>, String, String) {
        self.command(who, "agreement", args)
    }

    /// Runs `jembatan COMMAND ARGS` with `who`'s certificate.
    fn command(&self, who: &str, command: &str, args: &[&str]) -> (Option<i32>, String, String) {
        let certs = self.keep.join("certs");
        let out = jembatan()
            .arg(command)
            .args(args)
            .arg("--broker")
            .arg(format!("https://localhost:{}", self.port))
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
}

#[test]
fn the_lifecycle_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = jembatan()
        .args(["demo", "--residents", "1000", "--keep"])
        .arg(&keep)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = keep.join("broker.toml");
    let port = listen_port(&config);
    // the provider's adapter: an approval asks it for its whitelist
    let adapter_config = keep.join("adapter-disdukcapil.toml");
    let adapter_port = listen_port(&adapter_config);
    let _adapter = Running(
        jembatan()
            .args(["adapter", "--config"])
            .arg(&adapter_config)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let broker_log = dir.path().join("broker.log");
    let _broker = Running(
        jembatan()
            .args(["broker", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&broker_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    for port in [adapter_port, port] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the adapter or the broker did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let cli = Cli { keep, port };

    // arguments are checked before the broker is called
    let (code, _, err) = cli.run(
        "agency-dinkes",
        &[
            "propose",
            "--dataset",
            "disdukcapil.penduduk",
            "--purpose",
            "pendataan sasaran imunisasi",
            "--field",
            "nik:masked",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("masked needs a rule"), "{err}");

    let propose = [
        "propose",
        "--id",
        "cli-1",
        "--dataset",
        "disdukcapil.penduduk",
        "--purpose",
        "pendataan sasaran imunisasi",
        "--field",
        "nik:masked:keep_last:4",
        "--field",
        "kode_desa",
        "--field",
        "nama_lengkap:verify",
        "--valid-until",
        "2099-01-01",
        "--rows-per-day",
        "100",
    ];
    let (code, out, err) = cli.run("agency-dinkes", &propose);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("agreement cli-1 (proposed)"), "{out}");
    assert!(
        out.contains("nik:masked:keep_last:4, kode_desa, nama_lengkap:verify"),
        "{out}"
    );
    assert!(out.contains("100 rows/day"), "{out}");

    // the same id again, an unregistered purpose: refused (exit 1)
    let (code, _, err) = cli.run("agency-dinkes", &propose);
    assert_eq!(code, Some(1));
    assert!(err.contains("already exists"), "{err}");
    let mut bad = propose.to_vec();
    bad[2] = "cli-2";
    bad[6] = "marketing";
    let (code, _, err) = cli.run("agency-dinkes", &bad);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a registered legal basis"), "{err}");

    // only the provider approves
    let (code, _, err) = cli.run("agency-dinkes", &["approve", "cli-1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("permission denied"), "{err}");
    let (code, out, err) = cli.run("agency-disdukcapil", &["approve", "cli-1", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["status"], "approved");
    assert_eq!(json["fields"][0]["mask"], "keep_last:4");
    assert_eq!(json["quota"]["rows_per_day"], 100);

    // the quota's use at a glance, in the table and in --json
    let records = dir.path().join("desa.jsonl");
    let (code, out, err) = cli.command(
        "agency-dinkes",
        "query",
        &[
            "--dataset",
            "disdukcapil.penduduk",
            "--purpose",
            "pendataan sasaran imunisasi",
            "--field",
            "kode_desa",
            "--limit",
            "7",
            "--output",
            records.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = cli.run("agency-dinkes", &["list"]);
    assert_eq!(code, Some(0), "{err}");
    let line = out.lines().find(|l| l.starts_with("cli-1")).unwrap();
    for want in [
        "approved",
        "pendataan sasaran imunisasi",
        "nik:masked:keep_last:4,kode_desa,nama_lengkap:verify",
        "..2099-01-01",
        "7/100 rows/day",
    ] {
        assert!(line.contains(want), "{want}: {out}");
    }
    let (code, out, err) = cli.run("agency-dinkes", &["list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|a| a["id"] == "cli-1")
        .unwrap();
    assert_eq!(json["quota_used"]["rows_today"], 7, "{json}");
    assert_eq!(json["valid_until"], "2099-01-01T00:00:00.000000Z", "{json}");
    let (_, out, _) = cli.run("agency-dinkes", &["get", "cli-1"]);
    assert!(out.contains("used:    7 rows today"), "{out}");

    // another agency neither sees nor lists it
    let (code, _, err) = cli.run("agency-bpn", &["get", "cli-1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not found"), "{err}");
    let (code, out, _) = cli.run("agency-bpn", &["list"]);
    assert_eq!(code, Some(0));
    assert!(!out.contains("cli-1"), "{out}");
    let (code, out, _) = cli.run("agency-disdukcapil", &["list", "--status", "approved"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.starts_with("cli-1") && l.contains("approved")),
        "{out}"
    );

    let (code, out, err) = cli.run(
        "agency-dinkes",
        &["revoke", "cli-1", "--reason", "campaign finished"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("(revoked)"), "{out}");
    let (code, _, err) = cli.run("agency-disdukcapil", &["revoke", "cli-1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already revoked"), "{err}");
    let (code, _, err) = cli.run("agency-dinkes", &["list", "--status", "gone"]);
    assert_eq!(code, Some(2), "{err}");

    // a certificate from another CA, same identity: the command says the
    // broker refused the certificate, and the broker's log names the
    // refused handshake and the certificate
    let other = jembatan_pki::Ca::create(&dir.path().join("other-ca"), "Jembatan CA").unwrap();
    let dinkes = jembatan_core::Identity::agency("dinkes".parse().unwrap());
    let foreign = other.issue_to(&dinkes, &[], 1, "agency-dinkes").unwrap();
    let certs = cli.keep.join("certs");
    std::fs::copy(&foreign.cert, certs.join("foreign.pem")).unwrap();
    std::fs::copy(&foreign.key, certs.join("foreign-key.pem")).unwrap();
    let (code, _, err) = cli.run("foreign", &["list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "the broker refused this certificate: it is not issued by the CA the broker trusts"
        ),
        "{err}"
    );
    assert!(!err.contains("transport error"), "{err}");
    let started = Instant::now();
    let line = loop {
        let log = std::fs::read_to_string(&broker_log).unwrap();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("refused a TLS handshake") && l.contains("agency:dinkes"))
        {
            break line.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refused handshake in the broker's log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(line.contains("unknown issuer"), "{line}");
    assert!(line.contains("identity=agency:dinkes"), "{line}");
    assert!(line.contains("sha256="), "{line}");
}
