//! The agreement lifecycle end to end: the `Agreements` service, each step
//! on the audit log, revocation and expiry stopping running exchanges,
//! quotas shared by replicas, and the read / verify / masked access modes.

use std::time::Duration;

use jembatan_core::{Decision, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_testkit::{
    Federation, agreement_toml, denial_codes, eq, nik, query, run_query, string,
};
use tonic::Code;

fn terms(id: &str, fields: &[(&str, pb::AccessMode, &str)]) -> pb::ProposeRequest {
    pb::ProposeRequest {
        agreement: Some(pb::Agreement {
            id: id.into(),
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            fields: fields
                .iter()
                .map(|(f, mode, mask)| pb::FieldGrant {
                    field: f.to_string(),
                    mode: *mode as i32,
                    mask: mask.to_string(),
                })
                .collect(),
            ..Default::default()
        }),
    }
}

fn read(fields: &[&'static str]) -> Vec<(&'static str, pb::AccessMode, &'static str)> {
    fields
        .iter()
        .map(|f| (*f, pb::AccessMode::Read, ""))
        .collect()
}

/// The agreement entries of the log, as (operation, decision, from, to).
async fn steps(
    b: &jembatan_testkit::BrokerHandle,
    id: &str,
) -> Vec<(String, Decision, Option<String>, Option<String>)> {
    let size = b.broker.audit().size().await.unwrap();
    b.broker
        .audit()
        .entries(0, size)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.entry.kind == EntryKind::Agreement && e.entry.agreement_id.as_deref() == Some(id)
        })
        .map(|e| {
            let c = e.entry.change.clone().unwrap();
            (e.entry.operation.clone(), e.entry.decision, c.from, c.to)
        })
        .collect()
}

