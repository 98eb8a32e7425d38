//! The `Audit` service end to end on 127.0.0.1:0: a provider's SQLite
//! database behind a real adapter, the broker, consumers making exchanges,
//! and an auditor reading the log, checkpoints and proofs — all with
//! certificates from a development CA.

use jembatan_broker::Broker;
use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::audit_client::AuditClient;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_testkit::{BrokerHandle, Federation, agreement_toml, nik};
use jembatan_tlog::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use jembatan_tlog::note::{Checkpoint, Verifier};
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::Channel;

const ROWS: usize = 30;

struct Harness {
    f: Federation,
    broker: Broker,
    broker_port: u16,
}

/// The federation's provider with one agreement, for `dinsos` only (`nik`
/// and `nama`); checkpoints are signed only when a test asks.
async fn harness() -> Harness {
    let f = Federation::start(ROWS).await;
    let config = f.broker_config(
        "checkpoint_every = 1000000\ncheckpoint_interval = \"1h\"",
        &agreement_toml(
            "ok-1",
            "dinsos",
            r#"["nik", "nama"]"#,
            "approved",
            "valid_until = \"2099-01-01\"",
        ),
    );
    let BrokerHandle { broker, port } = f.broker(&config).await;
    Harness {
        f,
        broker,
        broker_port: port,
    }
}

impl Harness {
    async fn consumer(&self, who: &str) -> ExchangeClient<Channel> {
        ExchangeClient::new(self.f.channel(self.broker_port, who).await)
    }

    async fn audit_client(&self, who: &str) -> AuditClient<Channel> {
        AuditClient::new(self.f.channel(self.broker_port, who).await)
    }

