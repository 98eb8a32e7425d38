//! `jembatan query` and `jembatan lookup` against a broker and adapter
//! started from a kept demo: records to JSONL and CSV under a filter
//! expression with the receipt verified, a lookup with `--verify`, a
//! denial printed with its reason codes (exit 3); server reflection, v1
//! and v1alpha, listing only the services a caller can use; `jembatan
//! health` against the broker and the adapter; and `broker
//! --create-keys`.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::{Running, jembatan, listen_port};

struct Demo {
    keep: PathBuf,
    port: u16,
    adapter_port: u16,
    _servers: Vec<Running>,
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        let keep = dir.join("demo");
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
        // a kept folder can be moved: its configs name their files
        // relative to themselves
        let moved = dir.join("moved");
        std::fs::rename(&keep, &moved).unwrap();
        let keep = moved;
        let config = keep.join("broker.toml");
        let adapter_config = keep.join("adapter-disdukcapil.toml");
        let text = std::fs::read_to_string(&adapter_config).unwrap();
        assert!(
            text.contains("database = \"sqlite://data/disdukcapil.db\""),
            "{text}"
        );
        let (port, adapter_port) = (listen_port(&config), listen_port(&adapter_config));
        let mut servers = Vec::new();
        for (what, config) in [("adapter", &adapter_config), ("broker", &config)] {
            servers.push(Running(
                jembatan()
                    .args([what, "--config"])
                    .arg(config)
                    .env("RUST_LOG", "warn")
                    .spawn()
                    .unwrap(),
            ));
        }
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
        Demo {
            keep,
            port,
            adapter_port,
            _servers: servers,
        }
    }

    fn cert(&self, who: &str) -> (PathBuf, PathBuf, PathBuf) {
        let certs = self.keep.join("certs");
        (
            certs.join("ca.pem"),
            certs.join(format!("{who}.pem")),
            certs.join(format!("{who}-key.pem")),
        )
    }

    /// Runs `jembatan ARGS` with `who`'s certificate.
    fn run(&self, who: &str, args: &[&str]) -> (Option<i32>, String, String) {
        let (ca, cert, key) = self.cert(who);
        let out = jembatan()
            .args(args)
            .arg("--broker")
            .arg(format!("https://localhost:{}", self.port))
            .arg("--ca")
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

const DATASET: &str = "disdukcapil.penduduk";
const LICENCE: &str = "verifikasi identitas pemohon izin usaha";

/// The value printed after `label` in a receipt.
fn receipt_field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {out}"))
        .split_whitespace()
        .next()
        .unwrap()
}

