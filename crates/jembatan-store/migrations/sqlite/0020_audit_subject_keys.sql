-- The subject index keyed by integers. A subject's index key is the
-- first 8 bytes of its keyed hash, big-endian, as a signed 64-bit integer
-- (each of the first 16 characters read as a lowercase hex digit, one
-- that is not counting as f, a missing one as 0); see `subject_key` in
-- the store. An index row of
-- two integers is a fifth of one holding the 64-character hash, so each
-- subject an entry names rewrites that much less of the index, and the
-- table has no rowid B-tree beside its key. A search by hash reads the
-- entries whose key matches and keeps those that name the hash itself.
CREATE TABLE audit_subject_keys (
    subject_key INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (subject_key, seq)
) WITHOUT ROWID;

INSERT OR IGNORE INTO audit_subject_keys (subject_key, seq)
SELECT
        ((((instr('0123456789abcdef', substr(subject_hash, 1, 1)) - 1) & 15)) << 60) |
        ((((instr('0123456789abcdef', substr(subject_hash, 2, 1)) - 1) & 15)) << 56) |
        ((((instr('0123456789abcdef', substr(subject_hash, 3, 1)) - 1) & 15)) << 52) |
        ((((instr('0123456789abcdef', substr(subject_hash, 4, 1)) - 1) & 15)) << 48) |
        ((((instr('0123456789abcdef', substr(subject_hash, 5, 1)) - 1) & 15)) << 44) |
        ((((instr('0123456789abcdef', substr(subject_hash, 6, 1)) - 1) & 15)) << 40) |
        ((((instr('0123456789abcdef', substr(subject_hash, 7, 1)) - 1) & 15)) << 36) |
        ((((instr('0123456789abcdef', substr(subject_hash, 8, 1)) - 1) & 15)) << 32) |
        ((((instr('0123456789abcdef', substr(subject_hash, 9, 1)) - 1) & 15)) << 28) |
        ((((instr('0123456789abcdef', substr(subject_hash, 10, 1)) - 1) & 15)) << 24) |
        ((((instr('0123456789abcdef', substr(subject_hash, 11, 1)) - 1) & 15)) << 20) |
        ((((instr('0123456789abcdef', substr(subject_hash, 12, 1)) - 1) & 15)) << 16) |
        ((((instr('0123456789abcdef', substr(subject_hash, 13, 1)) - 1) & 15)) << 12) |
        ((((instr('0123456789abcdef', substr(subject_hash, 14, 1)) - 1) & 15)) << 8) |
        ((((instr('0123456789abcdef', substr(subject_hash, 15, 1)) - 1) & 15)) << 4) |
        ((((instr('0123456789abcdef', substr(subject_hash, 16, 1)) - 1) & 15)) << 0),
    seq
FROM (SELECT subject_hash, seq FROM audit_subjects
      UNION ALL SELECT subject_hash, seq FROM audit_subjects_recent);

-- dropping a table drops its triggers and indexes and fires none
DROP TABLE audit_subjects_recent;
DROP TABLE audit_subjects;
ALTER TABLE audit_subject_keys RENAME TO audit_subjects;
CREATE INDEX audit_subjects_by_seq ON audit_subjects (seq);

CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_subjects
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects is append-only');
END;
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_subjects
WHEN OLD.seq >= (SELECT COALESCE(MAX(up_to), 0) FROM audit_archives)
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects is append-only: only archived entries leave it');
END;

-- the recent level (0018), keyed the same way
CREATE TABLE audit_subjects_recent (
    subject_key INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (subject_key, seq)
) WITHOUT ROWID;

CREATE TRIGGER audit_subjects_recent_no_update BEFORE UPDATE ON audit_subjects_recent
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects_recent is append-only');
END;
CREATE TRIGGER audit_subjects_recent_moved_only BEFORE DELETE ON audit_subjects_recent
WHEN NOT EXISTS (
    SELECT 1 FROM audit_subjects WHERE subject_key = OLD.subject_key AND seq = OLD.seq)
    AND OLD.seq >= (SELECT COALESCE(MAX(up_to), 0) FROM audit_archives)
BEGIN
    SELECT RAISE(ABORT, 'a row of audit_subjects_recent leaves only into audit_subjects');
END;
