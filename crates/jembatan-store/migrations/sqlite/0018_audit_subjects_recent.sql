-- The subject index in two levels. Each subject an entry names is a row
-- at a random place of the `(subject_hash, seq)` order, so writing it
-- into the whole index rewrites a page of it for every few subjects: an
-- entry naming 10,000 (a subscription's batch, a batch verification)
-- rewrote most of the index into the WAL. The audit writer now adds them
-- here, a small table of the same order, and moves them into
-- `audit_subjects` in large runs of consecutive hashes, each row in one
-- table or the other, never both and never neither. Searches read both.
CREATE TABLE audit_subjects_recent (
    subject_hash TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (subject_hash, seq)
) WITHOUT ROWID;

CREATE TRIGGER audit_subjects_recent_no_update BEFORE UPDATE ON audit_subjects_recent
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects_recent is append-only');
END;
-- a row leaves only once it is in audit_subjects
CREATE TRIGGER audit_subjects_recent_moved_only BEFORE DELETE ON audit_subjects_recent
WHEN NOT EXISTS (
    SELECT 1 FROM audit_subjects WHERE subject_hash = OLD.subject_hash AND seq = OLD.seq)
BEGIN
    SELECT RAISE(ABORT, 'a row of audit_subjects_recent leaves only into audit_subjects');
END;
