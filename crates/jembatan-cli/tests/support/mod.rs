//! Shared by the CLI's tests: the built `jembatan` binary, child processes
//! killed when dropped, the port a kept config listens on; and for the
//! console tests a kept demo with its broker and the population
//! registry's adapter running, consoles started on it, and a small
//! HTTP/1.1 client with a cookie jar.

#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn jembatan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jembatan"))
}

/// Kills the child when dropped, however the test ends.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The port a kept config's `listen = "host:port"` names.
/// A gRPC channel to `port` on loopback with `who`'s certificate from the
/// kept demo at `keep` (`certs/<who>.pem`), trusting its CA.
pub(crate) async fn channel(keep: &Path, who: &str, port: u16) -> tonic::transport::Channel {
    let certs = keep.join("certs");
    let files = jembatan_pki::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{who}.pem")),
        key: certs.join(format!("{who}-key.pem")),
        crl: None,
    };
    tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(files.client_config("localhost").unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub(crate) fn listen_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("listen")).unwrap();
    line.trim_end_matches('"')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

pub(crate) fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kept demo whose broker (requiring an operator's approval after the
/// provider's) and population-registry adapter run.
pub(crate) struct Demo {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) keep: PathBuf,
    pub(crate) broker_port: u16,
    /// A NIK the demo looked up.
    pub(crate) nik: String,
    _adapter: Running,
    _broker: Running,
}

impl Demo {
    pub(crate) fn start() -> Demo {
        Demo::start_with(true, |_| {})
    }

    /// A kept demo whose broker requires an operator's approval when
    /// `operator_approval`, with `prepare` run on the kept directory
    /// before its broker and adapter start.
    pub(crate) fn start_with(operator_approval: bool, prepare: impl FnOnce(&Path)) -> Demo {
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
        let story = String::from_utf8_lossy(&out.stdout);
        assert!(
            story.contains("jembatan console --config"),
            "the demo names the console command:\n{story}"
        );
        let nik = story
            .split("Lookup disdukcapil.penduduk key=")
            .nth(1)
            .and_then(|rest| rest.get(..16))
            .unwrap()
            .to_owned();
        assert!(nik.bytes().all(|b| b.is_ascii_digit()), "{nik}");
        let config = keep.join("broker.toml");
        if operator_approval {
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(
                &config,
                text.replacen(
                    "checkpoint_every",
                    "operator_approval = true\ncheckpoint_every",
                    1,
                ),
            )
            .unwrap();
        }
        prepare(&keep);
        let broker_port = listen_port(&config);
        let adapter_config = keep.join("adapter-disdukcapil.toml");
        let adapter_port = listen_port(&adapter_config);
        let adapter = Running(
            jembatan()
                .args(["adapter", "--config"])
                .arg(&adapter_config)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let broker = Running(
            jembatan()
                .args(["broker", "--config"])
                .arg(&config)
                .env("RUST_LOG", "warn")
                .stderr(std::fs::File::create(dir.path().join("broker.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_for_port(adapter_port, "the adapter");
        wait_for_port(broker_port, "the broker");
        Demo {
            dir,
            keep,
            broker_port,
            nik,
            _adapter: adapter,
            _broker: broker,
        }
    }

    /// `jembatan ARGS` with `who`'s certificate and the demo's broker,
    /// not run yet.
    pub(crate) fn command(&self, who: &str, args: &[&str]) -> Command {
        let certs = self.keep.join("certs");
        let mut command = jembatan();
        command
            .args(args)
            .arg("--broker")
            .arg(format!("https://localhost:{}", self.broker_port))
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join(format!("{who}.pem")))
            .arg("--key")
            .arg(certs.join(format!("{who}-key.pem")));
        command
    }

    /// Runs `jembatan agreement ARGS` with `who`'s certificate.
    pub(crate) fn agreement(&self, who: &str, args: &[&str]) -> String {
        let mut all = vec!["agreement"];
        all.extend_from_slice(args);
        let out = self.command(who, &all).output().unwrap();
        assert!(
            out.status.success(),
            "agreement {args:?} as {who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A proposal of dinkes's, approved by its provider: it waits for an
    /// operator.
    pub(crate) fn agreement_awaiting_an_operator(&self, id: &str) {
        self.agreement(
            "agency-dinkes",
            &[
                "propose",
                "--id",
                id,
                "--dataset",
                "disdukcapil.penduduk",
                "--purpose",
                "pendataan sasaran imunisasi",
                "--field",
                "nik",
                "--field",
                "kode_desa",
            ],
        );
        self.agreement("agency-disdukcapil", &["approve", id]);
    }

    /// Starts a console from the demo's config for `config_name`
    /// (`console.toml` or `console-operator.toml`) on a free port; its
    /// log goes to `log`.
    pub(crate) fn console(&self, config_name: &str, log: &Path) -> Console {
        let port = free_port();
        let path = self.keep.join(config_name);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("listen") {
                    format!("listen = \"127.0.0.1:{port}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, text).unwrap();
        let child = jembatan()
            .args(["console", "--config"])
            .arg(&path)
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let running = Running(child);
        wait_for_port(port, "the console");
        let started = Instant::now();
        let token = loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(rest) = text.split("login?token=").nth(1) {
                break rest.chars().take(64).collect::<String>();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no token in {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Console {
            port,
            token,
            _running: running,
        }
    }
}

pub(crate) struct Console {
    pub(crate) port: u16,
    pub(crate) token: String,
    _running: Running,
}

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of a hidden form field named `name`.
    pub(crate) fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let rest = self.body.split(&marker).nth(1).unwrap_or_else(|| {
            panic!("no field {name} in {}", self.body);
        });
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

/// A browser without JavaScript: cookies kept, redirects not followed.
pub(crate) struct Client {
    pub(crate) port: u16,
    pub(crate) cookies: BTreeMap<String, String>,
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Client {
    pub(crate) fn new(port: u16) -> Client {
        Client {
            port,
            cookies: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, None, &[])
    }

    pub(crate) fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.send("POST", path, Some(form_encode(form)), &[])
    }

    pub(crate) fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.port
        );
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or_default();
        if method == "POST" {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let rest = &raw[split + 4..];
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        let body = if chunked {
            String::from_utf8_lossy(&dechunk(rest)).into_owned()
        } else {
            String::from_utf8_lossy(rest).into_owned()
        };
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let pair = v.split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                if value.is_empty() {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Logs in with the console's one-time token through the login form.
    pub(crate) fn login(&mut self, token: &str) -> Reply {
        let form = self.get("/login");
        let csrf = form.hidden("csrf");
        self.post(
            "/login",
            &[("csrf", &csrf), ("token", token), ("next", "/")],
        )
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..end]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&rest[end + 2..end + 2 + n]);
        rest = &rest[end + 4 + n..];
    }
    out
}

/// A JSON request to a local HTTP server (a WebDriver), its JSON answer.
pub(crate) fn http_json(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    // chromedriver says "Connection: close" and keeps the connection
    // open: read the head, then Content-Length bytes
    let mut raw = Vec::new();
    let mut chunk = [0u8; 65536];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "{method} {path}: the connection closed early");
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        Some(length) => {
            while raw.len() < split + 4 + length {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "{method} {path}: the body was cut short");
                raw.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut raw).unwrap();
        }
    }
    let rest = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}
