//! Archiving old ranges of the audit log, on SQLite and, when
//! `JEMBATAN_TEST_POSTGRES_URL` is set, PostgreSQL: the file verifies on
//! its own with the checkpoint key, the store keeps verifying from where
//! its entries resume, numbering goes on after an archived range (also one
//! that took every stored entry), and nothing but archived entries can
//! leave.

mod common;

use common::{drop_postgres, fresh_postgres};
use jembatan_store::archive::{ArchiveError, Bound, Progress, archive, verify_archive};
use jembatan_store::verify::{catch_up_tiles, verify};
use jembatan_store::{AuditLog, Store};
use jembatan_tlog::note::{Checkpoint, Signer};

const ORIGIN: &str = "jembatan.local/audit-log";

fn signer() -> Signer {
    Signer::from_seed(ORIGIN, &[7; 32]).unwrap()
}

/// Entry `i` of the shared fixture, naming subject `s{i % 10}`.
fn entry(i: usize) -> jembatan_core::AuditEntry {
    let mut e = common::entry(i);
    e.subject_hash = Some(format!("{:064x}", i % 10));
    e
}

/// Appends entries `from..to`, one at a time (so their seqs are `from..to`).
async fn append(log: &AuditLog, from: usize, to: usize) {
    for i in from..to {
        log.append(entry(i)).await.unwrap();
    }
}

/// Brings the tiles up to the log, as the broker does, and signs a
/// checkpoint of the whole log.
async fn checkpoint(store: &Store, signer: &Signer) -> u64 {
    let mut tiles = store.tile_builder().await.unwrap();
    catch_up_tiles(store, &mut tiles, None).await.unwrap();
    let size = tiles.size();
    let note = Checkpoint::new(ORIGIN, size, tiles.root())
        .sign(signer)
        .unwrap();
    assert!(
        store
            .add_checkpoint(size, &hex::encode(tiles.root()), &note)
            .await
            .unwrap()
    );
    size
}

