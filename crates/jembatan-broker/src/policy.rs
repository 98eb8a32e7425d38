//! Agreement evaluation: deny by default, and say which term failed.
//!
//! A request is allowed when one agreement between the consumer and the
//! dataset's provider satisfies every term at once. Otherwise the denial
//! reports the failed terms of every agreement that could have covered it
//! (each term names its agreement), the closest agreement first.

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
    /// A subscription to the dataset's changes: the agreement must
    /// include the `subscribe` term.
    pub subscribe: bool,
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

/// Most agreements whose failed terms one denial reports: the closest
/// ones, so that a consumer with a long history of agreements for one
/// dataset still gets a denial of bounded size.
pub const MAX_REPORTED_AGREEMENTS: usize = 16;

/// Finds the agreement that allows `request`, or explains why none does:
/// the failed terms of each candidate agreement (those between the
/// consumer and the dataset), ordered by how close the agreement came
/// (fewest failed terms first; ties keep the order given), at most
/// [`MAX_REPORTED_AGREEMENTS`] agreements.
pub fn evaluate(request: &Request<'_>, agreements: &[Agreement]) -> Result<Grant, Vec<Denial>> {
    let mut candidates: Vec<Vec<Denial>> = Vec::new();
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
        candidates.push(failed);
    }
    if candidates.is_empty() {
        return Err(vec![Denial::new(
            DenialCode::NoAgreement,
            format!(
                "no agreement lets {} read {} from {}",
                request.consumer,
                request.dataset,
                request.dataset.agency()
            ),
        )]);
    }
    // stable: among equally close agreements the store's order stays
    candidates.sort_by_key(Vec::len);
    Err(candidates
        .into_iter()
        .take(MAX_REPORTED_AGREEMENTS)
        .flatten()
        .collect())
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
    if request.subscribe && !a.subscribe {
        failed.push(deny(
            DenialCode::SubscribeNotGranted,
            format!(
                "agreement {} does not include the subscribe term: it allows queries, not subscriptions",
                a.id
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

    /// name, agreements, purpose, fields, filter fields, expected agreement
    /// or denials (the agreement each names, "" for none, and its code)
    type Case<'a> = (
        &'a str,
        Vec<Agreement>,
        &'a str,
        Vec<FieldName>,
        Vec<FieldName>,
        Result<&'a str, Vec<(&'a str, DenialCode)>>,
    );

    fn f(names: &[&str]) -> Vec<FieldName> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn table() {
        use DenialCode::*;
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
                Err(vec![("", NoAgreement)]),
            ),
            (
                "wrong purpose",
                vec![ok.clone()],
                "marketing",
                f(&["nik"]),
                vec![],
                Err(vec![("a1", WrongPurpose)]),
            ),
            (
                "field not granted",
                vec![ok.clone()],
                "bansos",
                f(&["nik", "nama_ibu"]),
                vec![],
                Err(vec![("a1", FieldNotGranted)]),
            ),
            (
                "filter on hidden field",
                vec![ok.clone()],
                "bansos",
                f(&["nik"]),
                f(&["pekerjaan"]),
                Err(vec![("a1", FilterFieldNotGranted)]),
            ),
            (
                "expired",
                vec![agreement("a2", "approved", "bansos", Some("2026-05-01"))],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![("a2", Expired)]),
            ),
            (
                "revoked",
                vec![agreement("a3", "revoked", "bansos", None)],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![("a3", Revoked)]),
            ),
            (
                "not approved",
                vec![agreement("a4", "proposed", "bansos", None)],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![("a4", NotApproved)]),
            ),
            (
                "several terms fail at once",
                vec![agreement("a5", "revoked", "other", None)],
                "bansos",
                f(&["x"]),
                vec![],
                Err(vec![
                    ("a5", Revoked),
                    ("a5", WrongPurpose),
                    ("a5", FieldNotGranted),
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
                "every candidate reported, the closest first",
                vec![
                    agreement("a6", "revoked", "other", None),
                    agreement("a7", "approved", "bansos", Some("2026-05-01")),
                ],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![("a7", Expired), ("a6", Revoked), ("a6", WrongPurpose)]),
            ),
            (
                "a revoked older and an expired newer agreement, both reported",
                vec![
                    agreement("old", "revoked", "bansos", None),
                    agreement("new", "approved", "bansos", Some("2026-05-01")),
                ],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![("old", Revoked), ("new", Expired)]),
            ),
            (
                "an expired agreement recorded as such reports expiry once",
                vec![
                    agreement("e1", "expired", "bansos", Some("2026-05-01")),
                    agreement("p1", "proposed", "bansos", None),
                ],
                "bansos",
                f(&["nik"]),
                vec![],
                Err(vec![("e1", Expired), ("p1", NotApproved)]),
            ),
            (
                "each candidate fails on its own terms",
                vec![
                    agreement("w1", "approved", "kesehatan", None),
                    agreement("n1", "approved", "bansos", None),
                ],
                "bansos",
                f(&["nik", "nama_ibu"]),
                vec![],
                // n1 fails one term, w1 two: n1 comes first
                Err(vec![
                    ("n1", FieldNotGranted),
                    ("w1", WrongPurpose),
                    ("w1", FieldNotGranted),
                ]),
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
                subscribe: false,
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
                (Err(denials), Err(want)) => {
                    let got: Vec<(&str, DenialCode)> = denials
                        .iter()
                        .map(|d| (d.agreement_id.as_deref().unwrap_or(""), d.code))
                        .collect();
                    assert_eq!(got, want, "{name}");
                    assert!(denials.iter().all(|d| !d.message.is_empty()), "{name}");
                    for d in &denials {
                        if let Some(id) = &d.agreement_id {
                            assert!(d.message.contains(id.as_str()), "{name}: {}", d.message);
                        }
                    }
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_denial_reports_at_most_the_closest_agreements() {
        let consumer: AgencyId = "dinsos".parse().unwrap();
        let dataset: DatasetId = "disdukcapil.penduduk".parse().unwrap();
        // many revoked agreements with another purpose, then one that only expired
        let mut agreements: Vec<Agreement> = (0..MAX_REPORTED_AGREEMENTS + 4)
            .map(|i| agreement(&format!("old-{i:02}"), "revoked", "other", None))
            .collect();
        agreements.push(agreement("last", "approved", "bansos", Some("2026-05-01")));
        let request = Request {
            consumer: &consumer,
            dataset: &dataset,
            purpose: "bansos",
            fields: &[],
            filter_uses: vec![],
            verify: vec![],
            key: None,
            subscribe: false,
            now: "2026-06-01T00:00:00Z".parse().unwrap(),
        };
        let denials = evaluate(&request, &agreements).unwrap_err();
        let ids: BTreeSet<&str> = denials
            .iter()
            .filter_map(|d| d.agreement_id.as_deref())
            .collect();
        assert_eq!(ids.len(), MAX_REPORTED_AGREEMENTS);
        assert!(ids.contains("last"));
        assert!(!ids.contains("old-19"));
        assert_eq!(denials[0].agreement_id.as_deref(), Some("last"));
        assert_eq!(denials[0].code, DenialCode::Expired);
    }

    #[test]
    fn subscribing_needs_the_subscribe_term() {
        let consumer: AgencyId = "dinsos".parse().unwrap();
        let dataset: DatasetId = "disdukcapil.penduduk".parse().unwrap();
        let queries_only = agreement("q1", "approved", "bansos", None);
        let mut with_term = agreement("s1", "approved", "bansos", None);
        with_term.subscribe = true;
        let request = |subscribe| Request {
            consumer: &consumer,
            dataset: &dataset,
            purpose: "bansos",
            fields: &[],
            filter_uses: vec![],
            verify: vec![],
            key: None,
            subscribe,
            now: "2026-06-01T00:00:00Z".parse().unwrap(),
        };
        // a query is allowed by either; the term adds, never takes away
        for a in [&queries_only, &with_term] {
            assert!(evaluate(&request(false), std::slice::from_ref(a)).is_ok());
        }
        let denials = evaluate(&request(true), std::slice::from_ref(&queries_only)).unwrap_err();
        assert_eq!(
            denials
                .iter()
                .map(|d| (d.agreement_id.as_deref(), d.code))
                .collect::<Vec<_>>(),
            vec![(Some("q1"), DenialCode::SubscribeNotGranted)]
        );
        assert!(denials[0].message.contains("subscribe term"));
        let grant = evaluate(&request(true), &[queries_only.clone(), with_term.clone()]).unwrap();
        assert_eq!(grant.agreement.id, "s1");
        // every other term still holds for a subscription
        let mut revoked = with_term.clone();
        revoked.status = AgreementStatus::Revoked;
        let denials = evaluate(&request(true), &[revoked]).unwrap_err();
        assert_eq!(denials[0].code, DenialCode::Revoked);
    }

    #[test]
    fn the_subscribe_term_leaves_other_agreements_terms_hash_alone() {
        let a = agreement("q1", "approved", "bansos", None);
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("subscribe"), "{json}");
        let mut b = a.clone();
        b.subscribe = true;
        assert_ne!(a.terms_sha256(), b.terms_sha256());
        let back: Agreement = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert!(back.subscribe);
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
            subscribe: false,
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
                subscribe: false,
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
