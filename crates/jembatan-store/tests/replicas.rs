//! Replicas sharing a store: leases, the stream limits (per consumer,
//! and per consumer and provider) counted across replicas, gone replicas and what they left open, on SQLite and, when
//! `JEMBATAN_TEST_POSTGRES_URL` is set, PostgreSQL.

mod common;

use std::time::Duration;

use common::{drop_postgres, empty_database, entry};
use jembatan_store::{AuditLog, LeftOpen, Store};

const LEASE: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_millis(100);

/// A replica's lease is renewed until it is found gone; its open
/// exchanges then stop counting and are listed as left open; a clean
/// retirement removes a replica with nothing open.
async fn leases_and_gone_replicas(store: Store) {
    store
        .register_replica("r1", "host-a/1", LEASE)
        .await
        .unwrap();
    store
        .register_replica("r2", "host-b/2", Duration::from_millis(600))
        .await
        .unwrap();
    assert!(store.renew_replica("r1", LEASE).await.unwrap());
    assert!(!store.renew_replica("nobody", LEASE).await.unwrap());

    // the limit counts both replicas' exchanges of one consumer
    for (x, replica) in [("x1", "r1"), ("x2", "r2")] {
        assert!(
            store
                .open_exchange(x, replica, "dinsos", 2, GRACE)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .open_exchange("x3", "r1", "dinsos", 2, GRACE)
            .await
            .unwrap(),
        "the third exchange of dinsos is over the limit of 2"
    );
    assert!(
        store
            .open_exchange("x4", "r1", "dinkes", 2, GRACE)
            .await
            .unwrap(),
        "another agency counts apart"
    );
    assert!(store.left_open(10).await.unwrap().is_empty());

    // r2's lease (600 ms) ends; one grace period later it is gone
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        store
            .open_exchange("x3", "r1", "dinsos", 2, GRACE)
            .await
            .unwrap(),
        "a replica whose lease is over by more than the grace no longer counts"
    );
    assert_eq!(
        store.mark_gone_replicas(GRACE).await.unwrap(),
        vec!["r2".to_owned()]
    );
    assert!(store.mark_gone_replicas(GRACE).await.unwrap().is_empty());
    assert!(
        !store.renew_replica("r2", LEASE).await.unwrap(),
        "a gone replica cannot renew"
    );
    assert_eq!(
        store.left_open(10).await.unwrap(),
        vec![LeftOpen {
            exchange_id: "x2".into(),
            replica: "r2".into()
        }]
    );
    let listed = store.replicas().await.unwrap();
    assert_eq!(listed.len(), 2);
    let r2 = listed.iter().find(|r| r.id == "r2").unwrap();
    assert!(r2.gone_at.is_some() && r2.lease_left_ms < 0 && r2.open == 1);
    let r1 = listed.iter().find(|r| r.id == "r1").unwrap();
    assert!(r1.gone_at.is_none() && r1.lease_left_ms > 0 && r1.open == 3);
    assert_eq!(r1.name, "host-a/1");

    // a gone replica is forgotten once nothing it opened is left
    assert_eq!(store.forget_gone_replicas().await.unwrap(), 0);
    store.close_exchange("x2").await.unwrap();
    assert_eq!(store.forget_gone_replicas().await.unwrap(), 1);
    assert!(store.left_open(10).await.unwrap().is_empty());

    // retiring with exchanges open keeps the row (its lease runs out);
    // with none it goes
    assert_eq!(
        store.open_exchanges_of("r1").await.unwrap(),
        vec!["x1".to_owned(), "x4".to_owned(), "x3".to_owned()],
        "oldest first"
    );
    store.retire_replica("r1").await.unwrap();
    assert_eq!(store.replicas().await.unwrap().len(), 1);
    for x in ["x1", "x3", "x4"] {
        store.close_exchange(x).await.unwrap();
    }
    store.retire_replica("r1").await.unwrap();
    assert!(store.replicas().await.unwrap().is_empty());
}

