//! A provider listing several adapter endpoints: the broker goes to the
//! next when one cannot be reached — down from the start, or stopped
//! while the broker runs — for queries, lookups, the whitelist check of
//! an agreement step and the receipts; and the completion or answered
//! entry names the endpoint that served.

use std::time::Duration;

use jembatan_adapter::{LogEntry, read_receipt_log};
use jembatan_core::{AuditEntry, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_testkit::{Federation, agreement_toml, nik, query, run_query, string};

/// An endpoint nothing listens on: a port bound, then let go.
async fn dead_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("https://127.0.0.1:{port}")
}

/// Every entry of the broker's log, oldest first.
async fn entries(b: &jembatan_testkit::BrokerHandle) -> Vec<AuditEntry> {
    let size = b.broker.audit().size().await.unwrap();
    b.broker
        .audit()
        .entries(0, size)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry)
        .collect()
}

/// The ends of exchanges on the log (completion and answered entries), as
/// (kind, status, endpoint).
async fn ends(
    b: &jembatan_testkit::BrokerHandle,
) -> Vec<(EntryKind, ExchangeStatus, Option<String>)> {
    entries(b)
        .await
        .into_iter()
        .filter(|e| matches!(e.kind, EntryKind::Completion | EntryKind::Answered))
        .map(|e| (e.kind, e.status, e.adapter_endpoint))
        .collect()
}

/// The exchange ids whose receipts the adapter logging to `path` holds,
/// once it holds `n` of them (or after five seconds).
async fn receipts_in(path: &std::path::Path, n: usize) -> Vec<String> {
    let read = || -> Vec<String> {
        read_receipt_log(path)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Receipt(r) => Some(r.receipt.exchange_id),
                _ => None,
            })
            .collect()
    };
    for _ in 0..100 {
        if read().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read()
}

