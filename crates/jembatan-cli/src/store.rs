//! `jembatan store`: the broker's store itself. `migrate` moves a SQLite
//! store to PostgreSQL and proves the copy.
//!
//! Exit codes: 0 the copy is made and proven, 1 the copy was made but
//! does not match the source, or the source changed while it was read
//! (nothing committed), 2 usage errors, a target that is not empty,
//! unreachable or unreadable stores and keys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::Subcommand;
use jembatan_core::dbtls::DatabaseTls;
use jembatan_store::migrate::{self, Comparison, MigrateError, Progress, Side};
use jembatan_tlog::note::Verifier;

use crate::failure::Failure;

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy a SQLite store into an empty PostgreSQL store (agencies,
    /// datasets, agreements, registry, quotas, the audit log with its
    /// subjects, tiles and checkpoints), then verify both logs and compare
    /// them: log size, root, checkpoints and rows per table.
    ///
    /// Stop every broker using the source first: the source must not be
    /// written during the copy, and the copy fails, committing nothing, if
    /// its audit log grew meanwhile. The target database must exist and
    /// hold no rows in any of the store's tables; its schema is created.
    Migrate {
        /// The SQLite store to copy: sqlite:PATH.
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL store to fill: postgres://...
        #[arg(long, value_name = "postgres://...")]
        to: String,
        /// File holding the checkpoint verifier key (`checkpoint.key.pub`),
        /// to verify both logs with.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// CA certificate (PEM) the PostgreSQL server's certificate must
        /// chain to (or sslrootcert in the URL).
        #[arg(long, value_name = "FILE")]
        to_ca: Option<PathBuf>,
        /// Reach a PostgreSQL server off this machine without verified TLS
        /// (refused otherwise).
        #[arg(long)]
        allow_plaintext: bool,
    },
}

pub(crate) async fn run(command: StoreCommand) -> ExitCode {
    let result = match command {
        StoreCommand::Migrate {
            from,
            to,
            public_key,
            to_ca,
            allow_plaintext,
        } => {
            let tls = DatabaseTls {
                ca: to_ca,
                allow_plaintext,
            };
            migrate_store(&from, &to, &public_key, &tls).await
        }
    };
    crate::failure::exit(result)
}

fn read_verifier(path: &Path) -> Result<Verifier, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key {}", path.display()))?;
    Ok(text
        .trim()
        .parse()
        .with_context(|| format!("{} is not a verifier key", path.display()))?)
}

fn failure(err: MigrateError) -> Failure {
    match err {
        MigrateError::SourceChanged { .. } => Failure::Refused(anyhow!(err)),
        other => Failure::Usage(anyhow!("cannot migrate the store: {other}")),
    }
}

async fn migrate_store(
    from: &str,
    to: &str,
    public_key: &Path,
    tls: &DatabaseTls,
) -> Result<(), Failure> {
    let verifier = read_verifier(public_key)?;
    let (source, target) = migrate::open_stores(from, to, tls).await.map_err(failure)?;
    let result = copy_and_compare(&source, &target, &verifier).await;
    source.close().await;
    target.close().await;
    let comparison = result?;
    print_comparison(&comparison);
    let differences = comparison.differences();
    if differences.is_empty() {
        println!("the copy matches the source");
        Ok(())
    } else {
        Err(Failure::Refused(anyhow!(
            "the copy does not match the source:\n  {}",
            differences.join("\n  ")
        )))
    }
}

async fn copy_and_compare(
    source: &jembatan_store::Store,
    target: &jembatan_store::Store,
    verifier: &Verifier,
) -> Result<Comparison, Failure> {
    let mut meter = Meter::new();
    let started = Instant::now();
    let report = migrate::migrate(source, target, &mut |p| meter.show(p))
        .await
        .map_err(failure)?;
    let rows: u64 = report.rows.iter().map(|(_, n)| n).sum();
    println!(
        "copied {rows} rows in {} tables ({} audit entries) in {:.1} s",
        report.rows.len(),
        report.log_size,
        started.elapsed().as_secs_f64()
    );
    for sequence in &report.sequences {
        println!("advanced the sequence of {sequence} past the copied values");
    }
    eprintln!("verifying both stores");
    migrate::compare(source, target, verifier)
        .await
        .map_err(|e| Failure::Usage(anyhow!("cannot read a store to compare: {e}")))
}

/// Progress on standard error, at most a line a second.
struct Meter {
    last: Instant,
    shown: Option<&'static str>,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            last: Instant::now(),
            shown: None,
        }
    }

    fn show(&mut self, p: Progress) {
        let done = p.copied >= p.total;
        // The end of a table shows when its progress has shown before.
        if self.last.elapsed() >= Duration::from_secs(1) || (done && self.shown == Some(p.table)) {
            eprintln!("{}: {} / {} rows", p.table, p.copied, p.total);
            self.last = Instant::now();
            self.shown = (!done).then_some(p.table);
        }
    }
}

fn print_comparison(c: &Comparison) {
    println!("{:<20} {:>12} {:>12}", "table", "source", "target");
    for ((table, s), (_, t)) in c.source.rows.iter().zip(&c.target.rows) {
        println!("{table:<20} {s:>12} {t:>12}");
    }
    for (name, side) in [("source", &c.source), ("target", &c.target)] {
        println!("{name}: {}", describe(side));
    }
}

fn describe(side: &Side) -> String {
    let latest = match &side.latest_checkpoint {
        Some((size, root)) => format!("latest checkpoint size {size} root {root}"),
        None => "no checkpoint".into(),
    };
    match &side.verified {
        Ok(report) => format!(
            "verified {} entries, root {}, {} checkpoints, {latest}",
            report.size,
            report.root_hex(),
            report.checkpoints
        ),
        Err(e) => format!("verification failed: {e}; {latest}"),
    }
}
