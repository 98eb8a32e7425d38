//! Agreement evaluation: deny by default, and say which term failed.
//!
//! A request is allowed when one agreement between the consumer and the
//! dataset's provider satisfies every term at once. Otherwise the denial
//! reports the failed terms of the agreement that came closest.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use jembatan_core::{
    AgencyId, Agreement, AgreementStatus, DatasetId, Denial, DenialCode, FieldName,
};

/// What the consumer asks for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub consumer: &'a AgencyId,
    pub dataset: &'a DatasetId,
    pub purpose: &'a str,
    /// Fields wanted; empty means every granted field.
    pub fields: &'a [FieldName],
    /// Fields the request filters on (including a lookup key).
    pub filter_fields: BTreeSet<&'a FieldName>,
    pub now: DateTime<Utc>,
}

/// An allowed request: the agreement in force and the fields to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub agreement: Agreement,
    pub fields: Vec<FieldName>,
}

/// Finds the agreement that allows `request`, or explains why none does.
pub fn evaluate(request: &Request<'_>, agreements: &[Agreement]) -> Result<Grant, Vec<Denial>> {
    let mut closest: Option<Vec<Denial>> = None;
    for agreement in agreements
        .iter()
        .filter(|a| &a.consumer == request.consumer && &a.dataset == request.dataset)
    {
        let failed = failed_terms(request, agreement);
        if failed.is_empty() {
            let fields = if request.fields.is_empty() {
                agreement.fields.clone()
            } else {
                request.fields.to_vec()
            };
            return Ok(Grant {
                agreement: agreement.clone(),
                fields,
            });
        }
        if closest.as_ref().is_none_or(|c| failed.len() < c.len()) {
            closest = Some(failed);
        }
    }
    Err(closest.unwrap_or_else(|| {
        vec![Denial::new(
            DenialCode::NoAgreement,
            format!(
                "no agreement lets {} read {} from {}",
                request.consumer,
                request.dataset,
                request.dataset.agency()
            ),
        )]
    }))
}

