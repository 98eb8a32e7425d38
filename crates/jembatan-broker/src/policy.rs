//! Agreement evaluation: deny by default, and say which term failed.
//!
//! A request is allowed when one agreement between the consumer and the
//! dataset's provider satisfies every term at once. Otherwise the denial
//! reports the failed terms of the agreement that came closest.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use jembatan_core::{
    AccessMode, AgencyId, Agreement, AgreementStatus, DatasetId, Denial, DenialCode, FieldName,
    MaskRule, Operator,
};

/// What the consumer asks for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub consumer: &'a AgencyId,
    pub dataset: &'a DatasetId,
    pub purpose: &'a str,
    /// Fields wanted; empty means every field whose value the agreement
    /// returns (read or masked).
    pub fields: &'a [FieldName],
    /// How the request filters: each predicate's field and operator.
    pub filter_uses: Vec<(&'a FieldName, Operator)>,
    /// A lookup's key field: any grant of it will do, since the consumer
    /// sends the whole value.
    pub key: Option<&'a FieldName>,
    /// Fields whose values the consumer sends to be verified.
    pub verify: Vec<&'a FieldName>,
    pub now: DateTime<Utc>,
}

/// An allowed request: the agreement in force, the fields to deliver and
/// how to shape them.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub agreement: Agreement,
    /// Fields delivered to the consumer.
    pub fields: Vec<FieldName>,
    /// Delivered fields whose values are masked, with their rules.
    pub masks: Vec<(FieldName, MaskRule)>,
}

