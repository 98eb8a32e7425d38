//! `jembatan agreement ...`: the agreement lifecycle from the command
//! line, through the broker's `Agreements` service. Who may do what comes
//! from the certificate the command is run with: a consuming agency
//! proposes, the providing agency (then an operator, where the deployment
//! requires it) approves, either agency or an operator revokes.
//!
//! Exit codes: 0 done, 1 refused by the broker, 2 usage errors and
//! unreachable brokers.

use std::io::Write;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Subcommand;
use jembatan_core::{Filter, MaskRule};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::agreements_client::AgreementsClient;

use crate::failure::{Failure, exit};
use crate::schema::{Connection, call_failed};

#[derive(Debug, Subcommand)]
pub(crate) enum AgreementCommand {
    /// Propose an agreement as the consuming agency (the caller's
    /// certificate names it).
    Propose {
        /// Dataset, `<agency>.<dataset>`.
        #[arg(long)]
        dataset: String,
        /// A registered purpose (legal basis).
        #[arg(long)]
        purpose: String,
        /// A granted field: `NAME` (read), `NAME:verify`, or
        /// `NAME:masked:RULE` with RULE keep_first:N, keep_last:N or year.
        /// Repeatable.
        #[arg(long = "field", value_name = "FIELD[:MODE[:RULE]]", required = true)]
        fields: Vec<String>,
        /// The agreement's id [default: assigned by the broker].
        #[arg(long)]
        id: Option<String>,
        /// Start of validity, RFC 3339 or a date [default: now].
        #[arg(long)]
        valid_from: Option<String>,
        /// End of validity (exclusive), RFC 3339 or a date [default: none].
        #[arg(long)]
        valid_until: Option<String>,
        /// Row filter, as JSON (`{"field":"status","op":"eq","value":"HIDUP"}`).
        #[arg(long, value_name = "JSON")]
        row_filter: Option<String>,
        /// Most records delivered per UTC day [default: unlimited].
        #[arg(long)]
        rows_per_day: Option<u64>,
        /// Most requests per minute [default: unlimited].
        #[arg(long)]
        requests_per_minute: Option<u64>,
        /// Print the agreement as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve an agreement (its provider; then an operator, where the
    /// deployment requires it).
    Approve {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agreement (either agency or an operator); running
    /// exchanges under it stop at once.
    Revoke {
        id: String,
        /// Why, in words; kept on the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print one agreement.
    Get {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List the agreements the caller may see.
    List {
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long)]
        dataset: Option<String>,
        /// proposed, provider_approved, approved, revoked or expired.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(command: AgreementCommand, conn: &Connection) -> ExitCode {
    exit(agreement(command, conn).await)
}

/// Parses `NAME`, `NAME:read`, `NAME:verify` or `NAME:masked:RULE`.
fn parse_field(spec: &str) -> Result<pb::FieldGrant, Failure> {
    let bad = |why: &str| Failure::Usage(anyhow!("--field {spec:?}: {why}"));
    let (name, rest) = spec.split_once(':').unwrap_or((spec, "read"));
    if name.is_empty() {
        return Err(bad("the field name is empty"));
    }
    let (mode, mask) = match rest.split_once(':') {
        None if rest == "read" => (pb::AccessMode::Read, String::new()),
        None if rest == "verify" => (pb::AccessMode::Verify, String::new()),
        None if rest == "masked" => {
            return Err(bad("masked needs a rule, e.g. NAME:masked:keep_last:4"));
        }
        Some(("masked", rule)) => {
            rule.parse::<MaskRule>()
                .map_err(|e| Failure::Usage(anyhow!("--field {spec:?}: {e}")))?;
            (pb::AccessMode::Masked, rule.to_owned())
        }
        _ => return Err(bad("the mode must be read, verify or masked:RULE")),
    };
    Ok(pb::FieldGrant {
        field: name.to_owned(),
        mode: mode as i32,
        mask,
    })
}

fn timestamp(flag: &str, text: &str) -> Result<prost_types::Timestamp, Failure> {
    let t = jembatan_core::agreement::parse_instant(text)
        .map_err(|e| Failure::Usage(anyhow!("--{flag}: {e}")))?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

fn status_name(status: i32) -> &'static str {
    match pb::AgreementStatus::try_from(status) {
        Ok(pb::AgreementStatus::Proposed) => "proposed",
        Ok(pb::AgreementStatus::ProviderApproved) => "provider_approved",
        Ok(pb::AgreementStatus::Approved) => "approved",
        Ok(pb::AgreementStatus::Revoked) => "revoked",
        Ok(pb::AgreementStatus::Expired) => "expired",
        _ => "unspecified",
    }
}

fn status_from_name(name: &str) -> Result<pb::AgreementStatus, Failure> {
    Ok(match name {
        "proposed" => pb::AgreementStatus::Proposed,
        "provider_approved" => pb::AgreementStatus::ProviderApproved,
        "approved" => pb::AgreementStatus::Approved,
        "revoked" => pb::AgreementStatus::Revoked,
        "expired" => pb::AgreementStatus::Expired,
        _ => {
            return Err(Failure::Usage(anyhow!(
                "--status {name:?}: one of proposed, provider_approved, approved, revoked, expired"
            )));
        }
    })
}

fn time_text(t: &Option<prost_types::Timestamp>) -> Option<String> {
    let t = t.as_ref()?;
    let t = chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))?;
    Some(jembatan_core::agreement::format_instant(&t))
}

fn grant_text(g: &pb::FieldGrant) -> String {
    match pb::AccessMode::try_from(g.mode) {
        Ok(pb::AccessMode::Verify) => format!("{}:verify", g.field),
        Ok(pb::AccessMode::Masked) => format!("{}:masked:{}", g.field, g.mask),
        _ => g.field.clone(),
    }
}

fn to_json(a: &pb::Agreement) -> serde_json::Value {
    let filter = a
        .row_filter
        .as_ref()
        .and_then(|f| Filter::try_from(f).ok())
        .and_then(|f| serde_json::to_value(f).ok());
    serde_json::json!({
        "id": a.id,
        "provider": a.provider,
        "consumer": a.consumer,
        "dataset": a.dataset,
        "fields": a.fields.iter().map(|g| {
            let mode = match pb::AccessMode::try_from(g.mode) {
                Ok(pb::AccessMode::Verify) => "verify",
                Ok(pb::AccessMode::Masked) => "masked",
                _ => "read",
            };
            let mut v = serde_json::json!({"field": g.field, "mode": mode});
            if !g.mask.is_empty() {
                v["mask"] = serde_json::Value::String(g.mask.clone());
            }
            v
        }).collect::<Vec<_>>(),
        "purpose": a.purpose,
        "valid_from": time_text(&a.valid_from),
        "valid_until": time_text(&a.valid_until),
        "row_filter": filter,
        "quota": a.quota.as_ref().map(|q| serde_json::json!({
            "rows_per_day": q.rows_per_day,
            "requests_per_minute": q.requests_per_minute,
        })),
        "status": status_name(a.status),
        "terms_sha256": a.terms_sha256,
    })
}

fn print(out: &mut impl Write, a: &pb::Agreement, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", to_json(a));
    }
    writeln!(out, "agreement {} ({})", a.id, status_name(a.status))?;
    writeln!(out, "  {} -> {}: {}", a.provider, a.consumer, a.dataset)?;
    let fields: Vec<String> = a.fields.iter().map(grant_text).collect();
    writeln!(out, "  fields:  {}", fields.join(", "))?;
    writeln!(out, "  purpose: {}", a.purpose)?;
    writeln!(
        out,
        "  valid:   {} .. {}",
        time_text(&a.valid_from).unwrap_or_default(),
        time_text(&a.valid_until).unwrap_or_else(|| "(no end)".into())
    )?;
    if let Some(f) = to_json(a).get("row_filter").filter(|f| !f.is_null()) {
        writeln!(out, "  rows:    {f}")?;
    }
    if let Some(q) = &a.quota {
        let n = |v: u64| {
            if v == 0 {
                "unlimited".to_owned()
            } else {
                v.to_string()
            }
        };
        writeln!(
            out,
            "  quota:   {} rows/day, {} requests/minute",
            n(q.rows_per_day),
            n(q.requests_per_minute)
        )?;
    }
    writeln!(out, "  terms:   sha256 {}", a.terms_sha256)
}

