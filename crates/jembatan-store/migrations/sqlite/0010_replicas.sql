-- Broker replicas sharing the store, SQLite.
--
-- Each broker process registers a replica with a lease it renews; times
-- are milliseconds since the Unix epoch by the store's clock. A replica
-- whose lease ran out (and one grace period more) is marked gone; the
-- exchanges it had open are then closed on the audit log by a surviving
-- or restarted broker.
CREATE TABLE replicas (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
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
    until_ms INTEGER NOT NULL
);
