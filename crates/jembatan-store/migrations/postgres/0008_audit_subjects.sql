-- The subject index: every subject an audit entry names (a lookup key,
-- and from entry format 2 each value on a subject-key field in a filter),
-- as the keyed hash the entry holds, so "who looked me up?" finds them
-- all. `audit_log.subject_hash` keeps the lookup key's hash as before;
-- entries written before this table existed are found through it.
-- Written in the same statement as the entries (see the store's append),
-- append-only like the log.
CREATE TABLE audit_subjects (
    subject_hash TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    PRIMARY KEY (subject_hash, seq)
);
CREATE INDEX audit_subjects_by_seq ON audit_subjects (seq);

CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE OR DELETE ON audit_subjects
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
