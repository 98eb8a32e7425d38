//! Every RPC of the broker and the adapter called with a certificate of
//! every role: which are served and which are refused for the caller's
//! role (`PermissionDenied` or `Unauthenticated`). Identity comes from the
//! certificate only, so this table is the whole of access control at the
//! service level; agreement terms (tests/agreements.rs) come on top.

use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_client::AdapterClient;
use jembatan_proto::v1::agreements_client::AgreementsClient;
use jembatan_proto::v1::audit_client::AuditClient;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_proto::v1::registry_client::RegistryClient;
use jembatan_testkit::{Federation, agreement_toml, nik, string};
use tonic::Code;
use tonic::transport::Channel;

/// The certificates tried, one per role (two agencies: the dataset's
/// provider and a consumer with an agreement; two integrators).
const WHO: [&str; 8] = [
    "broker",
    "adapter",
    "prov",
    "dinsos",
    "integrator-prov",
    "integrator-dinsos",
    "auditor",
    "operator",
];

const SCHEMA: &str = r#"{"type": "object", "properties": {"nik": {"type": "string"},
    "nama": {"type": "string"}}, "required": ["nik"]}"#;
const TARGET: &str = r#"{"type": "object", "properties": {"id": {"type": "string"}},
    "required": ["id"], "additionalProperties": false}"#;
const MAPPING: &str = r#"{"version": 1, "source": "prov.penduduk@1", "target": "dinsos.orang@1",
    "rule": [{"target": "id", "from": "nik"}]}"#;

/// How a call ended: the code of its first error, or `Ok`.
async fn first<T>(
    call: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
) -> Code {
    match call.await {
        Ok(r) => match r.into_inner().message().await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        },
        Err(s) => s.code(),
    }
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    r.err().map_or(Code::Ok, |s| s.code())
}

