//! Only agencies registered with the broker (its `[[agencies]]`) act: a
//! certificate the federation's CA issued to any other agency is refused
//! at every door — exchanges, agreement steps, registry writes — and each
//! refusal of an exchange or agreement step is on the audit log.

use jembatan_core::{Decision, DenialCode, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::registry_client::RegistryClient;
use jembatan_testkit::{Federation, agreement_toml, denial_codes, query, run_query, string};
use tonic::Code;

const LUAR: &str = "[[agencies]]\nid = \"luar\"\nname = \"Agency registered only at first\"\n";

#[tokio::test]
async fn an_unregistered_agency_is_refused_at_every_door() {
    let f = Federation::start(10).await;
    // first registered, with an approved agreement and a proposed one
    let tables = format!(
        "{}{}",
        agreement_toml("luar-1", "luar", r#"["nik", "nama"]"#, "approved", ""),
        agreement_toml("luar-2", "luar", r#"["nik"]"#, "proposed", "")
    );
    let registered = f.broker(&f.broker_config_with("", LUAR, &tables)).await;
    let mut ex = registered.exchange(&f, "luar").await;
    let out = run_query(&mut ex, query(&["nik"])).await;
    assert!(out.end.is_ok(), "{:?}", out.end);
    assert_eq!(out.records.len(), f.rows);

    // then a broker whose config no longer lists it; the agreements stay
    // in the shared store
    let b = f.broker(&f.broker_config("", "")).await;
    let before = b.broker.audit().size().await.unwrap();

    // Exchange.Query and Exchange.Lookup: denied, with the reason code
    let mut ex = b.exchange(&f, "luar").await;
    let out = run_query(&mut ex, query(&["nik"])).await;
    let status = out.end.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(denial_codes(&status), vec!["unregistered_agency"]);
    assert!(
        status.message().contains("luar is not registered"),
        "{}",
        status.message()
    );
    assert!(out.records.is_empty());
    let status = ex
        .lookup(pb::LookupRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            key: Some(string(&jembatan_testkit::nik(1))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(denial_codes(&status), vec!["unregistered_agency"]);

    // Agreements: its own proposal, its revocation, and the provider's
    // approval of an agreement naming it
    let mut luar = b.agreements(&f, "luar").await;
    let err = luar
        .propose(pb::ProposeRequest {
            agreement: Some(pb::Agreement {
                id: "luar-3".into(),
                dataset: "prov.penduduk".into(),
                purpose: "bansos".into(),
                fields: vec![pb::FieldGrant {
                    field: "nik".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("luar is not registered"), "{err:?}");
    let err = luar
        .revoke(pb::RevokeRequest {
            id: "luar-1".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut prov = b.agreements(&f, "prov").await;
    let err = prov
        .approve(pb::ApproveRequest {
            id: "luar-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("luar is not registered"), "{err:?}");
    // an operator proposing on its behalf is refused as well
    let mut operator = b.agreements(&f, "operator").await;
    let err = operator
        .propose(pb::ProposeRequest {
            agreement: Some(pb::Agreement {
                id: "luar-4".into(),
                consumer: "luar".into(),
                dataset: "prov.penduduk".into(),
                purpose: "bansos".into(),
                fields: vec![pb::FieldGrant {
                    field: "nik".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // the provider may still revoke what it granted
    prov.revoke(pb::RevokeRequest {
        id: "luar-1".into(),
        reason: "agency no longer registered".into(),
    })
    .await
    .unwrap();

    // Registry writes by its integrator
    let mut registry = RegistryClient::new(f.channel(b.port, "integrator-luar").await);
    let err = registry
        .register_schema(pb::RegisterSchemaRequest {
            dataset: "luar.data".into(),
            schema_json: r#"{"type": "object"}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("luar is not registered"), "{err:?}");
    let err = registry
        .set_compatibility(pb::SetCompatibilityRequest {
            dataset: "luar.data".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // every refusal of an exchange or an agreement step is on the log
    let size = b.broker.audit().size().await.unwrap();
    let entries = b
        .broker
        .audit()
        .entries(before, size - before)
        .await
        .unwrap();
    let exchanges: Vec<_> = entries
        .iter()
        .filter(|e| e.entry.kind == EntryKind::Decision)
        .collect();
    assert_eq!(exchanges.len(), 2);
    // the lookup's subject hash is there: "who looked this resident up?"
    // finds the attempt
    assert_eq!(exchanges[0].entry.subject_hash, None);
    let key = jembatan_broker::read_audit_key(&f.dir.join("audit.key")).unwrap();
    assert_eq!(
        exchanges[1].entry.subject_hash.as_deref(),
        Some(
            jembatan_broker::subject_hash(&key, "prov.penduduk", &jembatan_testkit::nik(1))
                .as_str()
        )
    );
    for e in &exchanges {
        assert_eq!(e.entry.caller, "agency:luar");
        assert_eq!(e.entry.decision, Decision::Deny);
        assert_eq!(e.entry.status, ExchangeStatus::Denied);
        let codes: Vec<DenialCode> = e.entry.reasons.iter().map(|r| r.code).collect();
        assert_eq!(codes, vec![DenialCode::UnregisteredAgency]);
    }
    let refused: Vec<(&str, Option<&str>)> = entries
        .iter()
        .filter(|e| e.entry.kind == EntryKind::Agreement && e.entry.decision == Decision::Deny)
        .map(|e| (e.entry.operation.as_str(), e.entry.agreement_id.as_deref()))
        .collect();
    assert_eq!(
        refused,
        vec![
            ("agreement.propose", Some("luar-3")),
            ("agreement.revoke", Some("luar-1")),
            ("agreement.approve", Some("luar-2")),
            ("agreement.propose", Some("luar-4")),
        ]
    );
    assert!(
        entries
            .iter()
            .filter(|e| e.entry.decision == Decision::Deny)
            .all(|e| e.entry.error.is_some() || !e.entry.reasons.is_empty())
    );
}

#[test]
fn a_config_agreement_with_an_unregistered_agency_is_refused() {
    let toml = |agencies: &str| {
        format!(
            r#"
version = 1
listen = "127.0.0.1:0"
store = "broker.db"
audit_key = "audit.key"
[tls]
ca = "ca.pem"
cert = "broker.pem"
key = "broker-key.pem"
[[agencies]]
id = "prov"
name = "Provider"
{agencies}
{}"#,
            agreement_toml("a1", "dinsos", r#"["nik"]"#, "approved", "")
        )
    };
    let dir = std::path::Path::new(".");
    let err = jembatan_broker::BrokerConfig::from_toml(&toml(""), dir).unwrap_err();
    assert!(
        matches!(
            &err,
            jembatan_broker::config::ConfigError::AgreementParty {
                side: "consumer",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "agreement a1: its consumer dinsos is not among the agencies"
    );
    jembatan_broker::BrokerConfig::from_toml(
        &toml("[[agencies]]\nid = \"dinsos\"\nname = \"Dinas Sosial\""),
        dir,
    )
    .unwrap();
}