impl Grant {
    /// Fields to fetch from the adapter: the delivered ones plus the ones
    /// to verify, which the broker compares and drops.
    pub fn fetch_fields(&self, verify: &[&FieldName]) -> Vec<FieldName> {
        let mut out = self.fields.clone();
        for f in verify {
            if !out.contains(f) {
                out.push((*f).clone());
            }
        }
        out
    }
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
                agreement.returned_fields()
            } else {
                request.fields.to_vec()
            };
            let masks = fields
                .iter()
                .filter_map(|f| {
                    let g = agreement.grant(f)?;
                    Some((f.clone(), g.mask?))
                })
                .collect();
            return Ok(Grant {
                agreement: agreement.clone(),
                fields,
                masks,
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
        AgreementStatus::ProviderApproved => failed.push(deny(
            DenialCode::NotApproved,
            format!(
                "agreement {} is approved by the provider but awaits an operator's approval",
                a.id
            ),
        )),
        AgreementStatus::Revoked => failed.push(deny(
            DenialCode::Revoked,
            format!("agreement {} was revoked", a.id),
        )),
        AgreementStatus::Expired => failed.push(deny(
            DenialCode::Expired,
            format!("agreement {} has expired", a.id),
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
        && a.status != AgreementStatus::Expired
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
    let mode = |f: &FieldName| a.grant(f).map(|g| g.mode);
    let missing: Vec<String> = request
        .fields
        .iter()
        .filter(|f| mode(f).is_none())
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
    let verify_only: Vec<String> = request
        .fields
        .iter()
        .filter(|f| mode(f) == Some(AccessMode::Verify))
        .map(|f| f.to_string())
        .collect();
    if !verify_only.is_empty() {
        failed.push(
            deny(
                DenialCode::FieldNotGranted,
                format!(
                    "agreement {} grants {} for verification only: send a value to verify instead of reading it",
                    a.id,
                    verify_only.join(", ")
                ),
            )
            .fields(verify_only),
        );
    }
    // Filters must not reveal more than the grant: a hidden field cannot
    // be filtered on, a verify-only field only tested for equality with a
    // value the consumer already has, and a masked field not at all (a
    // range or prefix filter would uncover the masked part).
    let mut hidden = BTreeSet::new();
    let mut misused = BTreeSet::new();
    if let Some(key) = request.key
        && mode(key).is_none()
    {
        hidden.insert(key.to_string());
    }
    for (field, op) in &request.filter_uses {
        match mode(field) {
            None => {
                hidden.insert(field.to_string());
            }
            Some(AccessMode::Read) => {}
            Some(AccessMode::Verify) if *op == Operator::Eq => {}
            Some(AccessMode::Verify | AccessMode::Masked) => {
                misused.insert(format!("{field} ({})", op.as_str()));
            }
        }
    }
    if !hidden.is_empty() {
        let hidden: Vec<String> = hidden.into_iter().collect();
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
    if !misused.is_empty() {
        let misused: Vec<String> = misused.into_iter().collect();
        failed.push(
            deny(
                DenialCode::FilterFieldNotGranted,
                format!(
                    "agreement {} grants these filter fields only for verification (eq) or masked, which this filter goes beyond: {}",
                    a.id,
                    misused.join(", ")
                ),
            )
            .fields(misused),
        );
    }
    let unverifiable: Vec<String> = request
        .verify
        .iter()
        .filter(|f| !matches!(mode(f), Some(AccessMode::Read | AccessMode::Verify)))
        .map(|f| f.to_string())
        .collect();
    if !unverifiable.is_empty() {
        failed.push(
            deny(
                DenialCode::FieldNotGranted,
                format!(
                    "agreement {} does not grant verification of {}",
                    a.id,
                    unverifiable.join(", ")
                ),
            )
            .fields(unverifiable),
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
                filter_uses: filter_fields.iter().map(|f| (f, Operator::Ge)).collect(),
                verify: vec![],
                key: None,
                now,
            };
            match (evaluate(&request, &agreements), want) {
                (Ok(grant), Ok(id)) => {
                    assert_eq!(grant.agreement.id, id, "{name}");
                    let want_fields = if fields.is_empty() {
                        grant.agreement.returned_fields()
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
            filter_uses: vec![],
            verify: vec![],
            key: None,
            now: Utc::now(),
        };
        let denials = evaluate(&request, &[a]).unwrap_err();
        assert_eq!(denials[0].code, DenialCode::NoAgreement);
    }

    #[test]
    fn access_modes() {
        let a: Agreement = serde_json::from_value(serde_json::json!({
            "id": "m1", "provider": "disdukcapil", "consumer": "dinsos",
            "dataset": "disdukcapil.penduduk",
            "fields": [
                "kode_kecamatan",
                {"field": "nik", "mode": "masked", "mask": "keep_last:4"},
                {"field": "nama_lengkap", "mode": "verify"}
            ],
            "purpose": "p", "valid_from": "2026-01-01", "status": "approved"
        }))
        .unwrap();
        let consumer: AgencyId = "dinsos".parse().unwrap();
        let dataset: DatasetId = "disdukcapil.penduduk".parse().unwrap();
        let nik: FieldName = "nik".parse().unwrap();
        let nama: FieldName = "nama_lengkap".parse().unwrap();
        let kec: FieldName = "kode_kecamatan".parse().unwrap();
        let ask = |fields: &'static [&'static str],
                   uses: Vec<(&'static str, Operator)>,
                   verify: Vec<&'static str>| {
            let fields: Vec<FieldName> = fields.iter().map(|f| f.parse().unwrap()).collect();
            let uses: Vec<(FieldName, Operator)> = uses
                .into_iter()
                .map(|(f, op)| (f.parse().unwrap(), op))
                .collect();
            let verify: Vec<FieldName> = verify.iter().map(|f| f.parse().unwrap()).collect();
            let request = Request {
                consumer: &consumer,
                dataset: &dataset,
                purpose: "p",
                fields: &fields,
                filter_uses: uses.iter().map(|(f, op)| (f, *op)).collect(),
                verify: verify.iter().collect(),
                key: None,
                now: "2026-06-01T00:00:00Z".parse().unwrap(),
            };
            evaluate(&request, std::slice::from_ref(&a))
                .map_err(|d| d.iter().map(|d| d.code).collect::<Vec<_>>())
        };
        // no fields named: the returned ones, the masked one with its rule
        let g = ask(&[], vec![], vec![]).unwrap();
        assert_eq!(g.fields, vec![kec.clone(), nik.clone()]);
        assert_eq!(g.masks, vec![(nik.clone(), MaskRule::KeepLast(4))]);
        assert_eq!(
            g.fetch_fields(&[&nama]),
            vec![kec.clone(), nik.clone(), nama.clone()]
        );
        // a verify-only field is never read
        assert_eq!(
            ask(&["nama_lengkap"], vec![], vec![]).unwrap_err(),
            vec![DenialCode::FieldNotGranted]
        );
        // ...but may be verified, and filtered on with eq only
        assert!(ask(&["kode_kecamatan"], vec![], vec!["nama_lengkap"]).is_ok());
        assert!(
            ask(
                &["kode_kecamatan"],
                vec![("nama_lengkap", Operator::Eq)],
                vec![]
            )
            .is_ok()
        );
        for op in [Operator::Prefix, Operator::Ge, Operator::In, Operator::Ne] {
            assert_eq!(
                ask(&["kode_kecamatan"], vec![("nama_lengkap", op)], vec![]).unwrap_err(),
                vec![DenialCode::FilterFieldNotGranted],
                "{op:?}"
            );
        }
        // a masked field is never filtered on nor verified
        for op in [Operator::Eq, Operator::Prefix] {
            assert_eq!(
                ask(&["nik"], vec![("nik", op)], vec![]).unwrap_err(),
                vec![DenialCode::FilterFieldNotGranted]
            );
        }
        assert_eq!(
            ask(&["kode_kecamatan"], vec![], vec!["nik"]).unwrap_err(),
            vec![DenialCode::FieldNotGranted]
        );
        // read fields: anything
        assert!(
            ask(
                &["kode_kecamatan"],
                vec![("kode_kecamatan", Operator::Prefix)],
                vec!["kode_kecamatan"]
            )
            .is_ok()
        );
    }
}