#[test]
fn query_lookup_and_denial_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());

    // a query to JSONL: the file holds the records exactly as received,
    // so its SHA-256 is the receipt's payload hash
    let jsonl = dir.path().join("out.jsonl");
    let (code, out, err) = demo.run(
        "agency-dpmptsp",
        &[
            "query",
            "--dataset",
            DATASET,
            "--purpose",
            LICENCE,
            "--field",
            "nik,nama_lengkap,kode_kecamatan,status",
            "--filter",
            "status in ('HIDUP', 'PINDAH') and not (nik is null)",
            "--limit",
            "40",
            "--output",
            jsonl.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("receipt verified"), "{out}");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 40, "{text}");
    for r in &records {
        assert!(
            r["status"] == "HIDUP" || r["status"] == "PINDAH",
            "the filter did not hold: {r}"
        );
    }
    assert_eq!(
        receipt_field(&out, "payload hash"),
        hex::encode(Sha256::digest(text.as_bytes()))
    );
    assert!(receipt_field(&out, "entry").parse::<u64>().is_ok(), "{out}");
    assert!(!dir.path().join("out.jsonl.partial").exists());

    // a query to CSV, filtered on a value taken from the first answer
    let kecamatan = records[0]["kode_kecamatan"].as_str().unwrap().to_owned();
    let csv = dir.path().join("out.csv");
    let filter =
        format!("kode_kecamatan = '{kecamatan}' and (status = 'HIDUP' or status = 'PINDAH')");
    let (code, out, err) = demo.run(
        "agency-dpmptsp",
        &[
            "query",
            "--dataset",
            DATASET,
            "--purpose",
            LICENCE,
            "--field",
            "kode_kecamatan",
            "--field",
            "nama_lengkap",
            "--filter",
            &filter,
            "--format",
            "csv",
            "--output",
            csv.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("receipt verified"), "{out}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("kode_kecamatan,nama_lengkap"));
    let rows: Vec<&str> = lines.collect();
    assert!(!rows.is_empty(), "{text}");
    for row in &rows {
        assert!(row.starts_with(&format!("{kecamatan},")), "{row}");
    }
    let rows_in_receipt = out
        .lines()
        .find(|l| l.contains("payload hash"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(rows_in_receipt, rows.len().to_string(), "{out}");

    // a filter that does not parse: usage (2), the column shown, nothing sent
    let (code, _, err) = demo.run(
        "agency-dpmptsp",
        &[
            "query",
            "--dataset",
            DATASET,
            "--purpose",
            LICENCE,
            "--filter",
            "status = 'HIDUP' and",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("column 21"), "{err}");

    // a lookup verifying one right and one wrong value
    let nik = records[0]["nik"].as_str().unwrap();
    let name = records[0]["nama_lengkap"].as_str().unwrap();
    let right = format!("nama_lengkap={name}");
    let (code, out, err) = demo.run(
        "agency-dpmptsp",
        &[
            "lookup",
            "--dataset",
            DATASET,
            "--purpose",
            LICENCE,
            nik,
            "--field",
            "nik",
            "--verify",
            &right,
            "--verify",
            "kode_kecamatan=00.00.00",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("verify nama_lengkap: matches"), "{out}");
    assert!(
        out.contains("verify kode_kecamatan: does not match"),
        "{out}"
    );
    assert!(out.contains("receipt verified"), "{out}");
    let (code, out, err) = demo.run(
        "agency-dpmptsp",
        &[
            "lookup",
            "--dataset",
            DATASET,
            "--purpose",
            LICENCE,
            nik,
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(answer["found"], true);
    assert_eq!(answer["record"]["nik"], nik);
    assert_eq!(answer["receipt"]["verified"], true);

    // the agreement used, at a glance
    let (code, out, err) = demo.run("agency-dpmptsp", &["agreement", "list"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("ID "), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("pks-2026-001-dpmptsp-penduduk"))
        .unwrap_or_else(|| panic!("{out}"));
    for want in [
        "approved",
        LICENCE,
        "nik,nama_lengkap,tgl_lahir,jenis_kelamin,kode_kecamatan,status",
        "unlimited",
    ] {
        assert!(line.contains(want), "{want}: {line}");
    }

    // a denial: every reason code printed, exit 3, nothing written
    let denied = dir.path().join("denied.jsonl");
    let (code, out, err) = demo.run(
        "agency-bpn",
        &[
            "query",
            "--dataset",
            DATASET,
            "--purpose",
            LICENCE,
            "--field",
            "nik,tgl_lahir",
            "--output",
            denied.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("denied:"), "{err}");
    assert!(err.contains("audit entry"), "{err}");
    assert!(
        err.contains("wrong_purpose (DENIAL_CODE_WRONG_PURPOSE)"),
        "{err}"
    );
    assert!(
        err.contains("field_not_granted (DENIAL_CODE_FIELD_NOT_GRANTED)"),
        "{err}"
    );
    assert!(!denied.exists());
    assert!(!dir.path().join("denied.jsonl.partial").exists());

    // `jembatan query … | head -1`: records to standard output, whose
    // reader goes away after the first line; the command ends quietly
    let (ca, cert, key) = demo.cert("agency-dpmptsp");
    let mut child = jembatan()
        .args([
            "query",
            "--dataset",
            DATASET,
            "--purpose",
            LICENCE,
            "--field",
            "nik,nama_lengkap,kode_kecamatan,status",
            "--broker",
            &format!("https://localhost:{}", demo.port),
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("{\"nik\""), "{first}");
    let cut = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(!stderr.contains("receipt"), "the output was cut: {stderr}");

    // reflection, both versions, on both servers
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(reflection(&demo));
    health(&demo);
    create_keys(&demo, dir.path());
}

async fn channel(demo: &Demo, who: &str, port: u16) -> tonic::transport::Channel {
    support::channel(&demo.keep, who, port).await
}

async fn list_v1(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

async fn list_v1alpha(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

const DTKS: &str = "pemutakhiran data terpadu kesejahteraan sosial";

/// A Parquet file read back as JSON objects, one a row, in column order.
fn read_parquet(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            row.unwrap()
                .get_column_iter()
                .map(|(name, field)| {
                    let value = match field {
                        Field::Null => serde_json::Value::Null,
                        Field::Bool(b) => (*b).into(),
                        Field::Long(n) => (*n).into(),
                        Field::Double(x) => (*x).into(),
                        Field::Str(s) => s.clone().into(),
                        other => panic!("{name}: unexpected {other:?}"),
                    };
                    (name.clone(), value)
                })
                .collect()
        })
        .collect()
}

#[test]
fn parquet_output_holds_the_records_of_the_jsonl_output_typed_by_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let query = |format: &str, file: &Path| {
        demo.run(
            "agency-dinsos",
            &[
                "query",
                "--dataset",
                DATASET,
                "--purpose",
                DTKS,
                "--as",
                "dinsos.warga@1",
                "--filter",
                "sex = 'F'",
                "--format",
                format,
                "--output",
                file.to_str().unwrap(),
            ],
        )
    };
    let jsonl = dir.path().join("warga.jsonl");
    let (code, out, err) = query("jsonl", &jsonl);
    assert_eq!(code, Some(0), "{out}{err}");
    let parquet = dir.path().join("warga.parquet");
    let (code, out, err) = query("parquet", &parquet);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("receipt verified"), "{out}");
    assert!(!dir.path().join("warga.parquet.partial").exists());

    let want: Vec<serde_json::Map<String, serde_json::Value>> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got = read_parquet(&parquet);
    assert!(want.len() > 10, "{} records", want.len());
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        // the same columns in the same order; the boolean stays a
        // boolean, the date a string, the nested address its JSON text
        let names: Vec<&String> = got.keys().collect();
        assert_eq!(names, want.keys().collect::<Vec<_>>());
        assert!(got["alive"].is_boolean(), "{got:?}");
        for (name, value) in want {
            let value = match value {
                serde_json::Value::Object(_) => serde_json::Value::String(value.to_string()),
                other => other.clone(),
            };
            assert_eq!(got[name], value, "{name}");
        }
    }
    // both runs got the very same records: the Parquet run's receipt
    // hashes what the JSONL file holds
    assert_eq!(
        receipt_field(&out, "payload hash"),
        hex::encode(Sha256::digest(std::fs::read(&jsonl).unwrap()))
    );

    // a refused query leaves no file
    let none = dir.path().join("none.parquet");
    let (code, _, err) = demo.run(
        "agency-dinsos",
        &[
            "query",
            "--dataset",
            DATASET,
            "--purpose",
            DTKS,
            "--as",
            "dinsos.warga@9",
            "--format",
            "parquet",
            "--output",
            none.to_str().unwrap(),
        ],
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(!none.exists() && !dir.path().join("none.parquet.partial").exists());
}

#[test]
fn a_mapping_version_is_disabled_and_made_active_again_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let set_state = |who: &str, state: &str| {
        demo.run(
            who,
            &[
                "mapping",
                "set-state",
                "--source",
                "disdukcapil.penduduk@1",
                "--target",
                "dinsos.warga@1",
                "--version",
                "1",
                "--state",
                state,
            ],
        )
    };
    let query = || {
        demo.run(
            "agency-dinsos",
            &[
                "query",
                "--dataset",
                DATASET,
                "--purpose",
                DTKS,
                "--as",
                "dinsos.warga@1",
                "--limit",
                "3",
                "--output",
                dir.path().join("w.jsonl").to_str().unwrap(),
            ],
        )
    };
    let (code, _, err) = set_state("integrator-dinsos", "gone");
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = set_state("agency-dinsos", "disabled");
    assert_eq!(code, Some(1), "an agency's certificate may not: {err}");
    let (code, out, err) = set_state("integrator-dinsos", "disabled");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("mapping disdukcapil.penduduk@1 -> dinsos.warga@1 version 1 is disabled"),
        "{out}"
    );
    let (code, out, err) = query();
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("mapping_disabled"), "{err}");
    let (code, out, err) = set_state("integrator-dinsos", "active");
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = query();
    assert_eq!(code, Some(0), "{out}{err}");
}

/// A request stream of one message.
fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    tonic::codegen::tokio_stream::iter(std::iter::once(item))
}

async fn reflection(demo: &Demo) {
    let mut broker_services: Vec<String> = jembatan_broker::REFLECTED_SERVICES
        .iter()
        .map(|s| s.to_string())
        .collect();
    broker_services.sort();
    let mut adapter_services: Vec<String> = jembatan_adapter::REFLECTED_SERVICES
        .iter()
        .map(|s| s.to_string())
        .collect();
    adapter_services.sort();
    assert!(broker_services.contains(&"jembatan.v1.Exchange".to_string()));
    assert!(!broker_services.contains(&"jembatan.v1.Adapter".to_string()));

    let broker = channel(demo, "agency-dpmptsp", demo.port).await;
    assert_eq!(list_v1(broker.clone()).await, broker_services);
    assert_eq!(list_v1alpha(broker).await, broker_services);

    let adapter = channel(demo, "broker", demo.adapter_port).await;
    let listed = list_v1(adapter.clone()).await;
    assert_eq!(
        listed,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "jembatan.v1.Adapter",
        ]
    );
    assert_eq!(listed, adapter_services);
    assert_eq!(list_v1alpha(adapter).await, adapter_services);
}

/// `jembatan health`: 0 serving, 1 for a service the server does not
/// know, 2 when nothing answers; with the server's own certificate too,
/// as a probe inside its pod presents it.
fn health(demo: &Demo) {
    let (code, out, err) = demo.run("agency-dinsos", &["health"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "the server: serving");
    let (code, out, err) = demo.run("broker", &["health", "--service", "jembatan.v1.Exchange"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "jembatan.v1.Exchange: serving");
    let (code, out, err) = demo.run(
        "agency-dinsos",
        &["health", "--service", "jembatan.v1.Nope"],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("not found"), "{err}");

    let (ca, cert, key) = demo.cert("broker");
    let adapter = jembatan()
        .args(["health", "--broker"])
        .arg(format!("https://localhost:{}", demo.adapter_port))
        .args([
            "--ca".as_ref(),
            ca.as_os_str(),
            "--cert".as_ref(),
            cert.as_os_str(),
        ])
        .args(["--key".as_ref(), key.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(adapter.status.code(), Some(0), "{adapter:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let nobody = jembatan()
        .args(["health", "--broker"])
        .arg(format!("https://localhost:{port}"))
        .args([
            "--ca".as_ref(),
            ca.as_os_str(),
            "--cert".as_ref(),
            cert.as_os_str(),
        ])
        .args(["--key".as_ref(), key.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(2), "{nobody:?}");
}

/// `broker --create-keys` makes the keys a config names (0600) without
/// starting a broker, and a second run keeps them.
fn create_keys(demo: &Demo, dir: &Path) {
    let replica = dir.join("replica");
    std::fs::create_dir(&replica).unwrap();
    let config = replica.join("broker.toml");
    std::fs::copy(demo.keep.join("broker.toml"), &config).unwrap();
    let run = || {
        let out = jembatan()
            .args(["broker", "--create-keys", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = run();
    let files: Vec<PathBuf> = listed.lines().map(PathBuf::from).collect();
    assert_eq!(files.len(), 3, "{listed}");
    let contents: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    use std::os::unix::fs::PermissionsExt;
    for f in &files[..2] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    assert!(files[2].extension().is_some_and(|e| e == "pub"));
    assert_eq!(run(), listed);
    let again: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert_eq!(again, contents, "a second run must keep the keys");
}

#[test]
fn a_list_of_keys_is_verified_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let residents = dir.path().join("residents.jsonl");
    let (code, out, err) = demo.run(
        "agency-dpmptsp",
        &[
            "query",
            "--dataset",
            DATASET,
            "--purpose",
            LICENCE,
            "--field",
            "nik,nama_lengkap",
            "--limit",
            "25",
            "--output",
            residents.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let residents: Vec<serde_json::Value> = std::fs::read_to_string(&residents)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // the office's list: 20 names as registered, 5 misspelt, 2 unknown
    // keys, and one resident twice
    let mut list = String::from("nik,nama_lengkap\n");
    let mut want = Vec::new();
    for (i, r) in residents.iter().enumerate() {
        let nik = r["nik"].as_str().unwrap();
        let name = r["nama_lengkap"].as_str().unwrap();
        if i < 20 {
            list.push_str(&format!("{nik},\"{name}\"\n"));
            want.push(format!("{nik},matches,true"));
        } else {
            list.push_str(&format!("{nik},\"{name}X\"\n"));
            want.push(format!("{nik},does_not_match,false"));
        }
    }
    for nik in ["1507999999990001", "1507999999990002"] {
        list.push_str(&format!("{nik},SIAPA\n"));
        want.push(format!("{nik},not_found,"));
    }
    let first = residents[0]["nik"].as_str().unwrap();
    list.push_str(&format!(
        "{first},\"{}\"\n",
        residents[0]["nama_lengkap"].as_str().unwrap()
    ));
    want.push(format!("{first},matches,true"));
    let input = dir.path().join("list.csv");
    std::fs::write(&input, &list).unwrap();
    let answers = dir.path().join("answers.csv");
    let verify = |who: &str, input: &Path| {
        demo.run(
            who,
            &[
                "verify",
                "--dataset",
                DATASET,
                "--purpose",
                LICENCE,
                "--input",
                input.to_str().unwrap(),
                "--output",
                answers.to_str().unwrap(),
                "--batch",
                "10",
            ],
        )
    };
    let (code, out, err) = verify("agency-dpmptsp", &input);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("28 keys verified in 3 calls: 21 match, 5 do not match, 2 not found"),
        "{err}"
    );
    assert_eq!(err.matches("receipt verified").count(), 3, "{err}");
    let text = std::fs::read_to_string(&answers).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("nik,result,nama_lengkap"));
    assert_eq!(lines.collect::<Vec<_>>(), want);
    assert!(!dir.path().join("answers.csv.partial").exists());

    // an agency whose agreement expired is denied, with the reason
    let (code, out, err) = verify("agency-diskominfo", &input);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("denied"), "{err}");
    // a line without anything to verify is refused before any call
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "nik,nama_lengkap\n1507000000000001,\n").unwrap();
    let (code, _, err) = verify("agency-dpmptsp", &bad);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("input line 2: no value to verify"), "{err}");
}

#[test]
fn mapping_test_dry_runs_a_candidate_on_live_records_through_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path());
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schemas/disdukcapil.penduduk-to-dinsos.warga.toml"),
    )
    .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // the next version of the registered mapping, unchanged: every record
    // passes; exit 0
    let next = shipped.replacen("version = 1", "version = 2", 1);
    let passing = write("passing.toml", next.clone());
    let test = |who: &str, file: &Path, extra: &[&str]| {
        let mut args = vec![
            "mapping",
            "test",
            "--mapping",
            file.to_str().unwrap(),
            "--purpose",
            DTKS,
            "--limit",
            "50",
        ];
        args.extend_from_slice(extra);
        demo.run(who, &args)
    };
    let (code, out, err) = test("agency-dinsos", &passing, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("disdukcapil.penduduk@1 -> dinsos.warga@1 version 2"),
        "{out}"
    );
    assert!(
        out.contains("checked 50 records: 50 passed, 0 failed"),
        "{out}"
    );
    assert!(out.contains("no record left the broker"), "{out}");

    // a code table that knows no district of the records breaks them:
    // exit 1, the first failure named by record, step and rule, and no
    // value of any record
    let failing = write(
        "failing.toml",
        next.replace(
            "from = \"kode_kecamatan\"\n",
            "from = \"kode_kecamatan\"\nops = [{ value_map = { map = { \"15.07.99\" = \"15.07.99\" } } }]\n",
        ),
    );
    let (code, out, err) = test("agency-dinsos", &failing, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("step mapping, rule 5 (district_code)"),
        "{out}{err}"
    );
    assert!(
        out.contains("value_map: the value is not in the map"),
        "{out}"
    );
    assert!(err.contains("of 50 records failed the mapping"), "{err}");
    let digits = |text: &str| {
        text.split(|c: char| !c.is_ascii_digit())
            .any(|run| run.len() >= 16)
    };
    assert!(!digits(&out) && !digits(&err), "a NIK in {out}{err}");
    assert!(
        !out.contains("15.07.") && !err.contains("15.07."),
        "a district code in {out}{err}"
    );
    // the same as JSON
    let (code, out, err) = test("agency-dinsos", &failing, &["--json"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["recordsChecked"], "50", "{report}");
    assert_eq!(report["firstFailure"]["stage"], "mapping", "{report}");
    assert_eq!(
        report["firstFailure"]["ruleTarget"], "district_code",
        "{report}"
    );

    // an agency without an agreement for it is denied: exit 3
    let (code, out, err) = test("agency-dpmptsp", &passing, &[]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("denied"), "{err}");

    // usage: neither schema files nor a broker; schema files and --purpose
    let out = jembatan()
        .args(["mapping", "test", "--mapping"])
        .arg(&passing)
        .env_remove("JEMBATAN_BROKER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--broker"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
