//! Store tests on SQLite and, when `JEMBATAN_TEST_POSTGRES_URL` is set, PostgreSQL.

mod common;

use common::{drop_postgres, empty_database, fresh_postgres};
use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::{AuditLog, EntryQuery, Store, subject_key};

fn entry(exchange: &str, kind: EntryKind) -> AuditEntry {
    AuditEntry {
        v: 1,
        kind,
        exchange_id: exchange.into(),
        time: "2026-01-01T00:00:00.000000Z".into(),
        operation: "query".into(),
        caller: "agency:dinsos".into(),
        consumer: Some("dinsos".into()),
        provider: Some("disdukcapil".into()),
        dataset: Some("disdukcapil.penduduk".into()),
        purpose: Some("p".into()),
        fields: vec!["nik".into()],
        filter: None,
        subject_hash: None,
        subjects: Vec::new(),
        unregistered_purpose: None,
        limit: None,
        agreement_id: Some("a1".into()),
        agreement_terms_sha256: None,
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
        trace_id: None,
        adapter_endpoint: None,
        change: None,
        registry: None,
        subscription: None,
    }
}

async fn concurrent_appends_are_gap_free(store: Store) {
    let log = AuditLog::start(store);
    let base = log.size().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(entry(&format!("x{i}"), EntryKind::Decision))
                .await
                .unwrap()
                .seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    let want: Vec<u64> = (base..base + 200).collect();
    assert_eq!(seqs, want);
    let back = log.entries(base, 1000).await.unwrap();
    assert_eq!(back.len(), 200);
    for (i, e) in back.iter().enumerate() {
        assert_eq!(e.seq, base + i as u64);
        assert_eq!(AuditEntry::sha256(&e.canonical), e.entry_sha256);
    }
    let one = log.exchange("x7").await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].entry.exchange_id, "x7");
}

#[tokio::test]
async fn sqlite_appends_are_gap_free_and_durable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.db");
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    concurrent_appends_are_gap_free(store.clone()).await;
    store.close().await;
    let store = Store::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let log = AuditLog::start(store);
    assert_eq!(log.size().await.unwrap(), 200);
    let e = log
        .append(entry("after", EntryKind::Completion))
        .await
        .unwrap();
    assert_eq!(e.seq, 200);
}

#[tokio::test]
async fn sqlite_log_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("b.db").to_str().unwrap())
        .await
        .unwrap();
    let log = AuditLog::start(store.clone());
    log.append(entry("x", EntryKind::Decision)).await.unwrap();
    let err = sqlx::query("UPDATE audit_log SET status = 'ok'")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = sqlx::query("DELETE FROM audit_log")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn failed_write_is_reported_not_swallowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("b.db").to_str().unwrap())
        .await
        .unwrap();
    let log = AuditLog::start(store.clone());
    sqlx::query(
        "CREATE TRIGGER full_disk BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let err = log
        .append(entry("x", EntryKind::Decision))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audit log unavailable"), "{err}");
    assert_eq!(log.size().await.unwrap(), 0);
}

