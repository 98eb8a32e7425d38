//! A provider adapter that misbehaves — drops the stream mid-way, or sends
//! fields outside the grant — is contained by the broker: the consumer gets
//! a clear error, the exchange is logged as failed, and the log verifies.
//! One that answers after the consumer's deadline leaves every exchange
//! ended on the log, `cancelled`. One that is unavailable before sending
//! anything is passed over for the provider's next endpoint; one that
//! breaks after sending records is not.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use jembatan_broker::Broker;
use jembatan_core::{Decision, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::adapter_server::Adapter;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_testkit::{Federation, agreement_toml};
use tonic::{Code, Request, Response, Status};

/// How the fake adapter misbehaves.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// One good batch, then the stream breaks.
    DropMidStream,
    /// Records carry a field the consumer was not granted.
    ExtraField,
    /// A record that is not a JSON object.
    NotJson,
    /// One good record, after a while: before the response's headers, and
    /// then before its batch.
    Slow(Duration, Duration),
    /// The stream says `UNAVAILABLE` before its first record.
    UnavailableAtOnce,
    /// Ten good records.
    Good,
}

/// An adapter from before `AcknowledgeBatch`: it takes receipts one call
/// at a time, and keeps them here.
struct FakeAdapter {
    fault: Fault,
    acks: Arc<Mutex<Vec<pb::AcknowledgeRequest>>>,
    /// Fetches it was asked for.
    fetches: Arc<AtomicUsize>,
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;
type ChangesStream = Pin<Box<dyn Stream<Item = Result<pb::ChangesResponse, Status>> + Send>>;

fn batch(records: Vec<String>) -> Result<pb::FetchResponse, Status> {
    Ok(pb::FetchResponse {
        batch: Some(pb::RecordBatch { records }),
    })
}

#[tonic::async_trait]
impl Adapter for FakeAdapter {
    type FetchStream = FetchStream;

    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(pb::DescribeResponse::default()))
    }

    async fn fetch(
        &self,
        _: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let good = |i: usize| format!(r#"{{"nik":"15070000000000{i:02}","nama":"WARGA {i}"}}"#);
        let items: Vec<Result<pb::FetchResponse, Status>> = match self.fault {
            Fault::DropMidStream => vec![
                batch((0..10).map(good).collect()),
                Err(Status::unavailable("connection reset by peer")),
            ],
            Fault::ExtraField => vec![batch(vec![
                good(1),
                r#"{"nik":"1507000000000002","nama":"X","nama_ibu":"SITI"}"#.to_owned(),
            ])],
            Fault::NotJson => vec![batch(vec!["nik=1507000000000001".to_owned()])],
            Fault::UnavailableAtOnce => vec![Err(Status::unavailable("database is down"))],
            Fault::Good => vec![batch((0..10).map(good).collect())],
            Fault::Slow(headers, records) => {
                tokio::time::sleep(headers).await;
                let late = futures::stream::once(async move {
                    tokio::time::sleep(records).await;
                    batch(vec![good(1)])
                });
                return Ok(Response::new(Box::pin(late)));
            }
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        self.acks.lock().unwrap().push(request.into_inner());
        Ok(Response::new(pb::AcknowledgeResponse {}))
    }

    async fn acknowledge_batch(
        &self,
        _: Request<pb::AcknowledgeBatchRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        Err(Status::unimplemented("AcknowledgeBatch"))
    }

    type ChangesStream = ChangesStream;

    async fn changes(
        &self,
        _: Request<pb::ChangesRequest>,
    ) -> Result<Response<Self::ChangesStream>, Status> {
        Err(Status::unimplemented("Changes"))
    }
}

struct Harness {
    f: Federation,
    broker: Broker,
    client: ExchangeClient<tonic::transport::Channel>,
    /// The receipts the (first) fake adapter was given.
    acks: Arc<Mutex<Vec<pb::AcknowledgeRequest>>>,
    /// The fetches each fake adapter was asked for.
    fetches: Vec<Arc<AtomicUsize>>,
    /// The receipts each fake adapter was given.
    all_acks: Vec<Arc<Mutex<Vec<pb::AcknowledgeRequest>>>>,
}

async fn harness(fault: Fault) -> Harness {
    harness_with(&[fault]).await
}

/// The same records in the provider's schema and translated into
/// `dinsos.orang@1`.
const REGISTRY: &str = r#"
[registry]
schemas = [
  { dataset = "prov.penduduk", file = "prov.json" },
  { dataset = "dinsos.orang", file = "orang.json" },
]
mappings = ["orang.toml"]
"#;

/// A broker whose provider lists one fake adapter endpoint per fault, in
/// that order.
async fn harness_with(faults: &[Fault]) -> Harness {
    let mut f = Federation::builder().without_adapter().start().await;
    let (mut fetches, mut all_acks) = (Vec::new(), Vec::new());
    for fault in faults {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        f.fake_adapter(FakeAdapter {
            fault: *fault,
            acks: acks.clone(),
            fetches: count.clone(),
        })
        .await;
        fetches.push(count);
        all_acks.push(acks);
    }
    for (name, text) in [
        (
            "prov.json",
            r#"{"type": "object", "properties": {"nik": {"type": "string"}, "nama": {"type": "string"}}}"#,
        ),
        (
            "orang.json",
            r#"{"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}}}"#,
        ),
        (
            "orang.toml",
            "version = 1\nsource = \"prov.penduduk@1\"\ntarget = \"dinsos.orang@1\"\n\
             [[rule]]\ntarget = \"id\"\nfrom = \"nik\"\n[[rule]]\ntarget = \"name\"\nfrom = \"nama\"\n",
        ),
    ] {
        std::fs::write(f.dir.join(name), text).unwrap();
    }
    let agreement = agreement_toml("a1", "dinsos", r#"["nik", "nama"]"#, "approved", "");
    let config = f.broker_config("", &format!("{agreement}{REGISTRY}"));
    let served = f.broker(&config).await;
    let client = served.exchange(&f, "dinsos").await;
    Harness {
        broker: served.broker,
        client,
        acks: all_acks[0].clone(),
        fetches,
        all_acks,
        f,
    }
}

/// Runs a query to its end; returns the records received and how it ended.
async fn run(h: &mut Harness) -> (usize, Result<(), Status>) {
    run_as(h, "").await
}

/// The same in the schema `target` (`""`: the provider's own).
async fn run_as(h: &mut Harness, target: &str) -> (usize, Result<(), Status>) {
    let translated = !target.is_empty();
    let req = pb::QueryRequest {
        dataset: "prov.penduduk".into(),
        target_schema: target.into(),
        purpose: "bansos".into(),
        fields: if translated {
            vec![]
        } else {
            vec!["nik".into(), "nama".into()]
        },
        ..Default::default()
    };
    let mut stream = match h.client.query(req).await {
        Ok(s) => s.into_inner(),
        Err(status) => return (0, Err(status)),
    };
    let mut rows = 0;
    loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                if let Some(pb::query_response::Item::Batch(b)) = msg.item {
                    rows += b.records.len();
                }
            }
            Ok(None) => return (rows, Ok(())),
            Err(status) => return (rows, Err(status)),
        }
    }
}

