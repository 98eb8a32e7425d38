-- Appends a batch of audit entries in one statement, so a group commit
-- costs one round trip: take the appenders' advisory lock (key
-- 0x6a656d626174, "jembat", shared by every broker replica), read the next
-- sequence number *after* the lock is held (each PL/pgSQL statement takes
-- a fresh snapshot), insert the batch with consecutive numbers, and return
-- the first. Called outside an explicit transaction, the statement's own
-- transaction commits (durably) before the call returns.
--
-- `batch` is a JSON array of objects with the audit_log columns; `entry`
-- is the canonical entry bytes in base64.
CREATE FUNCTION jembatan_audit_append(batch jsonb) RETURNS bigint
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
           r.e->>'exchange_id', r.e->>'kind', r.e->>'recorded_at', r.e->>'caller',
           r.e->>'consumer', r.e->>'provider', r.e->>'dataset', r.e->>'purpose',
           r.e->>'decision', r.e->>'status', r.e->>'subject_hash',
           decode(r.e->>'entry', 'base64'), r.e->>'entry_sha256'
    FROM jsonb_array_elements(batch) WITH ORDINALITY AS r(e, ord);
    RETURN base;
END;
$$;