async fn count(store: &Store, sql: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// Stored subject index rows below `seq`, with a SQLite store's index
/// brought up to its log first.
async fn subjects_below(store: &Store, seq: u64) -> i64 {
    store.catch_up_subjects().await.unwrap();
    count(
        store,
        &format!("SELECT COUNT(*) FROM audit_subjects WHERE seq < {seq}"),
    )
    .await
}

async fn archives_ranges_that_verify_on_their_own(store: Store, dir: &std::path::Path) {
    let key = signer();
    let verifier = key.verifier();
    let log = AuditLog::start(store.clone());
    append(&log, 0, 300).await;
    assert_eq!(checkpoint(&store, &key).await, 300);
    append(&log, 300, 600).await;
    checkpoint(&store, &key).await;
    append(&log, 600, 700).await;
    checkpoint(&store, &key).await;
    append(&log, 700, 1000).await;
    let before = verify(&store, &verifier).await.unwrap();
    assert_eq!((before.size, before.archived), (1000, 0));
    // every entry's index rows are stored, for the archive to remove
    assert_eq!(subjects_below(&store, 1000).await, 1000);

    // nothing is under a checkpoint this low
    let err = archive(
        &store,
        &verifier,
        &Bound::Below(299),
        &dir.join("none"),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Nothing(_)), "{err}");
    assert!(!dir.join("none").exists());

    // entries below 650: up to the checkpoint at 600, of which 512 leave
    let first = dir.join("audit-0.jsonl");
    let mut seen = Vec::new();
    let done = archive(&store, &verifier, &Bound::Below(650), &first, &mut |p| {
        seen.push(p)
    })
    .await
    .unwrap();
    assert_eq!(
        (
            done.record.from_seq,
            done.record.checkpoint,
            done.record.up_to
        ),
        (0, 600, 512)
    );
    assert_eq!(done.entries, 600);
    assert!(seen.contains(&Progress::Writing {
        done: 600,
        total: 600
    }));
    assert!(seen.contains(&Progress::Removing {
        done: 512,
        total: 512
    }));
    assert!(!dir.join("audit-0.jsonl.partial").exists());
    assert_eq!(store.archives().await.unwrap(), vec![done.record.clone()]);
    assert_eq!(store.archived_up_to().await.unwrap(), 512);
    assert_eq!(store.audit_log_size().await.unwrap(), 1000);
    assert_eq!(store.raw_entries(0, 1).await.unwrap()[0].seq, 512);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_log").await, 488);
    assert_eq!(subjects_below(&store, 512).await, 0);
    assert_eq!(subjects_below(&store, 1000).await, 488);

    let file = verify_archive(&first, &verifier).unwrap();
    assert_eq!((file.from, file.to, file.checkpoints), (0, 600, 2));
    assert_eq!(file.file_sha256, done.record.file_sha256);
    let after = verify(&store, &verifier).await.unwrap();
    assert_eq!(
        (after.size, after.root, after.archived, after.checkpoints),
        (1000, before.root, 512, 3)
    );

    // another archive file will not overwrite this one
    let err = archive(&store, &verifier, &Bound::Below(1000), &first, &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Exists(_)), "{err}");

    // numbering goes on; the next range starts where the first left off
    append(&log, 1000, 1020).await;
    assert_eq!(checkpoint(&store, &key).await, 1020);
    let second = dir.join("audit-1.jsonl");
    let done = archive(
        &store,
        &verifier,
        &Bound::Before("2100-01-01T00:00:00.000000Z".into()),
        &second,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (
            done.record.from_seq,
            done.record.checkpoint,
            done.record.up_to
        ),
        (512, 1020, 768)
    );
    let file = verify_archive(&second, &verifier).unwrap();
    assert_eq!((file.from, file.to, file.checkpoints), (512, 1020, 3));
    assert_eq!(verify(&store, &verifier).await.unwrap().archived, 768);

    // a log archived to its last entry numbers on from there
    append(&log, 1020, 1024).await;
    assert_eq!(checkpoint(&store, &key).await, 1024);
    archive(
        &store,
        &verifier,
        &Bound::Below(1024),
        &dir.join("audit-2.jsonl"),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM audit_log").await, 0);
    assert_eq!(store.audit_log_size().await.unwrap(), 1024);
    assert_eq!(log.append(entry(1024)).await.unwrap().seq, 1024);
    let last = verify(&store, &verifier).await.unwrap();
    assert_eq!((last.size, last.archived), (1025, 1024));

    // only archived entries leave; the record of archives stays
    for sql in [
        "DELETE FROM audit_log WHERE seq = 1024",
        "UPDATE audit_archives SET up_to = 2000",
        "DELETE FROM audit_archives",
    ] {
        let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    store.close().await;
}

/// A changed entry, a dropped line or another key: the file does not
/// verify, naming what is wrong.
async fn a_changed_archive_does_not_verify(store: Store, dir: &std::path::Path) {
    let key = signer();
    let log = AuditLog::start(store.clone());
    append(&log, 0, 300).await;
    checkpoint(&store, &key).await;
    let path = dir.join("a.jsonl");
    archive(
        &store,
        &key.verifier(),
        &Bound::Below(300),
        &path,
        &mut |_| {},
    )
    .await
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 301);

    let changed = text.replacen("\"rows\":17", "\"rows\":71", 1);
    let cases = [
        (
            changed,
            "the entry shown is not the canonical entry".to_owned(),
        ),
        (
            [&lines[..10], &lines[11..]].concat().join("\n"),
            "entry 9 missing".to_owned(),
        ),
        (
            lines[..200].join("\n"),
            "the file ends before entry 199".to_owned(),
        ),
        (format!("{text}{}\n", lines[5]), "more lines".to_owned()),
    ];
    for (i, (bad, want)) in cases.into_iter().enumerate() {
        let bad_path = dir.join(format!("bad-{i}.jsonl"));
        std::fs::write(&bad_path, bad).unwrap();
        let err = verify_archive(&bad_path, &key.verifier()).unwrap_err();
        assert!(err.to_string().contains(&want), "case {i}: {err}");
    }
    let other = Signer::from_seed(ORIGIN, &[8; 32]).unwrap().verifier();
    let err = verify_archive(&path, &other).unwrap_err();
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );
    store.close().await;
}

async fn sqlite(dir: &std::path::Path) -> Store {
    Store::connect(dir.join("broker.db").to_str().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_archives_ranges_that_verify_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    archives_ranges_that_verify_on_their_own(sqlite(dir.path()).await, dir.path()).await;
}

#[tokio::test]
async fn sqlite_a_changed_archive_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    a_changed_archive_does_not_verify(sqlite(dir.path()).await, dir.path()).await;
}

#[tokio::test]
async fn postgres_archives_ranges_that_verify_on_their_own() {
    let Some((store, admin, drop_db)) = fresh_postgres("jembatan_archive").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    archives_ranges_that_verify_on_their_own(store.clone(), dir.path()).await;
    drop_postgres(store, admin, drop_db).await;
}

#[tokio::test]
async fn postgres_a_changed_archive_does_not_verify() {
    let Some((store, admin, drop_db)) = fresh_postgres("jembatan_archive_changed").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    a_changed_archive_does_not_verify(store.clone(), dir.path()).await;
    drop_postgres(store, admin, drop_db).await;
}

/// Entries the triggers refuse to let go of: without a recorded archive,
/// not one.
#[tokio::test]
async fn no_entry_leaves_before_its_range_is_archived() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let log = AuditLog::start(store.clone());
    append(&log, 0, 10).await;
    let err = sqlx::query("DELETE FROM audit_log WHERE seq = 0")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = archive(
        &store,
        &signer().verifier(),
        &Bound::Below(10),
        &dir.path().join("x"),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Nothing(_)), "{err}");
    store.close().await;
}
