//! Offline verification of the audit log against its signed checkpoints,
//! and the tampering a rogue operator with write access could try.

mod common;

use common::entry;
use jembatan_core::{AuditEntry, ExchangeStatus};
use jembatan_store::verify::{VerifyError, leaf_hashes, verify};
use jembatan_store::{AuditLog, Store};
use jembatan_tlog::merkle::{self, CompactRange};
use jembatan_tlog::note::{Checkpoint, Signer, Verifier};

const ORIGIN: &str = "jembatan.local/audit-log";

fn signer(seed: u8) -> Signer {
    Signer::from_seed(ORIGIN, &[seed; 32]).unwrap()
}

async fn checkpoint(store: &Store, signer: &Signer, size: u64) {
    let leaves = leaf_hashes(store, size).await.unwrap();
    let root = merkle::root(&leaves);
    let note = Checkpoint::new(ORIGIN, size, root).sign(signer).unwrap();
    assert!(
        store
            .add_checkpoint(size, &hex::encode(root), &note)
            .await
            .unwrap()
    );
}

/// 25 entries with checkpoints at sizes 10 and 20, the append-only triggers
/// dropped as a rogue operator would.
async fn fixture() -> (tempfile::TempDir, Store, Verifier) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(dir.path().join("broker.db").to_str().unwrap())
        .await
        .unwrap();
    let log = AuditLog::start(store.clone());
    let key = signer(1);
    for i in 0..25 {
        log.append(entry(i)).await.unwrap();
        if i == 9 || i == 19 {
            checkpoint(&store, &key, i as u64 + 1).await;
        }
    }
    for trigger in [
        "audit_log_no_update",
        "audit_log_no_delete",
        "checkpoints_no_update",
        "checkpoints_no_delete",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {trigger}")))
            .execute(store.pool())
            .await
            .unwrap();
    }
    (dir, store, key.verifier())
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(store.pool())
        .await
        .unwrap();
}

async fn set_entry(store: &Store, seq: i64, bytes: &[u8], with_hash: bool) {
    let sql = if with_hash {
        "UPDATE audit_log SET entry = $1, entry_sha256 = $2 WHERE seq = $3"
    } else {
        "UPDATE audit_log SET entry = $1, entry_sha256 = entry_sha256 || $2 WHERE seq = $3"
    };
    let hash = if with_hash {
        AuditEntry::sha256(bytes)
    } else {
        String::new()
    };
    sqlx::query(sql)
        .bind(bytes.to_vec())
        .bind(hash)
        .bind(seq)
        .execute(store.pool())
        .await
        .unwrap();
}

async fn expect(store: &Store, verifier: &Verifier, want: &str) -> VerifyError {
    let err = verify(store, verifier).await.unwrap_err();
    assert_eq!(err.to_string(), want);
    err
}

#[tokio::test]
async fn untampered_log_verifies_with_every_checkpoint() {
    let (_dir, store, verifier) = fixture().await;
    let report = verify(&store, &verifier).await.unwrap();
    assert_eq!(report.size, 25);
    assert_eq!(report.checkpoints, 2);
    let leaves = leaf_hashes(&store, 25).await.unwrap();
    assert_eq!(report.root, merkle::root(&leaves));
    // the leaf is the RFC 6962 hash of the stored canonical bytes
    let first = store.raw_entries(0, 1).await.unwrap();
    assert_eq!(leaves[0], merkle::leaf_hash(&entry(0).canonical_bytes()));
    assert_eq!(first[0].entry, entry(0).canonical_bytes());
    // checkpoints read back in order
    let sizes: Vec<u64> = store
        .checkpoints()
        .await
        .unwrap()
        .iter()
        .map(|c| c.size)
        .collect();
    assert_eq!(sizes, [10, 20]);
    assert_eq!(store.latest_checkpoint().await.unwrap().unwrap().size, 20);
    assert!(store.checkpoint_at(15).await.unwrap().is_none());
}

#[tokio::test]
async fn checkpoints_never_shrink_or_repeat() {
    let (_dir, store, _) = fixture().await;
    assert!(!store.add_checkpoint(20, "00", "x").await.unwrap());
    assert!(!store.add_checkpoint(15, "00", "x").await.unwrap());
    assert!(store.add_checkpoint(21, "00", "x").await.unwrap());
    assert_eq!(store.latest_checkpoint().await.unwrap().unwrap().size, 21);
}