async fn agreement(command: AgreementCommand, conn: &Connection) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    // arguments are checked before the broker is called
    let (request, json) = build(command)?;
    let mut client = AgreementsClient::new(conn.channel().await?);
    match request {
        Call::Propose(terms) => {
            let a = client
                .propose(pb::ProposeRequest {
                    agreement: Some(*terms),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(&mut out, &a, json)?;
        }
        Call::Approve(id) => {
            let a = client
                .approve(pb::ApproveRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(&mut out, &a, json)?;
        }
        Call::Revoke(id, reason) => {
            let a = client
                .revoke(pb::RevokeRequest { id, reason })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(&mut out, &a, json)?;
        }
        Call::Get(id) => {
            let a = client
                .get(pb::GetAgreementRequest { id })
                .await
                .map_err(call_failed)?
                .into_inner();
            print(&mut out, &a, json)?;
        }
        Call::List(filter) => {
            let list = client
                .list(filter)
                .await
                .map_err(call_failed)?
                .into_inner()
                .agreements;
            if json {
                for a in &list {
                    writeln!(out, "{}", to_json(a))?;
                }
            } else if list.is_empty() {
                writeln!(out, "no agreements")?;
            } else {
                writeln!(
                    out,
                    "{:<40} {:<18} {:<14} {:<14} dataset",
                    "id", "status", "provider", "consumer"
                )?;
                for a in &list {
                    writeln!(
                        out,
                        "{:<40} {:<18} {:<14} {:<14} {}",
                        a.id,
                        status_name(a.status),
                        a.provider,
                        a.consumer,
                        a.dataset
                    )?;
                }
            }
        }
    }
    Ok(())
}

enum Call {
    Propose(Box<pb::Agreement>),
    Approve(String),
    Revoke(String, String),
    Get(String),
    List(pb::ListAgreementsRequest),
}

fn build(command: AgreementCommand) -> Result<(Call, bool), Failure> {
    Ok(match command {
        AgreementCommand::Propose {
            dataset,
            purpose,
            fields,
            id,
            valid_from,
            valid_until,
            row_filter,
            rows_per_day,
            requests_per_minute,
            json,
        } => {
            let fields = fields
                .iter()
                .map(|f| parse_field(f))
                .collect::<Result<Vec<_>, _>>()?;
            let row_filter = match row_filter {
                Some(text) => {
                    let f: Filter = serde_json::from_str(&text)
                        .map_err(|e| Failure::Usage(anyhow!("--row-filter: {e}")))?;
                    f.validate()
                        .map_err(|e| Failure::Usage(anyhow!("--row-filter: {e}")))?;
                    Some(f.to_proto())
                }
                None => None,
            };
            let quota =
                (rows_per_day.is_some() || requests_per_minute.is_some()).then(|| pb::Quota {
                    rows_per_day: rows_per_day.unwrap_or(0),
                    requests_per_minute: requests_per_minute.unwrap_or(0),
                });
            let terms = pb::Agreement {
                id: id.unwrap_or_default(),
                dataset,
                purpose,
                fields,
                valid_from: valid_from
                    .map(|t| timestamp("valid-from", &t))
                    .transpose()?,
                valid_until: valid_until
                    .map(|t| timestamp("valid-until", &t))
                    .transpose()?,
                row_filter,
                quota,
                ..Default::default()
            };
            (Call::Propose(Box::new(terms)), json)
        }
        AgreementCommand::Approve { id, json } => (Call::Approve(id), json),
        AgreementCommand::Revoke { id, reason, json } => {
            (Call::Revoke(id, reason.unwrap_or_default()), json)
        }
        AgreementCommand::Get { id, json } => (Call::Get(id), json),
        AgreementCommand::List {
            provider,
            consumer,
            dataset,
            status,
            json,
        } => {
            let status = status
                .map(|s| status_from_name(&s))
                .transpose()?
                .map_or(0, |s| s as i32);
            (
                Call::List(pb::ListAgreementsRequest {
                    provider: provider.unwrap_or_default(),
                    consumer: consumer.unwrap_or_default(),
                    dataset: dataset.unwrap_or_default(),
                    status,
                }),
                json,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_specs() {
        let ok = [
            ("nik", pb::AccessMode::Read, ""),
            ("nik:read", pb::AccessMode::Read, ""),
            ("nama_lengkap:verify", pb::AccessMode::Verify, ""),
            (
                "nik:masked:keep_last:4",
                pb::AccessMode::Masked,
                "keep_last:4",
            ),
            ("tanggal_lahir:masked:year", pb::AccessMode::Masked, "year"),
        ];
        for (spec, mode, mask) in ok {
            let g = parse_field(spec).unwrap_or_else(|_| panic!("{spec}"));
            assert_eq!(g.mode, mode as i32, "{spec}");
            assert_eq!(g.mask, mask, "{spec}");
        }
        for bad in [
            "",
            ":verify",
            "nik:masked",
            "nik:peek",
            "nik:masked:keep_last:0",
            "nik:verify:x",
        ] {
            assert!(parse_field(bad).is_err(), "{bad}");
        }
    }
}
