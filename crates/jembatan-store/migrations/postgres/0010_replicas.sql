-- Broker replicas sharing the store, PostgreSQL.
--
-- Each broker process registers a replica with a lease it renews; times
-- are milliseconds since the Unix epoch by the database's clock, so the
-- replicas' own clocks never have to agree. A replica whose lease ran out
-- (and one grace period more) is marked gone; the exchanges it had open
-- are then closed on the audit log by a surviving replica.
CREATE TABLE replicas (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    gone_at     TEXT
);

-- One row per exchange a replica is running: counted against the stream
-- limit per agency (rows of gone replicas no longer count), and the
-- exchanges to close when its replica is gone. Holds ids only, never a
-- request's values.
CREATE TABLE open_exchanges (
    exchange_id TEXT PRIMARY KEY,
    replica     TEXT NOT NULL,
    consumer    TEXT NOT NULL,
    opened_at   TEXT NOT NULL
);
CREATE INDEX open_exchanges_by_consumer ON open_exchanges (consumer);
CREATE INDEX open_exchanges_by_replica ON open_exchanges (replica);

-- Work one replica at a time does (signing checkpoints, closing the
-- exchanges of gone replicas): held by `holder` until `until_ms`.
CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);

-- Opens an exchange for a replica unless its consumer already has `lim`
-- exchanges open on replicas not gone (lease not over by more than
-- `grace_ms`). The count and the insert are serialized per consumer by a
-- transaction-scoped advisory lock; each statement of a function in READ
-- COMMITTED reads a fresh snapshot, so the count sees every insert
-- committed before the lock was granted. Returns whether it was opened.
CREATE FUNCTION jembatan_open_exchange(
    p_exchange TEXT, p_replica TEXT, p_consumer TEXT, p_opened TEXT,
    p_limit BIGINT, p_grace_ms BIGINT
) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    now_ms BIGINT := (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT;
    running BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('jembatan.open_exchanges/' || p_consumer, 0));
    SELECT COUNT(*) INTO running
    FROM open_exchanges o JOIN replicas r ON r.id = o.replica
    WHERE o.consumer = p_consumer AND r.gone_at IS NULL
      AND r.lease_until + p_grace_ms >= now_ms;
    IF running >= p_limit THEN
        RETURN FALSE;
    END IF;
    INSERT INTO open_exchanges (exchange_id, replica, consumer, opened_at)
    VALUES (p_exchange, p_replica, p_consumer, p_opened);
    RETURN TRUE;
END;
$$;
