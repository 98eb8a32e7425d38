//! Broker replicas on one PostgreSQL store, each a `jembatan broker`
//! process: one killed with SIGKILL mid-stream leaves a log that verifies,
//! with every exchange a consumer saw complete on it once and every
//! allowed exchange ended exactly once (the dead one's `abandoned`); and
//! quotas, the stream limit per agency and revocations hold across them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jembatan_e2e::{Cluster, PgStore, Seen, agreement, lookup, query, read_stream, run_query};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

/// Fast leases: a killed replica is found gone within about two seconds,
/// with room for a heartbeat held up on a busy machine.
const FAST: &str = "replica_heartbeat = \"250ms\"\nreplica_lease = \"2s\"";

/// The entries of exchanges (not agreement steps), by exchange id.
fn by_exchange(entries: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut out: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in entries {
        let kind = e["entry"]["kind"].as_str().unwrap();
        if kind == "decision" || kind == "completion" || kind == "answered" {
            let id = e["entry"]["exchange_id"].as_str().unwrap().to_owned();
            out.entry(id).or_default().push(e);
        }
    }
    out
}

fn kind_of<'a>(entries: &[&'a Value], kind: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .copied()
        .filter(|e| e["entry"]["kind"] == kind)
        .collect()
}

/// What the consumers saw: receipts of exchanges that completed, and how
/// many streams delivered records and then broke without one.
#[derive(Default)]
struct Tally {
    receipts: Vec<pb::Receipt>,
    cut: usize,
}

impl Tally {
    fn query(&mut self, seen: Seen) {
        match seen.receipt {
            Some(receipt) => self.receipts.push(receipt),
            None if seen.records > 0 => self.cut += 1,
            None => {}
        }
    }
}