async fn completion(h: &Harness) -> jembatan_core::AuditEntry {
    let entries = h.broker.audit().entries(0, 10).await.unwrap();
    assert_eq!(entries.len(), 2, "decision and completion");
    assert_eq!(entries[0].entry.status, ExchangeStatus::Started);
    entries[1].entry.clone()
}

#[tokio::test]
async fn adapter_dropping_the_stream_fails_the_exchange_on_the_log() {
    let mut h = harness(Fault::DropMidStream).await;
    let (rows, end) = run(&mut h).await;
    // the first batch was already delivered; the end is an error, never a receipt
    assert_eq!(rows, 10);
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let c = completion(&h).await;
    assert_eq!(c.status, ExchangeStatus::Failed);
    assert_eq!(
        c.rows, 10,
        "the log records what was delivered before the break"
    );
    assert!(c.error.as_deref().unwrap().contains("prov"));
    // the adapter knows no AcknowledgeBatch: the receipt still reaches it,
    // in a call of its own
    let entries = h.broker.audit().entries(0, 10).await.unwrap();
    let exchange_id = entries[1].entry.exchange_id.clone();
    let mut waited = 0;
    while h.acks.lock().unwrap().is_empty() && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    let acks = h.acks.lock().unwrap().clone();
    assert_eq!(acks.len(), 1, "one receipt acknowledged");
    let receipt = acks[0].receipt.as_ref().unwrap();
    assert_eq!(receipt.exchange_id, exchange_id);
    assert_eq!(receipt.rows, 10);
    assert_eq!(acks[0].dataset, "prov.penduduk");
    let _ = &h.f.dir;
}

