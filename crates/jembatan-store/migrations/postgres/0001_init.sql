-- Broker store, PostgreSQL.
CREATE TABLE agencies (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    adapter_endpoint TEXT,
    updated_at       TEXT NOT NULL
);

CREATE TABLE datasets (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL REFERENCES agencies (id),
    key_field   TEXT,
    description TEXT NOT NULL DEFAULT '',
    updated_at  TEXT NOT NULL
);

CREATE TABLE agreements (
    id         TEXT PRIMARY KEY,
    provider   TEXT NOT NULL,
    consumer   TEXT NOT NULL,
    dataset    TEXT NOT NULL,
    status     TEXT NOT NULL,
    document   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX agreements_by_consumer ON agreements (consumer, dataset);

-- Append-only: seq is the leaf index, gap-free from 0. Appenders serialize
-- on an advisory lock, so several broker replicas share one log.
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,
    exchange_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    caller       TEXT NOT NULL,
    consumer     TEXT,
    provider     TEXT,
    dataset      TEXT,
    purpose      TEXT,
    decision     TEXT NOT NULL,
    status       TEXT NOT NULL,
    subject_hash TEXT,
    entry        BYTEA NOT NULL,
    entry_sha256 TEXT NOT NULL
);
CREATE INDEX audit_by_exchange ON audit_log (exchange_id);
CREATE INDEX audit_by_time ON audit_log (recorded_at);
CREATE INDEX audit_by_subject ON audit_log (subject_hash);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