/// A lease has one holder at a time, renewed by it, taken over only once
/// it is over, and given up on release.
async fn one_holder_per_lease(store: Store) {
    let short = Duration::from_millis(150);
    assert!(store.take_lease("checkpoint", "r1", short).await.unwrap());
    assert!(!store.take_lease("checkpoint", "r2", LEASE).await.unwrap());
    assert!(store.take_lease("checkpoint", "r1", short).await.unwrap());
    assert!(
        store.take_lease("sweep", "r2", LEASE).await.unwrap(),
        "leases are apart by name"
    );
    let (holder, left) = store.lease("checkpoint").await.unwrap().unwrap();
    assert_eq!(holder, "r1");
    assert!(left > 0 && left <= 150, "{left}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        store.take_lease("checkpoint", "r2", LEASE).await.unwrap(),
        "taken over once over"
    );
    assert!(!store.take_lease("checkpoint", "r1", short).await.unwrap());
    store.release_lease("checkpoint", "r1").await.unwrap();
    assert_eq!(store.lease("checkpoint").await.unwrap().unwrap().0, "r2");
    store.release_lease("checkpoint", "r2").await.unwrap();
    assert!(store.lease("checkpoint").await.unwrap().is_none());
    assert!(store.take_lease("checkpoint", "r1", LEASE).await.unwrap());
}

/// Many replicas opening exchanges of one agency at once never pass the
/// limit between them.
async fn the_limit_holds_under_concurrent_opens(stores: Vec<Store>) {
    let limit = 5;
    for (i, store) in stores.iter().enumerate() {
        store
            .register_replica(&format!("c{i}"), "host", LEASE)
            .await
            .unwrap();
    }
    let mut opens = tokio::task::JoinSet::new();
    for n in 0..40 {
        let store = stores[n % stores.len()].clone();
        let replica = format!("c{}", n % stores.len());
        opens.spawn(async move {
            store
                .open_exchange(&format!("y{n}"), &replica, "dinsos", limit, GRACE)
                .await
                .unwrap()
        });
    }
    let mut opened = 0;
    while let Some(done) = opens.join_next().await {
        opened += u64::from(done.unwrap());
    }
    assert_eq!(opened, limit, "exactly the limit was opened");
    let open: usize = {
        let mut n = 0;
        for i in 0..stores.len() {
            n += stores[0]
                .open_exchanges_of(&format!("c{i}"))
                .await
                .unwrap()
                .len();
        }
        n
    };
    assert_eq!(open as u64, limit);
}

/// Opens that fail (an exchange id already open) among others written at
/// the same moment fail alone: every other open is kept.
async fn a_failed_open_leaves_the_others(store: Store) {
    store.register_replica("f1", "host", LEASE).await.unwrap();
    let mut opens = tokio::task::JoinSet::new();
    for n in 0..24 {
        let store = store.clone();
        opens.spawn(async move {
            let id = if n % 2 == 0 {
                "dup".to_owned()
            } else {
                format!("f{n}")
            };
            store.open_exchange(&id, "f1", "dinsos-f", 100, GRACE).await
        });
    }
    let (mut opened, mut failed) = (0, 0);
    while let Some(done) = opens.join_next().await {
        match done.unwrap() {
            Ok(true) => opened += 1,
            Ok(false) => panic!("no open is over the limit of 100"),
            Err(_) => failed += 1,
        }
    }
    assert_eq!(
        (opened, failed),
        (13, 11),
        "one of the 12 opens of \"dup\" is kept"
    );
    assert_eq!(store.open_exchanges_of("f1").await.unwrap().len(), 13);
    for x in store.open_exchanges_of("f1").await.unwrap() {
        store.close_exchange(&x).await.unwrap();
    }
    assert!(store.open_exchanges_of("f1").await.unwrap().is_empty());
}

