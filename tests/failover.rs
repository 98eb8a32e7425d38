//! The provider's side through the real binaries: an adapter killed with
//! SIGKILL is passed over for the provider's next adapter endpoint, the
//! log naming the endpoint that served each exchange and still verifying;
//! and a consumer's deadline stops the provider's PostgreSQL statement.

use std::time::{Duration, Instant};

use jembatan_e2e::{Cluster, PgStore, Spec, agreement, lookup, query, run_query};
use jembatan_proto::v1 as pb;
use serde_json::Value;
use tonic::Code;

/// The ends of exchanges on the log (completion and answered entries), in
/// log order, as (status, adapter endpoint).
fn ends(entries: &[Value]) -> Vec<(String, Option<String>)> {
    entries
        .iter()
        .map(|e| &e["entry"])
        .filter(|e| e["kind"] == "completion" || e["kind"] == "answered")
        .map(|e| {
            (
                e["status"].as_str().unwrap().to_owned(),
                e["adapter_endpoint"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_killed_adapter_is_passed_over_and_the_log_names_the_endpoint_that_served() {
    let Some(pg) = PgStore::fresh("jembatan_e2e_failover").await else {
        return;
    };
    let mut spec = Spec::new(500, 1, "", &agreement("a1", "dinsos", ""));
    spec.adapters = 2;
    let mut cluster = Cluster::start_spec(&pg.url, &spec).await;
    let [first, second] = [0, 1].map(|i| cluster.adapter_endpoints[i].clone());
    let mut dinsos = cluster.exchange(0, "dinsos").await;

    // both up: the first listed serves
    let seen = run_query(&mut dinsos, query(0)).await;
    assert!(seen.end.is_none(), "{:?}", seen.end);
    assert_eq!(seen.records, 500);
    assert!(dinsos.lookup(lookup(7)).await.unwrap().into_inner().found);

    // the first dies: the broker's connection to it breaks, and the next
    // exchanges go to the second
    cluster.kill_adapter(0);
    let seen = run_query(&mut dinsos, query(0)).await;
    assert!(seen.end.is_none(), "{:?}", seen.end);
    assert_eq!(seen.records, 500);
    assert!(seen.receipt.is_some());
    assert!(dinsos.lookup(lookup(8)).await.unwrap().into_inner().found);
    let seen = run_query(&mut dinsos, query(10)).await;
    assert_eq!(seen.records, 10);

    let ok = |endpoint: &str| ("ok".to_owned(), Some(endpoint.to_owned()));
    assert_eq!(
        ends(&cluster.export()),
        vec![
            ok(&first),
            ok(&first),
            ok(&second),
            ok(&second),
            ok(&second)
        ]
    );
    assert!(
        cluster
            .logged()
            .contains("adapter endpoint unavailable; trying the next"),
        "{}",
        cluster.logged()
    );
    cluster.stop();
    let (code, words) = cluster.verify();
    assert_eq!(code, Some(0), "{words}");
    drop(cluster);
    pg.drop_db().await;
}

#[tokio::test]
async fn the_consumers_deadline_stops_the_providers_postgres_statement() {
    let Some(store) = PgStore::fresh("jembatan_e2e_deadline_store").await else {
        return;
    };
    let Some(provider) = PgStore::fresh("jembatan_e2e_deadline_provider").await else {
        return;
    };
    let db = sqlx::PgPool::connect(&provider.url).await.unwrap();
    sqlx::query(
        "CREATE VIEW lambat AS SELECT g AS id FROM generate_series(1, 3) AS g \
         CROSS JOIN LATERAL pg_sleep(60)",
    )
    .execute(&db)
    .await
    .unwrap();
    let mut spec = Spec::new(
        0,
        1,
        "",
        r#"
[[datasets]]
id = "prov.lambat"
[[agreements]]
id = "slow"
provider = "prov"
consumer = "dinsos"
dataset = "prov.lambat"
fields = ["id"]
purpose = "bansos"
valid_from = "2020-01-01"
status = "approved"
"#,
    );
    spec.database = Some(provider.url.clone());
    spec.adapter_datasets =
        "[[datasets]]\nname = \"lambat\"\ntable = \"lambat\"\ncolumns = [\"id\"]\n".into();
    let mut cluster = Cluster::start_spec(&store.url, &spec).await;
    let mut dinsos = cluster.exchange(0, "dinsos").await;

    let running = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE state = 'active' AND query LIKE '%lambat%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    let deadline = Duration::from_millis(1500);
    let mut request = tonic::Request::new(pb::QueryRequest {
        dataset: "prov.lambat".into(),
        purpose: "bansos".into(),
        fields: vec!["id".into()],
        ..Default::default()
    });
    request.set_timeout(deadline);
    let started = Instant::now();
    let ended = match dinsos.query(request).await {
        Ok(response) => match response.into_inner().message().await {
            Ok(Some(_)) => panic!("the slow view sends no record in time"),
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => status,
        },
        Err(status) => status,
    };
    let answered = started.elapsed();
    assert!(
        matches!(ended.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{ended:?}"
    );
    assert!(
        answered < deadline + Duration::from_secs(2),
        "answered after {answered:?}"
    );
    // the statement leaves the provider's database within a second
    let gone = Instant::now();
    while running().await > 0 {
        assert!(
            gone.elapsed() < Duration::from_secs(1),
            "the provider's statement still runs {:?} after the deadline",
            gone.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!(
        "deadline {} ms: answered after {} ms, statement gone {} ms later",
        deadline.as_millis(),
        answered.as_millis(),
        gone.elapsed().as_millis()
    );
    // the exchange ends on the log, cancelled
    let mut ends_seen = Vec::new();
    for _ in 0..100 {
        ends_seen = ends(&cluster.export());
        if !ends_seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ends_seen.len(), 1, "{ends_seen:?}");
    assert_eq!(ends_seen[0].0, "cancelled");
    cluster.stop();
    drop(cluster);
    db.close().await;
    provider.drop_db().await;
    store.drop_db().await;
}
