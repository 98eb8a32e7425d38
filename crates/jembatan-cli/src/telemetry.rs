//! The command's telemetry: log format and filter, and the OpenTelemetry
//! exporters the standard `OTEL_*` variables turn on (`jembatan-telemetry`).

use std::collections::BTreeMap;

use jembatan_telemetry::{Settings, Telemetry, TelemetryError};

use crate::{Cli, Command};

/// Installs logging (and traces and metrics when configured) for the
/// command `cli` runs. Servers log one access line per RPC by default;
/// other commands only warnings and errors unless `RUST_LOG` says more.
pub(crate) fn install(cli: &Cli) -> Result<Telemetry, TelemetryError> {
    let vars: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let (service, default_filter) = match &cli.command {
        Command::Broker { .. } => ("jembatan-broker", "warn,jembatan::access=info"),
        Command::Adapter(_) => ("jembatan-adapter", "warn,jembatan::access=info"),
        _ => ("jembatan", "warn"),
    };
    let mut settings = Settings::from_vars(&vars, service)?;
    if let Some(format) = cli.log_format {
        settings.log_format = format;
    }
    Telemetry::install(&settings, default_filter)
}

/// Serves the Prometheus endpoint on `listen`, when the config names one,
/// for as long as the process runs.
pub(crate) async fn serve_metrics(listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some(addr) = listen else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    eprintln!("metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        if let Err(err) = jembatan_telemetry::serve_metrics(listener, std::future::pending()).await
        {
            eprintln!("error: the metrics endpoint stopped: {err}");
        }
    });
    Ok(())
}
