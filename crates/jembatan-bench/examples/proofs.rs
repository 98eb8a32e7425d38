//! Proof latency and broker memory on a large audit log.
//!
//! `fill` appends entries to a SQLite store through the store's own append
//! path (`AuditLog`, group commits of up to 1024) until it holds N; a
//! store filled this way has no tiles and no checkpoint, like a store
//! written before tiles. `measure` then starts a broker on it in this
//! process (the start builds the tiles the first time, and checks the
//! latest checkpoint against them), signs a checkpoint, and times
//! `InclusionProof` and `ConsistencyProof` calls from an auditor over mTLS
//! on 127.0.0.1, printing the process's RSS along the way (the broker is
//! nearly all of it; the auditor client is small).
//!
//! ```text
//! cargo run --release -p jembatan-bench --example proofs -- fill /tmp/p1m 1000000
//! cargo run --release -p jembatan-bench --example proofs -- measure /tmp/p1m
//! ```
//!
//! Run `measure` twice: the first run includes building the tiles, the
//! second starts from them.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{Identity, Role};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::audit_client::AuditClient;
use tonic::transport::Endpoint;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A line of `/proc/self/status` in MiB (`VmRSS`, `VmHWM`).
fn mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn rss(what: &str) {
    println!(
        "rss {what}: {:.1} MiB (peak {:.1} MiB)",
        mib("VmRSS"),
        mib("VmHWM")
    );
}

async fn fill(dir: &Path, entries: u64) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let store =
        jembatan_store::Store::connect(dir.join("broker.db").to_str().ok_or("path")?).await?;
    let started = Instant::now();
    jembatan_bench::fill_entries(&store, entries).await?;
    println!(
        "filled to {} entries in {:.1} s",
        store.audit_log_size().await?,
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn measure(dir: &Path) -> Result<(), Error> {
    rss("at start");
    let certs = dir.join("certs");
    let ids = [
        Identity::new(Role::Broker, None)?,
        Identity::new(Role::Auditor, None)?,
    ];
    // a fresh CA each run; the checkpoint key beside the store is kept
    let _ = std::fs::remove_dir_all(&certs);
    let issued = jembatan_pki::dev_pki(&certs, &ids)?;
    let files = |id: &Identity| {
        issued
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, f)| f.clone())
            .ok_or("no certificate issued")
    };
    let (broker_tls, auditor_tls) = (files(&ids[0])?, files(&ids[1])?);
    let toml = format!(
        "version = 1\nlisten = \"127.0.0.1:0\"\nstore = \"broker.db\"\naudit_key = \"audit.key\"\n\
         checkpoint_every = 1000000000\ncheckpoint_interval = \"1h\"\n\
         [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        broker_tls.ca.display().to_string(),
        broker_tls.cert.display().to_string(),
        broker_tls.key.display().to_string(),
    );
    let config = BrokerConfig::from_toml(&toml, dir)?;
    let started = Instant::now();
    let broker = Broker::start(&config).await?;
    println!("broker started in {:.2} s", started.elapsed().as_secs_f64());
    let size = broker.store().audit_log_size().await?;
    let signed = broker.checkpoint_now().await?;
    println!("log size {size}, checkpoint signed now: {signed:?}");
    rss("after start");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(jembatan_broker::serve(
        broker.clone(),
        listener,
        config.tls.server_config()?,
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))?
        .tls_config(auditor_tls.client_config("localhost")?)?
        .connect()
        .await?;
    let mut auditor = AuditClient::new(channel);

    let latest = auditor
        .latest_checkpoint(pb::LatestCheckpointRequest {})
        .await?
        .into_inner()
        .size;
    let mut times = Vec::new();
    for i in 0..201u64 {
        let index = (i * 7_919_993 + 12_345) % latest;
        let t = Instant::now();
        let proof = auditor
            .inclusion_proof(pb::InclusionProofRequest {
                index,
                tree_size: 0,
            })
            .await?
            .into_inner();
        times.push(t.elapsed());
        if i == 0 {
            println!(
                "first inclusion proof: {:.2} ms ({} hashes)",
                ms(times[0]),
                proof.hashes.len()
            );
        }
    }
    let mut later = times[1..].to_vec();
    later.sort();
    println!(
        "later inclusion proofs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} calls)",
        ms(later[later.len() / 2]),
        ms(later[later.len() * 99 / 100]),
        ms(later[later.len() - 1]),
        later.len()
    );

    // a second checkpoint a few entries on, for consistency proofs
    for i in 0..10 {
        broker
            .audit()
            .append(jembatan_core::AuditEntry::from_canonical(
                &broker.audit().entries(i, 1).await?[0].canonical,
            )?)
            .await?;
    }
    let newer = broker
        .checkpoint_now()
        .await?
        .ok_or("no second checkpoint")?;
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        auditor
            .consistency_proof(pb::ConsistencyProofRequest {
                old_size: latest,
                new_size: newer,
            })
            .await?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "consistency proofs {latest} -> {newer}: p50 {:.2} ms, max {:.2} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    rss("after proofs");
    let _ = stop.send(true);
    broker.shutdown().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = match args.as_slice() {
        [cmd, dir, n] if cmd == "fill" => match n.parse() {
            Ok(n) => fill(Path::new(dir), n).await,
            Err(_) => Err(format!("ENTRIES must be a number, not {n:?}").into()),
        },
        [cmd, dir] if cmd == "measure" => measure(Path::new(dir)).await,
        _ => {
            eprintln!("usage: proofs fill DIR ENTRIES | proofs measure DIR");
            return ExitCode::from(2);
        }
    };
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proofs: {e}");
            ExitCode::FAILURE
        }
    }
}