fn lookup(key: &str) -> pb::LookupRequest {
    pb::LookupRequest {
        dataset: "prov.penduduk".into(),
        purpose: "bansos".into(),
        fields: vec!["nik".into(), "nama".into()],
        key: Some(string(key)),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_endpoint_down_from_the_start_is_passed_over_and_the_log_names_the_one_that_served() {
    let f = Federation::start(30).await;
    let dead = dead_endpoint().await;
    let live = format!("https://127.0.0.1:{}", f.adapter_port);
    let mut config = f.broker_config(
        "",
        &agreement_toml("a1", "dinsos", r#"["nik", "nama"]"#, "approved", ""),
    );
    config.agencies[0].adapter = Some(vec![dead.clone(), live.clone()].into());
    let b = f.broker(&config).await;
    let mut dinsos = b.exchange(&f, "dinsos").await;

    let streamed = run_query(&mut dinsos, query(&["nik", "nama"])).await;
    streamed
        .end
        .expect("the query is served by the second endpoint");
    assert_eq!(streamed.records.len(), 30);
    let answer = dinsos.lookup(lookup(&nik(7))).await.unwrap().into_inner();
    assert!(answer.found);

    let ended = ends(&b).await;
    assert_eq!(
        ended,
        vec![
            (
                EntryKind::Completion,
                ExchangeStatus::Ok,
                Some(live.clone())
            ),
            (EntryKind::Answered, ExchangeStatus::Ok, Some(live.clone())),
        ],
        "each end names the endpoint that served, never the one down"
    );
    for e in entries(&b).await {
        if e.kind == EntryKind::Decision {
            assert_eq!(e.adapter_endpoint, None, "not known at the decision");
        }
    }
    // the receipts reach the adapter that served
    let receipts = receipts_in(&f.dir.join("receipts.jsonl"), 2).await;
    assert_eq!(receipts.len(), 2, "{receipts:?}");

    // an agreement step asks the adapter for its whitelist through the
    // endpoint that answers
    let mut prov = b.agreements(&f, "prov").await;
    let mut asking = b.agreements(&f, "dinsos").await;
    asking
        .propose(pb::ProposeRequest {
            agreement: Some(pb::Agreement {
                id: "a2".into(),
                dataset: "prov.penduduk".into(),
                purpose: "bansos".into(),
                fields: vec![pb::FieldGrant {
                    field: "nik".into(),
                    mode: pb::AccessMode::Read as i32,
                    mask: String::new(),
                }],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let approved = prov
        .approve(pb::ApproveRequest { id: "a2".into() })
        .await
        .expect("the whitelist is checked through the live endpoint")
        .into_inner();
    assert_eq!(approved.status, pb::AgreementStatus::Approved as i32);
}

#[tokio::test]
async fn when_the_serving_endpoint_stops_exchanges_go_to_the_next() {
    let f = Federation::start(30).await;
    let mut first = f.another_adapter("receipts-first.jsonl").await;
    let second = format!("https://127.0.0.1:{}", f.adapter_port);
    let mut config = f.broker_config(
        "",
        &agreement_toml("a1", "dinsos", r#"["nik", "nama"]"#, "approved", ""),
    );
    config.agencies[0].adapter = Some(vec![first.endpoint(), second.clone()].into());
    let b = f.broker(&config).await;
    let mut dinsos = b.exchange(&f, "dinsos").await;

    // both up: the first listed serves
    let streamed = run_query(&mut dinsos, query(&["nik", "nama"])).await;
    streamed.end.unwrap();
    assert_eq!(streamed.records.len(), 30);
    assert!(
        dinsos
            .lookup(lookup(&nik(3)))
            .await
            .unwrap()
            .into_inner()
            .found
    );

    // the first stops: the broker's connection to it breaks, and the next
    // exchanges go to the second
    first.stop().await;
    let streamed = run_query(&mut dinsos, query(&["nik", "nama"])).await;
    streamed.end.expect("served by the second endpoint");
    assert_eq!(streamed.records.len(), 30);
    assert!(
        dinsos
            .lookup(lookup(&nik(4)))
            .await
            .unwrap()
            .into_inner()
            .found
    );

    let ended = ends(&b).await;
    let served_by: Vec<Option<String>> = ended.iter().map(|e| e.2.clone()).collect();
    assert_eq!(
        served_by,
        [
            Some(first.endpoint()),
            Some(first.endpoint()),
            Some(second.clone()),
            Some(second.clone()),
        ]
    );
    assert!(ended.iter().all(|e| e.1 == ExchangeStatus::Ok), "{ended:?}");
    // each adapter holds the receipts of what it served
    let exchanges: Vec<String> = entries(&b)
        .await
        .into_iter()
        .filter(|e| matches!(e.kind, EntryKind::Completion | EntryKind::Answered))
        .map(|e| e.exchange_id)
        .collect();
    let mut on_first = receipts_in(&f.dir.join("receipts-first.jsonl"), 2).await;
    let mut on_second = receipts_in(&f.dir.join("receipts.jsonl"), 2).await;
    on_first.sort();
    on_second.sort();
    let mut want_first = exchanges[..2].to_vec();
    let mut want_second = exchanges[2..].to_vec();
    want_first.sort();
    want_second.sort();
    assert_eq!(on_first, want_first);
    assert_eq!(on_second, want_second);
}

/// The provider's endpoints are read as of each decision's policy
/// version: an endpoint changed in the store while the broker runs is
/// the one the next exchange asks, though the earlier ones were served
/// from memory.
#[tokio::test]
async fn an_endpoint_changed_in_the_store_is_asked_by_the_next_exchange() {
    let f = Federation::start(10).await;
    let live = format!("https://127.0.0.1:{}", f.adapter_port);
    let config = f.broker_config(
        "",
        &agreement_toml("a1", "dinsos", r#"["nik", "nama"]"#, "approved", ""),
    );
    let b = f.broker(&config).await;
    let mut dinsos = b.exchange(&f, "dinsos").await;
    for _ in 0..3 {
        let answer = dinsos.lookup(lookup(&nik(3))).await.unwrap().into_inner();
        assert!(answer.found);
    }
    let store = b.broker.store();
    let prov: jembatan_core::AgencyId = "prov".parse().unwrap();
    let mut agency = store.agency(&prov).await.unwrap().unwrap();
    agency.adapter_endpoints = vec![dead_endpoint().await];
    store.upsert_agency(&agency).await.unwrap();
    let refused = dinsos.lookup(lookup(&nik(3))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    agency.adapter_endpoints = vec![live.clone()];
    store.upsert_agency(&agency).await.unwrap();
    let answer = dinsos.lookup(lookup(&nik(3))).await.unwrap().into_inner();
    assert!(answer.found);
    let ended = ends(&b).await;
    assert_eq!(ended.len(), 5);
    // with the live endpoint still remembered it would have been served
    assert_eq!(
        ended[3],
        (EntryKind::Answered, ExchangeStatus::Failed, None),
        "the lookup after the change asked only the endpoint the store named"
    );
    assert_eq!(
        ended[4],
        (EntryKind::Answered, ExchangeStatus::Ok, Some(live))
    );
}