#[tokio::test]
async fn lifecycle_through_the_service_with_every_step_audited() {
    let f = Federation::start(30).await;
    let b = f.broker(&f.broker_config("", "")).await;
    let mut dinsos = b.agreements(&f, "dinsos").await;
    let mut prov = b.agreements(&f, "prov").await;
    let mut dinkes = b.agreements(&f, "dinkes").await;

    let a = dinsos
        .propose(terms("dinsos-1", &read(&["nik", "nama"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AgreementStatus::Proposed as i32);
    assert_eq!(
        (a.provider.as_str(), a.consumer.as_str()),
        ("prov", "dinsos")
    );
    assert_eq!(a.terms_sha256.len(), 64);

    // proposed: no exchange yet
    let mut ex = b.exchange(&f, "dinsos").await;
    let out = run_query(&mut ex, query(&["nik"])).await;
    let status = out.end.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(denial_codes(&status), vec!["not_approved"]);

    // the consumer cannot approve its own proposal; a stranger cannot see it
    let err = dinsos
        .approve(pb::ApproveRequest {
            id: "dinsos-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = dinkes
        .get(pb::GetAgreementRequest {
            id: "dinsos-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        dinkes
            .list(pb::ListAgreementsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agreements
            .is_empty()
    );

    let a = prov
        .approve(pb::ApproveRequest {
            id: "dinsos-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AgreementStatus::Approved as i32);
    let out = run_query(&mut ex, query(&["nik", "nama"])).await;
    out.end.unwrap();
    assert_eq!(out.records.len(), 30);

    // approving twice is refused as a state error
    let err = prov
        .approve(pb::ApproveRequest {
            id: "dinsos-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let listed = prov
        .list(pb::ListAgreementsRequest {
            status: pb::AgreementStatus::Approved as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agreements;
    assert_eq!(listed.len(), 1);

    let a = dinsos
        .revoke(pb::RevokeRequest {
            id: "dinsos-1".into(),
            reason: "programme ended".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AgreementStatus::Revoked as i32);
    let status = run_query(&mut ex, query(&["nik"])).await.end.unwrap_err();
    assert_eq!(denial_codes(&status), vec!["revoked"]);
    let err = prov
        .approve(pb::ApproveRequest {
            id: "dinsos-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let want: Vec<(&str, Decision, Option<&str>, Option<&str>)> = vec![
        ("agreement.propose", Decision::Allow, None, Some("proposed")),
        (
            "agreement.approve",
            Decision::Deny,
            Some("proposed"),
            Some("proposed"),
        ),
        (
            "agreement.approve",
            Decision::Allow,
            Some("proposed"),
            Some("approved"),
        ),
        (
            "agreement.approve",
            Decision::Deny,
            Some("approved"),
            Some("approved"),
        ),
        (
            "agreement.revoke",
            Decision::Allow,
            Some("approved"),
            Some("revoked"),
        ),
        (
            "agreement.approve",
            Decision::Deny,
            Some("revoked"),
            Some("revoked"),
        ),
    ];
    let got = steps(&b, "dinsos-1").await;
    let got: Vec<(&str, Decision, Option<&str>, Option<&str>)> = got
        .iter()
        .map(|(o, d, from, to)| (o.as_str(), *d, from.as_deref(), to.as_deref()))
        .collect();
    assert_eq!(got, want);
    // the revocation's reason and caller are on the log
    let size = b.broker.audit().size().await.unwrap();
    let revoke = b
        .broker
        .audit()
        .entries(0, size)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.entry.operation == "agreement.revoke")
        .unwrap();
    assert_eq!(revoke.entry.caller, "agency:dinsos");
    assert_eq!(
        revoke.entry.change.unwrap().reason.as_deref(),
        Some("programme ended")
    );
}

#[tokio::test]
async fn operator_approval_when_the_deployment_requires_it() {
    let f = Federation::start(10).await;
    let b = f
        .broker(&f.broker_config("operator_approval = true", ""))
        .await;
    let mut dinsos = b.agreements(&f, "dinsos").await;
    let mut prov = b.agreements(&f, "prov").await;
    let mut operator = b.agreements(&f, "operator").await;
    dinsos
        .propose(terms("op-1", &read(&["nik"])))
        .await
        .unwrap();
    // an operator approves only after the provider
    let err = operator
        .approve(pb::ApproveRequest { id: "op-1".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let a = prov
        .approve(pb::ApproveRequest { id: "op-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AgreementStatus::ProviderApproved as i32);
    let mut ex = b.exchange(&f, "dinsos").await;
    let status = run_query(&mut ex, query(&["nik"])).await.end.unwrap_err();
    assert_eq!(denial_codes(&status), vec!["not_approved"]);
    let a = operator
        .approve(pb::ApproveRequest { id: "op-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AgreementStatus::Approved as i32);
    run_query(&mut ex, query(&["nik"])).await.end.unwrap();
}

#[tokio::test]
async fn proposals_with_bad_terms_are_refused_and_audited() {
    let f = Federation::start(5).await;
    let b = f.broker(&f.broker_config("", "")).await;
    let mut dinsos = b.agreements(&f, "dinsos").await;
    let mut auditor = b.agreements(&f, "auditor").await;
    let before = b.broker.audit().size().await.unwrap();
    let with = |edit: &dyn Fn(&mut pb::Agreement)| {
        let mut t = terms("", &read(&["nik"]));
        edit(t.agreement.as_mut().unwrap());
        t
    };
    let cases: Vec<(&str, pb::ProposeRequest, Code, &str)> = vec![
        (
            "unregistered purpose",
            with(&|a| a.purpose = "marketing".into()),
            Code::FailedPrecondition,
            "not a registered legal basis",
        ),
        (
            "for another consumer",
            with(&|a| a.consumer = "dinkes".into()),
            Code::PermissionDenied,
            "proposed by its consumer",
        ),
        (
            "unknown dataset",
            with(&|a| a.dataset = "prov.rahasia".into()),
            Code::NotFound,
            "no dataset",
        ),
        (
            "wrong provider",
            with(&|a| a.provider = "dinkes".into()),
            Code::InvalidArgument,
            "provided by prov",
        ),
        (
            "masked without a rule",
            terms("", &[("nik", pb::AccessMode::Masked, "")]),
            Code::InvalidArgument,
            "names no mask rule",
        ),
        (
            "unknown mask",
            terms("", &[("nik", pb::AccessMode::Masked, "all_but:3")]),
            Code::InvalidArgument,
            "unknown mask rule",
        ),
        (
            "field twice",
            terms("", &read(&["nik", "nik"])),
            Code::InvalidArgument,
            "granted twice",
        ),
        (
            "no fields",
            terms("", &[]),
            Code::InvalidArgument,
            "grants no fields",
        ),
        (
            "bad id",
            terms("a b'; --", &read(&["nik"])),
            Code::InvalidArgument,
            "agreement id",
        ),
        (
            "bad field name",
            terms("", &read(&["nik; DROP TABLE penduduk"])),
            Code::InvalidArgument,
            "fields[0]",
        ),
        (
            "ends in the past",
            with(&|a| {
                a.valid_until = Some(prost_types::Timestamp {
                    seconds: 1_600_000_000,
                    nanos: 0,
                })
            }),
            Code::InvalidArgument,
            "end before",
        ),
    ];
    let n = cases.len() as u64;
    for (name, req, code, words) in cases {
        let err = dinsos.propose(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(err.message().contains(words), "{name}: {}", err.message());
    }
    // auditors read but never propose
    let err = auditor
        .propose(terms("", &read(&["nik"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // a duplicate id
    dinsos
        .propose(terms("dup-1", &read(&["nik"])))
        .await
        .unwrap();
    let err = dinsos
        .propose(terms("dup-1", &read(&["nik"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // every refused attempt is a deny entry on the log; the one proposal an allow
    let entries = b.broker.audit().entries(before, 1000).await.unwrap();
    let denied = entries
        .iter()
        .filter(|e| e.entry.kind == EntryKind::Agreement && e.entry.decision == Decision::Deny)
        .count() as u64;
    let allowed = entries
        .iter()
        .filter(|e| e.entry.kind == EntryKind::Agreement && e.entry.decision == Decision::Allow)
        .count();
    assert_eq!(denied, n + 2);
    assert_eq!(allowed, 1);
    assert!(
        entries
            .iter()
            .filter(|e| e.entry.decision == Decision::Deny)
            .all(|e| e.entry.error.as_deref().is_some_and(|m| !m.is_empty()))
    );
}

/// Starts a query and reads its first batch, leaving the rest unread.
async fn start_stream(
    client: &mut jembatan_proto::v1::exchange_client::ExchangeClient<tonic::transport::Channel>,
) -> (tonic::Streaming<pb::QueryResponse>, usize) {
    let mut stream = client
        .query(query(&["nik", "nama"]))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let n = match first.item.unwrap() {
        pb::query_response::Item::Batch(b) => b.records.len(),
        other => panic!("expected a batch, got {other:?}"),
    };
    (stream, n)
}

/// Drains a stream, returning the records read and how it ended.
async fn drain(
    stream: &mut tonic::Streaming<pb::QueryResponse>,
) -> (usize, Result<(), tonic::Status>) {
    let mut n = 0;
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                if let Some(pb::query_response::Item::Batch(b)) = m.item {
                    n += b.records.len();
                }
            }
            Ok(None) => return (n, Ok(())),
            Err(status) => return (n, Err(status)),
        }
    }
}

#[tokio::test]
async fn revocation_through_another_replica_stops_a_running_stream() {
    const ROWS: usize = 30_000;
    let f = Federation::start(ROWS).await;
    let config = f.broker_config(
        "",
        &agreement_toml("long-1", "dinsos", r#"["nik", "nama"]"#, "approved", ""),
    );
    let a = f.broker(&config).await;
    let b = f.broker(&config).await;
    let mut ex = a.exchange(&f, "dinsos").await;
    let (mut stream, first) = start_stream(&mut ex).await;
    assert!(first > 0);

    // the provider revokes through the other replica
    b.agreements(&f, "prov")
        .await
        .revoke(pb::RevokeRequest {
            id: "long-1".into(),
            reason: "data breach at the consumer".into(),
        })
        .await
        .unwrap();
    // replica A hears of it through the store's change feed
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (rest, end) = drain(&mut stream).await;
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{}", status.message());
    let delivered = first + rest;
    assert!(delivered < ROWS, "the stream ran to its end: {delivered}");

    let receipt = jembatan_testkit::receipt_of(&status).expect("a receipt for what was delivered");
    assert_eq!(receipt.rows, delivered as u64);
    let entries = a
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    let done = &entries.last().unwrap().entry;
    assert_eq!(done.kind, EntryKind::Completion);
    assert_eq!(done.status, ExchangeStatus::Stopped);
    assert_eq!(done.rows, delivered as u64);
    assert_eq!(done.reasons[0].code.as_str(), "revoked");
    assert_eq!(done.reasons[0].agreement_id.as_deref(), Some("long-1"));
}

#[tokio::test]
async fn revocation_on_the_same_replica_stops_a_stream_without_waiting_for_the_feed() {
    const ROWS: usize = 30_000;
    let f = Federation::start(ROWS).await;
    // a feed this slow never fires during the test: only the local event can stop it
    let config = f.broker_config(
        "agreement_watch_interval = \"1h\"",
        &agreement_toml("long-2", "dinsos", r#"["nik", "nama"]"#, "approved", ""),
    );
    let a = f.broker(&config).await;
    let mut ex = a.exchange(&f, "dinsos").await;
    let (mut stream, first) = start_stream(&mut ex).await;
    a.agreements(&f, "operator")
        .await
        .revoke(pb::RevokeRequest {
            id: "long-2".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let (rest, end) = drain(&mut stream).await;
    assert_eq!(end.unwrap_err().code(), Code::PermissionDenied);
    assert!(first + rest < ROWS);
}

#[tokio::test]
async fn expiry_stops_a_running_stream_and_is_recorded() {
    const ROWS: usize = 30_000;
    let f = Federation::start(ROWS).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(2);
    let config = f.broker_config(
        "",
        &agreement_toml(
            "short-1",
            "dinsos",
            r#"["nik", "nama"]"#,
            "approved",
            &format!(
                "valid_until = \"{}\"",
                jembatan_core::agreement::format_instant(&until)
            ),
        ),
    );
    let a = f.broker(&config).await;
    let mut ex = a.exchange(&f, "dinsos").await;
    let (mut stream, first) = start_stream(&mut ex).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (rest, end) = drain(&mut stream).await;
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("expired"), "{}", status.message());
    assert!(first + rest < ROWS);
    // the watcher records the expiry as a lifecycle step
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = steps(&a, "short-1").await;
    assert!(
        got.iter().any(|(op, d, from, to)| op == "agreement.expire"
            && *d == Decision::Allow
            && from.as_deref() == Some("approved")
            && to.as_deref() == Some("expired")),
        "{got:?}"
    );
    let err = run_query(&mut ex, query(&["nik"])).await.end.unwrap_err();
    assert_eq!(denial_codes(&err), vec!["expired"]);
}

#[tokio::test]
async fn quotas_are_shared_by_replicas_survive_restarts_and_denials_take_nothing() {
    let f = Federation::start(60).await;
    let tables = format!(
        "{}{}",
        agreement_toml(
            "rpm-1",
            "dinsos",
            r#"["nik", "nama"]"#,
            "approved",
            "quota = { requests_per_minute = 3 }"
        ),
        agreement_toml(
            "rows-1",
            "dinkes",
            r#"["nik", "nama"]"#,
            "approved",
            "quota = { rows_per_day = 25 }"
        ),
    );
    let config = f.broker_config("", &tables);
    let a = f.broker(&config).await;
    let b = f.broker(&config).await;
    let mut on_a = a.exchange(&f, "dinsos").await;
    let mut on_b = b.exchange(&f, "dinsos").await;

    // a request denied for another reason takes no quota
    let mut bad = query(&["nik", "tgl_lahir"]);
    bad.purpose = "bansos".into();
    let err = run_query(&mut on_a, bad).await.end.unwrap_err();
    assert_eq!(denial_codes(&err), vec!["field_not_granted"]);

    // the same minute may roll over mid-test: retry the count once
    let mut outcomes = Vec::new();
    for attempt in 0..2 {
        outcomes.clear();
        let minute = chrono::Utc::now().format("%H:%M").to_string();
        for i in 0..4 {
            let client = if i % 2 == 0 { &mut on_a } else { &mut on_b };
            outcomes.push(run_query(client, query(&["nik"])).await.end);
        }
        if chrono::Utc::now().format("%H:%M").to_string() == minute || attempt == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(outcomes[..3].iter().all(Result::is_ok), "{outcomes:?}");
    let err = outcomes[3].as_ref().unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(denial_codes(err), vec!["quota_exhausted"]);
    assert!(
        err.message().contains("3 requests per minute"),
        "{}",
        err.message()
    );

    // rows per day: the stream is cut at the quota and says so
    let mut dinkes = a.exchange(&f, "dinkes").await;
    let out = run_query(&mut dinkes, query(&["nik"])).await;
    assert_eq!(out.records.len(), 25);
    let status = out.end.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("25 rows per day"),
        "{}",
        status.message()
    );
    let receipt = out.receipt.expect("receipt");
    let entries = a
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    let done = &entries.last().unwrap().entry;
    assert_eq!((done.status, done.rows), (ExchangeStatus::Stopped, 25));
    assert_eq!(done.reasons[0].code.as_str(), "quota_exhausted");

    // used up, on every replica, and after a restart
    let err = run_query(&mut b.exchange(&f, "dinkes").await, query(&["nik"]))
        .await
        .end
        .unwrap_err();
    assert_eq!(denial_codes(&err), vec!["quota_exhausted"]);
    a.broker.shutdown().await.unwrap();
    let c = f.broker(&config).await;
    let err = run_query(&mut c.exchange(&f, "dinkes").await, query(&["nik"]))
        .await
        .end
        .unwrap_err();
    assert_eq!(denial_codes(&err), vec!["quota_exhausted"]);
}

#[tokio::test]
async fn masked_fields_are_masked_and_verified_values_never_leave() {
    let f = Federation::start(20).await;
    let fields = r#"["kecamatan",
        { field = "nik", mode = "masked", mask = "keep_last:4" },
        { field = "tgl_lahir", mode = "masked", mask = "year" },
        { field = "nama", mode = "verify" }]"#;
    let b = f
        .broker(&f.broker_config(
            "",
            &agreement_toml("modes-1", "dinsos", fields, "approved", ""),
        ))
        .await;
    let mut ex = b.exchange(&f, "dinsos").await;

    // a query gets the returned fields, masked; the verify-only one is absent
    let out = run_query(&mut ex, query(&[])).await;
    out.end.unwrap();
    assert_eq!(out.records.len(), 20);
    for r in &out.records {
        let mut keys: Vec<&str> = r.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["kecamatan", "nik", "tgl_lahir"]);
        let n = r["nik"].as_str().unwrap();
        assert!(n.starts_with("************") && n.len() == 16, "{n}");
        assert_eq!(r["tgl_lahir"].as_str().unwrap().len(), 4);
    }
    let receipt = out.receipt.unwrap();
    let done = b
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    let done = &done.last().unwrap().entry;
    // what the adapter sent differs from what was delivered: both are logged
    let received = done.received.as_ref().expect("received tally");
    assert_eq!(received.rows, 20);
    assert_ne!(Some(&received.payload_sha256), done.payload_sha256.as_ref());

    // the verify-only field is never read, nor filtered beyond equality
    let err = run_query(&mut ex, query(&["nama"])).await.end.unwrap_err();
    assert_eq!(denial_codes(&err), vec!["field_not_granted"]);
    assert!(
        err.message().contains("verification only"),
        "{}",
        err.message()
    );
    let mut prefix = query(&["kecamatan"]);
    prefix.filter = Some(pb::Filter {
        kind: Some(pb::filter::Kind::Predicate(pb::Predicate {
            field: "nama".into(),
            op: pb::Operator::Prefix as i32,
            value: Some(string("WARGA 1")),
            values: vec![],
        })),
    });
    let err = run_query(&mut ex, prefix).await.end.unwrap_err();
    assert_eq!(denial_codes(&err), vec!["filter_field_not_granted"]);
    let mut exact = query(&["kecamatan"]);
    exact.filter = Some(eq("nama", "WARGA 7"));
    let out = run_query(&mut ex, exact).await;
    out.end.unwrap();
    assert_eq!(out.records.len(), 1);
    // nor may a masked field be filtered on
    let mut masked = query(&["kecamatan"]);
    masked.filter = Some(eq("nik", &nik(7)));
    let err = run_query(&mut ex, masked).await.end.unwrap_err();
    assert_eq!(denial_codes(&err), vec!["filter_field_not_granted"]);

    // a lookup verifies values: match / no match, the stored value stays
    let lookup = |name: &str| pb::LookupRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        key: Some(string(&nik(7))),
        verify: [("nama".to_string(), string(name))].into_iter().collect(),
        ..Default::default()
    };
    let yes = ex.lookup(lookup("WARGA 7")).await.unwrap().into_inner();
    assert!(yes.found);
    assert_eq!(yes.verified.get("nama"), Some(&true));
    assert!(!yes.record.contains("WARGA"), "{}", yes.record);
    let record: serde_json::Value = serde_json::from_str(&yes.record).unwrap();
    assert!(record.get("nama").is_none());
    assert_eq!(record["nik"], "************0007");
    let no = ex.lookup(lookup("WARGA 8")).await.unwrap().into_inner();
    assert_eq!(no.verified.get("nama"), Some(&false));
    assert!(!no.record.contains("WARGA"));
    // the decision entry names the verified field
    let receipt = no.receipt.unwrap();
    let entries = b
        .broker
        .audit()
        .exchange(&receipt.exchange_id)
        .await
        .unwrap();
    assert!(entries[0].entry.fields.contains(&"verify:nama".to_string()));

    // a masked field cannot be verified (it would uncover the masked part)
    let mut bad = lookup("x");
    bad.verify = [("tgl_lahir".to_string(), string("1957-08-17"))]
        .into_iter()
        .collect();
    let err = ex.lookup(bad).await.unwrap_err();
    assert_eq!(denial_codes(&err), vec!["field_not_granted"]);
}

#[tokio::test]
async fn an_agency_runs_at_most_its_share_of_streams_at_once_across_replicas() {
    let f = Federation::start(30_000).await;
    let config = f.broker_config(
        "max_streams_per_agency = 2",
        &agreement_toml("many-1", "dinsos", r#"["nik", "nama"]"#, "approved", ""),
    );
    // two replicas on one store: the limit counts both
    let b = f.broker(&config).await;
    let other = f.broker(&config).await;
    // a connection each: held streams fill their connection's window
    let mut one = b.exchange(&f, "dinsos").await;
    let mut two = other.exchange(&f, "dinsos").await;
    let (first, _) = start_stream(&mut one).await;
    let (second, _) = start_stream(&mut two).await;
    let mut ex = b.exchange(&f, "dinsos").await;
    let err = run_query(&mut ex, query(&["nik"])).await.end.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("max_streams_per_agency"),
        "{}",
        err.message()
    );
    // the refusal is on the log
    let size = b.broker.audit().size().await.unwrap();
    let last = b.broker.audit().entries(size - 1, 1).await.unwrap();
    assert_eq!(last[0].entry.status, ExchangeStatus::Invalid);
    assert!(
        last[0]
            .entry
            .error
            .as_deref()
            .unwrap()
            .contains("max_streams_per_agency")
    );
    // a slot frees when a stream ends
    drop(first);
    drop(second);
    drop(one);
    drop(two);
    let started = std::time::Instant::now();
    loop {
        let out = run_query(&mut ex, query(&["nik"])).await;
        match out.end {
            Ok(()) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "slots never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test]
async fn columns_off_the_adapters_whitelist_are_refused_at_proposal_and_approval() {
    let f = Federation::start(5).await;
    // a proposed agreement from the config is not checked when stored: the
    // approval checks it
    let tables = format!(
        "[[datasets]]\nid = \"prov.lainnya\"\n{}",
        agreement_toml("cfg-1", "dinsos", r#"["nik", "pekerjaan"]"#, "proposed", "")
    );
    let b = f.broker(&f.broker_config("", &tables)).await;
    let mut dinsos = b.agreements(&f, "dinsos").await;
    let mut prov = b.agreements(&f, "prov").await;
    let before = b.broker.audit().size().await.unwrap();

    let with_filter = {
        let mut t = terms("wl-3", &read(&["nik"]));
        t.agreement.as_mut().unwrap().row_filter = Some(eq("agama", "ISLAM"));
        t
    };
    let on_other_dataset = {
        let mut t = terms("wl-4", &read(&["nik"]));
        t.agreement.as_mut().unwrap().dataset = "prov.lainnya".into();
        t
    };
    let cases: Vec<(&str, pb::ProposeRequest, &[&str])> = vec![
        (
            "granted columns",
            terms("wl-1", &read(&["nik", "pekerjaan", "nama_ibu"])),
            &["granted column(s) nama_ibu, pekerjaan", "prov.penduduk"],
        ),
        (
            "a verify-only column",
            terms("wl-2", &[("golongan_darah", pb::AccessMode::Verify, "")]),
            &["golongan_darah"],
        ),
        (
            "a row filter column",
            with_filter,
            &["row filter column(s) agama"],
        ),
        (
            "a dataset the adapter does not serve",
            on_other_dataset,
            &["does not serve dataset prov.lainnya"],
        ),
    ];
    let n = cases.len();
    for (name, req, words) in cases {
        let err = dinsos.propose(req).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err:?}");
        for w in words {
            assert!(err.message().contains(w), "{name}: {}", err.message());
        }
    }
    // the whitelist is named, so the proposer can correct the terms
    let err = dinsos
        .propose(terms("wl-5", &read(&["nik", "pekerjaan"])))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("it serves kecamatan, nama, nik, status, tgl_lahir"),
        "{}",
        err.message()
    );
    for id in ["wl-1", "wl-2", "wl-3", "wl-4", "wl-5"] {
        let err = dinsos
            .get(pb::GetAgreementRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{id}");
    }

    // approving an agreement with a column off the whitelist is refused,
    // naming it; the agreement stays proposed
    let err = prov
        .approve(pb::ApproveRequest { id: "cfg-1".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("pekerjaan"), "{}", err.message());
    let a = prov
        .get(pb::GetAgreementRequest { id: "cfg-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AgreementStatus::Proposed as i32);

    // whitelisted columns pass both steps
    dinsos
        .propose(terms("wl-ok", &read(&["nik", "nama"])))
        .await
        .unwrap();

    // every refusal is on the log
    let size = b.broker.audit().size().await.unwrap();
    let refused: Vec<String> = b
        .broker
        .audit()
        .entries(before, size - before)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.kind == EntryKind::Agreement && e.entry.decision == Decision::Deny)
        .map(|e| e.entry.error.unwrap_or_default())
        .collect();
    assert_eq!(refused.len(), n + 2, "{refused:?}");
    assert!(
        refused.iter().all(|e| e.contains("does not")),
        "{refused:?}"
    );

    // an adapter that cannot be asked: a proposal is taken (its approval
    // asks again), an approval is refused (fail closed)
    let mut config = f.broker_config("", "");
    config.agencies[0].adapter = Some("https://127.0.0.1:1".into());
    let cut_off = f.broker(&config).await;
    let mut dinsos = cut_off.agreements(&f, "dinsos").await;
    let mut prov = cut_off.agreements(&f, "prov").await;
    dinsos
        .propose(terms("wl-later", &read(&["nik"])))
        .await
        .unwrap();
    for id in ["wl-ok", "wl-later"] {
        let err = prov
            .approve(pb::ApproveRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{id}: {err:?}");
        assert!(
            err.message()
                .contains("the approval is refused until the adapter confirms"),
            "{}",
            err.message()
        );
        let a = prov
            .get(pb::GetAgreementRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a.status, pb::AgreementStatus::Proposed as i32);
    }
    // with the adapter back, the approval goes through
    let b = f.broker(&f.broker_config("", "")).await;
    let a = b
        .agreements(&f, "prov")
        .await
        .approve(pb::ApproveRequest { id: "wl-ok".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AgreementStatus::Approved as i32);
}

/// The agreement entries of the log for `id`, as (operation, status,
/// exchange id, error).
async fn step_entries(
    b: &jembatan_testkit::BrokerHandle,
    id: &str,
) -> Vec<(String, ExchangeStatus, String, Option<String>)> {
    let size = b.broker.audit().size().await.unwrap();
    b.broker
        .audit()
        .entries(0, size)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.entry.kind == EntryKind::Agreement && e.entry.agreement_id.as_deref() == Some(id)
        })
        .map(|e| {
            (
                e.entry.operation,
                e.entry.status,
                e.entry.exchange_id,
                e.entry.error,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_logged_step_the_store_then_refuses_is_logged_as_failed() {
    let f = Federation::start(5).await;
    let b = f.broker(&f.broker_config("", "")).await;
    let mut dinsos = b.agreements(&f, "dinsos").await;
    let mut prov = b.agreements(&f, "prov").await;
    dinsos.propose(terms("f-1", &read(&["nik"]))).await.unwrap();
    // the store fails agreement updates after the step's entry is written
    let store = sqlx::SqlitePool::connect(&format!("sqlite://{}", f.store))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER fault BEFORE UPDATE ON agreements BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
        .execute(&store)
        .await
        .unwrap();
    let err = prov
        .approve(pb::ApproveRequest { id: "f-1".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // a lost race: the row changed under the step, nothing is updated
    sqlx::query("DROP TRIGGER fault")
        .execute(&store)
        .await
        .unwrap();
    sqlx::query("CREATE TRIGGER fault BEFORE UPDATE ON agreements BEGIN SELECT RAISE(IGNORE); END")
        .execute(&store)
        .await
        .unwrap();
    let err = prov
        .approve(pb::ApproveRequest { id: "f-1".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    // proposals whose insert fails
    sqlx::query(
        "CREATE TRIGGER fault_insert BEFORE INSERT ON agreements BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .execute(&store)
    .await
    .unwrap();
    let err = dinsos
        .propose(terms("f-2", &read(&["nik"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = dinsos
        .get(pb::GetAgreementRequest { id: "f-2".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // each logged step that did not happen has its failure after it, under
    // the same exchange id
    let got = step_entries(&b, "f-1").await;
    let shape: Vec<(&str, ExchangeStatus)> =
        got.iter().map(|(o, s, _, _)| (o.as_str(), *s)).collect();
    assert_eq!(
        shape,
        vec![
            ("agreement.propose", ExchangeStatus::Ok),
            ("agreement.approve", ExchangeStatus::Ok),
            ("agreement.approve", ExchangeStatus::Failed),
            ("agreement.approve", ExchangeStatus::Ok),
            ("agreement.approve", ExchangeStatus::Failed),
        ]
    );
    for pair in [(1, 2), (3, 4)] {
        assert_eq!(got[pair.0].2, got[pair.1].2, "{pair:?}");
        let error = got[pair.1].3.as_deref().unwrap();
        assert!(error.starts_with("the step did not take effect"), "{error}");
    }
    assert!(got[4].3.as_deref().unwrap().contains("no longer proposed"));
    let got = step_entries(&b, "f-2").await;
    let shape: Vec<(&str, ExchangeStatus)> =
        got.iter().map(|(o, s, _, _)| (o.as_str(), *s)).collect();
    assert_eq!(
        shape,
        vec![
            ("agreement.propose", ExchangeStatus::Ok),
            ("agreement.propose", ExchangeStatus::Failed),
        ]
    );
    assert_eq!(got[0].2, got[1].2);

    // the store heals: the step is taken, once
    sqlx::query("DROP TRIGGER fault")
        .execute(&store)
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER fault_insert")
        .execute(&store)
        .await
        .unwrap();
    let a = prov
        .approve(pb::ApproveRequest { id: "f-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AgreementStatus::Approved as i32);
    store.close().await;
}

#[tokio::test]
async fn a_denial_reports_every_candidate_agreement() {
    let f = Federation::start(5).await;
    // an older agreement revoked, a newer one expired (recorded as such at
    // start)
    let tables = format!(
        "{}{}",
        agreement_toml("old-1", "dinsos", r#"["nik", "nama"]"#, "revoked", ""),
        agreement_toml(
            "new-1",
            "dinsos",
            r#"["nik", "nama"]"#,
            "approved",
            "valid_until = \"2021-01-01\""
        )
    );
    let b = f.broker(&f.broker_config("", &tables)).await;
    let mut ex = b.exchange(&f, "dinsos").await;
    let status = run_query(&mut ex, query(&["nik"])).await.end.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let details = jembatan_testkit::denial_details(&status);
    let reasons: Vec<(&str, &str)> = details
        .reasons
        .iter()
        .map(|r| (r.agreement_id.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(reasons, vec![("new-1", "expired"), ("old-1", "revoked")]);
    for words in [
        "none of the 2 agreements examined allows it",
        "expired: agreement new-1 has expired",
        "revoked: agreement old-1 was revoked",
    ] {
        assert!(status.message().contains(words), "{}", status.message());
    }
    // the audit entry holds them all
    let entry = b
        .broker
        .audit()
        .entries(details.entry_seq, 1)
        .await
        .unwrap()
        .remove(0)
        .entry;
    assert_eq!(entry.decision, Decision::Deny);
    let logged: Vec<(Option<&str>, jembatan_core::DenialCode)> = entry
        .reasons
        .iter()
        .map(|r| (r.agreement_id.as_deref(), r.code))
        .collect();
    assert_eq!(
        logged,
        vec![
            (Some("new-1"), jembatan_core::DenialCode::Expired),
            (Some("old-1"), jembatan_core::DenialCode::Revoked),
        ]
    );
    // the entry names the closest agreement
    assert_eq!(entry.agreement_id.as_deref(), Some("new-1"));
}

/// Decisions read datasets and agreements from memory, kept exact by the
/// store's policy version: an approval or a revocation must reach every
/// decision that starts after its call returned, on the replica it was
/// made through and on another sharing the store, with both replicas'
/// memory filled just before.
async fn changes_reach_the_next_decision_on_every_replica(f: &Federation) {
    let config = f.broker_config("", "");
    let replicas = [f.broker(&config).await, f.broker(&config).await];
    let mut consumer = Vec::new();
    let mut provider = Vec::new();
    for r in &replicas {
        consumer.push(r.exchange(f, "dinsos").await);
        provider.push(r.agreements(f, "prov").await);
    }
    let mut proposer = replicas[0].agreements(f, "dinsos").await;
    let lookup = pb::LookupRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: vec!["nik".into(), "nama".into()],
        key: Some(string(&nik(3))),
        ..Default::default()
    };
    for round in 0..6 {
        let id = format!("round-{round}");
        // approved and revoked through each replica in turn
        let through = round % 2;
        proposer
            .propose(terms(&id, &read(&["nik", "nama"])))
            .await
            .unwrap();
        // proposed, not approved: both replicas deny (and remember)
        for (i, c) in consumer.iter_mut().enumerate() {
            let err = c.lookup(lookup.clone()).await.unwrap_err();
            let codes = denial_codes(&err);
            assert!(
                codes.iter().any(|c| c == "not_approved"),
                "round {round}, replica {i}: {err:?}"
            );
        }
        provider[through]
            .approve(pb::ApproveRequest { id: id.clone() })
            .await
            .unwrap();
        for (i, c) in consumer.iter_mut().enumerate() {
            let found = c.lookup(lookup.clone()).await;
            assert!(
                found.as_ref().is_ok_and(|r| r.get_ref().found),
                "round {round}, replica {i}: the approval was not seen: {found:?}"
            );
        }
        provider[through]
            .revoke(pb::RevokeRequest {
                id: id.clone(),
                reason: "the legal basis lapsed".into(),
            })
            .await
            .unwrap();
        for (i, c) in consumer.iter_mut().enumerate() {
            let err = c
                .lookup(lookup.clone())
                .await
                .expect_err("a revoked agreement was honoured");
            assert_eq!(
                err.code(),
                Code::PermissionDenied,
                "round {round}, replica {i}"
            );
            // this round's agreement and every earlier one, all revoked
            assert_eq!(
                denial_codes(&err),
                vec!["revoked"; round + 1],
                "round {round}, replica {i}: {err:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_revoked_agreement_is_never_honoured_after_the_revocation_returns() {
    let f = Federation::start(20).await;
    changes_reach_the_next_decision_on_every_replica(&f).await;
}

#[tokio::test]
async fn a_revoked_agreement_is_never_honoured_after_the_revocation_returns_on_postgres() {
    let Some(pg) = jembatan_testkit::PgStore::fresh("jembatan_policy").await else {
        return;
    };
    let mut f = Federation::start(20).await;
    f.store = pg.url.clone();
    changes_reach_the_next_decision_on_every_replica(&f).await;
    drop(f);
    pg.drop_db().await;
}

#[tokio::test]
async fn the_subscribe_term_travels_through_proposal_approval_and_reads() {
    let f = Federation::start(5).await;
    let b = f.broker(&f.broker_config("", "")).await;
    let mut dinsos = b.agreements(&f, "dinsos").await;
    let mut prov = b.agreements(&f, "prov").await;
    let mut with_term = terms("dinsos-sub", &read(&["nik", "nama"]));
    with_term.agreement.as_mut().unwrap().subscribe = true;
    let proposed = dinsos.propose(with_term).await.unwrap().into_inner();
    assert!(proposed.subscribe);
    let plain = dinsos
        .propose(terms("dinsos-plain", &read(&["nik", "nama"])))
        .await
        .unwrap()
        .into_inner();
    assert!(!plain.subscribe);
    // the term is part of the terms the hash pins
    assert_ne!(proposed.terms_sha256, plain.terms_sha256);
    let approved = prov
        .approve(pb::ApproveRequest {
            id: "dinsos-sub".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(approved.subscribe);
    let got = prov
        .get(pb::GetAgreementRequest {
            id: "dinsos-sub".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.subscribe);
    // the term adds to what queries may do, and takes nothing away
    let mut ex = b.exchange(&f, "dinsos").await;
    let out = run_query(&mut ex, query(&["nik"])).await;
    out.end.unwrap();
    assert_eq!(out.records.len(), 5);
}