#[tokio::test]
async fn postgres_appends_are_gap_free_across_replicas() {
    // A fresh database per run, so the test starts from an empty log.
    let Some((db_url, admin, drop_db)) = empty_database("jembatan_store").await else {
        return;
    };
    let a = Store::connect(&db_url).await.unwrap();
    let b = Store::connect(&db_url).await.unwrap();
    // two "replicas" append concurrently through their own appenders
    let (la, lb) = (AuditLog::start(a.clone()), AuditLog::start(b.clone()));
    let mut tasks = Vec::new();
    for i in 0..400 {
        let log = if i % 2 == 0 { la.clone() } else { lb.clone() };
        tasks.push(tokio::spawn(async move {
            let seq = log
                .append(entry(&format!("p{i}"), EntryKind::Decision))
                .await
                .unwrap()
                .seq;
            (seq, format!("p{i}"))
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    acked.sort();
    let seqs: Vec<u64> = acked.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (0..400).collect::<Vec<u64>>());
    // each appender was told the seq its own entry is stored at
    let stored = la.entries(0, 400).await.unwrap();
    let at: Vec<(u64, String)> = stored
        .iter()
        .map(|s| (s.seq, s.entry.exchange_id.clone()))
        .collect();
    assert_eq!(at, acked);
    b.close().await;
    drop_postgres(a, admin, drop_db).await;
}

/// Appends six entries with different consumers, decisions, times and
/// subjects, then checks every filter of `query_entries` on `store`.
async fn filtered_queries_match_every_filter(store: Store) {
    let log = AuditLog::start(store.clone());
    let variants = [
        (
            "dinsos",
            Decision::Allow,
            ExchangeStatus::Started,
            "01",
            None,
        ),
        ("dinsos", Decision::Allow, ExchangeStatus::Ok, "02", None),
        (
            "dinkes",
            Decision::Deny,
            ExchangeStatus::Denied,
            "03",
            Some("aa"),
        ),
        (
            "bpn",
            Decision::Deny,
            ExchangeStatus::Denied,
            "04",
            Some("bb"),
        ),
        (
            "dinsos",
            Decision::Deny,
            ExchangeStatus::Invalid,
            "05",
            Some("aa"),
        ),
        (
            "disdukcapil",
            Decision::Allow,
            ExchangeStatus::Ok,
            "06",
            None,
        ),
    ];
    for (i, (consumer, decision, status, day, subject)) in variants.into_iter().enumerate() {
        let mut e = entry(&format!("q{i}"), EntryKind::Decision);
        e.consumer = Some(consumer.into());
        e.caller = format!("agency:{consumer}");
        e.decision = decision;
        e.status = status;
        e.time = format!("2026-01-{day}T00:00:00.000000Z");
        e.subject_hash = subject.map(|s| s.repeat(32));
        if consumer == "disdukcapil" {
            e.provider = Some("dukcapil2".into());
        }
        log.append(e).await.unwrap();
    }
    let seqs = |query: EntryQuery, limit: u64| {
        let store = store.clone();
        async move {
            store
                .query_entries(&query, limit)
                .await
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<u64>>()
        }
    };
    let all = EntryQuery::default();
    assert_eq!(seqs(all.clone(), 100).await, [0, 1, 2, 3, 4, 5]);
    assert_eq!(seqs(all.clone(), 2).await, [0, 1]);
    let from_seq = EntryQuery {
        from_seq: 4,
        ..all.clone()
    };
    assert_eq!(seqs(from_seq, 100).await, [4, 5]);
    let denials = EntryQuery {
        decision: Some("deny".into()),
        ..all.clone()
    };
    assert_eq!(seqs(denials, 100).await, [2, 3, 4]);
    // consumer or provider
    let dinsos = EntryQuery {
        agency: Some("dinsos".into()),
        ..all.clone()
    };
    assert_eq!(seqs(dinsos, 100).await, [0, 1, 4]);
    let provider = EntryQuery {
        agency: Some("disdukcapil".into()),
        ..all.clone()
    };
    assert_eq!(seqs(provider, 100).await, [0, 1, 2, 3, 4, 5]);
    let status = EntryQuery {
        status: Some("denied".into()),
        agency: Some("bpn".into()),
        ..all.clone()
    };
    assert_eq!(seqs(status, 100).await, [3]);
    let window = EntryQuery {
        from: Some("2026-01-02T00:00:00.000000Z".into()),
        until: Some("2026-01-05T00:00:00.000000Z".into()),
        ..all.clone()
    };
    assert_eq!(seqs(window, 100).await, [1, 2, 3]);
    let subject = EntryQuery {
        subject_hash: Some("aa".repeat(32)),
        ..all.clone()
    };
    assert_eq!(seqs(subject, 100).await, [2, 4]);
    // a subject a filter named (format 2) is found like a lookup key, and
    // one entry may name several
    let mut e = entry("q6", EntryKind::Decision);
    e.v = 2;
    e.subjects = vec!["aa".repeat(32), "cc".repeat(32)];
    log.append(e).await.unwrap();
    let mut e = entry("q7", EntryKind::Decision);
    e.v = 2;
    e.subject_hash = Some("cc".repeat(32));
    e.subjects = vec!["cc".repeat(32)];
    log.append(e).await.unwrap();
    let subject = EntryQuery {
        subject_hash: Some("aa".repeat(32)),
        ..all.clone()
    };
    assert_eq!(seqs(subject, 100).await, [2, 4, 6]);
    let subject = EntryQuery {
        subject_hash: Some("cc".repeat(32)),
        ..all.clone()
    };
    assert_eq!(seqs(subject, 100).await, [6, 7]);
    // hashes that share the index's key (their first 16 digits), in one
    // entry and in two: each finds only the entries that name it
    let (one, two) = (
        format!("{}{}", "dd".repeat(8), "01".repeat(24)),
        format!("{}{}", "dd".repeat(8), "02".repeat(24)),
    );
    assert_eq!(subject_key(&one), subject_key(&two));
    let mut e = entry("q8", EntryKind::Delivery);
    e.v = 2;
    e.subjects = vec![one.clone(), two.clone()];
    log.append(e).await.unwrap();
    let mut e = entry("q9", EntryKind::Delivery);
    e.v = 2;
    e.subjects = vec![two.clone()];
    log.append(e).await.unwrap();
    let subject = |hash: &str| EntryQuery {
        subject_hash: Some(hash.to_owned()),
        ..all.clone()
    };
    assert_eq!(seqs(subject(&one), 100).await, [8]);
    assert_eq!(seqs(subject(&two), 100).await, [8, 9]);
    // a prefix of a hash is not the hash
    assert!(seqs(subject(&two[..32]), 100).await.is_empty());
    let exchange = EntryQuery {
        exchange_id: Some("q3".into()),
        dataset: Some("disdukcapil.penduduk".into()),
        purpose: Some("p".into()),
        ..all.clone()
    };
    assert_eq!(seqs(exchange, 100).await, [3]);
    let nothing = EntryQuery {
        purpose: Some("other".into()),
        ..all
    };
    assert!(seqs(nothing, 100).await.is_empty());
}

#[tokio::test]
async fn sqlite_filtered_queries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("q.db").to_str().unwrap())
        .await
        .unwrap();
    filtered_queries_match_every_filter(store).await;
}

#[tokio::test]
async fn postgres_filtered_queries() {
    let Some((store, admin, drop_db)) = fresh_postgres("jembatan_query").await else {
        return;
    };
    filtered_queries_match_every_filter(store.clone()).await;
    drop_postgres(store, admin, drop_db).await;
}

/// Registry storage: versions numbered from 1, the same document shares one
/// schema id row, stale registrations conflict, states and mappings round-trip.
async fn registry_round_trips(store: Store) {
    use jembatan_store::VersionState;
    assert!(store.registry_datasets().await.unwrap().is_empty());
    let v1 = store
        .insert_schema_version(
            "dinsos.warga",
            1,
            "sha256:aa",
            "{\"type\":\"object\"}",
            "integrator:dinsos",
        )
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.state, VersionState::Active);
    // a registration judged against version 0 again is stale now
    let stale = store
        .insert_schema_version("dinsos.warga", 1, "sha256:bb", "{}", "integrator:dinsos")
        .await
        .unwrap_err();
    assert!(
        matches!(stale, jembatan_store::StoreError::Conflict(_)),
        "{stale}"
    );
    store
        .insert_schema_version("dinsos.warga", 2, "sha256:bb", "{}", "integrator:dinsos")
        .await
        .unwrap();
    // same content under another dataset reuses the schema row
    store
        .insert_schema_version(
            "dinkes.pasien",
            1,
            "sha256:aa",
            "{\"type\":\"object\"}",
            "integrator:dinkes",
        )
        .await
        .unwrap();
    let holders = store.versions_with_schema("sha256:aa").await.unwrap();
    assert_eq!(holders.len(), 2);
    assert_eq!(
        store.schema_document("sha256:aa").await.unwrap().as_deref(),
        Some("{\"type\":\"object\"}")
    );
    let latest = store
        .schema_version("dinsos.warga", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (latest.version, latest.schema_id.as_str()),
        (2, "sha256:bb")
    );
    assert!(
        store
            .schema_version("dinsos.warga", Some(3))
            .await
            .unwrap()
            .is_none()
    );
    let all = store.schema_versions("dinsos.warga").await.unwrap();
    assert_eq!(
        all.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );

    let disabled = store
        .set_version_state("dinsos.warga", 1, VersionState::Disabled)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(disabled.state, VersionState::Disabled);
    assert!(
        store
            .set_version_state("dinsos.warga", 9, VersionState::Disabled)
            .await
            .unwrap()
            .is_none()
    );

    store
        .set_compatibility("dinsos.warga", Some("FULL"), true)
        .await
        .unwrap();
    let datasets = store.registry_datasets().await.unwrap();
    assert_eq!(datasets.len(), 2);
    let warga = datasets
        .iter()
        .find(|d| d.dataset == "dinsos.warga")
        .unwrap();
    assert_eq!(warga.compatibility.as_deref(), Some("FULL"));
    assert!(warga.optional_friendly);
    assert_eq!(warga.latest_version, 2);

    let m1 = store
        .insert_mapping(
            "disdukcapil.penduduk@1",
            "dinsos.warga@2",
            1,
            "{\"v\":1}",
            "integrator:dinsos",
        )
        .await
        .unwrap();
    let m2 = store
        .insert_mapping(
            "disdukcapil.penduduk@1",
            "dinsos.warga@2",
            2,
            "{\"v\":2}",
            "integrator:dinsos",
        )
        .await
        .unwrap();
    let stale = store
        .insert_mapping(
            "disdukcapil.penduduk@1",
            "dinsos.warga@2",
            2,
            "{}",
            "integrator:dinsos",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stale, jembatan_store::StoreError::Conflict(_)),
        "{stale}"
    );
    assert_eq!((m1.version, m2.version), (1, 2));
    let latest = store
        .mapping("disdukcapil.penduduk@1", "dinsos.warga@2", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.document, "{\"v\":2}");
    let first = store
        .mapping("disdukcapil.penduduk@1", "dinsos.warga@2", Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.document, "{\"v\":1}");
    let to = store.mappings_to("dinsos.warga@2").await.unwrap();
    let versions: Vec<u32> = to.iter().map(|m| m.version).collect();
    assert_eq!(versions, [2, 1], "every version, newest first");
    assert!(to.iter().all(|m| m.state == VersionState::Active));
    assert_eq!(store.mappings().await.unwrap().len(), 2);
    // a version disabled, and active again
    let disabled = store
        .set_mapping_state(
            "disdukcapil.penduduk@1",
            "dinsos.warga@2",
            2,
            VersionState::Disabled,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(disabled.state, VersionState::Disabled);
    let to = store.mappings_to("dinsos.warga@2").await.unwrap();
    assert_eq!(to[0].state, VersionState::Disabled);
    assert_eq!(to[1].state, VersionState::Active);
    let missing = store
        .set_mapping_state(
            "disdukcapil.penduduk@1",
            "dinsos.warga@2",
            9,
            VersionState::Disabled,
        )
        .await
        .unwrap();
    assert!(missing.is_none());
}