/// Query streams of one consumer against one provider are counted across
/// replicas: the limit holds whichever replica runs them, other providers
/// and consumers count apart, a released stream or an ended exchange
/// frees its place, and a gone replica's streams stop counting.
async fn provider_streams_are_counted_across_replicas(store: Store) {
    store
        .register_replica("p1", "host-a/1", LEASE)
        .await
        .unwrap();
    store
        .register_replica("p2", "host-b/2", Duration::from_millis(600))
        .await
        .unwrap();
    let take = |x: &'static str, consumer: &'static str, provider: &'static str| {
        let store = store.clone();
        async move {
            store
                .take_provider_stream(x, consumer, provider, 2, GRACE)
                .await
                .unwrap()
        }
    };
    for (x, replica, consumer) in [
        ("s1", "p1", "dinsos"),
        ("s2", "p2", "dinsos"),
        ("s3", "p1", "dinsos"),
        ("s4", "p1", "dinkes"),
        ("s5", "p1", "dinsos"),
    ] {
        assert!(
            store
                .open_exchange(x, replica, consumer, 10, GRACE)
                .await
                .unwrap()
        );
    }
    assert!(take("s1", "dinsos", "disdukcapil").await);
    assert!(
        take("s2", "dinsos", "disdukcapil").await,
        "on another replica"
    );
    assert!(
        !take("s3", "dinsos", "disdukcapil").await,
        "the third stream of dinsos against disdukcapil, over both replicas, is over the limit of 2"
    );
    assert!(
        take("s3", "dinsos", "bpjs").await,
        "another provider counts apart"
    );
    assert!(
        take("s4", "dinkes", "disdukcapil").await,
        "another consumer counts apart"
    );
    assert!(
        !take("nobody", "dinsos", "pajak").await,
        "an exchange that is not open takes nothing"
    );
    assert!(
        !take("s4", "dinsos", "pajak").await,
        "an exchange is taken only for its own consumer"
    );

    // a stream whose adapter stream is over frees its place
    store.release_provider_stream("s1").await.unwrap();
    assert!(take("s5", "dinsos", "disdukcapil").await);
    assert!(!take("s1", "dinsos", "disdukcapil").await);
    // an exchange that ended frees its place
    store.close_exchange("s5").await.unwrap();
    // p2's lease (600 ms) ends: its stream no longer counts either
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(take("s1", "dinsos", "disdukcapil").await);
    for x in ["s6", "s7"] {
        assert!(
            store
                .open_exchange(x, "p1", "dinsos", 10, GRACE)
                .await
                .unwrap()
        );
    }
    assert!(
        take("s6", "dinsos", "disdukcapil").await,
        "the gone replica's stream no longer counts"
    );
    assert!(
        !take("s7", "dinsos", "disdukcapil").await,
        "s1 and s6 are the limit"
    );
    for x in ["s1", "s2", "s3", "s4", "s6", "s7"] {
        store.close_exchange(x).await.unwrap();
    }
}

/// Many replicas taking streams of one consumer against one provider at
/// once never pass the limit between them.
async fn the_provider_limit_holds_under_concurrent_takes(stores: Vec<Store>) {
    let limit = 3;
    for (i, store) in stores.iter().enumerate() {
        store
            .register_replica(&format!("t{i}"), "host", LEASE)
            .await
            .unwrap();
    }
    for n in 0..30 {
        let replica = format!("t{}", n % stores.len());
        assert!(
            stores[0]
                .open_exchange(&format!("z{n}"), &replica, "dinkes", 100, GRACE)
                .await
                .unwrap()
        );
    }
    let mut takes = tokio::task::JoinSet::new();
    for n in 0..30 {
        let store = stores[n % stores.len()].clone();
        takes.spawn(async move {
            store
                .take_provider_stream(&format!("z{n}"), "dinkes", "disdukcapil", limit, GRACE)
                .await
                .unwrap()
        });
    }
    let mut taken = 0;
    while let Some(done) = takes.join_next().await {
        taken += u64::from(done.unwrap());
    }
    assert_eq!(taken, limit, "exactly the limit was taken");
    for n in 0..30 {
        stores[0].close_exchange(&format!("z{n}")).await.unwrap();
    }
}

