//! The broker's checkpointer: keys created on first start, checkpoints
//! signed every N entries and at shutdown, tiles built at start for a store
//! without them, and a refusal to start on a log that no longer matches its
//! latest checkpoint.

use std::path::Path;
use std::time::Duration;

use jembatan_broker::{Broker, BrokerConfig};
use jembatan_core::{AuditEntry, Decision, EntryKind, ExchangeStatus, Identity, Role};
use jembatan_store::verify::verify;
use jembatan_tlog::note::Verifier;

fn entry(i: u64) -> AuditEntry {
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

/// Rewrites entry `seq` of the stopped broker's store, as a rogue operator
/// with write access would (the append-only trigger dropped first).
async fn rewrite_entry(config: &BrokerConfig, seq: u64) {
    let store = jembatan_store::Store::connect(config.store.as_str())
        .await
        .unwrap();
    for sql in [
        "DROP TRIGGER audit_log_no_update".to_owned(),
        format!("UPDATE audit_log SET entry = entry || ' ' WHERE seq = {seq}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }
    store.close().await;
}

fn config(dir: &Path, extra: &str) -> BrokerConfig {
    let certs = dir.join("certs");
    let tls = if certs.exists() {
        jembatan_pki::TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join("broker.pem"),
            key: certs.join("broker-key.pem"),
            crl: None,
        }
    } else {
        let broker = Identity::new(Role::Broker, None).unwrap();
        let issued = jembatan_pki::dev_pki(&certs, std::slice::from_ref(&broker)).unwrap();
        issued[0].1.clone()
    };
    let text = format!(
        "version = 1\nlisten = \"127.0.0.1:0\"\nstore = \"broker.db\"\naudit_key = \"audit.key\"\n{extra}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        tls.ca.display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    BrokerConfig::from_toml(&text, dir).unwrap()
}

async fn wait_for_checkpoint(broker: &Broker, size: u64) {
    for _ in 0..200 {
        let latest = broker.store().latest_checkpoint().await.unwrap();
        if latest.is_some_and(|c| c.size >= size) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no checkpoint of size {size} was stored");
}

#[tokio::test]
async fn checkpoints_are_signed_every_n_entries_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "checkpoint_every = 5\ncheckpoint_interval = \"1h\"\nlog_origin = \"test.example/log\"",
    );
    let broker = Broker::start(&config).await.unwrap();

    // the key pair was created, the private half readable by its owner only
    let key_path = dir.path().join("checkpoint.key");
    let private = std::fs::read_to_string(&key_path).unwrap();
    assert!(
        private.starts_with("PRIVATE+KEY+test.example/log+"),
        "{private}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public: Verifier = std::fs::read_to_string(dir.path().join("checkpoint.key.pub"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(&public, broker.checkpoint_verifier());

    for i in 0..7 {
        broker.audit().append(entry(i)).await.unwrap();
    }
    wait_for_checkpoint(&broker, 5).await;
    // nothing to sign twice
    let latest = broker.store().latest_checkpoint().await.unwrap().unwrap();
    assert!(latest.size >= 5);
    assert_eq!(
        broker.checkpoint_now().await.unwrap(),
        Some(7).filter(|_| latest.size < 7)
    );
    assert_eq!(broker.checkpoint_now().await.unwrap(), None);
    broker.audit().append(entry(7)).await.unwrap();
    broker.shutdown().await.unwrap();

    let store = jembatan_store::Store::connect(config.store.as_str())
        .await
        .unwrap();
    let report = verify(&store, &public).await.unwrap();
    assert_eq!(report.size, 8);
    assert_eq!(store.latest_checkpoint().await.unwrap().unwrap().size, 8);
    store.close().await;

    // a restart reuses the key and picks the tree up where it was
    let broker = Broker::start(&config).await.unwrap();
    assert_eq!(broker.checkpoint_verifier(), &public);
    broker.audit().append(entry(8)).await.unwrap();
    assert_eq!(broker.checkpoint_now().await.unwrap(), Some(9));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn checkpoints_follow_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "checkpoint_interval = \"50ms\"");
    assert_eq!(config.checkpoint_every, 1000);
    assert_eq!(config.log_origin, "jembatan.local/audit-log");
    let broker = Broker::start(&config).await.unwrap();
    broker.audit().append(entry(0)).await.unwrap();
    broker.audit().append(entry(1)).await.unwrap();
    wait_for_checkpoint(&broker, 2).await;
    broker.shutdown().await.unwrap();
}

/// At start the entries after the last full tile are hashed from the log
/// (the root of the rest comes from the stored tiles): one of them
/// rewritten stops the broker from starting. Entries further back are
/// checked by `audit verify` and by every proof.
#[tokio::test]
async fn a_rewritten_entry_after_the_last_full_tile_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let broker = Broker::start(&config).await.unwrap();
    for i in 0..4 {
        broker.audit().append(entry(i)).await.unwrap();
    }
    broker.shutdown().await.unwrap();

    rewrite_entry(&config, 2).await;
    let err = Broker::start(&config).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "audit log checkpoints: checkpoint at size 4: root does not match the entries"
    );
}

