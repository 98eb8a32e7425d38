//! Brokers as replicas of one store: what a gone replica left open is
//! closed `abandoned` and stops counting against the stream limit, and
//! checkpoints are signed by one replica at a time.

use std::time::{Duration, Instant};

use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::StoredEntry;
use jembatan_testkit::{Federation, agreement_toml, query, run_query};
use tonic::Code;

/// Fast leases, so that a replica is found gone within a second.
const FAST: &str = "replica_heartbeat = \"100ms\"\nreplica_lease = \"300ms\"";

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut found: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(t) = found().await {
            return t;
        }
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An allow decision entry of dinsos's exchange `id`, as a replica
/// writes it before any record leaves.
fn decision(id: &str) -> AuditEntry {
    AuditEntry {
        v: jembatan_core::audit::ENTRY_FORMAT_VERSION,
        kind: EntryKind::Decision,
        exchange_id: id.into(),
        time: jembatan_core::agreement::format_instant(&chrono::Utc::now()),
        operation: "query".into(),
        caller: "agency:dinsos".into(),
        consumer: Some("dinsos".into()),
        provider: Some("prov".into()),
        dataset: Some("prov.penduduk".into()),
        purpose: Some("bansos".into()),
        fields: vec!["nik".into()],
        filter: Some(serde_json::json!({"field": "nik", "op": "eq", "value": {"subject": "ab"}})),
        subject_hash: None,
        subjects: vec!["ab".into()],
        unregistered_purpose: None,
        limit: None,
        agreement_id: Some("dead-1".into()),
        agreement_terms_sha256: Some("cd".into()),
        translation: None,
        decision: Decision::Allow,
        reasons: vec![],
        status: ExchangeStatus::Started,
        rows: 0,
        bytes: 0,
        payload_sha256: None,
        received: None,
        duration_ms: None,
        error: None,
        trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
        adapter_endpoint: None,
        change: None,
        registry: None,
        subscription: None,
    }
}

