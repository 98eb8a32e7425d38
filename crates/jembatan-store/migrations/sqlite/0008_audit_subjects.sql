-- The subject index: every subject an audit entry names (a lookup key,
-- and from entry format 2 each value on a subject-key field in a filter),
-- as the keyed hash the entry holds, so "who looked me up?" finds them
-- all. `audit_log.subject_hash` keeps the lookup key's hash as before;
-- entries written before this table existed are found through it.
-- Append-only, like the log.
CREATE TABLE audit_subjects (
    subject_hash TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (subject_hash, seq)
);
CREATE INDEX audit_subjects_by_seq ON audit_subjects (seq);

CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE ON audit_subjects
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects is append-only');
END;
CREATE TRIGGER audit_subjects_no_delete BEFORE DELETE ON audit_subjects
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects is append-only');
END;