#[tokio::test]
async fn records_outside_the_grant_are_never_delivered() {
    // also when the consumer asks for its own schema: the translator reads
    // records only after the same checks
    for (fault, target) in [
        (Fault::ExtraField, ""),
        (Fault::NotJson, ""),
        (Fault::ExtraField, "dinsos.orang@1"),
        (Fault::NotJson, "dinsos.orang@1"),
    ] {
        let mut h = harness(fault).await;
        let (rows, end) = run_as(&mut h, target).await;
        assert_eq!(
            rows, 0,
            "a batch holding a bad record must not be forwarded"
        );
        let status = end.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(status.message().contains("stopped"), "{}", status.message());
        let c = completion(&h).await;
        assert_eq!(c.status, ExchangeStatus::Failed);
        assert_eq!(c.rows, 0);
        assert!(c.error.is_some());
    }
}

#[tokio::test]
async fn lookups_past_their_deadline_end_on_the_log_cancelled() {
    // the deadline passes while the broker waits for the adapter's
    // headers, then while it waits for its batch
    // margins wide enough for a loaded machine
    let slow = Duration::from_millis(1500);
    for fault in [
        Fault::Slow(slow, Duration::ZERO),
        Fault::Slow(Duration::ZERO, slow),
    ] {
        let mut h = harness(fault).await;
        const LOOKUPS: usize = 4;
        for _ in 0..LOOKUPS {
            let mut request = Request::new(pb::LookupRequest {
                dataset: "prov.penduduk".into(),
                purpose: "bansos".into(),
                fields: vec!["nik".into(), "nama".into()],
                key: Some(pb::Scalar {
                    kind: Some(pb::scalar::Kind::StringValue("1507000000000001".into())),
                }),
                ..Default::default()
            });
            request.set_timeout(Duration::from_millis(500));
            let status = h.client.lookup(request).await.unwrap_err();
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{status:?}"
            );
        }
        // every lookup gets its one entry — decision and end together —
        // written after the handler was dropped
        for _ in 0..100 {
            let entries = h.broker.audit().entries(0, 100).await.unwrap();
            if entries.len() >= LOOKUPS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // nothing more comes later either
        tokio::time::sleep(slow * 2).await;
        let entries = h.broker.audit().entries(0, 100).await.unwrap();
        assert_eq!(entries.len(), LOOKUPS, "{fault:?}: {entries:#?}");
        for e in &entries {
            assert_eq!(e.entry.kind, EntryKind::Answered, "{fault:?}");
            assert_eq!(e.entry.decision, Decision::Allow);
            assert_eq!(e.entry.status, ExchangeStatus::Cancelled);
            assert_eq!(e.entry.rows, 0, "nothing reached the consumer");
        }
        let ids: std::collections::BTreeSet<_> =
            entries.iter().map(|e| &e.entry.exchange_id).collect();
        assert_eq!(ids.len(), LOOKUPS, "one entry for each lookup");
    }
}

