//! `jembatan health`: asks a broker's (or an adapter's) standard gRPC
//! health service over its mutual TLS, for readiness and liveness probes
//! that must present a certificate (Kubernetes' own gRPC probe cannot).
//! Exit 0 when serving, 1 when the service answers that it is not, 2 when
//! it cannot be reached.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::failure::{Failure, exit};
use crate::schema::Connection;

#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The service to ask about, e.g. `jembatan.v1.Exchange` [default:
    /// the server as a whole].
    #[arg(long, default_value = "")]
    service: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(crate) async fn run(args: HealthArgs, conn: &Connection) -> ExitCode {
    exit(check(args, conn).await)
}

async fn check(args: HealthArgs, conn: &Connection) -> Result<(), Failure> {
    let what = if args.service.is_empty() {
        "the server"
    } else {
        args.service.as_str()
    };
    let asked = async {
        let mut client = HealthClient::new(conn.channel().await?);
        client
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(crate::schema::call_failed)
    };
    let answer = tokio::time::timeout(args.timeout, asked)
        .await
        .map_err(|_| {
            Failure::Usage(anyhow!(
                "no answer within {}",
                humantime::format_duration(args.timeout)
            ))
        })??;
    let status = answer.into_inner().status();
    if status == ServingStatus::Serving {
        println!("{what}: serving");
        Ok(())
    } else {
        Err(Failure::Refused(anyhow!(
            "{what}: {}",
            status.as_str_name().to_lowercase().replace('_', " ")
        )))
    }
}