/// A store written before tiles (or whose tiles are gone) gets them built
/// at start, from the entries, and the tree they give is checked against
/// the latest checkpoint: a rewritten tile stops the broker from starting.
#[tokio::test]
async fn tiles_are_built_at_start_and_checked_against_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let broker = Broker::start(&config).await.unwrap();
    let mut appends = tokio::task::JoinSet::new();
    for i in 0..600 {
        let audit = broker.audit().clone();
        appends.spawn(async move { audit.append(entry(i)).await.unwrap() });
    }
    while appends.join_next().await.is_some() {}
    broker.shutdown().await.unwrap();

    let store = jembatan_store::Store::connect(config.store.as_str())
        .await
        .unwrap();
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(latest.size, 600);
    // the checkpoint was signed over tiles that give its root
    assert_eq!(store.tiles_size().await.unwrap(), 600);
    assert_eq!(
        hex::encode(store.tiles_root(600).await.unwrap()),
        latest.root_hash
    );
    sqlx::query("DELETE FROM audit_tiles")
        .execute(store.pool())
        .await
        .unwrap();
    store.close().await;

    let broker = Broker::start(&config).await.unwrap();
    let store = broker.store().clone();
    assert_eq!(store.tiles_size().await.unwrap(), 600);
    assert_eq!(
        hex::encode(store.tiles_root(600).await.unwrap()),
        latest.root_hash
    );
    // the level-1 tile, which the root at 600 reads, rewritten
    sqlx::query("UPDATE audit_tiles SET hashes = zeroblob(64) WHERE level = 1 AND idx = 0")
        .execute(store.pool())
        .await
        .unwrap();
    broker.shutdown().await.unwrap();
    let err = Broker::start(&config).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "audit log checkpoints: checkpoint at size 600: root does not match the entries"
    );
}

#[tokio::test]
async fn a_key_named_for_another_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&config(dir.path(), "")).await.unwrap();
    broker.shutdown().await.unwrap();
    let err = Broker::start(&config(dir.path(), "log_origin = \"other.example/log\""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("but log_origin is"), "{err}");
}

#[test]
fn bad_checkpoint_settings_are_refused() {
    for (extra, want) in [
        ("checkpoint_every = 0", "checkpoint_every"),
        ("checkpoint_interval = \"0s\"", "checkpoint_interval"),
        ("log_origin = \"a b\"", "log_origin"),
        ("checkpoint_interval = \"soon\"", "checkpoint_interval"),
    ] {
        let text = format!(
            "version = 1\nlisten = \"127.0.0.1:0\"\nstore = \"b.db\"\naudit_key = \"k\"\n{extra}\n[tls]\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n"
        );
        let err = BrokerConfig::from_toml(&text, Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
}

/// A broker restarted on a store whose oldest entries were archived (while
/// it ran) starts from the tiles as before, numbers on, signs on, and the
/// log verifies from the archived point.
#[tokio::test]
async fn a_broker_starts_and_signs_on_after_its_oldest_entries_are_archived() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let broker = Broker::start(&config).await.unwrap();
    for i in 0..600 {
        broker.audit().append(entry(i)).await.unwrap();
    }
    assert_eq!(broker.checkpoint_now().await.unwrap(), Some(600));
    for i in 600..610 {
        broker.audit().append(entry(i)).await.unwrap();
    }
    let archive = dir.path().join("audit-0.jsonl");
    let archived = jembatan_store::archive::archive(
        broker.store(),
        broker.checkpoint_verifier(),
        &jembatan_store::archive::Bound::Below(605),
        &archive,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (archived.record.checkpoint, archived.record.up_to),
        (600, 512)
    );
    // the running broker signs on
    broker.audit().append(entry(610)).await.unwrap();
    assert_eq!(broker.checkpoint_now().await.unwrap(), Some(611));
    broker.shutdown().await.unwrap();

    let broker = Broker::start(&config).await.unwrap();
    let stored = broker.audit().append(entry(611)).await.unwrap();
    assert_eq!(stored.seq, 611);
    assert_eq!(broker.checkpoint_now().await.unwrap(), Some(612));
    let report = verify(broker.store(), broker.checkpoint_verifier())
        .await
        .unwrap();
    assert_eq!((report.size, report.archived), (612, 512));
    let file =
        jembatan_store::archive::verify_archive(&archive, broker.checkpoint_verifier()).unwrap();
    assert_eq!((file.from, file.to), (0, 600));
    broker.shutdown().await.unwrap();
}

/// Start checks only the latest checkpoint against the tiles: an entry
/// rewritten further back does not hold it up, and the re-check the
/// broker runs after start finds and names it. An untouched log passes.
#[tokio::test]
async fn the_recheck_after_start_finds_an_old_entry_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let broker = Broker::start(&config).await.unwrap();
    for i in 0..300 {
        broker.audit().append(entry(i)).await.unwrap();
    }
    let report = broker.log_rechecked().await.unwrap().unwrap();
    assert_eq!(report.archived, 0);
    broker.shutdown().await.unwrap();

    let broker = Broker::start(&config).await.unwrap();
    let report = broker.log_rechecked().await.unwrap().unwrap();
    assert_eq!(report.size, 300);
    assert_eq!(report.checkpoints, 1);
    broker.shutdown().await.unwrap();

    rewrite_entry(&config, 3).await;
    let broker = Broker::start(&config).await.unwrap();
    let err = broker.log_rechecked().await.unwrap().unwrap_err();
    assert_eq!(err.position(), Some(3), "{err}");
    broker.shutdown().await.unwrap();

    // off: nothing runs
    let off = BrokerConfig {
        recheck_log: false,
        ..config.clone()
    };
    let broker = Broker::start(&off).await.unwrap();
    assert!(broker.log_rechecked().await.is_none());
    broker.shutdown().await.unwrap();
}