/// Exchanges through `client` until `stop`: queries read whole and
/// lookups; a replica that stops answering ends the loop.
async fn traffic(mut client: ExchangeClient<Channel>, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if n % 2 == 0 {
            let seen = run_query(&mut client, query(200)).await;
            let broken = seen.receipt.is_none();
            tally.query(seen);
            if broken {
                return tally;
            }
        } else {
            match client.lookup(lookup(n * 7 % 1000)).await {
                Ok(answer) => tally.receipts.extend(answer.into_inner().receipt),
                Err(_) => return tally,
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_stream_leaves_every_exchange_ended_once() {
    let Some(pg) = PgStore::fresh("jembatan_e2e_kill").await else {
        return;
    };
    let tables = format!(
        "{}{}",
        agreement("a-dinsos", "dinsos", ""),
        agreement("a-dinkes", "dinkes", "")
    );
    let mut cluster = Cluster::start(&pg.url, 20_000, 3, FAST, &tables).await;

    // the victim: a long stream through replica 1 by the one consumer
    // nothing else uses, one batch read
    let mut victim_client = cluster.exchange(1, "dinkes").await;
    let mut victim = victim_client.query(query(0)).await.unwrap().into_inner();
    let mut victim_seen = Seen::default();
    match victim.message().await.unwrap().unwrap().item {
        Some(pb::query_response::Item::Batch(b)) => victim_seen.records += b.records.len(),
        other => panic!("expected a batch, got {other:?}"),
    }

    // concurrent exchanges through every replica
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..3 {
        for _ in 0..2 {
            let client = cluster.exchange(i, "dinsos").await;
            workers.spawn(traffic(client, stop.clone()));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill(1);
    // whatever was buffered may still arrive, but never a receipt
    read_stream(&mut victim, &mut victim_seen).await;
    assert!(victim_seen.receipt.is_none(), "the victim completed");
    assert!(victim_seen.end.is_some(), "the victim's stream must break");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    while let Some(done) = workers.join_next().await {
        let t = done.unwrap();
        tally.receipts.extend(t.receipts);
        tally.cut += t.cut;
    }
    assert!(
        tally.receipts.len() > 20,
        "{} receipts",
        tally.receipts.len()
    );

    // a survivor finds the killed replica gone and closes what it left
    let deadline = Instant::now() + Duration::from_secs(30);
    let dinkes_end = loop {
        let entries = cluster.export();
        let ends: Vec<Value> = entries
            .iter()
            .filter(|e| e["entry"]["kind"] == "completion" && e["entry"]["consumer"] == "dinkes")
            .cloned()
            .collect();
        if let Some(end) = ends.first() {
            assert_eq!(ends.len(), 1, "{ends:?}");
            break end.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the victim was never closed: {}",
            cluster.logged()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(dinkes_end["entry"]["status"], "abandoned");
    assert_eq!(dinkes_end["entry"]["rows"], 0);
    let error = dinkes_end["entry"]["error"].as_str().unwrap();
    assert!(error.contains("found gone"), "{error}");
    let logged = cluster.logged();
    assert!(logged.contains("broker replica found gone"), "{logged}");

    // the survivors stop cleanly, signing their last checkpoint
    cluster.stop();
    let (code, words) = cluster.verify();
    assert_eq!(code, Some(0), "{words}");

    let entries = cluster.export();
    let exchanges = by_exchange(&entries);
    // every allowed decision has exactly one end, after it; every end
    // follows an allowed decision; a lookup's one answered entry is both
    let mut abandoned = 0;
    for (id, list) in &exchanges {
        if !kind_of(list, "answered").is_empty() {
            assert_eq!(list.len(), 1, "exchange {id}: {list:?}");
            continue;
        }
        let decisions = kind_of(list, "decision");
        let ends = kind_of(list, "completion");
        assert_eq!(decisions.len(), 1, "exchange {id}: {list:?}");
        let decision = decisions[0];
        if decision["entry"]["decision"] == "allow" {
            assert_eq!(ends.len(), 1, "exchange {id}: {list:?}");
            assert!(ends[0]["seq"].as_u64() > decision["seq"].as_u64());
            if ends[0]["entry"]["status"] == "abandoned" {
                abandoned += 1;
            }
        } else {
            assert!(ends.is_empty(), "exchange {id}: {list:?}");
        }
    }
    println!(
        "{} exchanges on the log, {} receipts seen, {} streams cut, {abandoned} closed abandoned",
        exchanges.len(),
        tally.receipts.len(),
        tally.cut
    );
    // the victim at least, and whatever else the killed replica had
    // running, was closed abandoned
    assert!(
        abandoned >= 1,
        "{abandoned} abandoned, {} streams cut",
        tally.cut
    );
    // every exchange a consumer saw complete is on the log once, its
    // decision durable before its records
    let seqs: BTreeMap<u64, &Value> = entries
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e))
        .collect();
    let mut ids = BTreeSet::new();
    for r in &tally.receipts {
        assert!(ids.insert(r.exchange_id.clone()), "{} twice", r.exchange_id);
        let end = seqs[&r.entry_seq];
        let decision = seqs[&r.decision_seq];
        assert_eq!(end["entry"]["exchange_id"], r.exchange_id.as_str());
        assert_eq!(end["entry"]["status"], "ok");
        assert_eq!(decision["entry"]["exchange_id"], r.exchange_id.as_str());
        assert_eq!(decision["entry"]["decision"], "allow");
        if end["entry"]["kind"] == "answered" {
            // a lookup: decision and end in one entry, before the answer
            assert_eq!(r.entry_seq, r.decision_seq);
            assert_eq!(exchanges[&r.exchange_id].len(), 1);
        } else {
            assert_eq!(end["entry"]["kind"], "completion");
            assert!(r.decision_seq < r.entry_seq);
            assert_eq!(exchanges[&r.exchange_id].len(), 2);
        }
    }
    drop(cluster);
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_stream_limits_and_revocations_hold_across_replicas() {
    let Some(pg) = PgStore::fresh("jembatan_e2e_limits").await else {
        return;
    };
    let tables = format!(
        "{}{}",
        agreement("q-dinsos", "dinsos", "quota = { rows_per_day = 12 }"),
        agreement("s-dinkes", "dinkes", "")
    );
    let settings = format!("{FAST}\nmax_streams_per_agency = 2");
    let mut cluster = Cluster::start(&pg.url, 20_000, 3, &settings, &tables).await;

    // the daily rows of dinsos's agreement, spent through three replicas
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.exchange(i, "dinsos").await);
    }
    let (mut found, mut refused) = (0, 0);
    for n in 0..15 {
        match clients[n % 3].lookup(lookup(n)).await {
            Ok(answer) => {
                assert!(answer.into_inner().found);
                found += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(status.message().contains("quota_exhausted"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((found, refused), (12, 3));

    // dinkes's two streams, on two replicas, are all it may run
    let mut one = cluster.exchange(0, "dinkes").await;
    let mut two = cluster.exchange(1, "dinkes").await;
    let mut first = one.query(query(0)).await.unwrap().into_inner();
    let mut second = two.query(query(0)).await.unwrap().into_inner();
    let (mut seen_first, mut seen_second) = (Seen::default(), Seen::default());
    for (stream, seen) in [
        (&mut first, &mut seen_first),
        (&mut second, &mut seen_second),
    ] {
        match stream.message().await.unwrap().unwrap().item {
            Some(pb::query_response::Item::Batch(b)) => seen.records += b.records.len(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }
    let mut third = cluster.exchange(2, "dinkes").await;
    let refused = run_query(&mut third, query(10)).await;
    let status = refused.end.unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_streams_per_agency"),
        "{status:?}"
    );

    // revoked through the third replica, both running streams stop
    let certs = cluster.dir.join("certs");
    let broker = format!("https://localhost:{}", cluster.ports[2]);
    jembatan_e2e::run(
        &cluster.dir,
        &[
            "agreement",
            "revoke",
            "s-dinkes",
            "--reason",
            "ended by the provider",
            "--broker",
            &broker,
            "--ca",
            certs.join("ca.pem").to_str().unwrap(),
            "--cert",
            certs.join("agency-prov.pem").to_str().unwrap(),
            "--key",
            certs.join("agency-prov-key.pem").to_str().unwrap(),
        ],
    );
    // the other replicas learn it from the store's change feed
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (stream, seen) in [
        (&mut first, &mut seen_first),
        (&mut second, &mut seen_second),
    ] {
        read_stream(stream, seen).await;
        let end = seen.end.as_ref().expect("the stream is stopped");
        assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
        let receipt = seen.receipt.as_ref().expect("a receipt for what was sent");
        assert!(receipt.rows < 20_000, "the whole table was sent");
    }

    cluster.stop();
    let (code, words) = cluster.verify();
    assert_eq!(code, Some(0), "{words}");
    let entries = cluster.export();
    let stopped: Vec<&Value> = entries
        .iter()
        .filter(|e| e["entry"]["kind"] == "completion" && e["entry"]["consumer"] == "dinkes")
        .collect();
    assert_eq!(stopped.len(), 2, "{stopped:?}");
    for end in stopped {
        assert_eq!(end["entry"]["status"], "stopped");
        assert_eq!(end["entry"]["reasons"][0]["code"], "revoked");
    }
    drop(cluster);
    pg.drop_db().await;
}