    /// A query by `who`; true when allowed.
    async fn query(&self, who: &str) -> bool {
        let mut c = self.consumer(who).await;
        let request = pb::QueryRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            fields: vec!["nik".into()],
            ..Default::default()
        };
        match c.query(request).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                while stream.message().await.unwrap().is_some() {}
                true
            }
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                false
            }
        }
    }

    /// A lookup of resident `i` by `who`; true when allowed.
    async fn lookup(&self, who: &str, i: usize) -> bool {
        let mut c = self.consumer(who).await;
        let request = pb::LookupRequest {
            dataset: "prov.penduduk".into(),
            purpose: "bansos".into(),
            fields: vec!["nik".into(), "nama".into()],
            key: Some(pb::Scalar {
                kind: Some(pb::scalar::Kind::StringValue(nik(i))),
            }),
            ..Default::default()
        };
        match c.lookup(request).await {
            Ok(resp) => resp.into_inner().found,
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                false
            }
        }
    }

    fn verifier(&self) -> Verifier {
        std::fs::read_to_string(self.f.dir.join("checkpoint.key.pub"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// Every entry of a `QueryEntries` or `SubjectLookup` stream, and the page
/// token the last one carries.
async fn collect(
    stream: Result<tonic::Response<tonic::Streaming<pb::AuditEntry>>, tonic::Status>,
) -> (Vec<pb::AuditEntry>, String) {
    let mut stream = stream.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        out.push(e);
    }
    let token = out
        .last()
        .map(|e| e.next_page_token.clone())
        .unwrap_or_default();
    (out, token)
}

fn parsed(e: &pb::AuditEntry) -> AuditEntry {
    AuditEntry::from_canonical(&e.canonical).unwrap()
}

fn seqs(entries: &[pb::AuditEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

fn hashes(v: &[Vec<u8>]) -> Vec<Hash> {
    v.iter().map(|h| h.as_slice().try_into().unwrap()).collect()
}

fn root(c: &pb::Checkpoint) -> Hash {
    c.root_hash.as_slice().try_into().unwrap()
}

#[tokio::test]
async fn auditor_queries_entries_with_filters_and_pages() {
    let h = harness().await;
    assert!(h.query("dinsos").await); // 0 started, 1 ok
    assert!(!h.query("dinkes").await); // 2 denied
    // a lookup is one entry: its decision and its end
    assert!(h.lookup("dinsos", 4).await); // 3 answered
    assert!(h.lookup("dinsos", 5).await); // 4 answered
    let mut a = h.audit_client("auditor").await;
    let query = |f: fn(&mut pb::QueryEntriesRequest)| {
        let mut r = pb::QueryEntriesRequest::default();
        f(&mut r);
        r
    };

    let (all, token) = collect(a.query_entries(query(|_| {})).await).await;
    assert_eq!(seqs(&all), [0, 1, 2, 3, 4]);
    assert!(token.is_empty());
    for e in &all {
        assert_eq!(e.entry_sha256, hex::encode(Sha256::digest(&e.canonical)));
        assert_eq!(parsed(e).canonical_bytes(), e.canonical);
    }

    let (denials, _) = collect(a.query_entries(query(|r| r.decision = "deny".into())).await).await;
    assert_eq!(seqs(&denials), [2]);
    assert!(denials.iter().all(|e| parsed(e).decision == Decision::Deny));
    let (dinkes, _) = collect(a.query_entries(query(|r| r.agency = "dinkes".into())).await).await;
    assert_eq!(seqs(&dinkes), [2]);
    assert_eq!(parsed(&dinkes[0]).consumer.as_deref(), Some("dinkes"));
    let (dinsos, _) = collect(a.query_entries(query(|r| r.agency = "dinsos".into())).await).await;
    assert_eq!(seqs(&dinsos), [0, 1, 3, 4]);
    // the provider's agency matches every exchange with its datasets
    let (prov, _) = collect(a.query_entries(query(|r| r.agency = "prov".into())).await).await;
    assert_eq!(seqs(&prov), [0, 1, 2, 3, 4]);
    let (ok, _) = collect(
        a.query_entries(query(|r| {
            r.status = "ok".into();
            r.dataset = "prov.penduduk".into();
            r.purpose = "bansos".into();
        }))
        .await,
    )
    .await;
    assert_eq!(seqs(&ok), [1, 3, 4]);
    let (none, _) = collect(a.query_entries(query(|r| r.purpose = "other".into())).await).await;
    assert!(none.is_empty());

    // a time window around entry 2
    let t = |e: &pb::AuditEntry| {
        let time = jembatan_core::agreement::parse_instant(&parsed(e).time).unwrap();
        prost_types::Timestamp {
            seconds: time.timestamp(),
            nanos: time.timestamp_subsec_nanos() as i32,
        }
    };
    let window = pb::QueryEntriesRequest {
        from: Some(t(&all[2])),
        until: Some(t(&all[3])),
        ..Default::default()
    };
    let (inside, _) = collect(a.query_entries(window).await).await;
    assert_eq!(seqs(&inside), [2], "entries 2 and 3 share a microsecond?");

    // pages of two, following the tokens (of the provider's exchanges:
    // each read adds an entry of its own to the whole log)
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::QueryEntriesRequest {
            agency: "prov".into(),
            page_size: 2,
            page_token: token.clone(),
            ..Default::default()
        };
        let (page, next) = collect(a.query_entries(request).await).await;
        assert!(page.len() <= 2);
        pages.push(seqs(&page));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(pages, [vec![0, 1], vec![2, 3], vec![4]]);
    // the token carries filters' pages too
    let request = pb::QueryEntriesRequest {
        agency: "dinsos".into(),
        page_size: 3,
        ..Default::default()
    };
    let (page, next) = collect(a.query_entries(request).await).await;
    assert_eq!(seqs(&page), [0, 1, 3]);
    let request = pb::QueryEntriesRequest {
        agency: "dinsos".into(),
        page_size: 3,
        page_token: next,
        ..Default::default()
    };
    let (page, next) = collect(a.query_entries(request).await).await;
    assert_eq!((seqs(&page), next.as_str()), (vec![4], ""));

    // bad input names the field
    for (request, field) in [
        (query(|r| r.decision = "perhaps".into()), "decision"),
        (query(|r| r.page_size = 5000), "page_size"),
        (query(|r| r.page_token = "next please".into()), "page_token"),
        (query(|r| r.agency = "Not An Agency".into()), "agency"),
    ] {
        let status = a.query_entries(request).await.err().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
}

#[tokio::test]
async fn proofs_from_the_service_verify_against_signed_checkpoints() {
    let h = harness().await;
    let mut a = h.audit_client("auditor").await;
    let status = a
        .latest_checkpoint(pb::LatestCheckpointRequest {})
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    for _ in 0..3 {
        assert!(h.query("dinsos").await);
    }
    assert!(!h.query("dinkes").await);
    let first = h.broker.checkpoint_now().await.unwrap().unwrap();
    assert_eq!(first, 7);
    assert!(h.lookup("dinsos", 1).await);
    assert!(h.query("dinsos").await);
    assert!(!h.lookup("dinkes", 2).await);
    let second = h.broker.checkpoint_now().await.unwrap().unwrap();
    // a lookup is one entry, a query two
    assert_eq!(second, 11);

    let verifier = h.verifier();
    let latest = a
        .latest_checkpoint(pb::LatestCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let opened = Checkpoint::open(&latest.note, &verifier).unwrap();
    assert_eq!((opened.size, opened.root), (second, root(&latest)));
    assert_eq!(latest.size, second);

    let (entries, _) = collect(a.query_entries(pb::QueryEntriesRequest::default()).await).await;
    assert_eq!(entries.len() as u64, second);
    let leaf = |i: u64| leaf_hash(&entries[i as usize].canonical);

    // every entry against the latest checkpoint (tree_size 0)
    for index in 0..second {
        let resp = a
            .inclusion_proof(pb::InclusionProofRequest {
                index,
                tree_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((resp.index, resp.tree_size), (index, second));
        let checkpoint = resp.checkpoint.unwrap();
        let opened = Checkpoint::open(&checkpoint.note, &verifier).unwrap();
        assert_eq!(opened.root, root(&checkpoint));
        let path = hashes(&resp.hashes);
        verify_inclusion(&leaf(index), index, second, &path, &opened.root).unwrap();
        // the proof is for this entry only
        let other = (index + 1) % second;
        assert!(verify_inclusion(&leaf(other), index, second, &path, &opened.root).is_err());
    }
    // ...and against the older checkpoint
    let resp = a
        .inclusion_proof(pb::InclusionProofRequest {
            index: 5,
            tree_size: first,
        })
        .await
        .unwrap()
        .into_inner();
    let checkpoint = resp.checkpoint.unwrap();
    let opened = Checkpoint::open(&checkpoint.note, &verifier).unwrap();
    assert_eq!(opened.size, first);
    verify_inclusion(&leaf(5), 5, first, &hashes(&resp.hashes), &opened.root).unwrap();

    // the two checkpoints are consistent
    let resp = a
        .consistency_proof(pb::ConsistencyProofRequest {
            old_size: first,
            new_size: second,
        })
        .await
        .unwrap()
        .into_inner();
    let old = Checkpoint::open(&resp.old_checkpoint.unwrap().note, &verifier).unwrap();
    let new = Checkpoint::open(&resp.new_checkpoint.unwrap().note, &verifier).unwrap();
    assert_eq!((old.size, new.size), (first, second));
    let proof = hashes(&resp.hashes);
    assert!(!proof.is_empty());
    verify_consistency(first, second, &old.root, &new.root, &proof).unwrap();
    assert!(verify_consistency(first, second, &new.root, &new.root, &proof).is_err());
    // new_size 0 is the latest; old_size 0 needs no hashes
    let resp = a
        .consistency_proof(pb::ConsistencyProofRequest {
            old_size: 0,
            new_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.hashes.is_empty() && resp.old_checkpoint.is_none());
    assert_eq!(resp.new_checkpoint.unwrap().size, second);

    // sizes no checkpoint signs, and indices outside the tree, are refused
    for (request, field) in [
        (
            pb::InclusionProofRequest {
                index: 0,
                tree_size: first + 1,
            },
            "tree_size",
        ),
        (
            pb::InclusionProofRequest {
                index: 0,
                tree_size: second + 1,
            },
            "tree_size",
        ),
        (
            pb::InclusionProofRequest {
                index: first,
                tree_size: first,
            },
            "index",
        ),
    ] {
        let status = a.inclusion_proof(request).await.err().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
    for (request, field) in [
        (
            pb::ConsistencyProofRequest {
                old_size: second,
                new_size: first,
            },
            "old_size",
        ),
        (
            pb::ConsistencyProofRequest {
                old_size: 3,
                new_size: second,
            },
            "old_size",
        ),
        (
            pb::ConsistencyProofRequest {
                old_size: first,
                new_size: 100,
            },
            "new_size",
        ),
    ] {
        let status = a.consistency_proof(request).await.err().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
}

/// Proofs are made from the stored tiles and served only when they verify
/// against the signed root for the entry as stored: an entry or a tile
/// rewritten after its checkpoint gets no proof (`DataLoss`), while the
/// entries that still match keep proofs that verify.
#[tokio::test]
async fn no_proof_is_served_from_a_log_that_does_not_match_its_checkpoint() {
    let h = harness().await;
    assert!(h.query("dinsos").await); // 0, 1
    assert!(!h.query("dinkes").await); // 2
    assert_eq!(h.broker.checkpoint_now().await.unwrap(), Some(3));
    assert!(h.query("dinsos").await); // 3, 4
    assert_eq!(h.broker.checkpoint_now().await.unwrap(), Some(5));
    let mut a = h.audit_client("auditor").await;
    let (entries, _) = collect(a.query_entries(pb::QueryEntriesRequest::default()).await).await;
    let verifier = h.verifier();
    let consistent = pb::ConsistencyProofRequest {
        old_size: 3,
        new_size: 5,
    };
    assert!(a.consistency_proof(consistent).await.is_ok());

    let pool = h.broker.store().pool().clone();
    let sql = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    };
    sql("DROP TRIGGER audit_log_no_update").await;
    sql("UPDATE audit_log SET entry = CAST(REPLACE(CAST(entry AS TEXT), 'dinkes', 'dinsoz') AS BLOB) WHERE seq = 2").await;
    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::DataLoss, "{status:?}");
        assert!(
            status.message().contains("checkpoint at size 5"),
            "{}",
            status.message()
        );
    };
    let inclusion = |index| pb::InclusionProofRequest {
        index,
        tree_size: 0,
    };
    refused(a.inclusion_proof(inclusion(2)).await.err().unwrap());
    // the entries that still match are proven, against the signed root
    for index in [0, 1, 3, 4] {
        let resp = a
            .inclusion_proof(inclusion(index))
            .await
            .unwrap()
            .into_inner();
        let opened = Checkpoint::open(&resp.checkpoint.unwrap().note, &verifier).unwrap();
        let leaf = leaf_hash(&entries[index as usize].canonical);
        verify_inclusion(&leaf, index, 5, &hashes(&resp.hashes), &opened.root).unwrap();
    }

    // one hash of a tile rewritten (leaf 1's): every proof that reads it is
    // refused
    sql("UPDATE audit_tiles SET hashes = substr(hashes, 1, 32) || zeroblob(32) || substr(hashes, 65) WHERE level = 0 AND idx = 0").await;
    refused(a.inclusion_proof(inclusion(0)).await.err().unwrap());
    refused(a.consistency_proof(consistent).await.err().unwrap());
    // the proof of leaf 1 does not read its own hash, and still verifies
    let resp = a.inclusion_proof(inclusion(1)).await.unwrap().into_inner();
    let leaf = leaf_hash(&entries[1].canonical);
    let opened = Checkpoint::open(&resp.checkpoint.unwrap().note, &verifier).unwrap();
    verify_inclusion(&leaf, 1, 5, &hashes(&resp.hashes), &opened.root).unwrap();

    // the checkpoint itself is what vouches for the root: rewrite its
    // stored root, or put in a note another key signed, and the proof of
    // leaf 1 (served above) is refused
    let stored: (String, String) =
        sqlx::query_as("SELECT root_hash, note FROM checkpoints WHERE size = 5")
            .fetch_one(&pool)
            .await
            .unwrap();
    sql("DROP TRIGGER checkpoints_no_update").await;
    let set = |column: &'static str, value: String| {
        let pool = pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE checkpoints SET {column} = ? WHERE size = 5"
            )))
            .bind(value)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set("root_hash", "00".repeat(32)).await;
    refused(a.inclusion_proof(inclusion(1)).await.err().unwrap());
    set("root_hash", stored.0.clone()).await;
    assert!(a.inclusion_proof(inclusion(1)).await.is_ok(), "restored");
    let opened = Checkpoint::open(&stored.1, &verifier).unwrap();
    let other = jembatan_tlog::note::Signer::generate(verifier.name(), &mut rand::rng()).unwrap();
    let forged = Checkpoint::new(opened.origin, 5, opened.root)
        .sign(&other)
        .unwrap();
    set("note", forged).await;
    refused(a.inclusion_proof(inclusion(1)).await.err().unwrap());
    set("note", stored.1).await;

    // a tile deleted: no proof, and the service says why
    sql("DELETE FROM audit_tiles").await;
    let status = a.inclusion_proof(inclusion(3)).await.err().unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("tiles"), "{}", status.message());
}

#[tokio::test]
async fn only_auditor_certificates_are_served() {
    let h = harness().await;
    assert!(h.query("dinsos").await);
    h.broker.checkpoint_now().await.unwrap().unwrap();
    for (who, role) in [
        ("dinsos", "agency"),
        ("broker", "broker"),
        ("adapter", "adapter"),
    ] {
        let mut c = h.audit_client(who).await;
        let refused = [
            c.query_entries(pb::QueryEntriesRequest::default())
                .await
                .err(),
            c.latest_checkpoint(pb::LatestCheckpointRequest {})
                .await
                .err(),
            c.inclusion_proof(pb::InclusionProofRequest::default())
                .await
                .err(),
            c.consistency_proof(pb::ConsistencyProofRequest::default())
                .await
                .err(),
            c.subject_lookup(pb::SubjectLookupRequest {
                subject_hash: "00".repeat(32),
                ..Default::default()
            })
            .await
            .err(),
        ];
        for status in refused {
            let status = status.unwrap_or_else(|| panic!("{who} was served"));
            assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
            assert!(
                status
                    .message()
                    .contains(&format!("this certificate's role is {role}")),
                "{}",
                status.message()
            );
        }
    }
    // the auditor is served
    let mut a = h.audit_client("auditor").await;
    assert!(
        a.latest_checkpoint(pb::LatestCheckpointRequest {})
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn subject_lookup_finds_who_looked_a_resident_up() {
    let h = harness().await;
    // a lookup is one entry, a query two
    assert!(h.lookup("dinsos", 7).await); // 0
    assert!(h.lookup("dinsos", 8).await); // 1
    assert!(!h.lookup("dinkes", 7).await); // 2
    assert!(h.query("dinsos").await); // 3, 4: no subject
    assert!(h.lookup("dinsos", 7).await); // 5
    let key = jembatan_broker::read_audit_key(&h.f.dir.join("audit.key")).unwrap();
    let hash = jembatan_broker::subject_hash(&key, "prov.penduduk", &nik(7));
    assert_eq!(hash.len(), 64);
    let mut a = h.audit_client("auditor").await;
    let lookup =
        |subject_hash: String, page_size: u32, page_token: String| pb::SubjectLookupRequest {
            subject_hash,
            page_size,
            page_token,
        };
    let (found, token) = collect(
        a.subject_lookup(lookup(hash.clone(), 0, String::new()))
            .await,
    )
    .await;
    assert_eq!(seqs(&found), [0, 2, 5]);
    assert!(token.is_empty());
    let who: Vec<(Option<String>, Decision)> = found
        .iter()
        .map(|e| {
            let e = parsed(e);
            assert_eq!(e.subject_hash.as_deref(), Some(hash.as_str()));
            (e.consumer, e.decision)
        })
        .collect();
    assert_eq!(who[1], (Some("dinkes".into()), Decision::Deny));
    // upper-case hex is the same hash; pages work as for QueryEntries
    let (page, token) = collect(
        a.subject_lookup(lookup(hash.to_uppercase(), 2, String::new()))
            .await,
    )
    .await;
    assert_eq!(seqs(&page), [0, 2]);
    // the auditor's first look at this history (6) is on it now
    let (page, _) = collect(a.subject_lookup(lookup(hash.clone(), 2, token)).await).await;
    assert_eq!(seqs(&page), [5, 6]);
    assert_eq!(parsed(&page[1]).operation, "audit.subject_lookup");
    // another resident, another dataset: another hash
    let other = jembatan_broker::subject_hash(&key, "prov.penduduk", &nik(8));
    let (found, _) = collect(a.subject_lookup(lookup(other, 0, String::new())).await).await;
    assert_eq!(seqs(&found), [1]);
    let elsewhere = jembatan_broker::subject_hash(&key, "prov.other", &nik(7));
    let (found, _) = collect(a.subject_lookup(lookup(elsewhere, 0, String::new())).await).await;
    assert!(found.is_empty());
    for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
        let status = a
            .subject_lookup(lookup(bad.to_owned(), 0, String::new()))
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
        assert!(
            status.message().contains("subject_hash"),
            "{}",
            status.message()
        );
    }
}

/// The `audit_read` entries on the log from `from` on.
async fn reads(h: &Harness, from: u64) -> Vec<(u64, AuditEntry)> {
    h.broker
        .audit()
        .entries(from, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.kind == EntryKind::AuditRead)
        .map(|e| (e.seq, e.entry))
        .collect()
}

#[tokio::test]
async fn every_read_of_the_log_is_itself_on_the_log() {
    let h = harness().await;
    assert!(h.query("dinsos").await); // 0, 1
    assert!(h.lookup("dinsos", 4).await); // 2
    let size = || async { h.broker.audit().size().await.unwrap() };
    let mut a = h.audit_client("auditor").await;

    // a page of entries: its entry is durable when the answer arrives,
    // and counts and hashes what was returned
    let (all, _) = collect(a.query_entries(pb::QueryEntriesRequest::default()).await).await;
    assert_eq!(seqs(&all), [0, 1, 2]);
    assert_eq!(size().await, 4, "the read is on the log before its answer");
    let read = reads(&h, 0).await;
    assert_eq!(read.len(), 1);
    let (seq, e) = &read[0];
    assert_eq!(*seq, 3);
    assert_eq!(e.operation, "audit.query_entries");
    assert_eq!(e.caller, "auditor");
    assert_eq!(
        (e.decision, e.status),
        (Decision::Allow, ExchangeStatus::Ok)
    );
    assert_eq!(e.rows, 3);
    let bytes: usize = all.iter().map(|e| e.canonical.len()).sum();
    assert_eq!(e.bytes, bytes as u64);
    let mut payload = Sha256::new();
    for entry in &all {
        payload.update(&entry.canonical);
        payload.update(b"\n");
    }
    assert_eq!(
        e.payload_sha256.as_deref(),
        Some(hex::encode(payload.finalize()).as_str())
    );
    assert_eq!((e.consumer.as_deref(), e.dataset.as_deref()), (None, None));
    assert_eq!(e.filter, None, "no filter was given");

    // the filters of a read are its terms
    let (denied, _) = collect(
        a.query_entries(pb::QueryEntriesRequest {
            agency: "dinkes".into(),
            decision: "deny".into(),
            page_size: 10,
            ..Default::default()
        })
        .await,
    )
    .await;
    assert!(denied.is_empty());
    let (_, e) = reads(&h, 4).await.remove(0);
    assert_eq!(
        e.filter,
        Some(serde_json::json!({"agency": "dinkes", "decision": "deny"}))
    );
    assert_eq!((e.rows, e.limit), (0, Some(10)));

    // who looked at a resident's history: the read names the resident by
    // the keyed hash it was asked with, so the next lookup of that
    // resident finds the auditor's look too
    let key = jembatan_broker::read_audit_key(&h.f.dir.join("audit.key")).unwrap();
    let hash = jembatan_broker::subject_hash(&key, "prov.penduduk", &nik(4));
    let lookup = || pb::SubjectLookupRequest {
        subject_hash: hash.clone(),
        ..Default::default()
    };
    let (found, _) = collect(a.subject_lookup(lookup()).await).await;
    assert_eq!(seqs(&found), [2]);
    let looked = size().await - 1;
    let (found, _) = collect(a.subject_lookup(lookup()).await).await;
    assert_eq!(seqs(&found), [2, looked]);
    let e = parsed(&found[1]);
    assert_eq!(e.kind, EntryKind::AuditRead);
    assert_eq!(e.operation, "audit.subject_lookup");
    assert_eq!(e.subject_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(e.rows, 1);
    let text = String::from_utf8(found[1].canonical.clone()).unwrap();
    assert!(!text.contains(&nik(4)), "the NIK is on the log: {text}");

    // an inclusion proof names the entry it proves; checkpoints and
    // consistency proofs name none and are not logged
    let checkpoint = h.broker.checkpoint_now().await.unwrap().unwrap();
    let before = size().await;
    a.latest_checkpoint(pb::LatestCheckpointRequest {})
        .await
        .unwrap();
    a.consistency_proof(pb::ConsistencyProofRequest {
        old_size: 0,
        new_size: checkpoint,
    })
    .await
    .unwrap();
    assert_eq!(size().await, before);
    a.inclusion_proof(pb::InclusionProofRequest {
        index: 1,
        tree_size: 0,
    })
    .await
    .unwrap();
    let (seq, e) = reads(&h, before).await.remove(0);
    assert_eq!(seq, before);
    assert_eq!(e.operation, "audit.inclusion_proof");
    assert_eq!(e.filter, Some(serde_json::json!({"index": 1})));
    assert_eq!(e.payload_sha256, None);

    // refused attempts are on the log too: a certificate that is not an
    // auditor's (denied), a request that is not valid (invalid)
    let mut agency = h.audit_client("dinsos").await;
    let before = size().await;
    let status = agency
        .query_entries(pb::QueryEntriesRequest::default())
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = agency.subject_lookup(lookup()).await.err().unwrap();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = a
        .query_entries(pb::QueryEntriesRequest {
            decision: "perhaps".into(),
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::InvalidArgument);
    let refused = reads(&h, before).await;
    let summary: Vec<(&str, &str, Decision, ExchangeStatus)> = refused
        .iter()
        .map(|(_, e)| {
            (
                e.caller.as_str(),
                e.operation.as_str(),
                e.decision,
                e.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "agency:dinsos",
                "audit.query_entries",
                Decision::Deny,
                ExchangeStatus::Denied
            ),
            (
                "agency:dinsos",
                "audit.subject_lookup",
                Decision::Deny,
                ExchangeStatus::Denied
            ),
            (
                "auditor",
                "audit.query_entries",
                Decision::Deny,
                ExchangeStatus::Invalid
            ),
        ]
    );
    assert_eq!(
        refused[0].1.reasons[0].code,
        jembatan_core::DenialCode::RoleNotAllowed
    );
    assert_eq!(refused[1].1.subject_hash.as_deref(), Some(hash.as_str()));
    assert!(
        refused[2].1.error.as_deref().unwrap().contains("decision"),
        "{:?}",
        refused[2].1.error
    );

    // a log that cannot be written refuses the read: nothing is answered
    sqlx::query(
        "CREATE TRIGGER full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(h.broker.store().pool())
    .await
    .unwrap();
    let status = a
        .query_entries(pb::QueryEntriesRequest::default())
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("audit log"),
        "{}",
        status.message()
    );
    let status = a.subject_lookup(lookup()).await.err().unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