fn failed_terms(request: &Request<'_>, a: &Agreement) -> Vec<Denial> {
    let mut failed = Vec::new();
    let deny = |code, message: String| Denial::new(code, message).agreement(&a.id);
    match a.status {
        AgreementStatus::Approved => {}
        AgreementStatus::Proposed => failed.push(deny(
            DenialCode::NotApproved,
            format!(
                "agreement {} is proposed but not approved by the provider",
                a.id
            ),
        )),
        AgreementStatus::Revoked => failed.push(deny(
            DenialCode::Revoked,
            format!("agreement {} was revoked", a.id),
        )),
    }
    if request.now < a.valid_from {
        failed.push(deny(
            DenialCode::NotYetValid,
            format!(
                "agreement {} is valid only from {}",
                a.id,
                jembatan_core::agreement::format_instant(&a.valid_from)
            ),
        ));
    }
    if let Some(until) = a.valid_until
        && request.now >= until
    {
        failed.push(deny(
            DenialCode::Expired,
            format!(
                "agreement {} expired at {}",
                a.id,
                jembatan_core::agreement::format_instant(&until)
            ),
        ));
    }
    if a.purpose != request.purpose {
        failed.push(deny(
            DenialCode::WrongPurpose,
            format!(
                "agreement {} covers the purpose {:?}, not {:?}",
                a.id,
                a.purpose,
                jembatan_core::ids::truncate(request.purpose, 200)
            ),
        ));
    }
    let granted: BTreeSet<&FieldName> = a.fields.iter().collect();
    let missing: Vec<String> = request
        .fields
        .iter()
        .filter(|f| !granted.contains(f))
        .map(|f| f.to_string())
        .collect();
    if !missing.is_empty() {
        failed.push(
            deny(
                DenialCode::FieldNotGranted,
                format!(
                    "agreement {} does not grant the field(s) {}",
                    a.id,
                    missing.join(", ")
                ),
            )
            .fields(missing),
        );
    }
    let hidden: Vec<String> = request
        .filter_fields
        .iter()
        .filter(|f| !granted.contains(*f))
        .map(|f| f.to_string())
        .collect();
    if !hidden.is_empty() {
        failed.push(
            deny(
                DenialCode::FilterFieldNotGranted,
                format!(
                    "the filter names field(s) {} that agreement {} does not grant",
                    hidden.join(", "),
                    a.id
                ),
            )
            .fields(hidden),
        );
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreement(id: &str, status: &str, purpose: &str, until: Option<&str>) -> Agreement {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "provider": "disdukcapil",
            "consumer": "dinsos",
            "dataset": "disdukcapil.penduduk",
            "fields": ["nik", "nama_lengkap", "kode_kecamatan"],
            "purpose": purpose,
            "valid_from": "2026-01-01",
            "valid_until": until,
            "status": status,
        }))
        .unwrap()
    }

    /// name, agreements, purpose, fields, filter fields, expected agreement or denial codes
    type Case<'a> = (
        &'a str,
        Vec<Agreement>,
        &'a str,
        Vec<FieldName>,
        Vec<FieldName>,
        Result<&'a str, Vec<DenialCode>>,
    );

    fn f(names: &[&str]) -> Vec<FieldName> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn table() {
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let ok = agreement("a1", "approved", "bansos", Some("2027-01-01"));
        let cases: Vec<Case<'_>> = vec![
            (
                "allowed",
                vec![ok.clone()],
                "bansos",
                f(&["nik"]),
                vec![],
                Ok("a1"),
            ),
            (
                "all granted fields by default",
                vec![ok.clone()],
                "bansos",
                vec![],
                vec![],
                Ok("a1"),
            ),
            (
                "no agreement",
                vec![],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![DenialCode::NoAgreement]),
            ),
            (
                "wrong purpose",
                vec![ok.clone()],
                "marketing",
                f(&["nik"]),
                vec![],
                Err(vec![DenialCode::WrongPurpose]),
            ),
            (
                "field not granted",
                vec![ok.clone()],
                "bansos",
                f(&["nik", "nama_ibu"]),
                vec![],
                Err(vec![DenialCode::FieldNotGranted]),
            ),
            (
                "filter on hidden field",
                vec![ok.clone()],
                "bansos",
                f(&["nik"]),
                f(&["pekerjaan"]),
                Err(vec![DenialCode::FilterFieldNotGranted]),
            ),
            (
                "expired",
                vec![agreement("a2", "approved", "bansos", Some("2026-05-01"))],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![DenialCode::Expired]),
            ),
            (
                "revoked",
                vec![agreement("a3", "revoked", "bansos", None)],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![DenialCode::Revoked]),
            ),
            (
                "not approved",
                vec![agreement("a4", "proposed", "bansos", None)],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![DenialCode::NotApproved]),
            ),
            (
                "several terms fail at once",
                vec![agreement("a5", "revoked", "other", None)],
                "bansos",
                f(&["x"]),
                vec![],
                Err(vec![
                    DenialCode::Revoked,
                    DenialCode::WrongPurpose,
                    DenialCode::FieldNotGranted,
                ]),
            ),
            (
                "second agreement allows",
                vec![
                    agreement("a2", "approved", "bansos", Some("2026-05-01")),
                    ok.clone(),
                ],
                "bansos",
                f(&["nik"]),
                vec![],
                Ok("a1"),
            ),
            (
                "closest agreement is reported",
                vec![
                    agreement("a6", "revoked", "other", None),
                    agreement("a7", "approved", "bansos", Some("2026-05-01")),
                ],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![DenialCode::Expired]),
            ),
        ];
        let consumer: AgencyId = "dinsos".parse().unwrap();
        let dataset: DatasetId = "disdukcapil.penduduk".parse().unwrap();
        for (name, agreements, purpose, fields, filter_fields, want) in cases {
            let request = Request {
                consumer: &consumer,
                dataset: &dataset,
                purpose,
                fields: &fields,
                filter_fields: filter_fields.iter().collect(),
                now,
            };
            match (evaluate(&request, &agreements), want) {
                (Ok(grant), Ok(id)) => {
                    assert_eq!(grant.agreement.id, id, "{name}");
                    let want_fields = if fields.is_empty() {
                        grant.agreement.fields.clone()
                    } else {
                        fields.clone()
                    };
                    assert_eq!(grant.fields, want_fields, "{name}");
                }
                (Err(denials), Err(codes)) => {
                    let got: Vec<DenialCode> = denials.iter().map(|d| d.code).collect();
                    assert_eq!(got, codes, "{name}");
                    assert!(denials.iter().all(|d| !d.message.is_empty()), "{name}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn another_consumers_agreement_does_not_count() {
        let mut a = agreement("a1", "approved", "bansos", None);
        a.consumer = "dinkes".parse().unwrap();
        let consumer: AgencyId = "dinsos".parse().unwrap();
        let dataset: DatasetId = "disdukcapil.penduduk".parse().unwrap();
        let request = Request {
            consumer: &consumer,
            dataset: &dataset,
            purpose: "bansos",
            fields: &[],
            filter_fields: BTreeSet::new(),
            now: Utc::now(),
        };
        let denials = evaluate(&request, &[a]).unwrap_err();
        assert_eq!(denials[0].code, DenialCode::NoAgreement);
    }
}
