//! The full re-check of the audit log, off the start path.
//!
//! A broker starts from its stored tiles and latest checkpoint
//! (`checkpoint.rs`) without re-reading older entries, so its start does
//! not grow with the log. Those entries are checked here instead, once
//! after start and while the broker serves: every stored entry and
//! checkpoint as `jembatan audit verify` checks them (from the archived
//! point, when older entries are archived), read and hashed on one thread
//! so that the exchanges keep the other cores. The outcome is reported:
//! a log line (the first problem found, as an error) and the
//! `jembatan.audit.recheck.ok` and `.entries` gauges to alert on.

use std::time::Instant;

use jembatan_store::Store;
use jembatan_store::verify::{VerifyError, VerifyReport, verify_on};
use jembatan_tlog::note::Verifier;

/// Verifies the whole stored log once, reports the outcome and returns it.
pub(crate) async fn run(store: Store, verifier: Verifier) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    tracing::info!("re-checking the audit log's stored entries and checkpoints");
    let outcome = verify_on(&store, &verifier, 1).await;
    match &outcome {
        Ok(report) => {
            jembatan_telemetry::metrics().log_rechecked(Some(report.size - report.archived));
            tracing::info!(
                entries = report.size - report.archived,
                from = report.archived,
                root = %report.root_hex(),
                checkpoints = report.checkpoints,
                seconds = started.elapsed().as_secs_f64(),
                "audit log re-checked: every stored entry and checkpoint verifies"
            );
        }
        Err(VerifyError::Store(e)) => {
            tracing::warn!(error = %e, "the audit log's re-check could not read the store; run `jembatan audit verify`");
        }
        Err(e) => {
            jembatan_telemetry::metrics().log_rechecked(None);
            tracing::error!(
                error = %e,
                "the audit log's re-check found a problem: run `jembatan audit verify` and investigate"
            );
        }
    }
    outcome
}
