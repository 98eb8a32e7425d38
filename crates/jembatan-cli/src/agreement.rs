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
        /// Also allow subscribing to the dataset's changes (the `subscribe`
        /// term), under the same fields, row filter and purpose.
        #[arg(long)]
        subscribe: bool,
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
    /// List the agreements the caller may see: a table of status,
    /// purpose, fields and modes, validity and quota (`--json`: one JSON
    /// object a line, every term).
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

pub(crate) fn time_text(t: &Option<prost_types::Timestamp>) -> Option<String> {
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
        "quota_used": a.quota_use.as_ref().map(|u| serde_json::json!({
            "rows_today": u.rows_today,
            "requests_this_minute": u.requests_this_minute,
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
    if a.subscribe {
        writeln!(out, "  access:  queries and subscriptions to changes")?;
    }
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
        if let Some(u) = &a.quota_use {
            writeln!(
                out,
                "  used:    {} rows today, {} requests this minute (UTC)",
                u.rows_today, u.requests_this_minute
            )?;
        }
    }
    writeln!(out, "  terms:   sha256 {}", a.terms_sha256)
}

/// The date part of a validity bound, or `-` when there is none.
fn day_text(t: &Option<prost_types::Timestamp>) -> String {
    time_text(t)
        .map(|t| t.chars().take(10).collect())
        .unwrap_or_else(|| "-".into())
}

/// The quota with what is used of it, when known: `40/100 rows/day`.
fn quota_text(q: Option<&pb::Quota>, used: Option<&pb::QuotaUse>) -> String {
    let of = |n: u64| used.map(|_| format!("{n}/")).unwrap_or_default();
    let parts: Vec<String> = q
        .into_iter()
        .flat_map(|q| {
            let u = used.cloned().unwrap_or_default();
            [
                (q.rows_per_day > 0)
                    .then(|| format!("{}{} rows/day", of(u.rows_today), q.rows_per_day)),
                (q.requests_per_minute > 0).then(|| {
                    format!(
                        "{}{} req/min",
                        of(u.requests_this_minute),
                        q.requests_per_minute
                    )
                }),
            ]
        })
        .flatten()
        .collect();
    if parts.is_empty() {
        "unlimited".into()
    } else {
        parts.join(", ")
    }
}

/// Cuts `text` to `max` characters, marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

/// One line an agreement: who, what, why, which fields in which mode,
/// when, how much. Long purposes are cut; `--json` has every term whole.
fn print_table(out: &mut impl Write, list: &[pb::Agreement]) -> std::io::Result<()> {
    let header = [
        "ID", "STATUS", "DATASET", "CONSUMER", "PURPOSE", "FIELDS", "VALID", "QUOTA",
    ];
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|a| {
            let fields: Vec<String> = a.fields.iter().map(grant_text).collect();
            [
                a.id.clone(),
                status_name(a.status).to_owned(),
                a.dataset.clone(),
                a.consumer.clone(),
                cut(&a.purpose, 40),
                fields.join(","),
                format!("{}..{}", day_text(&a.valid_from), day_text(&a.valid_until)),
                quota_text(a.quota.as_ref(), a.quota_use.as_ref()),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(&header))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    Ok(())
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
                print_table(&mut out, &list)?;
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
            subscribe,
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
                subscribe,
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
    fn list_table() {
        let a = pb::Agreement {
            id: "pks-1".into(),
            provider: "disdukcapil".into(),
            consumer: "dinkes".into(),
            dataset: "disdukcapil.penduduk".into(),
            fields: vec![
                parse_field("nik:masked:keep_last:4").ok().unwrap(),
                parse_field("nama_lengkap:verify").ok().unwrap(),
            ],
            purpose: "pendataan sasaran imunisasi".into(),
            valid_from: timestamp("valid-from", "2026-01-01").ok(),
            quota: Some(pb::Quota {
                rows_per_day: 100,
                requests_per_minute: 0,
            }),
            status: pb::AgreementStatus::Approved as i32,
            quota_use: Some(pb::QuotaUse {
                rows_today: 40,
                requests_this_minute: 0,
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        print_table(&mut out, &[a]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID     STATUS    DATASET"), "{text}");
        for want in [
            "approved",
            "pendataan sasaran imunisasi",
            "nik:masked:keep_last:4,nama_lengkap:verify",
            "2026-01-01..-",
            "40/100 rows/day",
        ] {
            assert!(lines[1].contains(want), "{want}: {text}");
        }
        assert_eq!(quota_text(None, None), "unlimited");
        assert_eq!(cut("abcdef", 4), "abc…");
    }

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
