//! The audit log's tree tiles on SQLite and, when
//! `JEMBATAN_TEST_POSTGRES_URL` is set, PostgreSQL: built from the entries
//! in steps (also on a store written before tiles), they give the same
//! roots and proofs as the leaves, a builder resumes from them, and replicas
//! writing the same tiles never shorten them.

use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus};
use jembatan_store::verify::{catch_up_tiles, leaf_hashes, tiles_root_with_tail};
use jembatan_store::{AuditLog, Store};
use jembatan_tlog::merkle::tile::{
    TileBuilder, needed_for_consistency, needed_for_inclusion, needed_for_root,
};
use jembatan_tlog::merkle::{consistency_proof, inclusion_proof, root};

fn entry(i: usize) -> AuditEntry {
    AuditEntry {
        v: 1,
        kind: EntryKind::Decision,
        exchange_id: format!("x{i}"),
        time: "2026-01-01T00:00:00.000000Z".into(),
        operation: "query".into(),
        caller: "agency:dinsos".into(),
        consumer: Some("dinsos".into()),
        provider: None,
        dataset: Some("prov.data".into()),
        purpose: Some("bansos".into()),
        fields: vec![],
        filter: None,
        subject_hash: None,
        subjects: Vec::new(),
        unregistered_purpose: None,
        limit: None,
        agreement_id: None,
        agreement_terms_sha256: None,
        translation: None,
        decision: Decision::Deny,
        reasons: vec![],
        status: ExchangeStatus::Denied,
        rows: i as u64,
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

/// Entries appended concurrently, so the appender writes them in batches.
async fn append(store: &Store, from: usize, to: usize) {
    let log = AuditLog::start(store.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for i in from..to {
        let log = log.clone();
        tasks.spawn(async move { log.append(entry(i)).await.unwrap() });
    }
    while tasks.join_next().await.is_some() {}
}

/// Sizes the tiles are built to, one step after another: tile boundaries.
const STEPS: [u64; 8] = [1, 255, 256, 257, 300, 511, 512, 600];

async fn tiles_give_the_reference_proofs(store: Store) {
    // a store written before tiles: entries, no tiles
    append(&store, 0, 600).await;
    assert_eq!(store.tiles_size().await.unwrap(), 0);
    let leaves = leaf_hashes(&store, 600).await.unwrap();

    let mut builder = store.tile_builder().await.unwrap();
    assert_eq!(builder.size(), 0);
    for step in STEPS {
        catch_up_tiles(&store, &mut builder, Some(step))
            .await
            .unwrap();
        assert_eq!(store.tiles_size().await.unwrap(), step);
        let prefix = &leaves[..step as usize];
        assert_eq!(builder.root(), root(prefix));
        assert_eq!(store.tiles_root(step).await.unwrap(), root(prefix));
        assert_eq!(
            tiles_root_with_tail(&store, step).await.unwrap(),
            root(prefix)
        );
        let resumed = store.tile_builder().await.unwrap();
        assert_eq!(resumed.range(), builder.range(), "resumed at {step}");
        for size in [1, step / 2 + 1, step] {
            for index in [0, size / 3, size - 1] {
                let tiles = store
                    .tiles(&needed_for_inclusion(index, size))
                    .await
                    .unwrap();
                assert_eq!(
                    tiles.inclusion_proof(index, size).unwrap(),
                    inclusion_proof(&leaves, index, size).unwrap(),
                    "{index} in {size}"
                );
            }
            for old in [1, size / 2, size] {
                let tiles = store
                    .tiles(&needed_for_consistency(old, size))
                    .await
                    .unwrap();
                assert_eq!(
                    tiles.consistency_proof(old, size).unwrap(),
                    consistency_proof(&leaves, old, size).unwrap(),
                    "{old} to {size}"
                );
            }
        }
    }

    // a replica behind writes shorter copies of the same tiles: nothing
    // shrinks, and the tree still reads whole
    let mut behind = TileBuilder::new();
    catch_up_tiles(&store, &mut behind, Some(300))
        .await
        .unwrap();
    assert_eq!(store.tiles_size().await.unwrap(), 600);
    assert_eq!(store.tiles_root(600).await.unwrap(), root(&leaves));

    // the log grows and the tiles follow from where they are
    append(&store, 600, 700).await;
    let mut builder = store.tile_builder().await.unwrap();
    catch_up_tiles(&store, &mut builder, None).await.unwrap();
    assert_eq!(store.tiles_size().await.unwrap(), 700);
    let leaves = leaf_hashes(&store, 700).await.unwrap();
    assert_eq!(store.tiles_root(700).await.unwrap(), root(&leaves));
    let tiles = store.tiles(&needed_for_root(700)).await.unwrap();
    assert_eq!(tiles.root(700).unwrap(), root(&leaves));
}

#[tokio::test]
async fn sqlite_tiles_give_the_reference_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("b.db").to_str().unwrap())
        .await
        .unwrap();
    tiles_give_the_reference_proofs(store).await;
}

#[tokio::test]
async fn postgres_tiles_give_the_reference_proofs() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let admin = Store::admin_pool(&url).await.unwrap();
    let name = format!(
        "jembatan_tiles_{}_{:08x}",
        std::process::id(),
        rand_suffix()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    let store = Store::connect(&format!("{base}/{name}")).await.unwrap();
    tiles_give_the_reference_proofs(store.clone()).await;
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

/// A per-run suffix for database names (tests share the server).
fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ (t.as_secs() as u32)
}