/// Waits until the fake adapter `i` was given `n` receipts; returns them.
async fn acks_of(h: &Harness, i: usize, n: usize) -> Vec<pb::AcknowledgeRequest> {
    for _ in 0..100 {
        if h.all_acks[i].lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.all_acks[i].lock().unwrap().clone()
}

#[tokio::test]
async fn an_endpoint_unavailable_before_any_record_is_passed_over_for_the_next() {
    let mut h = harness_with(&[Fault::UnavailableAtOnce, Fault::Good]).await;
    let (rows, end) = run(&mut h).await;
    end.expect("served by the second endpoint");
    assert_eq!(rows, 10);
    let c = completion(&h).await;
    assert_eq!(c.status, ExchangeStatus::Ok);
    assert_eq!(c.rows, 10);
    assert_eq!(
        c.adapter_endpoint.as_deref(),
        Some(h.f.adapters[1].as_str()),
        "the completion names the endpoint that served"
    );
    let decision = &h.broker.audit().entries(0, 1).await.unwrap()[0].entry;
    assert_eq!(decision.adapter_endpoint, None, "not known at the decision");
    assert_eq!(h.fetches[0].load(Ordering::SeqCst), 1);
    assert_eq!(h.fetches[1].load(Ordering::SeqCst), 1);
    // the receipt goes to the endpoint that served
    let acks = acks_of(&h, 1, 1).await;
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].receipt.as_ref().unwrap().exchange_id, c.exchange_id);
    assert!(h.all_acks[0].lock().unwrap().is_empty());

    // the endpoint that failed is tried after the other for a while: the
    // next exchange goes to the second at once
    let (rows, end) = run(&mut h).await;
    end.expect("served");
    assert_eq!(rows, 10);
    assert_eq!(h.fetches[0].load(Ordering::SeqCst), 1, "passed over");
    assert_eq!(h.fetches[1].load(Ordering::SeqCst), 2);
    let entries = h.broker.audit().entries(0, 10).await.unwrap();
    assert_eq!(
        entries[3].entry.adapter_endpoint.as_deref(),
        Some(h.f.adapters[1].as_str())
    );
    let _ = &h.f.dir;
}

#[tokio::test]
async fn a_stream_that_breaks_after_records_is_not_moved_to_the_next_endpoint() {
    let mut h = harness_with(&[Fault::DropMidStream, Fault::Good]).await;
    let (rows, end) = run(&mut h).await;
    assert_eq!(rows, 10, "the first batch was delivered");
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let c = completion(&h).await;
    assert_eq!(c.status, ExchangeStatus::Failed);
    assert_eq!(c.rows, 10);
    assert_eq!(
        c.adapter_endpoint.as_deref(),
        Some(h.f.adapters[0].as_str()),
        "the completion names the endpoint whose stream broke"
    );
    assert_eq!(
        h.fetches[1].load(Ordering::SeqCst),
        0,
        "records already went: the fetch is not made again elsewhere"
    );
}

#[tokio::test]
async fn when_every_endpoint_is_unavailable_the_exchange_fails_naming_the_last_asked() {
    let mut h = harness_with(&[Fault::UnavailableAtOnce, Fault::UnavailableAtOnce]).await;
    let (rows, end) = run(&mut h).await;
    assert_eq!(rows, 0);
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let c = completion(&h).await;
    assert_eq!(c.status, ExchangeStatus::Failed);
    assert_eq!(h.fetches[0].load(Ordering::SeqCst), 1);
    assert_eq!(h.fetches[1].load(Ordering::SeqCst), 1);
    assert_eq!(
        c.adapter_endpoint.as_deref(),
        Some(h.f.adapters[1].as_str()),
        "the last endpoint asked is named with its failure"
    );
}
