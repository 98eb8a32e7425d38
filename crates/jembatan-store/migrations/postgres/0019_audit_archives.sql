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

CREATE FUNCTION jembatan_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_archives_no_update BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION jembatan_append_only();

-- Entries, and their subject index rows, leave only once archived.
CREATE FUNCTION audit_log_archived_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       AND OLD.seq < (SELECT COALESCE(MAX(up_to), 0) FROM audit_archives) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: only archived entries leave it', TG_TABLE_NAME;
END;
$$;
DROP TRIGGER audit_log_no_update ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_archived_only();
DROP TRIGGER audit_subjects_no_update ON audit_subjects;
CREATE TRIGGER audit_subjects_no_update BEFORE UPDATE OR DELETE ON audit_subjects
    FOR EACH ROW EXECUTE FUNCTION audit_log_archived_only();

-- jembatan_audit_append (0006), numbering after the archived range too:
-- a log archived to its last entry has no row left to number from.
CREATE OR REPLACE FUNCTION jembatan_audit_append(batch jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(116983859405172);
    SELECT GREATEST(COALESCE((SELECT MAX(seq) + 1 FROM audit_log), 0),
                    COALESCE((SELECT MAX(up_to) FROM audit_archives), 0))
      INTO base;
    INSERT INTO audit_log (seq, exchange_id, kind, recorded_at, caller, consumer,
                           provider, dataset, purpose, decision, status,
                           subject_hash, entry, entry_sha256)
    SELECT base + r.ord - 1,
           r.exchange_id, r.kind, r.recorded_at, r.caller, r.consumer,
           r.provider, r.dataset, r.purpose, r.decision, r.status,
           r.subject_hash, decode(r.entry, 'base64'), r.entry_sha256
    FROM ROWS FROM (jsonb_to_recordset(batch) AS (
             exchange_id text, kind text, recorded_at text, caller text,
             consumer text, provider text, dataset text, purpose text,
             decision text, status text, subject_hash text, entry text,
             entry_sha256 text))
         WITH ORDINALITY AS r(exchange_id, kind, recorded_at, caller, consumer,
                              provider, dataset, purpose, decision, status,
                              subject_hash, entry, entry_sha256, ord);
    RETURN base;
END;
$$;
