//! B4: peak RSS (`VmHWM`) of a broker and an adapter run as child processes
//! of the `jembatan` executable, read after streaming 100k rows, then 1M
//! (not with `--quick`), then 10M (only when the table has them).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{Certs, adapter_toml, broker_toml, consumer, write_registry_files};
use crate::population::Population;
use crate::{BenchError, MemoryFigures, MemoryPoint, Options};
use jembatan_proto::v1::exchange_client::ExchangeClient;
use tonic::transport::Channel;

/// A child process killed when dropped.
pub(crate) struct Guard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guard {
    pub(crate) fn spawn(
        exe: &Path,
        name: &'static str,
        config: &Path,
        dir: &Path,
    ) -> Result<Guard, BenchError> {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(exe)
            .arg(name)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| {
                BenchError::Child(format!("cannot start {} {name}: {e}", exe.display()))
            })?;
        Ok(Guard { name, child, log })
    }

    /// Fails when the process has exited, with the end of its log.
    pub(crate) fn check_running(&mut self) -> Result<(), BenchError> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(BenchError::Child(format!(
                "{} exited ({status}): {}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok(())
    }

    pub(crate) fn peak_rss_mib(&mut self) -> Result<f64, BenchError> {
        self.status_mib("VmHWM:")
    }

    /// Resident set size now.
    pub(crate) fn rss_mib(&mut self) -> Result<f64, BenchError> {
        self.status_mib("VmRSS:")
    }

    /// A `kB` field of `/proc/<pid>/status`, in MiB.
    fn status_mib(&mut self, field: &str) -> Result<f64, BenchError> {
        self.check_running()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .ok_or_else(|| BenchError::Child(format!("no {field} for the {}", self.name)))?;
        Ok(kib / 1024.0)
    }
}

pub(crate) fn free_port() -> Result<u16, BenchError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Row counts to stream, each a cumulative checkpoint of the peaks.
fn targets(options: &Options) -> Vec<u64> {
    let mut want = vec![100_000];
    if !options.quick {
        want.push(1_000_000);
        if options.rows >= 10_000_000 {
            want.push(10_000_000);
        }
    }
    let mut t: Vec<u64> = want.into_iter().filter(|&n| n <= options.rows).collect();
    if t.is_empty() {
        t.push(options.rows);
    }
    t
}

/// A broker and an adapter serving `population`, run as child processes
/// of the `jembatan` executable, listening, with the certificates to call
/// the broker as the consumer.
pub(crate) struct Children {
    pub(crate) adapter: Guard,
    pub(crate) broker: Guard,
    pub(crate) broker_port: u16,
    pub(crate) certs: Certs,
}

impl Children {
    /// Why child processes cannot be measured here, if they cannot; else
    /// the executable to run them from.
    pub(crate) fn executable(options: &Options) -> Result<&Path, String> {
        let Some(exe) = &options.exe else {
            return Err(
                "needs the jembatan executable to run broker and adapter as child processes".into(),
            );
        };
        if !Path::new("/proc/self/status").exists() {
            return Err("no /proc/<pid>/status on this system".into());
        }
        Ok(exe)
    }

    /// Starts both in `dir` (created), the broker's config led by
    /// `broker_settings` (top-level TOML lines), and waits until both
    /// listen.
    pub(crate) async fn start(
        exe: &Path,
        population: &Population,
        dir: &Path,
        broker_settings: &str,
    ) -> Result<Children, BenchError> {
        std::fs::create_dir_all(dir)?;
        let certs = Certs::issue(&dir.join("certs"))?;
        let (adapter_port, broker_port) = (free_port()?, free_port()?);
        let adapter_config = dir.join("adapter.toml");
        std::fs::write(
            &adapter_config,
            adapter_toml(
                population,
                adapter_port,
                &certs.adapter,
                &dir.join("receipts.jsonl"),
            ),
        )?;
        write_registry_files(dir)?;
        let broker_config = dir.join("broker.toml");
        std::fs::write(
            &broker_config,
            format!(
                "{broker_settings}{}",
                broker_toml(broker_port, adapter_port, &certs.broker, dir)
            ),
        )?;
        let mut adapter = Guard::spawn(exe, "adapter", &adapter_config, dir)?;
        wait_listening(&mut adapter, adapter_port).await?;
        let mut broker = Guard::spawn(exe, "broker", &broker_config, dir)?;
        wait_listening(&mut broker, broker_port).await?;
        Ok(Children {
            adapter,
            broker,
            broker_port,
            certs,
        })
    }

    /// A consumer's client of the broker.
    pub(crate) async fn consumer(&self) -> Result<ExchangeClient<Channel>, BenchError> {
        consumer(self.broker_port, &self.certs.consumer).await
    }
}

pub(crate) async fn run(
    options: &Options,
    population: &Population,
    dir: &Path,
) -> Result<MemoryFigures, BenchError> {
    let exe = match Children::executable(options) {
        Ok(exe) => exe,
        Err(why) => return Ok(MemoryFigures::Skipped(why)),
    };
    crate::progress(format_args!(
        "B4 memory: broker and adapter as child processes"
    ));
    let mut children = Children::start(exe, population, &dir.join("children"), "").await?;
    let mut client = children.consumer().await?;

    let mut points = Vec::new();
    for rows in targets(options) {
        crate::progress(format_args!("B4 memory: streaming {rows} rows"));
        let read = crate::bulk::query(&mut client, rows, None).await?;
        if read.rows != rows {
            return Err(BenchError::Inconsistent(format!(
                "asked for {rows} rows, {} arrived",
                read.rows
            )));
        }
        points.push(MemoryPoint {
            rows,
            broker_peak_rss_mib: children.broker.peak_rss_mib()?,
            adapter_peak_rss_mib: children.adapter.peak_rss_mib()?,
        });
    }
    Ok(MemoryFigures::Measured(points))
}

pub(crate) async fn wait_listening(child: &mut Guard, port: u16) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        child.check_running()?;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Child(format!(
                "the {} did not listen on port {port} within 30 s",
                child.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