/// An exchange's end entry forgets the exchange among the open ones in
/// its own commit, and only its own exchange: an entry appended as not
/// ending anything, or ending another exchange, leaves it open.
async fn an_end_entry_forgets_its_exchange(store: Store) {
    store
        .register_replica("e1", "host-e/1", LEASE)
        .await
        .unwrap();
    let audit = AuditLog::start(store.clone());
    for x in ["end-a", "end-b", "end-c"] {
        assert!(
            store
                .open_exchange(x, "e1", "dinkes", 3, GRACE)
                .await
                .unwrap()
        );
    }
    let open = || async { store.open_exchanges_of("e1").await.unwrap() };
    assert_eq!(open().await, ["end-a", "end-b", "end-c"]);

    let mut during = entry(1);
    during.exchange_id = "end-a".into();
    audit.append(during).await.unwrap();
    assert_eq!(open().await, ["end-a", "end-b", "end-c"], "not an end");

    let mut end = entry(1);
    end.exchange_id = "end-b".into();
    let stored = audit.append_end(end).await.unwrap();
    assert_eq!(stored.entry.exchange_id, "end-b");
    assert_eq!(open().await, ["end-a", "end-c"]);
    assert!(
        store
            .open_exchange("end-d", "e1", "dinkes", 3, GRACE)
            .await
            .unwrap(),
        "the agency's next exchange finds the slot free"
    );

    // ends written together, in one group commit, each forget their own
    let ends = ["end-a", "end-c", "end-d"].map(|x| {
        let mut end = entry(3);
        end.exchange_id = x.into();
        let audit = audit.clone();
        tokio::spawn(async move { audit.append_end(end).await })
    });
    for end in ends {
        end.await.unwrap().unwrap();
    }
    assert!(open().await.is_empty());
    store.retire_replica("e1").await.unwrap();
}

#[tokio::test]
async fn sqlite_replicas_leases_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let store = Store::connect(path.to_str().unwrap()).await.unwrap();
    leases_and_gone_replicas(store.clone()).await;
    one_holder_per_lease(store.clone()).await;
    a_failed_open_leaves_the_others(store.clone()).await;
    an_end_entry_forgets_its_exchange(store.clone()).await;
    // two handles on one file, as two brokers on one machine
    let other = Store::connect(path.to_str().unwrap()).await.unwrap();
    the_limit_holds_under_concurrent_opens(vec![store.clone(), other.clone()]).await;
    provider_streams_are_counted_across_replicas(store.clone()).await;
    the_provider_limit_holds_under_concurrent_takes(vec![store, other]).await;
}

#[tokio::test]
async fn postgres_replicas_leases_and_limits() {
    let Some((db_url, admin, drop_db)) = empty_database("jembatan_replicas").await else {
        return;
    };
    let store = Store::connect(&db_url).await.unwrap();
    leases_and_gone_replicas(store.clone()).await;
    one_holder_per_lease(store.clone()).await;
    a_failed_open_leaves_the_others(store.clone()).await;
    an_end_entry_forgets_its_exchange(store.clone()).await;
    // three replicas, each with its own pool
    let mut stores = vec![store];
    for _ in 0..2 {
        stores.push(Store::connect(&db_url).await.unwrap());
    }
    the_limit_holds_under_concurrent_opens(stores.clone()).await;
    provider_streams_are_counted_across_replicas(stores[0].clone()).await;
    the_provider_limit_holds_under_concurrent_takes(stores.clone()).await;
    for store in stores.drain(1..) {
        store.close().await;
    }
    drop_postgres(stores.remove(0), admin, drop_db).await;
}
