-- A counter of changes to what decisions read (agencies, datasets,
-- agreements), bumped by triggers in the same transaction as the change.
-- A broker serves decisions from memory and reads only this counter per
-- decision: when it moved, the memory is dropped before it is used, so a
-- revocation made through any replica is never honoured once its write
-- has committed.
CREATE TABLE policy_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  BIGINT NOT NULL
);

CREATE FUNCTION policy_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1)
        ON CONFLICT (id) DO UPDATE SET n = policy_version.n + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER agencies_policy AFTER INSERT OR UPDATE OR DELETE ON agencies
    FOR EACH STATEMENT EXECUTE FUNCTION policy_version_bump();
CREATE TRIGGER datasets_policy AFTER INSERT OR UPDATE OR DELETE ON datasets
    FOR EACH STATEMENT EXECUTE FUNCTION policy_version_bump();
CREATE TRIGGER agreements_policy AFTER INSERT OR UPDATE OR DELETE ON agreements
    FOR EACH STATEMENT EXECUTE FUNCTION policy_version_bump();
