-- jembatan_audit_append (0004), reading each row of the batch in one pass
-- with jsonb_to_recordset instead of one `->>` lookup per column: the same
-- contract (advisory lock, numbering after the latest entry, one statement),
-- less work per entry.
CREATE OR REPLACE FUNCTION jembatan_audit_append(batch jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(116983859405172);
    SELECT COALESCE(MAX(seq) + 1, 0) INTO base FROM audit_log;
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
