//! gRPC health of the broker's `Exchange` service: NOT_SERVING while the
//! audit log cannot be written (no exchange could be decided then), SERVING
//! again once it can, checked every `health_interval`; mirrored in the
//! `jembatan.health` metric.

use jembatan_proto::v1::exchange_server::ExchangeServer;
use tonic_health::server::HealthReporter;

use crate::Broker;

const EXCHANGE: &str = "jembatan.v1.Exchange";

/// Probes the audit log every `health_interval` and reports the outcome;
/// runs until aborted.
pub(crate) async fn watch_audit_log(broker: Broker, health: HealthReporter) {
    let mut tick = tokio::time::interval(broker.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = true;
    loop {
        tick.tick().await;
        let writable = match broker.audit().probe().await {
            Ok(()) => true,
            Err(err) => {
                if serving {
                    tracing::error!(error = %err, "the audit log cannot be written; Exchange is NOT_SERVING");
                }
                false
            }
        };
        if writable != serving {
            if writable {
                tracing::info!("the audit log can be written again; Exchange is SERVING");
                health
                    .set_serving::<ExchangeServer<crate::ExchangeService>>()
                    .await;
            } else {
                health
                    .set_not_serving::<ExchangeServer<crate::ExchangeService>>()
                    .await;
            }
            serving = writable;
        }
        jembatan_telemetry::metrics().health(EXCHANGE, serving);
    }
}
