//! Runs the benchmark with tiny sizes against PostgreSQL (when
//! `JEMBATAN_TEST_POSTGRES_URL` is set) and checks that its counts agree;
//! timings are never asserted.

use std::time::Duration;

use jembatan_bench::{MemoryFigures, Options, SubscribeLogical, SubscribeRss};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_run_reports_consistent_counts() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let options = Options::new(
        Some(2_000),
        url,
        true,
        Some(Duration::from_millis(300)),
        None,
    );
    let report = jembatan_bench::run(&options).await.unwrap();
    println!("{report}");
    assert_eq!(report.rows, 2_000);
    let bulk = report.bulk.as_ref().expect("bulk figures");
    assert_eq!(bulk.rows_streamed, 2_000);
    assert_eq!(bulk.direct_rows, 2_000);
    assert_eq!(bulk.fetch_rows, 2_000);
    assert!(bulk.bytes_streamed > 0 && bulk.direct_bytes > 0);
    for c in jembatan_bench::LOOKUP_CONCURRENCY {
        let l = report.lookup(c).expect("lookup figures");
        assert!(l.lookups > 0, "no lookups at {c}");
        assert!(l.direct_lookups > 0, "no direct lookups at {c}");
    }
    let audit = report.audit.as_ref().expect("audit figures");
    assert!(audit.sqlite_appends > 0);
    assert!(audit.pg_appends > 0);
    // the log of the quick run, filled to the quick size, verified whole
    assert!(audit.verify_entries >= jembatan_bench::QUICK_VERIFY_ENTRIES);
    assert!(audit.verify_seconds > 0.0);
    // a broker started twice on that log: the first start builds the tiles
    let [start] = audit.starts.as_slice() else {
        panic!("one broker start figure expected: {:?}", audit.starts);
    };
    assert_eq!(start.entries, audit.verify_entries);
    assert!(start.first_start_s > 0.0 && start.start_s > 0.0);
    let pg_store = report
        .lookups_pg_store
        .as_ref()
        .expect("B2 on a PostgreSQL store");
    assert!(pg_store.per_s > 0.0 && pg_store.p99_ms > 0.0);
    assert!(matches!(report.memory, MemoryFigures::Skipped(_)));
    // every key of the table verified, the matches agreeing on both sides
    let verify = report.verify.as_ref().expect("batch verification figures");
    assert_eq!(verify.keys, 2_000);
    assert!(verify.per_s > 0.0 && verify.direct_per_s > 0.0);
    let replicas = report.replicas.as_ref().expect("replica figures");
    assert!(replicas.lookup_one_per_s > 0.0 && replicas.lookup_two_per_s > 0.0);
    assert!(replicas.appends_one_per_s > 0.0 && replicas.appends_two_per_s > 0.0);
    // every row caught up as one change, as many as the query read, and
    // every update delivered
    let subscribe = report.subscribe.as_ref().expect("subscription figures");
    assert_eq!(subscribe.catchup_changes, 2_000);
    assert_eq!(subscribe.query_rows, 2_000);
    assert!(subscribe.catchup_rows_per_s > 0.0 && subscribe.query_rows_per_s > 0.0);
    assert!(subscribe.updates >= 10, "{} updates", subscribe.updates);
    assert!(subscribe.latency_p50_ms > 0.0);
    assert!(subscribe.latency_p99_ms >= subscribe.latency_p50_ms);
    assert!(matches!(subscribe.rss, SubscribeRss::Skipped(_)));
    match &subscribe.logical {
        SubscribeLogical::Measured {
            updates,
            latency_p50_ms,
            latency_p99_ms,
        } => {
            assert!(*updates >= 10, "{updates} updates");
            assert!(*latency_p50_ms > 0.0 && latency_p99_ms >= latency_p50_ms);
        }
        SubscribeLogical::Skipped(why) => println!("B7 logical replication skipped: {why}"),
    }
    let json = report.to_json();
    for key in [
        "rows",
        "cores",
        "bulk_rows_per_s",
        "bulk_direct_rows_per_s",
        "bulk_fetch_rows_per_s",
        "bulk_ratio",
        "lookup_per_s_c1",
        "lookup_per_s_c8",
        "lookup_per_s_c32",
        "lookup_direct_per_s_c32",
        "lookup_ratio_c32",
        "lookup_p99_ms_c32",
        "audit_appends_per_s_sqlite",
        "audit_appends_per_s_pg",
        "bulk_unmapped_rows_per_s",
        "verify_entries",
        "verify_seconds",
        "verify_batch_per_s",
        "verify_batch_direct_per_s",
        "verify_batch_ratio",
        "replicas_lookup_ratio",
        "replicas_appends_ratio",
        "lookup_per_s_c32_pg_store",
        "lookup_p99_ms_c32_pg_store",
        "subscribe_catchup_ratio",
        "subscribe_latency_p50_ms",
        "subscribe_latency_p99_ms",
        "subscribe_updates",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert_eq!(json["rows"], 2_000);
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    for prefix in ["broker_start_s_", "broker_first_start_s_"] {
        assert!(
            keys.iter().any(|k| k.starts_with(prefix)),
            "no {prefix}<entries> in {json}"
        );
    }
}
