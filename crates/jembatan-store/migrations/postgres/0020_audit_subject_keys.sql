-- The subject index keyed by integers. A subject's index key is the
-- first 8 bytes of its keyed hash, big-endian, as a signed 64-bit integer
-- (each of the first 16 characters read as a lowercase hex digit, one
-- that is not counting as f, a missing one as 0); see `subject_key` in
-- the store. An index row of two integers is a fraction of one holding
-- the 64-character hash. A search by hash reads the entries whose key
-- matches and keeps those that name the hash itself.
CREATE TABLE audit_subject_keys (
    subject_key BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (subject_key, seq)
);

INSERT INTO audit_subject_keys (subject_key, seq)
SELECT
        ((((strpos('0123456789abcdef', substr(subject_hash, 1, 1)) - 1) & 15))::bigint << 60) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 2, 1)) - 1) & 15))::bigint << 56) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 3, 1)) - 1) & 15))::bigint << 52) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 4, 1)) - 1) & 15))::bigint << 48) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 5, 1)) - 1) & 15))::bigint << 44) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 6, 1)) - 1) & 15))::bigint << 40) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 7, 1)) - 1) & 15))::bigint << 36) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 8, 1)) - 1) & 15))::bigint << 32) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 9, 1)) - 1) & 15))::bigint << 28) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 10, 1)) - 1) & 15))::bigint << 24) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 11, 1)) - 1) & 15))::bigint << 20) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 12, 1)) - 1) & 15))::bigint << 16) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 13, 1)) - 1) & 15))::bigint << 12) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 14, 1)) - 1) & 15))::bigint << 8) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 15, 1)) - 1) & 15))::bigint << 4) |
        ((((strpos('0123456789abcdef', substr(subject_hash, 16, 1)) - 1) & 15))::bigint << 0),
    seq
FROM audit_subjects
ON CONFLICT DO NOTHING;

-- its trigger and indexes go with it
DROP TABLE audit_subjects;
ALTER TABLE audit_subject_keys RENAME TO audit_subjects;
ALTER INDEX audit_subject_keys_pkey RENAME TO audit_subjects_pkey;
CREATE INDEX audit_subjects_by_seq ON audit_subjects (seq);

CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE OR DELETE ON audit_subjects
    FOR EACH ROW EXECUTE FUNCTION audit_log_archived_only();