async fn call(rpc: &str, broker: Channel, adapter: Channel) -> Code {
    let mut ex = ExchangeClient::new(broker.clone());
    let mut ag = AgreementsClient::new(broker.clone());
    let mut reg = RegistryClient::new(broker.clone());
    let mut au = AuditClient::new(broker);
    let mut ad = AdapterClient::new(adapter);
    match rpc {
        "Exchange.Query" => first(ex.query(jembatan_testkit::query(&["nik"]))).await,
        "Exchange.Lookup" => code(
            ex.lookup(pb::LookupRequest {
                dataset: "prov.penduduk".into(),
                purpose: "bansos".into(),
                key: Some(string(&nik(1))),
                ..Default::default()
            })
            .await,
        ),
        "Agreements.Propose" => code(
            ag.propose(pb::ProposeRequest {
                agreement: Some(pb::Agreement {
                    consumer: "dinsos".into(),
                    dataset: "prov.penduduk".into(),
                    purpose: "bansos".into(),
                    fields: vec![pb::FieldGrant {
                        field: "nik".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            })
            .await,
        ),
        "Agreements.Approve" => code(
            ag.approve(pb::ApproveRequest {
                id: "roles-proposed".into(),
            })
            .await,
        ),
        "Agreements.Revoke" => code(
            ag.revoke(pb::RevokeRequest {
                id: "roles-approved".into(),
                reason: String::new(),
            })
            .await,
        ),
        "Agreements.Get" => code(
            ag.get(pb::GetAgreementRequest {
                id: "roles-approved".into(),
            })
            .await,
        ),
        "Agreements.List" => code(ag.list(pb::ListAgreementsRequest::default()).await),
        "Registry.ListDatasets" => {
            code(reg.list_datasets(pb::ListDatasetsRequest::default()).await)
        }
        "Registry.RegisterSchema" => code(
            reg.register_schema(pb::RegisterSchemaRequest {
                dataset: "prov.penduduk".into(),
                schema_json: SCHEMA.into(),
            })
            .await,
        ),
        "Registry.GetSchema" => code(
            reg.get_schema(pb::GetSchemaRequest {
                reference: "prov.penduduk@latest".into(),
            })
            .await,
        ),
        "Registry.ListVersions" => code(
            reg.list_versions(pb::ListVersionsRequest {
                dataset: "prov.penduduk".into(),
            })
            .await,
        ),
        "Registry.CheckCompatibility" => code(
            reg.check_compatibility(pb::CheckCompatibilityRequest {
                dataset: "prov.penduduk".into(),
                schema_json: SCHEMA.into(),
                ..Default::default()
            })
            .await,
        ),
        "Registry.SetCompatibility" => code(
            reg.set_compatibility(pb::SetCompatibilityRequest {
                dataset: "prov.penduduk".into(),
                mode: pb::CompatibilityMode::Backward as i32,
                optional_friendly: false,
            })
            .await,
        ),
        "Registry.SetVersionState" => code(
            reg.set_version_state(pb::SetVersionStateRequest {
                dataset: "prov.penduduk".into(),
                version: 1,
                state: pb::VersionState::Active as i32,
            })
            .await,
        ),
        "Registry.RegisterMapping" => code(
            reg.register_mapping(pb::RegisterMappingRequest {
                document_json: MAPPING.into(),
            })
            .await,
        ),
        "Registry.GetMapping" => code(
            reg.get_mapping(pb::GetMappingRequest {
                source: "prov.penduduk@1".into(),
                target: "dinsos.orang@1".into(),
                version: 0,
            })
            .await,
        ),
        "Audit.QueryEntries" => first(au.query_entries(pb::QueryEntriesRequest::default())).await,
        "Audit.LatestCheckpoint" => code(
            au.latest_checkpoint(pb::LatestCheckpointRequest::default())
                .await,
        ),
        "Audit.InclusionProof" => code(
            au.inclusion_proof(pb::InclusionProofRequest::default())
                .await,
        ),
        "Audit.ConsistencyProof" => code(
            au.consistency_proof(pb::ConsistencyProofRequest::default())
                .await,
        ),
        "Audit.SubjectLookup" => {
            first(au.subject_lookup(pb::SubjectLookupRequest {
                subject_hash: "00".repeat(32),
                ..Default::default()
            }))
            .await
        }
        "Adapter.Describe" => code(ad.describe(pb::DescribeRequest::default()).await),
        "Adapter.Fetch" => {
            first(ad.fetch(pb::FetchRequest {
                exchange_id: "0190a000-0000-7000-8000-000000000000".into(),
                dataset: "prov.penduduk".into(),
                columns: vec!["nik".into()],
                limit: 1,
                consumer: "dinsos".into(),
                purpose: "bansos".into(),
                ..Default::default()
            }))
            .await
        }
        // no receipt: an allowed caller gets InvalidArgument, nothing is logged
        "Adapter.Acknowledge" => code(
            ad.acknowledge(pb::AcknowledgeRequest {
                dataset: "prov.penduduk".into(),
                consumer: "dinsos".into(),
                receipt: None,
            })
            .await,
        ),
        other => panic!("no such RPC in the table: {other}"),
    }
}

#[tokio::test]
async fn every_rpc_with_every_role() {
    let f = Federation::start(5).await;
    let tables = format!(
        "{}{}{}",
        agreement_toml(
            "roles-approved",
            "dinsos",
            r#"["nik", "nama"]"#,
            "approved",
            ""
        ),
        agreement_toml("roles-proposed", "dinsos", r#"["nik"]"#, "proposed", ""),
        r#"
[registry]
schemas = [
  { dataset = "prov.penduduk", file = "schemas/prov.json" },
  { dataset = "dinsos.orang", file = "schemas/orang.json" },
]
"#
    );
    let schemas = f.dir.join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::write(schemas.join("prov.json"), SCHEMA).unwrap();
    std::fs::write(schemas.join("orang.json"), TARGET).unwrap();
    let b = f.broker(&f.broker_config("", &tables)).await;

    // rpc, who is served; everyone else in WHO must be refused for their role
    let table: Vec<(&str, &[&str])> = vec![
        // the provider has no agreement to read its own dataset through the bus
        ("Exchange.Query", &["dinsos"]),
        ("Exchange.Lookup", &["dinsos"]),
        ("Agreements.Propose", &["dinsos"]),
        ("Agreements.Approve", &["prov", "operator"]),
        (
            "Agreements.Get",
            &[
                "prov",
                "dinsos",
                "integrator-prov",
                "integrator-dinsos",
                "auditor",
                "operator",
            ],
        ),
        (
            "Agreements.List",
            &[
                "prov",
                "dinsos",
                "integrator-prov",
                "integrator-dinsos",
                "auditor",
                "operator",
            ],
        ),
        (
            "Registry.ListDatasets",
            &[
                "prov",
                "dinsos",
                "integrator-prov",
                "integrator-dinsos",
                "auditor",
                "operator",
            ],
        ),
        (
            "Registry.GetSchema",
            &[
                "prov",
                "dinsos",
                "integrator-prov",
                "integrator-dinsos",
                "auditor",
                "operator",
            ],
        ),
        (
            "Registry.ListVersions",
            &[
                "prov",
                "dinsos",
                "integrator-prov",
                "integrator-dinsos",
                "auditor",
                "operator",
            ],
        ),
        (
            "Registry.CheckCompatibility",
            &[
                "prov",
                "dinsos",
                "integrator-prov",
                "integrator-dinsos",
                "auditor",
                "operator",
            ],
        ),
        (
            "Registry.GetMapping",
            &[
                "prov",
                "dinsos",
                "integrator-prov",
                "integrator-dinsos",
                "auditor",
                "operator",
            ],
        ),
        ("Registry.RegisterSchema", &["integrator-prov"]),
        (
            "Registry.SetCompatibility",
            &["integrator-prov", "operator"],
        ),
        ("Registry.SetVersionState", &["integrator-prov", "operator"]),
        (
            "Registry.RegisterMapping",
            &["integrator-prov", "integrator-dinsos"],
        ),
        ("Audit.QueryEntries", &["auditor"]),
        ("Audit.LatestCheckpoint", &["auditor"]),
        ("Audit.InclusionProof", &["auditor"]),
        ("Audit.ConsistencyProof", &["auditor"]),
        ("Audit.SubjectLookup", &["auditor"]),
        ("Adapter.Describe", &["broker"]),
        ("Adapter.Fetch", &["broker"]),
        ("Adapter.Acknowledge", &["broker"]),
        // last: revoking changes what Get and Exchange would see
        ("Agreements.Revoke", &["prov", "dinsos", "operator"]),
    ];
    b.broker.checkpoint_now().await.unwrap();
    let mut wrong = Vec::new();
    let mut report = String::new();
    for (rpc, served) in &table {
        let mut row = format!("{rpc:<28}");
        for who in WHO {
            let broker = f.channel(b.port, who).await;
            let adapter = f.channel(f.adapter_port, who).await;
            let got = call(rpc, broker, adapter).await;
            let refused = matches!(got, Code::PermissionDenied | Code::Unauthenticated);
            let want_served = served.contains(&who);
            row.push_str(if refused { " refused" } else { " served " });
            if refused == want_served {
                wrong.push(format!("{rpc} by {who}: {got:?}"));
            }
        }
        report.push_str(&row);
        report.push('\n');
    }
    println!("{:<28} {}\n{report}", "rpc", WHO.join(" "));
    assert!(wrong.is_empty(), "{wrong:#?}\n{report}");
}
