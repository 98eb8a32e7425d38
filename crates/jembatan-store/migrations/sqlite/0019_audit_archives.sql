-- Ranges of the audit log moved out of the store into archive files
-- (`jembatan audit archive`). A row says that the entries below `up_to`
-- have left `audit_log` (and their rows the subject index): they are in
-- the file whose SHA-256 is `file_sha256`, which holds the entries from
-- `from_seq` to the signed checkpoint at size `checkpoint` (at or above
-- `up_to`, which is a multiple of 256, so the tree's tiles below it are
-- full and stay: every proof can still be made). Append-only.
CREATE TABLE audit_archives (
    up_to       BIGINT PRIMARY KEY,
    from_seq    BIGINT NOT NULL,
    checkpoint  BIGINT NOT NULL,
    file_sha256 TEXT NOT NULL,
    archived_at TEXT NOT NULL
);

CREATE TRIGGER audit_archives_no_update BEFORE UPDATE ON audit_archives
BEGIN
    SELECT RAISE(ABORT, 'audit_archives is append-only');
END;
CREATE TRIGGER audit_archives_no_delete BEFORE DELETE ON audit_archives
BEGIN
    SELECT RAISE(ABORT, 'audit_archives is append-only');
END;

-- Entries, and their subject index rows, leave only once archived.
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq >= (SELECT COALESCE(MAX(up_to), 0) FROM audit_archives)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: only archived entries leave it');
END;
DROP TRIGGER audit_subjects_no_delete;
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_subjects
WHEN OLD.seq >= (SELECT COALESCE(MAX(up_to), 0) FROM audit_archives)
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects is append-only: only archived entries leave it');
END;
DROP TRIGGER audit_subjects_recent_moved_only;
CREATE TRIGGER audit_subjects_recent_moved_only BEFORE DELETE ON audit_subjects_recent
WHEN NOT EXISTS (
    SELECT 1 FROM audit_subjects WHERE subject_hash = OLD.subject_hash AND seq = OLD.seq)
    AND OLD.seq >= (SELECT COALESCE(MAX(up_to), 0) FROM audit_archives)
BEGIN
    SELECT RAISE(ABORT, 'a row of audit_subjects_recent leaves only into audit_subjects');
END;