#[tokio::test]
async fn an_edited_entry_is_named() {
    // bytes changed, hash left alone
    let (_dir, store, verifier) = fixture().await;
    let mut edited = entry(17);
    edited.rows = 9999;
    set_entry(&store, 17, &edited.canonical_bytes(), false).await;
    expect(
        &store,
        &verifier,
        "entry 17: stored entry_sha256 does not match the entry bytes",
    )
    .await;

    // bytes and hash changed consistently: only the Merkle root tells
    let (_dir, store, verifier) = fixture().await;
    set_entry(&store, 17, &edited.canonical_bytes(), true).await;
    expect(
        &store,
        &verifier,
        "checkpoint at size 20: root does not match the entries",
    )
    .await;

    // an indexed field changed in the bytes but not in its column
    let (_dir, store, verifier) = fixture().await;
    let mut edited = entry(17);
    edited.status = ExchangeStatus::Failed;
    set_entry(&store, 17, &edited.canonical_bytes(), true).await;
    expect(
        &store,
        &verifier,
        "entry 17: stored bytes do not match the indexed column status",
    )
    .await;

    // bytes that are not canonical JSON
    let (_dir, store, verifier) = fixture().await;
    let mut bytes = entry(3).canonical_bytes();
    bytes.push(b' ');
    set_entry(&store, 3, &bytes, true).await;
    let err = verify(&store, &verifier).await.unwrap_err();
    assert!(
        matches!(err, VerifyError::NotCanonical { seq: 3, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn an_edited_column_is_named() {
    for (sql, seq, column) in [
        (
            "UPDATE audit_log SET status = 'failed' WHERE seq = 17",
            17,
            "status",
        ),
        (
            "UPDATE audit_log SET caller = 'agency:x' WHERE seq = 2",
            2,
            "caller",
        ),
        (
            "UPDATE audit_log SET dataset = NULL WHERE seq = 22",
            22,
            "dataset",
        ),
        (
            "UPDATE audit_log SET decision = 'allow' WHERE seq = 0",
            0,
            "decision",
        ),
        (
            "UPDATE audit_log SET exchange_id = 'y' WHERE seq = 5",
            5,
            "exchange_id",
        ),
        // Values of another type, or text that is not UTF-8.
        (
            "UPDATE audit_log SET caller = X'6167656e6379' WHERE seq = 3",
            3,
            "caller",
        ),
        (
            "UPDATE audit_log SET kind = CAST(X'ff' AS TEXT) WHERE seq = 11",
            11,
            "kind",
        ),
        (
            "UPDATE audit_log SET consumer = 7 WHERE seq = 24",
            24,
            "consumer",
        ),
    ] {
        let (_dir, store, verifier) = fixture().await;
        exec(&store, sql).await;
        expect(
            &store,
            &verifier,
            &format!("entry {seq}: stored bytes do not match the indexed column {column}"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_deleted_entry_is_named() {
    let (_dir, store, verifier) = fixture().await;
    exec(&store, "DELETE FROM audit_log WHERE seq = 5").await;
    expect(&store, &verifier, "entry 5 missing: seq jumps from 4 to 6").await;

    let (_dir, store, verifier) = fixture().await;
    exec(&store, "DELETE FROM audit_log WHERE seq = 0").await;
    expect(
        &store,
        &verifier,
        "entry 0 missing: the log starts at seq 1",
    )
    .await;

    // Gaps at the end of the slices and pages the log is read in.
    for (delete, want) in [
        ("seq = 4", "entry 4 missing: seq jumps from 3 to 5"),
        ("seq IN (8, 9)", "entry 8 missing: seq jumps from 7 to 10"),
        (
            "seq >= 12 AND seq < 20",
            "entry 12 missing: seq jumps from 11 to 20",
        ),
    ] {
        let (_dir, store, verifier) = fixture().await;
        exec(&store, &format!("DELETE FROM audit_log WHERE {delete}")).await;
        expect(&store, &verifier, want).await;
    }

    // truncating the tail below a checkpoint
    let (_dir, store, verifier) = fixture().await;
    exec(&store, "DELETE FROM audit_log WHERE seq >= 15").await;
    expect(
        &store,
        &verifier,
        "checkpoint at size 20: the log has only 15 entries",
    )
    .await;
}

#[tokio::test]
async fn a_retyped_hash_is_named() {
    let (_dir, store, verifier) = fixture().await;
    exec(
        &store,
        "UPDATE audit_log SET entry_sha256 = X'00' WHERE seq = 13",
    )
    .await;
    expect(
        &store,
        &verifier,
        "entry 13: stored entry_sha256 does not match the entry bytes",
    )
    .await;
}

#[tokio::test]
async fn reordered_entries_are_detected() {
    let (_dir, store, verifier) = fixture().await;
    exec(&store, "UPDATE audit_log SET seq = -1 WHERE seq = 3").await;
    exec(&store, "UPDATE audit_log SET seq = 3 WHERE seq = 4").await;
    exec(&store, "UPDATE audit_log SET seq = 4 WHERE seq = -1").await;
    expect(
        &store,
        &verifier,
        "checkpoint at size 10: root does not match the entries",
    )
    .await;
}

#[tokio::test]
async fn forged_checkpoints_are_named() {
    // a note signed by another key
    let (_dir, store, verifier) = fixture().await;
    let leaves = leaf_hashes(&store, 20).await.unwrap();
    let note = Checkpoint::new(ORIGIN, 20, merkle::root(&leaves))
        .sign(&signer(2))
        .unwrap();
    sqlx::query("UPDATE checkpoints SET note = $1 WHERE size = 20")
        .bind(note)
        .execute(store.pool())
        .await
        .unwrap();
    let err = expect(
        &store,
        &verifier,
        &format!(
            "checkpoint at size 20: signature does not verify with key {}: no signature by {ORIGIN}+{:08x}",
            verifier.to_key_string(),
            verifier.key_id()
        ),
    )
    .await;
    assert_eq!(err.position(), Some(20));

    // a note by the right key for another root (the whole log rewritten
    // after the first checkpoint, say)
    let (_dir, store, verifier) = fixture().await;
    let mut range = CompactRange::new();
    range.extend(leaves[..19].iter().copied()).unwrap();
    range.push(merkle::leaf_hash(b"forged")).unwrap();
    let forged = range.root();
    let note = Checkpoint::new(ORIGIN, 20, forged)
        .sign(&signer(1))
        .unwrap();
    sqlx::query("UPDATE checkpoints SET note = $1, root_hash = $2 WHERE size = 10")
        .bind(note.clone())
        .bind(hex::encode(forged))
        .execute(store.pool())
        .await
        .unwrap();
    // a note for size 20 stored at size 10: named as a mismatch
    let err = verify(&store, &verifier).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint at size 10: note is for size 20"
    );
    let (_dir, store, verifier) = fixture().await;
    sqlx::query("UPDATE checkpoints SET note = $1, root_hash = $2 WHERE size = 20")
        .bind(note)
        .bind(hex::encode(forged))
        .execute(store.pool())
        .await
        .unwrap();
    expect(
        &store,
        &verifier,
        "checkpoint at size 20: root does not match the entries",
    )
    .await;

    // the row's root column edited alone
    let (_dir, store, verifier) = fixture().await;
    exec(
        &store,
        "UPDATE checkpoints SET root_hash = 'ab' WHERE size = 10",
    )
    .await;
    expect(
        &store,
        &verifier,
        "checkpoint at size 10: root does not match the entries",
    )
    .await;
}

#[tokio::test]
async fn open_existing_refuses_to_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing.db");
    let err = Store::open_existing(path.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!path.exists());
    let err = Store::open_existing(&format!("sqlite:{}", path.display()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!path.exists());
}

#[tokio::test]
async fn postgres_checkpoints_verify_and_never_shrink() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let admin = Store::admin_pool(&url).await.unwrap();
    let name = format!("jembatan_verify_{}", std::process::id());
    exec_admin(&admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
    exec_admin(&admin, &format!("CREATE DATABASE {name}")).await;
    let (base, _) = url.rsplit_once('/').unwrap();
    let store = Store::connect(&format!("{base}/{name}")).await.unwrap();
    let log = AuditLog::start(store.clone());
    let key = signer(1);
    for i in 0..12 {
        log.append(entry(i)).await.unwrap();
    }
    checkpoint(&store, &key, 5).await;
    checkpoint(&store, &key, 12).await;
    assert!(!store.add_checkpoint(12, "00", "x").await.unwrap());
    assert!(!store.add_checkpoint(7, "00", "x").await.unwrap());
    let report = verify(&store, &key.verifier()).await.unwrap();
    assert_eq!((report.size, report.checkpoints), (12, 2));
    let err = sqlx::query("UPDATE checkpoints SET note = 'x'")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    // What a rogue operator could do with the triggers dropped is named,
    // read through PostgreSQL's own reader.
    exec(&store, "DROP TRIGGER audit_log_no_update ON audit_log").await;
    exec(
        &store,
        "UPDATE audit_log SET purpose = 'other' WHERE seq = 7",
    )
    .await;
    expect(
        &store,
        &key.verifier(),
        "entry 7: stored bytes do not match the indexed column purpose",
    )
    .await;
    exec(&store, "UPDATE audit_log SET purpose = NULL WHERE seq = 7").await;
    let err = verify(&store, &key.verifier()).await.unwrap_err();
    assert_eq!(err.position(), Some(7), "{err}");
    exec(
        &store,
        "UPDATE audit_log SET entry = entry || '\\x20'::bytea WHERE seq = 3",
    )
    .await;
    expect(
        &store,
        &key.verifier(),
        "entry 3: stored bytes are not a canonical entry: entry bytes are not in canonical form",
    )
    .await;
    exec(&store, "DELETE FROM audit_log WHERE seq IN (1, 2, 3)").await;
    expect(
        &store,
        &key.verifier(),
        "entry 1 missing: seq jumps from 0 to 4",
    )
    .await;
    store.close().await;
    exec_admin(&admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
}

async fn exec_admin(admin: &sqlx::AnyPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(admin)
        .await
        .unwrap();
}