#[tokio::test]
async fn sqlite_registry_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("r.db").to_str().unwrap())
        .await
        .unwrap();
    registry_round_trips(store).await;
}

#[tokio::test]
async fn postgres_registry_round_trips() {
    let Some((store, admin, drop_db)) = fresh_postgres("jembatan_registry").await else {
        return;
    };
    registry_round_trips(store.clone()).await;
    drop_postgres(store, admin, drop_db).await;
}

/// An agency's adapter endpoints come back in the order stored; none is
/// an empty list, and an upsert replaces the list.
async fn agency_endpoints_round_trip(store: Store) {
    use jembatan_store::Agency;
    let id: jembatan_core::AgencyId = "prov".parse().unwrap();
    let agency = |endpoints: &[&str]| Agency {
        id: id.clone(),
        name: "Provider".into(),
        adapter_endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
    };
    for endpoints in [
        &["https://b:7443", "https://a:7443", "https://c:7443"][..],
        &["https://a:7443"][..],
        &[][..],
    ] {
        store.upsert_agency(&agency(endpoints)).await.unwrap();
        assert_eq!(
            store.agency(&id).await.unwrap(),
            Some(agency(endpoints)),
            "{endpoints:?}"
        );
    }
}

#[tokio::test]
async fn sqlite_agency_endpoints_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("e.db").to_str().unwrap())
        .await
        .unwrap();
    agency_endpoints_round_trip(store).await;
}