fn completions(entries: &[StoredEntry]) -> Vec<&AuditEntry> {
    entries
        .iter()
        .map(|e| &e.entry)
        .filter(|e| e.kind == EntryKind::Completion)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_replicas_exchanges_are_closed_abandoned_and_stop_counting() {
    let f = Federation::start(20).await;
    let config = f.broker_config(
        &format!("{FAST}\nmax_streams_per_agency = 1"),
        &agreement_toml("dead-1", "dinsos", r#"["nik", "nama"]"#, "approved", ""),
    );
    let b = f.broker(&config).await;
    let store = b.broker.store().clone();
    let audit = b.broker.audit();

    // another replica, which then dies: its lease is not renewed again
    let lease = Duration::from_millis(1500);
    store
        .register_replica("dead-replica", "elsewhere/7", lease)
        .await
        .unwrap();
    let grace = Duration::from_millis(100);
    // allowed, records flowing when it died
    assert!(
        store
            .open_exchange("x-running", "dead-replica", "dinsos", 1, grace)
            .await
            .unwrap()
    );
    audit.append(decision("x-running")).await.unwrap();
    // ended, but it died before forgetting it
    assert!(
        store
            .open_exchange("x-ended", "dead-replica", "dinkes", 1, grace)
            .await
            .unwrap()
    );
    audit.append(decision("x-ended")).await.unwrap();
    let mut end = decision("x-ended");
    end.kind = EntryKind::Completion;
    end.status = ExchangeStatus::Ok;
    audit.append(end).await.unwrap();
    // died before its decision entry was written
    assert!(
        store
            .open_exchange("x-undecided", "dead-replica", "prov", 1, grace)
            .await
            .unwrap()
    );

    // while it may still be alive its exchange counts against dinsos's one
    let mut ex = b.exchange(&f, "dinsos").await;
    let err = run_query(&mut ex, query(&["nik"])).await.end.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_streams_per_agency"), "{err:?}");

    // once found gone, its allowed exchange gets its one end, abandoned
    let ended = eventually("the abandoned completion", || async {
        let entries = audit.exchange("x-running").await.unwrap();
        (!completions(&entries).is_empty()).then_some(entries)
    })
    .await;
    let ends = completions(&ended);
    assert_eq!(ends.len(), 1);
    let closed = ends[0];
    assert_eq!(closed.status, ExchangeStatus::Abandoned);
    assert_eq!(closed.decision, Decision::Allow);
    assert_eq!((closed.rows, closed.bytes), (0, 0));
    assert_eq!(closed.payload_sha256, None);
    assert!(
        closed.error.as_deref().unwrap().contains("dead-replica"),
        "{:?}",
        closed.error
    );
    // the exchange as its decision logged it, no more
    let opened = &ended[0].entry;
    assert_eq!(closed.filter, opened.filter);
    assert_eq!(closed.subjects, opened.subjects);
    assert_eq!(closed.trace_id, opened.trace_id);
    assert_eq!(closed.agreement_id, opened.agreement_id);

    // nothing left open, the gone replica forgotten
    eventually("the gone replica forgotten", || async {
        let replicas = store.replicas().await.unwrap();
        (replicas.len() == 1 && replicas[0].id == b.broker.replica_id()).then_some(())
    })
    .await;
    assert!(store.left_open(10).await.unwrap().is_empty());
    // an exchange that had ended keeps its one end; one never decided
    // gets none
    assert_eq!(
        completions(&audit.exchange("x-ended").await.unwrap()).len(),
        1
    );
    assert!(audit.exchange("x-undecided").await.unwrap().is_empty());

    // dinsos's exchange on the gone replica no longer counts
    let out = run_query(&mut ex, query(&["nik"])).await;
    assert!(out.end.is_ok(), "{:?}", out.end);
    assert_eq!(out.records.len(), 20);
    // and its own exchange was forgotten as it ended
    eventually("the ended exchange forgotten", || async {
        store
            .open_exchanges_of(&b.broker.replica_id())
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;

    b.broker.checkpoint_now().await.unwrap();
    let report = jembatan_store::verify::verify(&store, b.broker.checkpoint_verifier())
        .await
        .unwrap();
    // the dead replica's three entries, the refusal, the abandoned end,
    // the query's decision and completion
    assert_eq!(report.size, 7, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_by_one_replica_at_a_time() {
    let f = Federation::start(5).await;
    let config = f.broker_config(
        FAST,
        &agreement_toml("one-1", "dinsos", r#"["nik"]"#, "approved", ""),
    );
    let first = f.broker(&config).await;
    let second = f.broker(&config).await;
    // the second's handle on the store: the first's closes at its shutdown
    let store = second.broker.store().clone();
    let holder = store.lease("checkpoint").await.unwrap().unwrap().0;
    assert_eq!(
        holder,
        first.broker.replica_id(),
        "the first replica holds it"
    );

    let mut ex = second.exchange(&f, "dinsos").await;
    assert!(run_query(&mut ex, query(&["nik"])).await.end.is_ok());
    // the other replica does not sign, however much the log grew
    assert_eq!(second.broker.checkpoint_now().await.unwrap(), None);
    let size = store.audit_log_size().await.unwrap();
    assert_eq!(first.broker.checkpoint_now().await.unwrap(), Some(size));

    // the holder stops: the lease passes on, and the next signs
    first.broker.shutdown().await.unwrap();
    assert!(run_query(&mut ex, query(&["nik"])).await.end.is_ok());
    let taken = eventually("the lease taken over", || async {
        let (holder, _) = store.lease("checkpoint").await.ok()??;
        (holder == second.broker.replica_id()).then_some(())
    });
    taken.await;
    let grown = store.audit_log_size().await.unwrap();
    // signed now, unless its periodic task just did
    second.broker.checkpoint_now().await.unwrap();
    let signed = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(signed.size, grown);
    // one root per size, every one verified
    let report = jembatan_store::verify::verify(&store, second.broker.checkpoint_verifier())
        .await
        .unwrap();
    assert_eq!(report.size, grown);
}