#[tokio::test]
async fn postgres_agency_endpoints_round_trip() {
    let Some((store, admin, drop_db)) = fresh_postgres("jembatan_endpoints").await else {
        return;
    };
    agency_endpoints_round_trip(store.clone()).await;
    drop_postgres(store, admin, drop_db).await;
}

/// Agreements: ids are unique, status changes are compare-and-set, the
/// change feed reports them; quota counters are taken atomically by
/// concurrent callers, never past the limit.
async fn agreements_and_quotas(store: Store) {
    use jembatan_core::{Agreement, AgreementStatus};
    use jembatan_store::{AgreementFilter, QuotaKind, StoreError};
    let mut a: Agreement = serde_json::from_value(serde_json::json!({
        "id": "a1", "provider": "prov", "consumer": "dinsos",
        "dataset": "prov.penduduk", "fields": ["nik", {"field": "nama", "mode": "verify"}],
        "purpose": "bansos", "valid_from": "2026-01-01", "status": "proposed",
        "quota": {"rows_per_day": 10}
    }))
    .unwrap();
    let before = store.policy_version().await.unwrap();
    store.insert_agreement(&a).await.unwrap();
    let inserted = store.policy_version().await.unwrap();
    assert!(
        inserted > before,
        "an agreement stored moves the policy version"
    );
    assert!(matches!(
        store.insert_agreement(&a).await,
        Err(StoreError::Conflict(_))
    ));
    // seeding keeps what is stored
    let mut seeded = a.clone();
    seeded.purpose = "other".into();
    assert_eq!(
        store.seed_agreement(&seeded).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.agreement("a1").await.unwrap(), Some(a.clone()));

    a.status = AgreementStatus::Approved;
    let proposed = store.policy_version().await.unwrap();
    store
        .update_agreement(&a, AgreementStatus::Proposed)
        .await
        .unwrap();
    let approved_at = store.policy_version().await.unwrap();
    assert!(
        approved_at > proposed,
        "a status change moves the policy version"
    );
    // a second step from the same state loses
    let mut stale = a.clone();
    stale.status = AgreementStatus::Revoked;
    assert!(matches!(
        store
            .update_agreement(&stale, AgreementStatus::Proposed)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let feed = store.agreement_changes("").await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].status, AgreementStatus::Approved);
    assert!(store.agreement_changes("9999").await.unwrap().is_empty());
    let approved = store
        .list_agreements(&AgreementFilter {
            status: Some(AgreementStatus::Approved),
            consumer: Some("dinsos".parse().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(approved, vec![a.clone()]);
    assert!(
        store
            .list_agreements(&AgreementFilter {
                provider: Some("dinsos".parse().unwrap()),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );

    // 20 concurrent takers of a limit of 7: exactly 7 succeed
    let minute = "2026-11-28T05:00";
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .take_quota("a1", QuotaKind::RequestsPerMinute, minute, 1, 7)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut taken = 0;
    for t in tasks {
        taken += usize::from(t.await.unwrap());
    }
    assert_eq!(taken, 7);
    assert_eq!(
        store
            .quota_used("a1", QuotaKind::RequestsPerMinute, minute)
            .await
            .unwrap(),
        7
    );
    // rows: partial takes stop exactly at the limit
    let day = "2026-11-28";
    let mut got = Vec::new();
    for n in [4, 4, 4, 4] {
        got.push(
            store
                .take_quota_up_to("a1", QuotaKind::RowsPerDay, day, n, 10)
                .await
                .unwrap(),
        );
    }
    assert_eq!(got, vec![4, 4, 2, 0]);
    // another window counts from zero; old windows are pruned
    assert_eq!(
        store
            .take_quota_up_to("a1", QuotaKind::RowsPerDay, "2026-11-29", 3, 10)
            .await
            .unwrap(),
        3
    );
    let pruned = store
        .prune_quota_windows("2026-11-29", "2026-11-28T05:01")
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    assert_eq!(
        store
            .quota_used("a1", QuotaKind::RowsPerDay, "2026-11-29")
            .await
            .unwrap(),
        3
    );
    // counting quotas is not a change to what decisions read
    let counted = store.policy_version().await.unwrap();
    assert!(counted >= approved_at);
    store
        .take_quota("a1", QuotaKind::RequestsPerMinute, "2026-11-28T05:02", 1, 7)
        .await
        .unwrap();
    assert_eq!(store.policy_version().await.unwrap(), counted);
}

#[tokio::test]
async fn sqlite_agreements_and_quotas() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("a.db").to_str().unwrap())
        .await
        .unwrap();
    agreements_and_quotas(store).await;
}

#[tokio::test]
async fn postgres_agreements_and_quotas() {
    let Some((store, admin, drop_db)) = fresh_postgres("jembatan_quota").await else {
        return;
    };
    agreements_and_quotas(store.clone()).await;
    drop_postgres(store, admin, drop_db).await;
}

/// The health probe passes on a writable log, fails on one that refuses
/// entries, and leaves nothing behind either way.
async fn probe_writes_nothing(store: Store, refuse: &'static str) {
    let log = AuditLog::start(store.clone());
    log.append(entry("x", EntryKind::Decision)).await.unwrap();
    log.probe().await.unwrap();
    log.probe().await.unwrap();
    assert_eq!(log.size().await.unwrap(), 1);
    for statement in refuse.split(";;") {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    assert!(log.probe().await.is_err());
    assert_eq!(log.size().await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_probe_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("b.db").to_str().unwrap())
        .await
        .unwrap();
    probe_writes_nothing(
        store,
        "CREATE TRIGGER full_disk BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .await;
}

#[tokio::test]
async fn postgres_probe_writes_nothing() {
    let Some((store, admin, drop_db)) = fresh_postgres("jembatan_probe").await else {
        return;
    };
    probe_writes_nothing(
        store.clone(),
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;;\
         CREATE TRIGGER full_disk BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .await;
    drop_postgres(store, admin, drop_db).await;
}

/// The keys a subscription was given, batch by batch: what it holds,
/// rewound exactly to a cursor's batch, one stream at a time, apart from
/// every other subscription's, compacted without changing what it holds.
async fn subscription_keys_rewind_to_a_cursor(store: Store) {
    use jembatan_store::Resumed;
    async fn ready(store: &Store, sub: &str, batch: u64) -> u64 {
        match store.resume_subscription(sub, batch).await.unwrap() {
            Resumed::Ready { generation } => generation,
            other => panic!("{sub} at {batch}: {other:?}"),
        }
    }
    let h: Vec<String> = (0..1_200).map(|i| format!("{i:064x}")).collect();
    // the same hashes as the store takes them: `i` in the last 4 bytes
    let k: Vec<jembatan_store::KeyHash> = (0..1_200u32)
        .map(|i| {
            let mut b = [0u8; 32];
            b[28..].copy_from_slice(&i.to_be_bytes());
            b
        })
        .collect();
    let held = |store: Store, sub: &'static str, keys: Vec<String>| async move {
        let mut v: Vec<String> = store
            .subscription_holds(sub, &keys)
            .await
            .unwrap()
            .into_iter()
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        store.resume_subscription("sub-a", 3).await.unwrap(),
        Resumed::Unknown
    );
    let gen_a = ready(&store, "sub-a", 0).await;
    let gen_b = ready(&store, "sub-b", 0).await;
    // batch 1 gives 1,200 keys (more than one statement holds)
    assert!(
        store
            .record_subscription_batch("sub-a", gen_a, 1, &k, &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .record_subscription_batch("sub-b", gen_b, 1, &k[..1], &[])
            .await
            .unwrap()
    );
    // batch 2 takes back key 7 and gives key 7 nothing else
    assert!(
        store
            .record_subscription_batch("sub-a", gen_a, 2, &[], &k[7..8])
            .await
            .unwrap()
    );
    // a batch that is not the next one is refused, recording nothing
    assert!(
        !store
            .record_subscription_batch("sub-a", gen_a, 2, &[], &k[8..9])
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_subscription_batch("sub-a", gen_a, 9, &[], &k[8..9])
            .await
            .unwrap()
    );
    assert_eq!(store.subscription_key_count("sub-a").await.unwrap(), 1_199);
    assert_eq!(store.subscription_key_count("sub-b").await.unwrap(), 1);
    assert_eq!(
        held(store.clone(), "sub-a", h[6..9].to_vec()).await,
        vec![h[6].clone(), h[8].clone()]
    );
    assert_eq!(
        held(store.clone(), "sub-b", h[6..9].to_vec()).await,
        Vec::<String>::new()
    );
    // batch 3 gives key 7 again; batch 4 takes back keys 7 and 8
    assert!(
        store
            .record_subscription_batch("sub-a", gen_a, 3, &k[7..8], &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .record_subscription_batch("sub-a", gen_a, 4, &[], &k[7..9])
            .await
            .unwrap()
    );
    assert_eq!(
        held(store.clone(), "sub-a", h[6..9].to_vec()).await,
        vec![h[6].clone()]
    );
    // a cursor of batch 3 finds the subscription as it was then
    ready(&store, "sub-a", 3).await;
    assert_eq!(
        held(store.clone(), "sub-a", h[6..9].to_vec()).await,
        h[6..9].to_vec()
    );
    assert_eq!(
        store.subscription_last_batch("sub-a").await.unwrap(),
        Some(3)
    );
    // and of batch 1, before key 7 was ever taken back
    let gen_a = ready(&store, "sub-a", 1).await;
    assert_eq!(store.subscription_key_count("sub-a").await.unwrap(), 1_200);
    // a batch the store never recorded is not resumed
    assert_eq!(
        store.resume_subscription("sub-a", 5).await.unwrap(),
        Resumed::Ahead { last: 1 }
    );
    // a stream resumed before the last resume records nothing more
    assert!(
        !store
            .record_subscription_batch("sub-a", gen_a - 1, 2, &[], &k[..2])
            .await
            .unwrap()
    );
    // the next batch after the rewind is 2
    assert!(
        store
            .record_subscription_batch("sub-a", gen_a, 2, &[], &k[..2])
            .await
            .unwrap()
    );
    assert_eq!(store.subscription_key_count("sub-a").await.unwrap(), 1_198);
    let too_many = vec![k[0]; jembatan_store::MAX_KEYS_PER_CALL + 1];
    let err = store
        .record_subscription_batch("sub-a", gen_a, 3, &too_many, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 20000"), "{err}");
    assert_eq!(store.forget_subscription("sub-a").await.unwrap(), 1_202);
    assert_eq!(store.subscription_key_count("sub-a").await.unwrap(), 0);
    assert_eq!(store.subscription_last_batch("sub-a").await.unwrap(), None);
    assert_eq!(store.subscription_key_count("sub-b").await.unwrap(), 1);

    // compaction keeps what every resumable batch holds
    use jembatan_store::{COMPACT_EVERY, RESUMABLE_BATCHES};
    let gen_c = ready(&store, "sub-c", 0).await;
    let last = RESUMABLE_BATCHES + COMPACT_EVERY;
    for batch in 1..=last {
        // key 0 given on odd batches and taken back on even ones; key 1
        // given once at batch 1; key 2 given at batch 2 and taken at 5
        let (given, taken) = match batch {
            1 => (vec![k[0], k[1]], vec![]),
            2 => (vec![k[2]], vec![k[0]]),
            5 => (vec![k[0]], vec![k[2]]),
            b if b % 2 == 1 => (vec![k[0]], vec![]),
            _ => (vec![], vec![k[0]]),
        };
        assert!(
            store
                .record_subscription_batch("sub-c", gen_c, batch, &given, &taken)
                .await
                .unwrap()
        );
    }
    assert_eq!(
        held(store.clone(), "sub-c", h[..3].to_vec()).await,
        vec![h[1].clone()]
    );
    let horizon = last - RESUMABLE_BATCHES;
    assert_eq!(
        store
            .resume_subscription("sub-c", horizon - 1)
            .await
            .unwrap(),
        Resumed::TooOld { horizon }
    );
    // the oldest resumable batch, odd or even, holds what it held
    ready(&store, "sub-c", horizon + 1).await;
    let expect_odd = if (horizon + 1) % 2 == 1 {
        vec![h[0].clone(), h[1].clone()]
    } else {
        vec![h[1].clone()]
    };
    assert_eq!(
        held(store.clone(), "sub-c", h[..3].to_vec()).await,
        expect_odd
    );
    ready(&store, "sub-c", horizon).await;
    let expect = if horizon % 2 == 1 {
        vec![h[0].clone(), h[1].clone()]
    } else {
        vec![h[1].clone()]
    };
    assert_eq!(held(store.clone(), "sub-c", h[..3].to_vec()).await, expect);
}

#[tokio::test]
async fn sqlite_subscription_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("s.db").to_str().unwrap())
        .await
        .unwrap();
    subscription_keys_rewind_to_a_cursor(store).await;
}

#[tokio::test]
async fn postgres_subscription_keys() {
    let Some((store, admin, drop_db)) = fresh_postgres("jembatan_subkeys").await else {
        return;
    };
    subscription_keys_rewind_to_a_cursor(store.clone()).await;
    drop_postgres(store, admin, drop_db).await;
}

/// A store at migration 0016 (the key history as one row per key and
/// batch), with the history of two subscriptions, brought to the
/// current schema: both hold what they held, and a cursor of an earlier
/// batch still rewinds.
async fn key_history_of_0016_is_kept(url: &str, backend: &str) {
    use jembatan_store::Resumed;
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let upto = tempfile::tempdir().unwrap();
    for file in std::fs::read_dir(&source).unwrap() {
        let file = file.unwrap();
        let name = file.file_name().into_string().unwrap();
        if name.as_str() <= "0016_subscriptions.sql" {
            std::fs::copy(file.path(), upto.path().join(&name)).unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::migrate::Migrator::new(upto.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let h = |i: u32| format!("{i:064x}");
    // sub-a: batch 1 gives keys 0..3, batch 2 takes 1 back and gives 3;
    // sub-b: batch 1 gives key 0
    sqlx::query(
        "INSERT INTO subscriptions (subscription_id, last_batch, horizon, generation) \
         VALUES ('sub-a', 2, 0, 1), ('sub-b', 1, 0, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (sub, key, batch, given) in [
        ("sub-a", 0, 1, 1),
        ("sub-a", 1, 1, 1),
        ("sub-a", 2, 1, 1),
        ("sub-a", 1, 2, 0),
        ("sub-a", 3, 2, 1),
        ("sub-b", 0, 1, 1),
    ] {
        sqlx::query(
            "INSERT INTO subscription_key_events (subscription_id, key_hash, batch, given) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(sub)
        .bind(h(key))
        .bind(batch as i64)
        .bind(given as i64)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let store = Store::connect(url).await.unwrap();
    let all: Vec<String> = (0..5).map(h).collect();
    let held = |store: Store, sub: &'static str| {
        let all = all.clone();
        async move {
            let mut v: Vec<String> = store
                .subscription_holds(sub, &all)
                .await
                .unwrap()
                .into_iter()
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(held(store.clone(), "sub-a").await, vec![h(0), h(2), h(3)]);
    assert_eq!(held(store.clone(), "sub-b").await, vec![h(0)]);
    assert!(matches!(
        store.resume_subscription("sub-a", 1).await.unwrap(),
        Resumed::Ready { generation: 2 }
    ));
    assert_eq!(held(store.clone(), "sub-a").await, vec![h(0), h(1), h(2)]);
    store.close().await;
}

#[tokio::test]
async fn sqlite_key_history_of_0016_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    key_history_of_0016_is_kept(&url, "sqlite").await;
}

#[tokio::test]
async fn postgres_key_history_of_0016_is_kept() {
    let Some((url, admin, drop_db)) = empty_database("jembatan_keys0016").await else {
        return;
    };
    key_history_of_0016_is_kept(&url, "postgres").await;
    sqlx::query(sqlx::AssertSqlSafe(drop_db))
        .execute(&admin)
        .await
        .unwrap();
}

/// The SQLite store's subject index trails its log: entries naming many
/// subjects are found by every one of them before the index has reached
/// them and after, each once; the index catches up on its own once the
/// writer is idle, and its mark only moves forward.
#[tokio::test]
async fn sqlite_subject_index_trails_the_log_without_losing_any() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    let log = AuditLog::start(store.clone());
    let per_entry = 10_000usize;
    let entries = 9usize;
    let hash = |e: usize, i: usize| AuditEntry::sha256(format!("{e}/{i}").as_bytes());
    let mut seqs = Vec::new();
    for e in 0..entries {
        let mut x = entry(&format!("many{e}"), EntryKind::Delivery);
        x.subjects = (0..per_entry).map(|i| hash(e, i)).collect();
        // the lookup key's hash is among the subjects too
        x.subject_hash = Some(hash(e, 0));
        seqs.push(log.append(x).await.unwrap().seq);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let indexed = || -> (i64, i64) {
        let rows = conn
            .query_row("SELECT COUNT(*) FROM audit_subjects", [], |r| r.get(0))
            .unwrap();
        let through = conn
            .query_row("SELECT seq FROM audit_subjects_through", [], |r| r.get(0))
            .unwrap();
        (rows, through)
    };
    let search = |store: Store, seqs: Vec<u64>| async move {
        for (e, seq) in seqs.iter().enumerate() {
            for i in [0, per_entry / 2, per_entry - 1] {
                let query = EntryQuery {
                    subject_hash: Some(hash(e, i)),
                    ..Default::default()
                };
                let found = store.query_entries(&query, 10).await.unwrap();
                assert_eq!(
                    found.iter().map(|r| r.seq).collect::<Vec<_>>(),
                    vec![*seq],
                    "entry {e} subject {i}"
                );
            }
        }
    };
    // written just now: the index may not have reached them yet
    search(store.clone(), seqs.clone()).await;
    // idle, the writer brings the index up to the log
    let all = (entries * per_entry) as i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while indexed() != (all, entries as i64) {
        assert!(
            std::time::Instant::now() < deadline,
            "the index stays behind: {:?}",
            indexed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    search(store.clone(), seqs.clone()).await;
    // more entries, then a catch-up on demand
    let mut x = entry("one more", EntryKind::Decision);
    x.subject_hash = Some(hash(99, 0));
    let last = log.append(x).await.unwrap().seq;
    store.catch_up_subjects().await.unwrap();
    assert_eq!(indexed(), (all + 1, last as i64 + 1));
    // the mark never goes back, and is never removed
    for sql in [
        "UPDATE audit_subjects_through SET seq = seq - 1",
        "DELETE FROM audit_subjects_through",
    ] {
        let err = conn.execute(sql, []).unwrap_err().to_string();
        assert!(
            err.contains("only moves forward") || err.contains("is kept"),
            "{sql}: {err}"
        );
    }
    store.close().await;
}
